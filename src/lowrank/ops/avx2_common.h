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

// exp(x) of 8 lanes: Cody–Waite reduction x = k ln2 + r, |r| ≤ ln2 / 2, a degree-5 minimax
// polynomial for e^r (the Cephes expf coefficients) and 2^k built in the exponent bits. x is
// clamped to ±88.376, so exp(−inf) = 0 exactly; relative error ≲ 2e-7 over the clamped range.
inline __m256 exp8(__m256 x) {
  const __m256 hi = _mm256_set1_ps(88.3762626647949f), lo = _mm256_set1_ps(-88.3762626647949f);
  x = _mm256_max_ps(_mm256_min_ps(x, hi), lo);
  // k = round(x / ln 2); r = x − k ln 2, with ln 2 split in a short high part (exact in k·C1)
  // and a low correction (Cody–Waite), so r keeps its low bits.
  const __m256 k = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                                   _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(k, _mm256_set1_ps(0.693359375f), x);
  r = _mm256_fnmadd_ps(k, _mm256_set1_ps(-2.12194440e-4f), r);
  // e^r ≈ 1 + r + r² · P(r), P of degree 5 (Cephes expf).
  __m256 p = _mm256_set1_ps(1.9875691500e-4f);
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
  const __m256 r2 = _mm256_mul_ps(r, r);
  const __m256 e = _mm256_add_ps(_mm256_fmadd_ps(p, r2, r), _mm256_set1_ps(1.0f));
  // 2^k: k + 127 in the exponent field (k ∈ [−127, 128] after the clamp; k = −127 gives 0).
  const __m256i bits = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(k), _mm256_set1_epi32(127)), 23);
  return _mm256_mul_ps(e, _mm256_castsi256_ps(bits));
}

}  // namespace lowrank::ops::detail::avx2
