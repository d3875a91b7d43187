// AVX2 kernels of the W4A4 product (contract: w4a4_kernels.h; the product's body is
// w4a4_avx2_kernel.h). Compiled with -mavx2 -mfma -mf16c and without the precompiled header, so it
// includes no ATen header; w4a4_gemm.cpp calls it only when the CPU has AVX2 and FMA.
//
// vpmaddubsw multiplies its first operand as unsigned bytes and its second as signed bytes: the
// weight nibble u = q + 8 in [0, 15] goes first, the activation a in [−8, 7] second; adjacent pairs
// are summed to int16 (|u a + u' a'| ≤ 240, far from saturation) and vpmaddwd against ones widens
// them to int32.
//
// The activation quantiser computes x̂ = x · (1/λ), the group absmax, s = absmax / 7 and
// round(x̂ / s) with the same float32 operations as the portable one (a true division and
// round-half-to-even), so both give identical a, s and t; the fused down projection keeps one
// 8-lane accumulator per branch rank and sums its lanes at the end of the row.
#include <algorithm>
#include <vector>

#include "lowrank/ops/cpu_features.h"
#include "lowrank/ops/w4a4_kernels.h"

#if defined(__AVX2__) && defined(__FMA__)

#include "lowrank/ops/w4a4_avx2_kernel.h"

namespace lowrank::ops::detail {
namespace {

struct MaddubsDot {
  static __m256i step(__m256i d, __m256i lo, __m256i xa, __m256i hi, __m256i xb) {
    const __m256i p = _mm256_add_epi16(_mm256_maddubs_epi16(lo, xa), _mm256_maddubs_epi16(hi, xb));
    return _mm256_add_epi32(d, _mm256_madd_epi16(p, _mm256_set1_epi16(1)));
  }
};

}  // namespace

void w4a4_gemm_rows_avx2(const GroupQuantView& w, const Int4ActivationView& a, const float* bias,
                         int64_t out_begin, int64_t out_end, float* y) {
  w4a4::gemm_rows<MaddubsDot>(w, a, bias, out_begin, out_end, y);
}

void w4a4_quantize_rows_avx2(const float* x, int64_t in, int64_t group_size, const float* inv_smooth,
                             const float* lora_down, int64_t rank, int64_t row_begin, int64_t row_end,
                             int8_t* values, float* scales, int32_t* group_sums, float* h) {
  const int64_t groups = in / group_size;
  std::vector<float> xs(static_cast<size_t>(group_size));
  std::vector<float> hacc(static_cast<size_t>(std::max<int64_t>(rank, 1) * 8));
  const __m256 sign = _mm256_set1_ps(-0.0f);
  const __m256 lowest = _mm256_set1_ps(-8.0f), highest = _mm256_set1_ps(7.0f);
  for (int64_t m = row_begin; m < row_end; ++m) {
    const float* xrow = x + m * in;
    std::fill(hacc.begin(), hacc.end(), 0.0f);
    for (int64_t k = 0; k < groups; ++k) {
      const int64_t i0 = k * group_size;
      __m256 vmax = _mm256_setzero_ps();
      for (int64_t i = 0; i < group_size; i += 8) {
        __m256 v = _mm256_loadu_ps(xrow + i0 + i);
        if (inv_smooth != nullptr) v = _mm256_mul_ps(v, _mm256_loadu_ps(inv_smooth + i0 + i));
        _mm256_storeu_ps(xs.data() + i, v);
        vmax = _mm256_max_ps(vmax, _mm256_andnot_ps(sign, v));
      }
      __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(vmax), _mm256_extractf128_ps(vmax, 1));
      m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
      m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
      const float s = _mm_cvtss_f32(m4) / 7.0f;
      int8_t* a = values + m * in + i0;
      __m256i vsum = _mm256_setzero_si256();
      if (s > 0) {
        const __m256 vs = _mm256_set1_ps(s);
        for (int64_t i = 0; i < group_size; i += 8) {
          __m256 q = _mm256_round_ps(_mm256_div_ps(_mm256_loadu_ps(xs.data() + i), vs),
                                     _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
          q = _mm256_min_ps(_mm256_max_ps(q, lowest), highest);
          const __m256i qi = _mm256_cvtps_epi32(q);
          vsum = _mm256_add_epi32(vsum, qi);
          const __m128i p16 = _mm_packs_epi32(_mm256_castsi256_si128(qi), _mm256_extracti128_si256(qi, 1));
          _mm_storel_epi64(reinterpret_cast<__m128i*>(a + i), _mm_packs_epi16(p16, p16));
        }
      } else {
        std::fill(a, a + group_size, int8_t{0});
      }
      __m128i s4 = _mm_add_epi32(_mm256_castsi256_si128(vsum), _mm256_extracti128_si256(vsum, 1));
      s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0x4E));
      s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0xB1));
      scales[m * groups + k] = s;
      group_sums[m * groups + k] = _mm_cvtsi128_si32(s4);
      // The down projection reads the group while it is in L1 (the fusion).
      for (int64_t j = 0; j < rank; ++j) {
        const float* l = lora_down + j * in + i0;
        __m256 p = _mm256_loadu_ps(hacc.data() + j * 8);
        for (int64_t i = 0; i < group_size; i += 8)
          p = _mm256_fmadd_ps(_mm256_loadu_ps(xs.data() + i), _mm256_loadu_ps(l + i), p);
        _mm256_storeu_ps(hacc.data() + j * 8, p);
      }
    }
    if (h != nullptr)
      for (int64_t j = 0; j < rank; ++j) h[m * rank + j] = avx2::hsum(_mm256_loadu_ps(hacc.data() + j * 8));
  }
}

bool w4a4_avx2_compiled() {
  return cpu_has_avx2_fma();
}

}  // namespace lowrank::ops::detail

#else

namespace lowrank::ops::detail {
void w4a4_gemm_rows_avx2(const GroupQuantView&, const Int4ActivationView&, const float*, int64_t, int64_t,
                         float*) {}
void w4a4_quantize_rows_avx2(const float*, int64_t, int64_t, const float*, const float*, int64_t, int64_t,
                             int64_t, int8_t*, float*, int32_t*, float*) {}
bool w4a4_avx2_compiled() {
  return false;
}
}  // namespace lowrank::ops::detail

#endif
