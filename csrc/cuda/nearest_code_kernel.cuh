// Launch interface of the CUDA nearest-code kernel. Includes only CUDA headers, so the kernel file
// compiles with nvcc on machines whose torch has no CUDA; the torch binding lives in nearest_code_cuda.cpp.
#pragma once

#include <cstdint>
#include <cuda_runtime.h>

namespace mmtok {

enum class CodeDtype : int { kFloat32 = 0, kFloat16 = 1, kBFloat16 = 2 };

// For each of the n rows of x (n x d, row-major, contiguous), writes the index of the code (k x d, same dtype)
// minimising bias[code] - 2 * <x_row, code> * row_scale[row] * code_scale[code] (L2: bias = ||code||^2 and no
// scales (nullptr); cosine: bias 0 and the inverse norms as scales, so inputs are never re-rounded).
// Accumulates in fp32; exact ties go to the lowest index. Never materialises the n x k scores.
cudaError_t launch_nearest_code(const void* x, const void* codebook, const float* bias, const float* row_scale,
                                const float* code_scale, CodeDtype dtype,
                                int64_t n, int64_t k, int64_t d, int64_t* out_index, cudaStream_t stream);

}  // namespace mmtok
