// AVX2 + FMA kernel of ops/lora_gather (the twin of lora_gather_cpu.cpp, same contract; see
// lora_gather.h). Compiled with -mavx2 -mfma and without the precompiled header; lora_gather.cpp
// calls it only when the CPU has AVX2 and FMA.
//
// Both products are dot products along contiguous rows: h_j = s·⟨A_j, x⟩ (length in, four 8-lane
// accumulators to hide the FMA latency) and y_o += ⟨B_o, h⟩ (length rank, 8..64 in practice: one or
// two accumulators). Four rows of A (or of B) are done together so that each load of x (or h)
// serves four FMAs, and their four horizontal sums are one transpose-and-add.
#include "lowrank/ops/lora_gather.h"

#if defined(__AVX2__) && defined(__FMA__)

#include <immintrin.h>

#include "lowrank/ops/avx2_common.h"

namespace lowrank::ops::detail {
namespace {

using avx2::hsum;
using avx2::hsum4;

// out[r] = ⟨m + r·ld, v⟩ for r < 4, over n elements.
inline void dot4(const float* m, int64_t ld, const float* v, int64_t n, float* out) {
  const float* m0 = m;
  const float* m1 = m + ld;
  const float* m2 = m + 2 * ld;
  const float* m3 = m + 3 * ld;
  __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps(), a2 = _mm256_setzero_ps(),
         a3 = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 x = _mm256_loadu_ps(v + i);
    a0 = _mm256_fmadd_ps(_mm256_loadu_ps(m0 + i), x, a0);
    a1 = _mm256_fmadd_ps(_mm256_loadu_ps(m1 + i), x, a1);
    a2 = _mm256_fmadd_ps(_mm256_loadu_ps(m2 + i), x, a2);
    a3 = _mm256_fmadd_ps(_mm256_loadu_ps(m3 + i), x, a3);
  }
  alignas(16) float s[4];
  _mm_store_ps(s, hsum4(a0, a1, a2, a3));
  for (; i < n; ++i) {
    s[0] += m0[i] * v[i];
    s[1] += m1[i] * v[i];
    s[2] += m2[i] * v[i];
    s[3] += m3[i] * v[i];
  }
  for (int r = 0; r < 4; ++r) out[r] = s[r];
}

inline float dot1(const float* m, const float* v, int64_t n) {
  __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    a0 = _mm256_fmadd_ps(_mm256_loadu_ps(m + i), _mm256_loadu_ps(v + i), a0);
    a1 = _mm256_fmadd_ps(_mm256_loadu_ps(m + i + 8), _mm256_loadu_ps(v + i + 8), a1);
  }
  for (; i + 8 <= n; i += 8) a0 = _mm256_fmadd_ps(_mm256_loadu_ps(m + i), _mm256_loadu_ps(v + i), a0);
  float s = hsum(_mm256_add_ps(a0, a1));
  for (; i < n; ++i) s += m[i] * v[i];
  return s;
}

}  // namespace

void lora_gather_task_avx2(const LoraGatherTask& t, float* h) {
  for (int64_t k = 0; k < t.tokens; ++k) {
    const float* x = t.x + k * t.in;
    float* y = t.y + k * t.out;
    float d[4];
    int64_t j = 0;
    for (; j + 4 <= t.rank; j += 4) {
      dot4(t.a + j * t.in, t.in, x, t.in, d);
      for (int r = 0; r < 4; ++r) h[j + r] = t.scale * d[r];
    }
    for (; j < t.rank; ++j) h[j] = t.scale * dot1(t.a + j * t.in, x, t.in);
    int64_t o = 0;
    for (; o + 4 <= t.out; o += 4) {
      dot4(t.b + o * t.rank, t.rank, h, t.rank, d);
      for (int r = 0; r < 4; ++r) y[o + r] += d[r];
    }
    for (; o < t.out; ++o) y[o] += dot1(t.b + o * t.rank, h, t.rank);
  }
}

}  // namespace lowrank::ops::detail

#else  // no AVX2 at compile time: lora_gather_avx2_usable() is false, so this is never called.

namespace lowrank::ops::detail {

void lora_gather_task_avx2(const LoraGatherTask& t, float* h) {
  lora_gather_task_cpu(t, h);
}

}  // namespace lowrank::ops::detail

#endif
