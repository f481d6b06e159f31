#include "exec/cublaslt.h"

#include <dlfcn.h>
#include <fmt/format.h>

#include <cstdlib>
#include <stdexcept>
#include <vector>

#ifndef SPIN_CUDA_ROOT
#define SPIN_CUDA_ROOT "/usr/local/cuda"
#endif

namespace spin::exec {

namespace {

constexpr const char* kSoname = "libcublasLt.so.13";

// Skips a library of another major version: the function table is typed by this build's header.
std::string check_version(void* handle) {
  using GetVersion = std::size_t (*)();
  const auto get = reinterpret_cast<GetVersion>(dlsym(handle, "cublasLtGetVersion"));
  if (get == nullptr) return "no cublasLtGetVersion (not cuBLASLt?)";
  const std::size_t version = get();
  if (version / 10000 != CUBLAS_VER_MAJOR) {
    return fmt::format("version {} is not major version {} (this build's cublasLt.h)", version,
                       CUBLAS_VER_MAJOR);
  }
  return "";
}

}  // namespace

LibrarySearch cublaslt_search() {
  LibrarySearch s;
  s.what = fmt::format("cuBLASLt {} (the executor's GEMMs)", CUBLAS_VER_MAJOR);
  s.env_var = "SPIN_CUBLASLT";
  s.candidates.push_back(kSoname);
  for (const char* var : {"CUDA_HOME", "CUDA_PATH"}) {
    const char* root = std::getenv(var);
    if (root != nullptr && root[0] == '/')
      s.candidates.push_back(fmt::format("{}/lib64/{}", root, kSoname));
  }
  for (const char* dir : {SPIN_CUDA_ROOT "/lib64", "/usr/local/cuda/lib64",
                          "/usr/local/cuda-13*/lib64", "/usr/local/cuda*/targets/x86_64-linux/lib",
                          "/opt/*/.venv/lib/python3*/site-packages/nvidia/*/lib",
                          "/opt/conda/lib/python3*/site-packages/nvidia/*/lib",
                          "/usr/local/lib/python3*/*-packages/nvidia/*/lib",
                          "/usr/lib/python3/dist-packages/nvidia/*/lib"}) {
    s.candidates.push_back(fmt::format("{}/{}", dir, kSoname));
  }
  s.candidates.push_back("libcublasLt.so");
  s.accept = check_version;
  s.hint = fmt::format(
      "cuBLASLt comes with the CUDA {} toolkit (<toolkit>/lib64/{}) and with PyTorch's pip wheel "
      "nvidia-cublas (site-packages/nvidia/*/lib); docs/gpu-kernels.md, \"GEMMs (cuBLASLt)\"",
      CUBLAS_VER_MAJOR, kSoname);
  return s;
}

CublasLt CublasLt::load(const LibrarySearch& search) {
  CublasLt t;
  t.library = SharedLibrary::open(search);
  const SharedLibrary& l = t.library;
  l.resolve(t.get_version, "cublasLtGetVersion");
  l.resolve(t.get_status_name, "cublasLtGetStatusName");
  l.resolve(t.get_status_string, "cublasLtGetStatusString");
  l.resolve(t.create, "cublasLtCreate");
  l.resolve(t.destroy, "cublasLtDestroy");
  l.resolve(t.matmul_desc_create, "cublasLtMatmulDescCreate");
  l.resolve(t.matmul_desc_destroy, "cublasLtMatmulDescDestroy");
  l.resolve(t.matmul_desc_set_attribute, "cublasLtMatmulDescSetAttribute");
  l.resolve(t.matrix_layout_create, "cublasLtMatrixLayoutCreate");
  l.resolve(t.matrix_layout_destroy, "cublasLtMatrixLayoutDestroy");
  l.resolve(t.matrix_layout_set_attribute, "cublasLtMatrixLayoutSetAttribute");
  l.resolve(t.preference_create, "cublasLtMatmulPreferenceCreate");
  l.resolve(t.preference_destroy, "cublasLtMatmulPreferenceDestroy");
  l.resolve(t.preference_set_attribute, "cublasLtMatmulPreferenceSetAttribute");
  l.resolve(t.algo_get_heuristic, "cublasLtMatmulAlgoGetHeuristic");
  l.resolve(t.matmul, "cublasLtMatmul");
  t.version = t.get_version();
  return t;
}

const CublasLt& cublaslt() {
  // Never destroyed: cuBLASLt stays loaded until the process exits (closing it while CUDA tears
  // down at exit gains nothing). A throwing load leaves the static uninitialised: retried later.
  static const CublasLt* const table = new CublasLt(CublasLt::load(cublaslt_search()));
  return *table;
}

void throw_cublas_error(cublasStatus_t status, const char* expr, const char* file, int line) {
  const CublasLt& t = cublaslt();
  throw std::runtime_error(fmt::format("cuBLASLt error {} ({}) in {} at {}:{}",
                                       t.get_status_name(status), t.get_status_string(status), expr,
                                       file, line));
}

}  // namespace spin::exec
