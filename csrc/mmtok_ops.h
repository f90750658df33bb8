// The C++ functions behind the `mmtok::` operators (schemas in extension.cpp, kernels registered per dispatch key
// next to each implementation: nearest_code_cpu.cpp, group_norm_cpu.cpp, cuda/nearest_code_cuda.cpp).
#pragma once

#include <ATen/core/Tensor.h>

#include <string>
#include <string_view>
#include <tuple>

namespace mmtok {

// The metric, as the op's `str metric` argument: argmin of ||x - c||^2 ("l2"), of 1 - cos(x, c) ("cosine"), or of
// -x.c ("dot", maximum inner product).
enum Metric : int64_t { kL2 = 0, kCosine = 1, kDot = 2 };
Metric parse_metric(std::string_view metric);  // ValueError naming the value when it is none of the three

// x (N, D), codebook (K, D) -> (distances fp32 (N,), indices int64 (N,)); the differentiable output first.
std::tuple<at::Tensor, at::Tensor> nearest_code_cpu(const at::Tensor& x, const at::Tensor& codebook, std::string_view metric);

// The CPU kernel's instruction set: the one in use, and forcing one ("" = the best the CPU has).
std::string cpu_capability();
void set_cpu_capability(std::string_view isa);

at::Tensor group_norm_cl(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias, int64_t groups,
                         double eps, bool swish);

}  // namespace mmtok
