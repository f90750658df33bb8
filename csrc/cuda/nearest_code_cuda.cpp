// CUDA kernel of the `mmtok::nearest_code` op (registered for the CUDA dispatch key at the end of this file; built
// only when torch has CUDA): validation, cosine normalisation and code norms with torch ops, the fused kernel on the
// current stream, the distance to the chosen code recomputed directly (as the CPU path does), then the range guard
// kernel: the finiteness check and the float64 re-scoring of rows at risk of fp32 overflow. Nothing here waits for
// the device (no host synchronisation): a non-finite input is reported by a device-side assertion
// (nearest_code_guard.cuh), not by a ValueError as on the CPU.
#include <torch/all.h>
#include <torch/library.h>

#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>

#include <cmath>

#include "../mmtok_ops.h"
#include "nearest_code_guard.cuh"
#include "nearest_code_kernel.cuh"

namespace mmtok {
namespace {

ValueDtype value_dtype(at::ScalarType t) {
  switch (t) {
    case at::kHalf: return ValueDtype::kFloat16;
    case at::kBFloat16: return ValueDtype::kBFloat16;
    case at::kDouble: return ValueDtype::kFloat64;
    case at::kFloat: return ValueDtype::kFloat32;
    default: TORCH_CHECK_VALUE(false, "nearest_code_cuda: x and codebook must be fp32, fp16, bf16 or fp64, got ", t);
  }
  return ValueDtype::kFloat32;  // not reached
}

}  // namespace

std::tuple<at::Tensor, at::Tensor> nearest_code_cuda(const at::Tensor& x_in, const at::Tensor& codebook_in,
                                                     std::string_view metric_name) {
  const Metric metric = parse_metric(metric_name);
  const bool cosine = metric == kCosine, dot = metric == kDot;
  TORCH_CHECK_VALUE(x_in.dim() == 2 && codebook_in.dim() == 2, "nearest_code_cuda: expected x (N, D) and codebook (K, D)");
  TORCH_CHECK_VALUE(x_in.size(1) == codebook_in.size(1), "nearest_code_cuda: x has D = ", x_in.size(1),
                    " but codebook has D = ", codebook_in.size(1));
  TORCH_CHECK_VALUE(codebook_in.size(0) > 0, "nearest_code_cuda: codebook is empty");
  TORCH_CHECK_VALUE(x_in.is_cuda() && codebook_in.is_cuda(), "nearest_code_cuda: tensors must be on a CUDA device");
  const c10::cuda::CUDAGuard guard(x_in.device());
  const ValueDtype x_value_dtype = value_dtype(x_in.scalar_type()), code_value_dtype = value_dtype(codebook_in.scalar_type());

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
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  cudaError_t err = launch_nearest_code(x.data_ptr(), codebook.data_ptr(), bias.data_ptr<float>(),
                                        cosine ? row_scale.data_ptr<float>() : nullptr,
                                        cosine ? code_scale.data_ptr<float>() : nullptr, code_dtype,
                                        x.size(0), codebook.size(0), x.size(1), indices.data_ptr<int64_t>(), stream);
  TORCH_CHECK(err == cudaSuccess, "nearest_code_cuda: kernel launch failed: ", cudaGetErrorString(err));

  const at::Tensor chosen = codebook.to(at::kFloat).index_select(0, indices);
  at::Tensor distances =
      cosine ? 1.0 - (x.to(at::kFloat) * chosen).sum(1) * row_scale * code_scale.index_select(0, indices)
      : dot  ? -(x.to(at::kFloat) * chosen).sum(1)
             : (x.to(at::kFloat) - chosen).square().sum(1);
  distances = distances.contiguous();
  if (x.size(0) == 0) return {distances, indices};

  // The range guard and finiteness check, on the device: max|x_i| per row and max|c| (NaN / Inf propagate).
  const at::Tensor x_orig = x_in.contiguous(), code_orig = codebook_in.contiguous();
  const at::Tensor row_max = at::linalg_vector_norm(x_orig, INFINITY, at::IntArrayRef{1}, false, at::kDouble).contiguous();
  const at::Tensor code_max = at::linalg_vector_norm(code_orig, INFINITY, c10::nullopt, false, at::kDouble);
  err = launch_nearest_code_guard(x_orig.data_ptr(), x_value_dtype, code_orig.data_ptr(), code_value_dtype,
                                  row_max.data_ptr<double>(), code_max.data_ptr<double>(), x.size(0),
                                  codebook.size(0), x.size(1), static_cast<int>(metric), indices.data_ptr<int64_t>(),
                                  distances.data_ptr<float>(), stream);
  TORCH_CHECK(err == cudaSuccess, "nearest_code_cuda: guard launch failed: ", cudaGetErrorString(err));
  return {distances, indices};
}

}  // namespace mmtok

TORCH_LIBRARY_IMPL(mmtok, CUDA, m) { m.impl("nearest_code", &mmtok::nearest_code_cuda); }
