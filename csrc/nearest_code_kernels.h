// Interface between the ISA-specific panel kernels and the CPU driver.
//
// The driver packs a block of x rows into panels of `rows_per_panel` rows, stored dimension-major
// (panel[d * rows_per_panel + r] = -2 * x[r][d], so the kernel accumulates ||c||^2 - 2 x.c with FMAs),
// and the codebook into groups of `codes_per_group` codes, also dimension-major
// (group[d * codes_per_group + j] = c[g * codes_per_group + j][d]), with one bias (||c||^2, or 0 for cosine,
// +inf for padding) per code. A panel kernel scans a range of groups and updates, per row, the running minimum
// score and its code index. Codes are visited in ascending order and only a strictly smaller score replaces the
// current best, so exact ties keep the lowest index.
#pragma once

#include <cstdint>

namespace mmtok {

struct PanelArgs {
  const float* x_panel;    // dim * rows_per_panel floats
  const float* codes;      // packed codebook (all groups)
  const float* bias;       // one per padded code
  int64_t group_begin;     // first group to scan
  int64_t group_end;       // one past the last group
  int64_t dim;
  float* best;             // rows_per_panel running minimum scores
  int32_t* best_index;     // rows_per_panel running argmins
};

using PanelFn = void (*)(const PanelArgs&);

struct PanelKernel {
  const char* isa;         // "avx512", "avx2" or "portable"
  int rows_per_panel;
  int codes_per_group;
  PanelFn run;
};

// Each returns the kernel for `dim` (a fixed-size instantiation for 8, 16 and 32, a generic one otherwise).
PanelKernel panel_kernel_portable(int64_t dim);
#if defined(__x86_64__) && defined(__GNUC__)
PanelKernel panel_kernel_avx2(int64_t dim);
PanelKernel panel_kernel_avx512(int64_t dim);
#endif

}  // namespace mmtok
