#include "exec/gemm.h"

#include <fmt/format.h>

#include <array>
#include <cstdint>
#include <stdexcept>
#include <utility>

#include "exec/cublaslt.h"

namespace spin::exec {

namespace {

// Owners of cuBLASLt objects: destroyed through the table, a failing destroy is reported on
// stderr, never thrown (they run in destructors).
template <class T, class Destroy>
void destroy_quietly(T& object, Destroy destroy, const char* what) {
  if (object == nullptr) return;
  const cublasStatus_t status = destroy(object);
  if (status != CUBLAS_STATUS_SUCCESS)
    fmt::print(stderr, "gemm: {} failed: {}\n", what, cublaslt().get_status_name(status));
  object = nullptr;
}

}  // namespace

struct Gemm::Impl {
  GemmShape shape{};
  GemmOptions options{};
  bool planned = false;
  cublasLtHandle_t handle = nullptr;
  cublasLtMatmulDesc_t desc = nullptr;
  cublasLtMatrixLayout_t a = nullptr;   // W
  cublasLtMatrixLayout_t b = nullptr;   // X
  cublasLtMatrixLayout_t cd = nullptr;  // C and D (Y)
  cublasLtMatmulAlgo_t algo{};
  int algorithms = 0;
  float waves = 0;
  DeviceBuffer workspace;

  ~Impl() { release(); }
  void release() {
    if (handle == nullptr) return;
    const CublasLt& lt = cublaslt();
    destroy_quietly(cd, lt.matrix_layout_destroy, "cublasLtMatrixLayoutDestroy");
    destroy_quietly(b, lt.matrix_layout_destroy, "cublasLtMatrixLayoutDestroy");
    destroy_quietly(a, lt.matrix_layout_destroy, "cublasLtMatrixLayoutDestroy");
    destroy_quietly(desc, lt.matmul_desc_destroy, "cublasLtMatmulDescDestroy");
    destroy_quietly(handle, lt.destroy, "cublasLtDestroy");
    workspace = DeviceBuffer();
    planned = false;
  }
};

Gemm::Gemm() : impl_(std::make_unique<Impl>()) {}
Gemm::~Gemm() = default;
Gemm::Gemm(Gemm&&) noexcept = default;
Gemm& Gemm::operator=(Gemm&&) noexcept = default;

bool Gemm::planned() const { return impl_ && impl_->planned; }
const GemmShape& Gemm::shape() const { return impl_->shape; }
const GemmOptions& Gemm::options() const { return impl_->options; }
std::uint64_t Gemm::workspace_bytes() const { return impl_->workspace.bytes(); }
int Gemm::algorithms() const { return impl_->algorithms; }
float Gemm::waves() const { return impl_->waves; }

void Gemm::plan(const GemmShape& shape, const GemmOptions& options) {
  if (!impl_) impl_ = std::make_unique<Impl>();
  Impl& p = *impl_;
  p.release();
  const auto describe = [&] {
    return fmt::format("m {}, n {}, k {}, batch {}{}", shape.m, shape.n, shape.k, shape.batch,
                       options.bias ? ", bias" : "");
  };
  if (shape.n == 0 || shape.k == 0 || shape.batch == 0)
    throw std::invalid_argument(fmt::format("gemm: {}: n, k and batch must be ≥ 1", describe()));
  if (shape.m > INT32_MAX || shape.n > INT32_MAX || shape.k > INT32_MAX || shape.batch > INT32_MAX)
    throw std::invalid_argument(fmt::format("gemm: {}: a dimension exceeds 2^31 − 1", describe()));
  const std::uint32_t align = options.alignment_bytes;
  if (align < 2 || align > 256 || (align & (align - 1)) != 0) {
    throw std::invalid_argument(
        fmt::format("gemm: alignment_bytes {} is not a power of two in 2..256", align));
  }
  p.shape = shape;
  p.options = options;
  p.algorithms = 0;
  p.waves = 0;
  if (shape.m == 0) {  // nothing to run; no cuBLASLt needed
    p.planned = true;
    return;
  }
  const CublasLt& lt = cublaslt();
  SPIN_CUBLASLT_CHECK(lt.create(&p.handle));
  SPIN_CUBLASLT_CHECK(lt.matmul_desc_create(&p.desc, CUBLAS_COMPUTE_32F, CUDA_R_32F));
  const cublasOperation_t transa = CUBLAS_OP_T, transb = CUBLAS_OP_N;
  SPIN_CUBLASLT_CHECK(
      lt.matmul_desc_set_attribute(p.desc, CUBLASLT_MATMUL_DESC_TRANSA, &transa, sizeof(transa)));
  SPIN_CUBLASLT_CHECK(
      lt.matmul_desc_set_attribute(p.desc, CUBLASLT_MATMUL_DESC_TRANSB, &transb, sizeof(transb)));
  if (options.bias) {
    const cublasLtEpilogue_t epilogue = CUBLASLT_EPILOGUE_BIAS;
    const cudaDataType_t bias_type = CUDA_R_16BF;
    SPIN_CUBLASLT_CHECK(lt.matmul_desc_set_attribute(p.desc, CUBLASLT_MATMUL_DESC_EPILOGUE,
                                                     &epilogue, sizeof(epilogue)));
    SPIN_CUBLASLT_CHECK(lt.matmul_desc_set_attribute(p.desc, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE,
                                                     &bias_type, sizeof(bias_type)));
  }
  // Column-major views (gemm.h): A = W as k × n (ld k), B = X as k × m (ld k), C = D = Yᵀ as
  // n × m (ld n).
  const std::uint64_t m = shape.m, n = shape.n, k = shape.k;
  SPIN_CUBLASLT_CHECK(lt.matrix_layout_create(&p.a, CUDA_R_16BF, k, n, static_cast<int64_t>(k)));
  SPIN_CUBLASLT_CHECK(lt.matrix_layout_create(&p.b, CUDA_R_16BF, k, m, static_cast<int64_t>(k)));
  SPIN_CUBLASLT_CHECK(lt.matrix_layout_create(&p.cd, CUDA_R_16BF, n, m, static_cast<int64_t>(n)));
  if (shape.batch > 1) {
    const std::int32_t count = static_cast<std::int32_t>(shape.batch);
    const std::array<std::pair<cublasLtMatrixLayout_t, std::int64_t>, 3> strides = {
        {{p.a, static_cast<std::int64_t>(n * k)},
         {p.b, static_cast<std::int64_t>(m * k)},
         {p.cd, static_cast<std::int64_t>(m * n)}}};
    for (const auto& [layout, stride] : strides) {
      SPIN_CUBLASLT_CHECK(lt.matrix_layout_set_attribute(layout, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT,
                                                         &count, sizeof(count)));
      SPIN_CUBLASLT_CHECK(lt.matrix_layout_set_attribute(
          layout, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET, &stride, sizeof(stride)));
    }
  }
  cublasLtMatmulPreference_t preference = nullptr;
  SPIN_CUBLASLT_CHECK(lt.preference_create(&preference));
  constexpr int kRequested = 8;
  cublasLtMatmulHeuristicResult_t results[kRequested] = {};
  int returned = 0;
  cublasStatus_t status = CUBLAS_STATUS_SUCCESS;
  {
    const std::uint64_t max_workspace = options.max_workspace_bytes;
    cublasStatus_t set =
        lt.preference_set_attribute(preference, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                                    &max_workspace, sizeof(max_workspace));
    for (const cublasLtMatmulPreferenceAttributes_t attr :
         {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES,
          CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES}) {
      if (set == CUBLAS_STATUS_SUCCESS)
        set = lt.preference_set_attribute(preference, attr, &align, sizeof(align));
    }
    if (set == CUBLAS_STATUS_SUCCESS) {
      status = lt.algo_get_heuristic(p.handle, p.desc, p.a, p.b, p.cd, p.cd, preference, kRequested,
                                     results, &returned);
    } else {
      status = set;
    }
    destroy_quietly(preference, lt.preference_destroy, "cublasLtMatmulPreferenceDestroy");
    if (set != CUBLAS_STATUS_SUCCESS)
      throw_cublas_error(set, "cublasLtMatmulPreferenceSetAttribute", __FILE__, __LINE__);
  }
  int chosen = -1;
  if (status == CUBLAS_STATUS_SUCCESS) {
    for (int i = 0; i < returned && chosen < 0; ++i)
      if (results[i].state == CUBLAS_STATUS_SUCCESS) chosen = i;
  }
  if (status == CUBLAS_STATUS_NOT_SUPPORTED || (status == CUBLAS_STATUS_SUCCESS && chosen < 0)) {
    const std::string why = status == CUBLAS_STATUS_SUCCESS
                                ? std::string("no algorithm returned")
                                : std::string(lt.get_status_name(status));
    p.release();
    throw std::invalid_argument(fmt::format(
        "gemm: {} (bf16, fp32 accumulation, alignment {} B, workspace ≤ {} B): cuBLASLt {} has no "
        "algorithm for it ({})",
        describe(), align, options.max_workspace_bytes, lt.version, why));
  }
  if (status != CUBLAS_STATUS_SUCCESS)
    throw_cublas_error(status, "cublasLtMatmulAlgoGetHeuristic", __FILE__, __LINE__);
  for (int i = 0; i < returned; ++i) p.algorithms += results[i].state == CUBLAS_STATUS_SUCCESS;
  p.algo = results[chosen].algo;
  p.waves = results[chosen].wavesCount;
  if (results[chosen].workspaceSize > 0) p.workspace = DeviceBuffer(results[chosen].workspaceSize);
  p.planned = true;
}

void Gemm::run(const GemmArgs& args, CUstream_st* stream) const {
  if (!planned()) throw std::invalid_argument("gemm: run() before plan()");
  const Impl& p = *impl_;
  if (p.shape.m == 0) return;
  const auto check = [&](const void* ptr, const char* name) {
    if (ptr == nullptr) throw std::invalid_argument(fmt::format("gemm: {} is null", name));
    if (reinterpret_cast<std::uintptr_t>(ptr) % p.options.alignment_bytes != 0) {
      throw std::invalid_argument(
          fmt::format("gemm: {} ({}) is not aligned to the plan's alignment_bytes {}", name, ptr,
                      p.options.alignment_bytes));
    }
  };
  check(args.x, "x");
  check(args.w, "w");
  check(args.y, "y");
  const void* c = args.c != nullptr ? static_cast<const void*>(args.c) : args.y;
  check(c, "c");
  if (p.options.bias != (args.bias != nullptr)) {
    throw std::invalid_argument(p.options.bias ? "gemm: the plan adds a bias, but bias is null"
                                               : "gemm: bias given, but the plan has none");
  }
  const CublasLt& lt = cublaslt();
  if (p.options.bias) {
    check(args.bias, "bias");
    const void* bias = args.bias;
    SPIN_CUBLASLT_CHECK(lt.matmul_desc_set_attribute(p.desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER,
                                                     &bias, sizeof(bias)));
  }
  SPIN_CUBLASLT_CHECK(lt.matmul(p.handle, p.desc, &args.alpha, args.w, p.a, args.x, p.b, &args.beta,
                                c, p.cd, args.y, p.cd, &p.algo, p.workspace.data(),
                                p.workspace.bytes(), stream));
}

}  // namespace spin::exec
