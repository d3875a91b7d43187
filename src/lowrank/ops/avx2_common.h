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

}  // namespace lowrank::ops::detail::avx2
