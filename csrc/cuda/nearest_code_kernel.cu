// CUDA nearest-code kernel: the distance tile and the row argmin fused (in the spirit of a fused L2
// nearest-neighbour GEMM). Each block owns 64 rows and sweeps all codes in tiles of 64, staging 16-wide
// slices of x and the codebook in shared memory; each thread accumulates a 4x4 register tile in fp32,
// reduces its rows' (score, index) pairs across the 16 threads of its row group with warp shuffles
// (lexicographic min: lowest index on equal scores) and keeps the running best in registers. Only the
// indices leave the chip.
#include "nearest_code_kernel.cuh"

#include <cuda_bf16.h>
#include <cuda_fp16.h>

namespace mmtok {
namespace {

constexpr int kRows = 64;     // rows per block
constexpr int kCodes = 64;    // codes per tile
constexpr int kDims = 16;     // dimensions staged per step
constexpr int kThreads = 256; // 16 x 16 threads, each 4 rows x 4 codes
constexpr int kPad = 4;       // shared-memory padding against bank conflicts

__device__ __forceinline__ float to_float(float v) { return v; }
__device__ __forceinline__ float to_float(__half v) { return __half2float(v); }
__device__ __forceinline__ float to_float(__nv_bfloat16 v) { return __bfloat162float(v); }

// (score, index) pairs compare by score, then by index: the minimum is the lowest index among equal scores.
__device__ __forceinline__ bool precedes(float s, int i, float best_s, int best_i) {
  return s < best_s || (s == best_s && i < best_i);
}

template <typename T>
__global__ void __launch_bounds__(kThreads) nearest_code_kernel(const T* __restrict__ x, const T* __restrict__ codebook,
                                                                const float* __restrict__ bias,
                                                                const float* __restrict__ row_scale,
                                                                const float* __restrict__ code_scale, int64_t n, int64_t k,
                                                                int64_t d, int64_t* __restrict__ out_index) {
  __shared__ float xs[kDims][kRows + kPad];
  __shared__ float cs[kDims][kCodes + kPad];

  const int tid = threadIdx.x;
  const int tx = tid % 16;  // code group within the tile
  const int ty = tid / 16;  // row group within the block
  const int64_t row0 = static_cast<int64_t>(blockIdx.x) * kRows;

  float best[4];
  int best_index[4];
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    best[i] = INFINITY;
    best_index[i] = 0;
  }

  for (int64_t code0 = 0; code0 < k; code0 += kCodes) {
    float acc[4][4];
#pragma unroll
    for (int i = 0; i < 4; ++i)
#pragma unroll
      for (int j = 0; j < 4; ++j) acc[i][j] = 0.0f;

    for (int64_t dim0 = 0; dim0 < d; dim0 += kDims) {
      // 64 x 16 slice of x and of the codebook: 1024 values each, 4 per thread, stored dimension-major.
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int flat = tid + e * kThreads;
        const int r = flat / kDims, c = flat % kDims;
        const int64_t row = row0 + r, code = code0 + r, dim = dim0 + c;
        xs[c][r] = (row < n && dim < d) ? to_float(x[row * d + dim]) : 0.0f;
        cs[c][r] = (code < k && dim < d) ? to_float(codebook[code * d + dim]) : 0.0f;
      }
      __syncthreads();
#pragma unroll
      for (int c = 0; c < kDims; ++c) {
        float a[4], b[4];
#pragma unroll
        for (int i = 0; i < 4; ++i) a[i] = xs[c][ty * 4 + i];
#pragma unroll
        for (int j = 0; j < 4; ++j) b[j] = cs[c][tx * 4 + j];
#pragma unroll
        for (int i = 0; i < 4; ++i)
#pragma unroll
          for (int j = 0; j < 4; ++j) acc[i][j] = fmaf(a[i], b[j], acc[i][j]);
      }
      __syncthreads();
    }

#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const int64_t row = row0 + ty * 4 + i;
      const float rs = (row_scale != nullptr && row < n) ? row_scale[row] : 1.0f;
      float s_best = INFINITY;
      int i_best = 0x7fffffff;
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const int64_t code = code0 + tx * 4 + j;
        if (code < k) {
          const float cs_ = code_scale != nullptr ? code_scale[code] : 1.0f;
          const float s = bias[code] - 2.0f * (acc[i][j] * rs * cs_);
          if (precedes(s, static_cast<int>(code), s_best, i_best)) {
            s_best = s;
            i_best = static_cast<int>(code);
          }
        }
      }
      // The 16 threads sharing these rows are 16 consecutive lanes of one warp.
#pragma unroll
      for (int offset = 8; offset > 0; offset >>= 1) {
        const float s_other = __shfl_xor_sync(0xffffffffu, s_best, offset, 16);
        const int i_other = __shfl_xor_sync(0xffffffffu, i_best, offset, 16);
        if (precedes(s_other, i_other, s_best, i_best)) {
          s_best = s_other;
          i_best = i_other;
        }
      }
      // Later tiles hold higher indices: only a strictly smaller score replaces the running best.
      if (s_best < best[i]) {
        best[i] = s_best;
        best_index[i] = i_best;
      }
    }
  }

  if (tx == 0) {
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const int64_t row = row0 + ty * 4 + i;
      if (row < n) out_index[row] = best_index[i];
    }
  }
}

template <typename T>
cudaError_t launch_typed(const void* x, const void* codebook, const float* bias, const float* row_scale,
                         const float* code_scale, int64_t n, int64_t k, int64_t d, int64_t* out_index,
                         cudaStream_t stream) {
  const int64_t blocks = (n + kRows - 1) / kRows;
  nearest_code_kernel<T><<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(
      static_cast<const T*>(x), static_cast<const T*>(codebook), bias, row_scale, code_scale, n, k, d, out_index);
  return cudaGetLastError();
}

}  // namespace

cudaError_t launch_nearest_code(const void* x, const void* codebook, const float* bias, const float* row_scale,
                                const float* code_scale, CodeDtype dtype, int64_t n, int64_t k, int64_t d,
                                int64_t* out_index, cudaStream_t stream) {
  if (n <= 0) return cudaSuccess;
  switch (dtype) {
    case CodeDtype::kFloat32: return launch_typed<float>(x, codebook, bias, row_scale, code_scale, n, k, d, out_index, stream);
    case CodeDtype::kFloat16: return launch_typed<__half>(x, codebook, bias, row_scale, code_scale, n, k, d, out_index, stream);
    case CodeDtype::kBFloat16: return launch_typed<__nv_bfloat16>(x, codebook, bias, row_scale, code_scale, n, k, d, out_index, stream);
  }
  return cudaErrorInvalidValue;
}

}  // namespace mmtok
