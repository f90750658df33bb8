// Portable instantiation of the panel kernel: 128-bit vectors (SSE2 on x86-64, NEON on arm64, scalar
// code elsewhere), 8 rows x 3 codes per tile. Always built; the fallback when no wider ISA is present.
#include "nearest_code_kernels.h"

#define MMTOK_ISA portable
#define MMTOK_ISA_NAME "portable"
#define MMTOK_KERNEL_GETTER panel_kernel_portable
#define MMTOK_WIDTH 4
#define MMTOK_ROWS 2
#define MMTOK_CODES 3
#define MMTOK_ROWS_LARGE_D 2
#define MMTOK_CODES_LARGE_D 3
#include "nearest_code_panel.inc"
