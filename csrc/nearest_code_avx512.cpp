// AVX-512 instantiation of the panel kernel (16 floats per vector, 32 rows x 6 codes per tile).
#include "nearest_code_kernels.h"

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#endif

#if defined(__x86_64__) && defined(__GNUC__)
#pragma GCC push_options
#pragma GCC target("avx512f,avx512vl,avx512dq,avx512bw,avx2,fma")
#define MMTOK_ISA avx512
#define MMTOK_ISA_NAME "avx512"
#define MMTOK_KERNEL_GETTER panel_kernel_avx512
#define MMTOK_WIDTH 16
#define MMTOK_ANY_SET(m) (_mm512_test_epi32_mask((__m512i)(m), (__m512i)(m)) != 0)
#define MMTOK_ROWS 2
#define MMTOK_CODES 6
#define MMTOK_ROWS_LARGE_D 1
#define MMTOK_CODES_LARGE_D 12
#include "nearest_code_panel.inc"
#pragma GCC pop_options
#endif
