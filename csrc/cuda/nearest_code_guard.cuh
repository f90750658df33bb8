// Launch interface of the CUDA range guard and finiteness check of nearest_code, run after the fp32 kernel on the
// same stream, with no host synchronisation. Includes only CUDA headers (compiles with nvcc where torch has no CUDA).
#pragma once

#include <cstdint>
#include <cuda_runtime.h>

namespace mmtok {

enum class ValueDtype : int { kFloat32 = 0, kFloat16 = 1, kBFloat16 = 2, kFloat64 = 3 };

// x (n x d) and codebook (k x d): the op's inputs as given (contiguous, each its own dtype). row_max (n) is
// max|x_i| per row and code_max (one value) max|c| over the codebook, in double, NaN or Inf where a value is not
// finite. metric: 0 l2, 1 cosine, 2 dot.
//
// One thread per row. A row (or the codebook) holding a non-finite value stops the process's CUDA work with a
// device-side assertion naming the argument ("nearest_code: x contains non-finite values", printed to stderr): the
// error surfaces at the next synchronising call, and the CUDA context is unusable afterwards. A row whose bound
// (D max|x_i| max|c|, as mmtok/ops/magnitude.py) passes 2^126 is scored again here in float64 and its index and
// distance overwritten; past 2^1020 even float64 could overflow, which asserts too.
cudaError_t launch_nearest_code_guard(const void* x, ValueDtype x_dtype, const void* codebook, ValueDtype code_dtype,
                                      const double* row_max, const double* code_max, int64_t n, int64_t k, int64_t d,
                                      int metric, int64_t* out_index, float* out_distance, cudaStream_t stream);

}  // namespace mmtok
