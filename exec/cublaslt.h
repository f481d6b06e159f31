// cuBLASLt, loaded at run time. `spin` links the CUDA runtime statically and no cuBLAS at all:
// static cuBLASLt is hundreds of MB (the portable binary travels to the GPU machine within a 64 MiB
// limit), and a dynamic link would stop `spin` from starting where the library is missing (CI's
// CPU-only machines). So the toolkit's cublasLt.h gives the types and prototypes only, and the
// library is opened with dlopen (common/shared_library.h) the first time a GEMM is planned.
//
// Search order (cublaslt_search(); docs/gpu-kernels.md, "GEMMs (cuBLASLt)"):
//   1. $SPIN_CUBLASLT, when set: that file and nothing else;
//   2. libcublasLt.so.13 through the dynamic loader (LD_LIBRARY_PATH, ldconfig cache);
//   3. $CUDA_HOME and $CUDA_PATH's lib64, the build machine's toolkit (SPIN_CUDA_ROOT),
//      /usr/local/cuda/lib64, /usr/local/cuda-13*/lib64, /usr/local/cuda*/targets/x86_64-linux/lib;
//   4. PyTorch's pip wheels (nvidia-cublas): site-packages/nvidia/*/lib under /opt/*/.venv,
//      /opt/conda, /usr/local/lib/python3*, /usr/lib/python3;
//   5. libcublasLt.so through the dynamic loader.
// A candidate whose cublasLtGetVersion() has another major version than the header's (13) is
// skipped with that reason. If none loads, InputError lists every candidate and why it failed.
//
// cublaslt() is the process-wide table, loaded once (thread-safe; a failed load is retried on the
// next call); the library is never closed. Every cuBLASLt call goes through SPIN_CUBLASLT_CHECK,
// which names the status (cublasLtGetStatusName / String), the call, file and line.
#pragma once

#include <cublasLt.h>

#include <cstddef>
#include <string>

#include "common/shared_library.h"

namespace spin::exec {

struct CublasLt {
  SharedLibrary library;
  std::size_t version = 0;  // cublasLtGetVersion(): major · 10000 + minor · 100 + patch

  decltype(&cublasLtGetVersion) get_version = nullptr;
  decltype(&cublasLtGetStatusName) get_status_name = nullptr;
  decltype(&cublasLtGetStatusString) get_status_string = nullptr;
  decltype(&cublasLtCreate) create = nullptr;
  decltype(&cublasLtDestroy) destroy = nullptr;
  decltype(&cublasLtMatmulDescCreate) matmul_desc_create = nullptr;
  decltype(&cublasLtMatmulDescDestroy) matmul_desc_destroy = nullptr;
  decltype(&cublasLtMatmulDescSetAttribute) matmul_desc_set_attribute = nullptr;
  decltype(&cublasLtMatrixLayoutCreate) matrix_layout_create = nullptr;
  decltype(&cublasLtMatrixLayoutDestroy) matrix_layout_destroy = nullptr;
  decltype(&cublasLtMatrixLayoutSetAttribute) matrix_layout_set_attribute = nullptr;
  decltype(&cublasLtMatmulPreferenceCreate) preference_create = nullptr;
  decltype(&cublasLtMatmulPreferenceDestroy) preference_destroy = nullptr;
  decltype(&cublasLtMatmulPreferenceSetAttribute) preference_set_attribute = nullptr;
  decltype(&cublasLtMatmulAlgoGetHeuristic) algo_get_heuristic = nullptr;
  decltype(&cublasLtMatmul) matmul = nullptr;

  // Opens the library by `search` and resolves every function above; throws InputError.
  static CublasLt load(const LibrarySearch& search);
};

// The default search (order above); reads CUDA_HOME and CUDA_PATH when called.
LibrarySearch cublaslt_search();

// The process-wide table, loaded by cublaslt_search() on first use.
const CublasLt& cublaslt();

[[noreturn]] void throw_cublas_error(cublasStatus_t status, const char* expr, const char* file,
                                     int line);

}  // namespace spin::exec

#define SPIN_CUBLASLT_CHECK(expr)                                                       \
  do {                                                                                  \
    const cublasStatus_t spin_cublas_status_ = (expr);                                  \
    if (spin_cublas_status_ != CUBLAS_STATUS_SUCCESS)                                   \
      ::spin::exec::throw_cublas_error(spin_cublas_status_, #expr, __FILE__, __LINE__); \
  } while (0)
