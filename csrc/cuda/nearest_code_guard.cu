// CUDA range guard of nearest_code (see nearest_code_guard.cuh): the finiteness check folded into a kernel (a
// device-side assertion instead of two host round trips), and the float64 re-scoring of the rows whose magnitudes
// could overflow the fp32 kernel, as the CPU and Python backends do it. Rows not at risk return at once.
#undef NDEBUG  // the assertions below are the error report
#include <cassert>
#include <cstdio>

#include "nearest_code_guard.cuh"

#include <cuda_bf16.h>
#include <cuda_fp16.h>

namespace mmtok {
namespace {

constexpr int kThreads = 256;
constexpr double kSafeFloat = 0x1p126;
constexpr double kSafeDouble = 0x1p1020;
constexpr double kNormEps = 1e-12;

__device__ unsigned int g_reported = 0;  // print one message per process: the context is lost after the assert

__device__ __forceinline__ double load(const void* p, ValueDtype dtype, int64_t i) {
  switch (dtype) {
    case ValueDtype::kFloat16: return __half2float(static_cast<const __half*>(p)[i]);
    case ValueDtype::kBFloat16: return __bfloat162float(static_cast<const __nv_bfloat16*>(p)[i]);
    case ValueDtype::kFloat64: return static_cast<const double*>(p)[i];
    default: return static_cast<const float*>(p)[i];
  }
}

__device__ void fail(const char* message, long long row) {
  if (atomicCAS(&g_reported, 0u, 1u) == 0u) printf("%s (first seen at row %lld)\n", message, row);
  assert(false && "nearest_code: invalid input (see the message above)");
}

__global__ void __launch_bounds__(kThreads) guard_kernel(const void* x, ValueDtype x_dtype, const void* codebook,
                                                         ValueDtype code_dtype, const double* row_max,
                                                         const double* code_max, int64_t n, int64_t k, int64_t d,
                                                         int metric, int64_t* out_index, float* out_distance) {
  const int64_t row = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x;
  if (row >= n) return;
  const double cm = *code_max, rm = row_max[row];
  if (!isfinite(cm)) fail("nearest_code: codebook contains non-finite values (NaN or Inf)", -1);
  if (!isfinite(rm)) fail("nearest_code: x contains non-finite values (NaN or Inf)", row);
  const double bound = metric == 1 ? d * fmax(rm * rm, cm * cm) : metric == 2 ? 2.0 * d * rm * cm
                                                                              : d * (2.0 * rm * cm + cm * cm);
  if (bound <= kSafeFloat) return;
  if (bound > kSafeDouble) fail("nearest_code: x and codebook values overflow even a float64 distance computation; rescale the inputs", row);

  // float64 re-scoring of this row: score = bias - 2 x'.c' (x', c' normalised for cosine), lowest index on ties
  const int64_t xo = row * d;
  double x_scale = 1.0;
  if (metric == 1) {
    double sq = 0.0;
    for (int64_t j = 0; j < d; ++j) sq += load(x, x_dtype, xo + j) * load(x, x_dtype, xo + j);
    x_scale = 1.0 / fmax(sqrt(sq), kNormEps);
  }
  double best = INFINITY, best_dot = 0.0, best_scale = 1.0;
  int64_t best_code = 0;
  for (int64_t c = 0; c < k; ++c) {
    double dot = 0.0, cc = 0.0;
    for (int64_t j = 0; j < d; ++j) {
      const double a = load(x, x_dtype, xo + j), b = load(codebook, code_dtype, c * d + j);
      dot += a * b;
      cc += b * b;
    }
    const double c_scale = metric == 1 ? 1.0 / fmax(sqrt(cc), kNormEps) : 1.0;
    const double score = (metric == 0 ? cc : 0.0) - 2.0 * dot * x_scale * c_scale;
    if (score < best) {
      best = score;
      best_code = c;
      best_dot = dot;
      best_scale = c_scale;
    }
  }
  double distance;
  if (metric == 0) {
    distance = 0.0;
    for (int64_t j = 0; j < d; ++j) {
      const double diff = load(x, x_dtype, xo + j) - load(codebook, code_dtype, best_code * d + j);
      distance += diff * diff;
    }
  } else {
    distance = metric == 1 ? 1.0 - best_dot * x_scale * best_scale : -best_dot;
  }
  out_index[row] = best_code;
  out_distance[row] = static_cast<float>(distance);
}

}  // namespace

cudaError_t launch_nearest_code_guard(const void* x, ValueDtype x_dtype, const void* codebook, ValueDtype code_dtype,
                                      const double* row_max, const double* code_max, int64_t n, int64_t k, int64_t d,
                                      int metric, int64_t* out_index, float* out_distance, cudaStream_t stream) {
  if (n <= 0) return cudaSuccess;
  const int64_t blocks = (n + kThreads - 1) / kThreads;
  guard_kernel<<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(x, x_dtype, codebook, code_dtype, row_max,
                                                                        code_max, n, k, d, metric, out_index, out_distance);
  return cudaGetLastError();
}

}  // namespace mmtok
