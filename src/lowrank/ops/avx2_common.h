// Small AVX2 helpers shared by the hand-written kernels (ops/*_avx2.cpp). Include only from those
// translation units, inside their `#if defined(__AVX2__) && defined(__FMA__)` block.
#pragma once

#include <immintrin.h>

namespace lowrank::ops::detail::avx2 {

// The sum of the 8 lanes.
inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// The lane sums of four vectors as one 4-lane vector [Σv0, Σv1, Σv2, Σv3].
inline __m128 hsum4(__m256 v0, __m256 v1, __m256 v2, __m256 v3) {
  const __m256 s01 = _mm256_hadd_ps(v0, v1);  // v0 pairs, v1 pairs (per 128-bit half)
  const __m256 s23 = _mm256_hadd_ps(v2, v3);
  const __m256 s = _mm256_hadd_ps(s01, s23);  // per half: [v0, v1, v2, v3] partial sums
  return _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps(s, 1));
}

}  // namespace lowrank::ops::detail::avx2
