// The AVX2 + FMA row of ops/shifted_exp (shifted_exp_kernels.h). Compiled with -mavx2 -mfma
// (src/lowrank/CMakeLists.txt) and picked at run time by shifted_exp.cpp.
#include "lowrank/ops/shifted_exp_kernels.h"

#if defined(__AVX2__) && defined(__FMA__)

#include <immintrin.h>

#include "lowrank/ops/avx2_common.h"

namespace lowrank::ops::detail {

float shifted_exp_row_avx2(float* x, int64_t m, float shift, float eps) {
  const __m256 s = _mm256_set1_ps(shift), e = _mm256_set1_ps(eps);
  __m256 acc = _mm256_setzero_ps();
  int64_t j = 0;
  for (; j + 8 <= m; j += 8) {
    const __m256 v = _mm256_add_ps(avx2::exp8(_mm256_sub_ps(_mm256_loadu_ps(x + j), s)), e);
    _mm256_storeu_ps(x + j, v);
    acc = _mm256_add_ps(acc, v);
  }
  if (j < m) {
    // The tail through the same polynomial (a masked load and store), so that a row's values do
    // not depend on where it ends.
    alignas(32) int32_t lanes[8];
    for (int i = 0; i < 8; ++i) lanes[i] = j + i < m ? -1 : 0;
    const __m256i mask = _mm256_load_si256(reinterpret_cast<const __m256i*>(lanes));
    const __m256 v =
        _mm256_and_ps(_mm256_add_ps(avx2::exp8(_mm256_sub_ps(_mm256_maskload_ps(x + j, mask), s)), e),
                      _mm256_castsi256_ps(mask));
    _mm256_maskstore_ps(x + j, mask, v);
    acc = _mm256_add_ps(acc, v);
  }
  return avx2::hsum(acc);
}

}  // namespace lowrank::ops::detail

#else  // no AVX2 in this build: shifted_exp_uses_avx2() is false, so this is never called.

#include <cmath>

namespace lowrank::ops::detail {

float shifted_exp_row_avx2(float* x, int64_t m, float shift, float eps) {
  float sum = 0;
  for (int64_t j = 0; j < m; ++j) sum += x[j] = std::exp(x[j] - shift) + eps;
  return sum;
}

}  // namespace lowrank::ops::detail

#endif
