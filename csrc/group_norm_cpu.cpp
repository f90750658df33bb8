// GroupNorm (+ optional swish) for channels-last float32 CPU tensors, in two passes over memory.
//
// PyTorch's channels-last GroupNorm CPU kernel accumulates its statistics naively (errors near 1e-4 on large
// activations) and the accurate fallback in Python costs five passes. Here the per-channel sums of x and x^2 are
// accumulated in double over fixed blocks of rows (in parallel, combined in a fixed order: deterministic), the
// group statistics derived in double, and the normalisation y = x * scale + shift (and swish y / (1 + exp(-y)))
// written in one further pass. Layout: x is (N, C, H, W) with channels-last strides, i.e. rows of C values.
#include <torch/all.h>
#include <torch/library.h>

#include <ATen/Parallel.h>

#include <cmath>
#include <cstring>
#include <vector>

#include "mmtok_ops.h"

namespace mmtok {
namespace {

constexpr int64_t kRowsPerBlock = 512;

// exp(x) for float: x = n ln2 + r (|r| <= ln2 / 2, Cody-Waite split of ln2), exp(r) by its degree-7 Taylor
// polynomial (truncation error < 2^-27 relative), times 2^n through the exponent bits. Inputs are clamped to
// [-87.3, 88]: below, the result is 2^-126 instead of a denormal or 0 (swish then gives y * 0 + ... = ~0 anyway).
// Plain arithmetic (rounding by the 1.5 * 2^23 trick), so the loops below vectorise.
inline float exp_f(float x) {
  x = x < -87.33654f ? -87.33654f : (x > 88.0f ? 88.0f : x);
  const float n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
  float r = x - n * 0.693359375f;
  r = r + n * 2.12194440e-4f;
  float p = 1.98412698e-4f;  // 1/7!
  p = p * r + 1.38888889e-3f;
  p = p * r + 8.33333333e-3f;
  p = p * r + 4.16666667e-2f;
  p = p * r + 1.66666667e-1f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
  return p * __builtin_bit_cast(float, bits);
}

// per-channel sums of x and x^2 over rows [r0, r1) of a (rows, C) block, in double
__attribute__((target_clones("avx512f", "avx2,fma", "default")))
void accumulate(const float* xs, int64_t r0, int64_t r1, int64_t channels, double* s, double* q) {
  for (int64_t c = 0; c < channels; ++c) s[c] = q[c] = 0.0;
  for (int64_t r = r0; r < r1; ++r) {
    const float* row = xs + r * channels;
#pragma omp simd
    for (int64_t c = 0; c < channels; ++c) {
      const double v = row[c];
      s[c] += v;
      q[c] += v * v;
    }
  }
}

// y = x * scale + shift per channel (then swish y / (1 + exp(-y))) for rows [r0, r1)
__attribute__((target_clones("avx512f", "avx2,fma", "default")))
void normalise(const float* xs, float* ys, int64_t r0, int64_t r1, int64_t channels, const float* sc,
               const float* sh, bool swish) {
  for (int64_t r = r0; r < r1; ++r) {
    const float* row = xs + r * channels;
    float* o = ys + r * channels;
    if (swish) {
#pragma omp simd
      for (int64_t c = 0; c < channels; ++c) {
        const float y = row[c] * sc[c] + sh[c];
        o[c] = y / (1.0f + exp_f(-y));
      }
    } else {
#pragma omp simd
      for (int64_t c = 0; c < channels; ++c) o[c] = row[c] * sc[c] + sh[c];
    }
  }
}

}  // namespace

at::Tensor group_norm_cl(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias, int64_t groups,
                         double eps, bool swish) {
  TORCH_CHECK(x.device().is_cpu() && x.scalar_type() == at::kFloat && x.dim() == 4,
              "group_norm_cl: x must be a 4-d float32 CPU tensor");
  TORCH_CHECK(x.is_contiguous(at::MemoryFormat::ChannelsLast), "group_norm_cl: x must be channels-last contiguous");
  const int64_t n_batch = x.size(0), channels = x.size(1), rows = x.size(2) * x.size(3);
  TORCH_CHECK(groups > 0 && channels % groups == 0, "group_norm_cl: channels must be divisible by groups");
  TORCH_CHECK(weight.numel() == channels && bias.numel() == channels, "group_norm_cl: weight/bias size != channels");
  const at::Tensor w = weight.to(at::kFloat).contiguous(), b = bias.to(at::kFloat).contiguous();
  at::Tensor out = at::empty_like(x, x.options(), at::MemoryFormat::ChannelsLast);
  const float* src = x.data_ptr<float>();
  float* dst = out.data_ptr<float>();
  const float* wp = w.data_ptr<float>();
  const float* bp = b.data_ptr<float>();
  const int64_t blocks = (rows + kRowsPerBlock - 1) / kRowsPerBlock;
  const int64_t per_group = channels / groups;
  std::vector<double> partial(static_cast<size_t>(blocks * 2 * channels));
  std::vector<float> scale(channels), shift(channels);
  for (int64_t n = 0; n < n_batch; ++n) {
    const float* xs = src + n * rows * channels;
    float* ys = dst + n * rows * channels;
    at::parallel_for(0, blocks, 1, [&](int64_t b0, int64_t b1) {
      for (int64_t blk = b0; blk < b1; ++blk) {
        double* s = partial.data() + blk * 2 * channels;
        accumulate(xs, blk * kRowsPerBlock, std::min(rows, (blk + 1) * kRowsPerBlock), channels, s, s + channels);
      }
    });
    const double count = static_cast<double>(rows * per_group);
    for (int64_t g = 0; g < groups; ++g) {
      double sum = 0.0, squares = 0.0;
      for (int64_t blk = 0; blk < blocks; ++blk) {
        const double* s = partial.data() + blk * 2 * channels;
        for (int64_t c = g * per_group; c < (g + 1) * per_group; ++c) {
          sum += s[c];
          squares += s[channels + c];
        }
      }
      const double mean = sum / count;
      const double var = std::max(squares / count - mean * mean, 0.0);
      const double rstd = 1.0 / std::sqrt(var + eps);
      for (int64_t c = g * per_group; c < (g + 1) * per_group; ++c) {
        const double sc = rstd * wp[c];
        scale[c] = static_cast<float>(sc);
        shift[c] = static_cast<float>(bp[c] - mean * sc);
      }
    }
    const float* sc = scale.data();
    const float* sh = shift.data();
    at::parallel_for(0, rows, 256, [&](int64_t r0, int64_t r1) { normalise(xs, ys, r0, r1, channels, sc, sh, swish); });
  }
  return out;
}

}  // namespace mmtok

// The schema is in extension.cpp.
TORCH_LIBRARY_IMPL(mmtok, CPU, m) { m.impl("group_norm_cl", &mmtok::group_norm_cl); }
