// Torch binding of the CUDA nearest-code kernel (built only when torch has CUDA): validation,
// cosine normalisation and code norms with torch ops, the fused kernel on the current stream, and the
// distance to the chosen code recomputed directly (as the CPU path does).
#include <torch/extension.h>

#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>

#include "nearest_code_kernel.cuh"

namespace mmtok {

// metric: 0 l2, 1 cosine, 2 dot (maximum inner product: bias 0, no scales; the distance is -x.c).
std::tuple<at::Tensor, at::Tensor> nearest_code_cuda(const at::Tensor& x_in, const at::Tensor& codebook_in, int64_t metric) {
  TORCH_CHECK_VALUE(metric >= 0 && metric <= 2, "nearest_code_cuda: metric must be 0 (l2), 1 (cosine) or 2 (dot), got ", metric);
  const bool cosine = metric == 1, dot = metric == 2;
  TORCH_CHECK_VALUE(x_in.dim() == 2 && codebook_in.dim() == 2, "nearest_code_cuda: expected x (N, D) and codebook (K, D)");
  TORCH_CHECK_VALUE(x_in.size(1) == codebook_in.size(1), "nearest_code_cuda: x has D = ", x_in.size(1),
                    " but codebook has D = ", codebook_in.size(1));
  TORCH_CHECK_VALUE(codebook_in.size(0) > 0, "nearest_code_cuda: codebook is empty");
  TORCH_CHECK_VALUE(x_in.is_cuda() && codebook_in.is_cuda(), "nearest_code_cuda: tensors must be on a CUDA device");
  const c10::cuda::CUDAGuard guard(x_in.device());
  TORCH_CHECK_VALUE(at::isfinite(x_in).all().item<bool>(), "nearest_code: x contains non-finite values (NaN or Inf)");
  TORCH_CHECK_VALUE(at::isfinite(codebook_in).all().item<bool>(), "nearest_code: codebook contains non-finite values (NaN or Inf)");

  at::ScalarType dtype = x_in.scalar_type();
  if (dtype != codebook_in.scalar_type() || dtype == at::kDouble) dtype = at::kFloat;
  at::Tensor x = x_in.to(dtype), codebook = codebook_in.to(dtype);
  x = x.contiguous();
  codebook = codebook.contiguous();
  at::Tensor bias, row_scale, code_scale;
  if (cosine) {
    row_scale = x.to(at::kFloat).norm(2, {1}).clamp_min(1e-12).reciprocal();
    code_scale = codebook.to(at::kFloat).norm(2, {1}).clamp_min(1e-12).reciprocal();
    bias = at::zeros({codebook.size(0)}, x.options().dtype(at::kFloat));
  } else if (dot) {
    bias = at::zeros({codebook.size(0)}, x.options().dtype(at::kFloat));
  } else {
    bias = codebook.to(at::kFloat).square().sum(1);
  }
  const CodeDtype code_dtype = dtype == at::kHalf ? CodeDtype::kFloat16
                               : dtype == at::kBFloat16 ? CodeDtype::kBFloat16 : CodeDtype::kFloat32;
  at::Tensor indices = at::empty({x.size(0)}, x.options().dtype(at::kLong));
  const cudaError_t err = launch_nearest_code(x.data_ptr(), codebook.data_ptr(), bias.data_ptr<float>(),
                                              cosine ? row_scale.data_ptr<float>() : nullptr,
                                              cosine ? code_scale.data_ptr<float>() : nullptr, code_dtype,
                                              x.size(0), codebook.size(0), x.size(1), indices.data_ptr<int64_t>(),
                                              at::cuda::getCurrentCUDAStream());
  TORCH_CHECK(err == cudaSuccess, "nearest_code_cuda: kernel launch failed: ", cudaGetErrorString(err));

  const at::Tensor chosen = codebook.to(at::kFloat).index_select(0, indices);
  at::Tensor distances =
      cosine ? 1.0 - (x.to(at::kFloat) * chosen).sum(1) * row_scale * code_scale.index_select(0, indices)
      : dot  ? -(x.to(at::kFloat) * chosen).sum(1)
             : (x.to(at::kFloat) - chosen).square().sum(1);
  return {indices, distances};
}

}  // namespace mmtok

TORCH_LIBRARY_IMPL(mmtok_C, CUDA, m) { m.impl("nearest_code_cuda", &mmtok::nearest_code_cuda); }
