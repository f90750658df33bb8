// AVX2 + FMA instantiation of the panel kernel (8 floats per vector, 16 rows x 3 codes per tile).
#include "nearest_code_kernels.h"

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#endif

#if defined(__x86_64__) && defined(__GNUC__)
#pragma GCC push_options
#pragma GCC target("avx2,fma")
#define MMTOK_ISA avx2
#define MMTOK_ISA_NAME "avx2"
#define MMTOK_KERNEL_GETTER panel_kernel_avx2
#define MMTOK_WIDTH 8
#define MMTOK_ANY_SET(m) (!_mm256_testz_si256((__m256i)(m), (__m256i)(m)))
#define MMTOK_ROWS 2
#define MMTOK_CODES 3
#define MMTOK_ROWS_LARGE_D 2
#define MMTOK_CODES_LARGE_D 3
#include "nearest_code_panel.inc"
#pragma GCC pop_options
#endif
