// CPU kernel of the `mmtok::nearest_code` op (registered for the CPU dispatch key at the end of this file).
//
// Splits rows over threads (at::parallel_for, no reduction needed), packs each block of rows once
// (dtype conversion, finiteness check, -2 scaling, cosine normalisation), streams the packed codebook
// through the ISA-specific panel kernel in L2-sized chunks, and recomputes the distance to the chosen code
// directly so the returned value carries no cancellation error. Memory: O(N + K*D + threads * block).
// Rows whose magnitudes could overflow the fp32 expanded form are scored in float64 instead (the range guard, as
// mmtok/ops/magnitude.py describes it for the Python backends).
#include <torch/all.h>
#include <torch/library.h>

#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <string>
#include <vector>

#include "mmtok_ops.h"
#include "nearest_code_kernels.h"

namespace mmtok {
namespace {

constexpr int64_t kL2BudgetFloats = 64 * 1024;  // ~256 KB of packed codes or rows per chunk
constexpr float kNormEps = 1e-12f;               // as torch.nn.functional.normalize

// The three metrics (mmtok_ops.h) are one score, bias_k - 2 x'.c'_k, with x' and c' scaled (cosine) and
// bias_k = ||c_k||^2 (l2) or 0 (cosine, dot).

std::string& forced_isa() {
  static std::string isa = [] {
    const char* env = std::getenv("MMTOK_CPU_CAPABILITY");
    return std::string(env ? env : "");
  }();
  return isa;
}

bool cpu_has_avx512() {
#if defined(__x86_64__) && defined(__GNUC__)
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
         __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("fma");
#else
  return false;
#endif
}

bool cpu_has_avx2() {
#if defined(__x86_64__) && defined(__GNUC__)
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
  return false;
#endif
}

PanelKernel choose_kernel(int64_t dim) {
  const std::string& want = forced_isa();
#if defined(__x86_64__) && defined(__GNUC__)
  if ((want.empty() || want == "avx512") && cpu_has_avx512()) return panel_kernel_avx512(dim);
  if ((want.empty() || want == "avx512" || want == "avx2") && cpu_has_avx2()) return panel_kernel_avx2(dim);
#endif
  return panel_kernel_portable(dim);
}

template <typename T>
inline float to_float(T v) {
  return static_cast<float>(v);
}

template <typename T>
float row_scale(const T* row, int64_t dim, Metric metric) {
  if (metric != kCosine) return -2.0f;
  double sq = 0.0;
  for (int64_t d = 0; d < dim; ++d) {
    const double v = to_float(row[d]);
    sq += v * v;
  }
  return -2.0f / std::max(static_cast<float>(std::sqrt(sq)), kNormEps);
}

template <typename T>
void check_finite_row(const T* row, int64_t dim, const char* name, int64_t index) {
  for (int64_t d = 0; d < dim; ++d) {
    TORCH_CHECK_VALUE(std::isfinite(to_float(row[d])), "nearest_code: ", name,
                      " contains non-finite values (NaN or Inf), first at row ", index, ", column ", d);
  }
}

// Codebook -> groups of `nc` codes, dimension-major, plus per-code bias (||c||^2, 0 for cosine and dot, +inf padding).
template <typename T>
void pack_codebook(const T* cb, int64_t k, int64_t dim, Metric metric, int nc, float* packed, float* bias) {
  const int64_t groups = (k + nc - 1) / nc;
  at::parallel_for(0, groups, 16, [&](int64_t g0, int64_t g1) {
    for (int64_t g = g0; g < g1; ++g) {
      float* group = packed + g * dim * nc;
      for (int j = 0; j < nc; ++j) {
        const int64_t code = g * nc + j;
        if (code >= k) {
          for (int64_t d = 0; d < dim; ++d) group[d * nc + j] = 0.0f;
          bias[code] = std::numeric_limits<float>::infinity();
          continue;
        }
        const T* row = cb + code * dim;
        check_finite_row(row, dim, "codebook", code);
        double sq = 0.0;
        for (int64_t d = 0; d < dim; ++d) {
          const double v = to_float(row[d]);
          sq += v * v;
        }
        const float scale = metric == kCosine ? 1.0f / std::max(static_cast<float>(std::sqrt(sq)), kNormEps) : 1.0f;
        for (int64_t d = 0; d < dim; ++d) group[d * nc + j] = to_float(row[d]) * scale;
        bias[code] = metric == kL2 ? static_cast<float>(sq) : 0.0f;
      }
    }
  });
}

// Rows [r0, r0 + rows) of x -> panels of `p` rows, dimension-major, scaled by -2 (and 1/||x|| for cosine).
template <typename T>
void pack_rows(const T* x, int64_t r0, int64_t rows, int64_t dim, Metric metric, int p, int64_t panels, float* out) {
  for (int64_t lr = 0; lr < panels * p; ++lr) {
    float* dst = out + (lr / p) * dim * p + (lr % p);
    if (lr >= rows) {
      for (int64_t d = 0; d < dim; ++d) dst[d * p] = 0.0f;
      continue;
    }
    const T* row = x + (r0 + lr) * dim;
    check_finite_row(row, dim, "x", r0 + lr);
    const float scale = row_scale(row, dim, metric);
    for (int64_t d = 0; d < dim; ++d) dst[d * p] = to_float(row[d]) * scale;
  }
}

// Distance of one row to its chosen code, computed directly: ||x - c||^2, 1 - cos(x, c), or -x.c.
template <typename TX, typename TC>
float exact_distance(const TX* xr, const TC* cr, int64_t dim, Metric metric) {
  if (metric == kL2) {
    float acc = 0.0f;
    for (int64_t d = 0; d < dim; ++d) {
      const float diff = to_float(xr[d]) - to_float(cr[d]);
      acc += diff * diff;
    }
    return acc;
  }
  double dot = 0.0, xx = 0.0, cc = 0.0;
  for (int64_t d = 0; d < dim; ++d) {
    const double a = to_float(xr[d]), b = to_float(cr[d]);
    dot += a * b;
    xx += a * a;
    cc += b * b;
  }
  if (metric == kDot) return static_cast<float>(-dot);
  const double denom = std::max(std::sqrt(xx), double(kNormEps)) * std::max(std::sqrt(cc), double(kNormEps));
  return static_cast<float>(1.0 - dot / denom);
}

template <typename TX, typename TC>
void run(const at::Tensor& x, const at::Tensor& codebook, Metric metric, at::Tensor& indices, at::Tensor& distances) {
  const int64_t n = x.size(0), dim = x.size(1), k = codebook.size(0);
  const TX* xp = x.data_ptr<TX>();
  const TC* cp = codebook.data_ptr<TC>();
  const PanelKernel kernel = choose_kernel(dim);
  const int p = kernel.rows_per_panel, nc = kernel.codes_per_group;
  const int64_t groups = (k + nc - 1) / nc;

  std::vector<float> packed(static_cast<size_t>(groups * dim * nc)), bias(static_cast<size_t>(groups * nc));
  pack_codebook(cp, k, dim, metric, nc, packed.data(), bias.data());

  const int64_t group_chunk = std::max<int64_t>(1, kL2BudgetFloats / (dim * nc));
  const int64_t threads = std::max<int64_t>(1, at::get_num_threads());
  auto round_up = [](int64_t v, int64_t m) { return (v + m - 1) / m * m; };
  int64_t block = std::min<int64_t>(std::max<int64_t>(round_up(kL2BudgetFloats / dim, p), p), 1024);
  block = std::max<int64_t>(p, std::min(block, round_up((n + threads - 1) / threads, p)));
  const int64_t blocks = (n + block - 1) / block;

  int64_t* out_index = indices.data_ptr<int64_t>();
  float* out_dist = distances.data_ptr<float>();
  at::parallel_for(0, blocks, 1, [&](int64_t b0, int64_t b1) {
    const int64_t panels_max = block / p;
    std::vector<float> panels(static_cast<size_t>(panels_max * dim * p));
    std::vector<float> best(static_cast<size_t>(block));
    std::vector<int32_t> best_index(static_cast<size_t>(block));
    for (int64_t b = b0; b < b1; ++b) {
      const int64_t r0 = b * block, rows = std::min(block, n - r0), panel_count = (rows + p - 1) / p;
      pack_rows(xp, r0, rows, dim, metric, p, panel_count, panels.data());
      std::fill(best.begin(), best.end(), std::numeric_limits<float>::infinity());
      std::fill(best_index.begin(), best_index.end(), 0);
      for (int64_t g0 = 0; g0 < groups; g0 += group_chunk) {
        const int64_t g1 = std::min(groups, g0 + group_chunk);
        for (int64_t q = 0; q < panel_count; ++q) {
          kernel.run(PanelArgs{panels.data() + q * dim * p, packed.data(), bias.data(), g0, g1, dim,
                               best.data() + q * p, best_index.data() + q * p});
        }
      }
      for (int64_t r = 0; r < rows; ++r) {
        const int64_t code = best_index[r];
        out_index[r0 + r] = code;
        out_dist[r0 + r] = exact_distance(xp + (r0 + r) * dim, cp + code * dim, dim, metric);
      }
    }
  });
}

template <typename TX>
void run_for_codebook_type(const at::Tensor& x, const at::Tensor& cb, Metric metric, at::Tensor& idx, at::Tensor& dist) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, cb.scalar_type(), "nearest_code_cpu_codebook",
                                  [&] { run<TX, scalar_t>(x, cb, metric, idx, dist); });
}

// The range guard. Every value is bounded by max|x_i| (per row) and max|c| (over the codebook):
// |x.c| <= D max|x| max|c| and ||c||^2 <= D max|c|^2 (for cosine the norm itself, D max|x|^2, is the risk).
constexpr double kSafeFloat = 0x1p126;   // fp32's max is just under 2^128: a factor of 4 left for rounding
constexpr double kSafeDouble = 0x1p1020;

double risk_bound(double row_max, double code_max, int64_t dim, Metric metric) {
  if (metric == kCosine) return dim * std::max(row_max * row_max, code_max * code_max);
  if (metric == kDot) return 2.0 * dim * row_max * code_max;
  return dim * (2.0 * row_max * code_max + code_max * code_max);
}

double abs_max(const at::Tensor& t) {  // NaN when t holds a NaN (then the kernel reports it, with its position)
  const auto [lo, hi] = at::aminmax(t);
  const double l = lo.item<double>(), h = hi.item<double>();
  return std::isnan(l) || std::isnan(h) ? std::numeric_limits<double>::quiet_NaN() : std::max(-l, h);
}

const char* metric_name(Metric metric) { return metric == kL2 ? "l2" : metric == kCosine ? "cosine" : "dot"; }

// The torch reference (mmtok/ops/reference.py) in float64, for the rows at risk: prepare, score in chunks, argmin
// (first minimum on ties), then the distance to the chosen code computed directly, returned in fp32.
std::tuple<at::Tensor, at::Tensor> reference_double(const at::Tensor& x_in, const at::Tensor& cb_in, Metric metric) {
  at::Tensor x = x_in.to(at::kDouble), cb = cb_in.to(at::kDouble);
  if (metric == kCosine) {
    x = x / x.norm(2, {1}, true).clamp_min(kNormEps);
    cb = cb / cb.norm(2, {1}, true).clamp_min(kNormEps);
  }
  const int64_t n = x.size(0), k = cb.size(0);
  const at::Tensor bias = metric == kL2 ? cb.square().sum(-1) : at::zeros({k}, cb.options());
  at::Tensor indices = at::empty({n}, x.options().dtype(at::kLong));
  const int64_t rows = std::max<int64_t>(1, (int64_t(1) << 22) / k);
  for (int64_t start = 0; start < n; start += rows) {
    const int64_t stop = std::min(n, start + rows);
    indices.slice(0, start, stop).copy_(at::addmm(bias, x.slice(0, start, stop), cb.t(), 1, -2).argmin(1));
  }
  const at::Tensor chosen = cb.index_select(0, indices);
  const at::Tensor dist = metric == kCosine ? 1.0 - (x * chosen).sum(-1)
                          : metric == kDot  ? -(x * chosen).sum(-1)
                                            : (x - chosen).square().sum(-1);
  return {indices, dist.to(at::kFloat)};
}

void run_kernel(const at::Tensor& x, const at::Tensor& codebook, Metric metric, at::Tensor& indices, at::Tensor& distances) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "nearest_code_cpu",
                                  [&] { run_for_codebook_type<scalar_t>(x, codebook, metric, indices, distances); });
}

}  // namespace

Metric parse_metric(std::string_view metric) {
  if (metric == "l2") return kL2;
  if (metric == "cosine") return kCosine;
  if (metric == "dot") return kDot;
  TORCH_CHECK_VALUE(false, "nearest_code: metric must be one of ('l2', 'cosine', 'dot'), got '", std::string(metric), "'");
}

std::tuple<at::Tensor, at::Tensor> nearest_code_cpu(const at::Tensor& x_in, const at::Tensor& codebook_in,
                                                    std::string_view metric_name_in) {
  const Metric metric = parse_metric(metric_name_in);
  TORCH_CHECK_VALUE(x_in.dim() == 2, "nearest_code_cpu: x must be (N, D), got rank ", x_in.dim());
  TORCH_CHECK_VALUE(codebook_in.dim() == 2, "nearest_code_cpu: codebook must be (K, D), got rank ", codebook_in.dim());
  TORCH_CHECK_VALUE(x_in.size(1) == codebook_in.size(1), "nearest_code_cpu: x has D = ", x_in.size(1),
                    " but codebook has D = ", codebook_in.size(1));
  TORCH_CHECK_VALUE(codebook_in.size(0) > 0 && codebook_in.size(1) > 0, "nearest_code_cpu: codebook is empty");
  TORCH_CHECK_VALUE(x_in.device().is_cpu() && codebook_in.device().is_cpu(), "nearest_code_cpu: tensors must be on CPU");
  TORCH_CHECK_VALUE(codebook_in.size(0) <= std::numeric_limits<int32_t>::max(), "nearest_code_cpu: K must fit in int32");
  const at::Tensor x = x_in.contiguous();
  const at::Tensor codebook = codebook_in.contiguous();
  at::Tensor indices = at::empty({x.size(0)}, x.options().dtype(at::kLong));
  at::Tensor distances = at::empty({x.size(0)}, x.options().dtype(at::kFloat));
  if (x.size(0) == 0) return {distances, indices};

  const int64_t dim = x.size(1);
  const double x_max = abs_max(x), code_max = abs_max(codebook);
  if (!std::isfinite(x_max) || !std::isfinite(code_max) || risk_bound(x_max, code_max, dim, metric) <= kSafeFloat) {
    run_kernel(x, codebook, metric, indices, distances);  // the common case (and non-finite input, refused there)
    return {distances, indices};
  }
  const at::Tensor row_max = at::linalg_vector_norm(x, INFINITY, {1}).to(at::kDouble).contiguous();  // max |x_i|
  const double* rm = row_max.data_ptr<double>();
  std::vector<int64_t> safe_rows, risky_rows;
  double worst = 0.0;
  for (int64_t r = 0; r < x.size(0); ++r) {
    const double bound = risk_bound(rm[r], code_max, dim, metric);
    worst = std::max(worst, bound);
    (bound > kSafeFloat ? risky_rows : safe_rows).push_back(r);
  }
  if (worst > kSafeDouble) {
    char message[256];
    std::snprintf(message, sizeof(message),
                  "nearest_code: x values up to %.3g and codebook values up to %.3g (D = %lld, metric '%s') overflow "
                  "even a float64 distance computation; rescale the inputs",
                  row_max.max().item<double>(), code_max, static_cast<long long>(dim), metric_name(metric));
    TORCH_CHECK_VALUE(false, message);
  }
  if (!safe_rows.empty()) {
    const at::Tensor rows = at::tensor(safe_rows, x.options().dtype(at::kLong));
    const at::Tensor part = x.index_select(0, rows);
    at::Tensor part_indices = at::empty({part.size(0)}, indices.options());
    at::Tensor part_distances = at::empty({part.size(0)}, distances.options());
    run_kernel(part, codebook, metric, part_indices, part_distances);
    indices.index_copy_(0, rows, part_indices);
    distances.index_copy_(0, rows, part_distances);
  }
  const at::Tensor rows = at::tensor(risky_rows, x.options().dtype(at::kLong));
  const auto [ref_indices, ref_distances] = reference_double(x.index_select(0, rows), codebook, metric);
  indices.index_copy_(0, rows, ref_indices);
  distances.index_copy_(0, rows, ref_distances);
  return {distances, indices};
}

std::string cpu_capability() { return choose_kernel(0).isa; }

void set_cpu_capability(std::string_view isa) {
  TORCH_CHECK_VALUE(isa.empty() || isa == "avx512" || isa == "avx2" || isa == "portable",
                    "set_cpu_capability: expected '', 'avx512', 'avx2' or 'portable', got '", std::string(isa), "'");
  forced_isa() = std::string(isa);
}

}  // namespace mmtok

TORCH_LIBRARY_IMPL(mmtok, CPU, m) { m.impl("nearest_code", &mmtok::nearest_code_cpu); }
