// The AVX2 + FMA step of the selective scan (selective_scan_kernels.h). Compiled with -mavx2
// -mfma (src/lowrank/CMakeLists.txt) and picked at run time by selective_scan_cpu.cpp.
//
// The portable loop calls the C library's expf once per (channel, state): a function call that
// the compiler cannot vectorise without -ffast-math, and most of the scan's time. Here the eight
// exponentials of one channel's states are one polynomial evaluation in registers, and the state
// update and the output dot product are FMAs on the same vectors.
#include "lowrank/ops/selective_scan_kernels.h"

#if defined(__AVX2__) && defined(__FMA__)

#include <immintrin.h>

#include "lowrank/ops/avx2_common.h"

namespace lowrank::ops::detail {

void exp_avx2(const float* x, float* out) {
  _mm256_storeu_ps(out, avx2::exp8(_mm256_loadu_ps(x)));
}

namespace {

// One channel's states: h ← e^{ΔA} h + Δu B over its N states; returns the vector of C ⊙ h
// partial sums (its lanes add up to y).
inline __m256 channel_step(float delta, float u, int64_t N, const float* a_row, const float* b_row,
                           const float* c_row, float* hd) {
  const __m256 dt = _mm256_set1_ps(delta);
  const __m256 du = _mm256_set1_ps(delta * u);
  __m256 acc = _mm256_setzero_ps();
  for (int64_t n = 0; n < N; n += 8) {
    const __m256 decay = avx2::exp8(_mm256_mul_ps(dt, _mm256_loadu_ps(a_row + n)));
    const __m256 hn =
        _mm256_fmadd_ps(decay, _mm256_loadu_ps(hd + n), _mm256_mul_ps(du, _mm256_loadu_ps(b_row + n)));
    _mm256_storeu_ps(hd + n, hn);
    acc = _mm256_fmadd_ps(_mm256_loadu_ps(c_row + n), hn, acc);
  }
  return acc;
}

}  // namespace

void selective_scan_step_avx2(int64_t channels, int64_t N, const float* delta, const float* u, const float* A,
                              const float* b_row, const float* c_row, float* h, float* y) {
  int64_t d = 0;
  // Four channels at a time, so that their four horizontal sums are one hsum4.
  for (; d + 4 <= channels; d += 4) {
    __m256 acc[4];
    for (int64_t i = 0; i < 4; ++i)
      acc[i] = channel_step(delta[d + i], u[d + i], N, A + (d + i) * N, b_row, c_row, h + (d + i) * N);
    if (y) _mm_storeu_ps(y + d, avx2::hsum4(acc[0], acc[1], acc[2], acc[3]));
  }
  for (; d < channels; ++d) {
    const __m256 acc = channel_step(delta[d], u[d], N, A + d * N, b_row, c_row, h + d * N);
    if (y) y[d] = avx2::hsum(acc);
  }
}

ScanBackwardSums selective_scan_backward_channel_avx2(int64_t N, float delta, float u, float gy,
                                                      const float* a_row, const float* b_row,
                                                      const float* c_row, const float* h_prev,
                                                      const float* h_cur, float* g, float* dA, float* dB,
                                                      float* dC) {
  const __m256 dt = _mm256_set1_ps(delta), gyv = _mm256_set1_ps(gy), dtu = _mm256_set1_ps(delta * u);
  const __m256 uv = _mm256_set1_ps(u);
  __m256 du_acc = _mm256_setzero_ps(), ddt_acc = _mm256_setzero_ps();
  for (int64_t n = 0; n < N; n += 8) {
    const __m256 a_n = _mm256_loadu_ps(a_row + n), b_n = _mm256_loadu_ps(b_row + n);
    const __m256 gh = _mm256_fmadd_ps(gyv, _mm256_loadu_ps(c_row + n), _mm256_loadu_ps(g + n));
    _mm256_storeu_ps(dC + n, _mm256_fmadd_ps(gyv, _mm256_loadu_ps(h_cur + n), _mm256_loadu_ps(dC + n)));
    const __m256 decay = avx2::exp8(_mm256_mul_ps(dt, a_n));
    const __m256 ga = _mm256_mul_ps(_mm256_mul_ps(gh, _mm256_loadu_ps(h_prev + n)), decay);
    ddt_acc = _mm256_fmadd_ps(ga, a_n, ddt_acc);
    ddt_acc = _mm256_fmadd_ps(_mm256_mul_ps(gh, b_n), uv, ddt_acc);
    _mm256_storeu_ps(dA + n, _mm256_fmadd_ps(ga, dt, _mm256_loadu_ps(dA + n)));
    _mm256_storeu_ps(dB + n, _mm256_fmadd_ps(gh, dtu, _mm256_loadu_ps(dB + n)));
    du_acc = _mm256_fmadd_ps(_mm256_mul_ps(gh, dt), b_n, du_acc);
    _mm256_storeu_ps(g + n, _mm256_mul_ps(gh, decay));
  }
  return {avx2::hsum(du_acc), avx2::hsum(ddt_acc)};
}

}  // namespace lowrank::ops::detail

#else  // no AVX2 in this build: selective_scan_uses_avx2() is false, so these are never called.

#include <cmath>

namespace lowrank::ops::detail {

void exp_avx2(const float* x, float* out) {
  for (int i = 0; i < 8; ++i) out[i] = std::exp(x[i]);
}

void selective_scan_step_avx2(int64_t channels, int64_t N, const float* delta, const float* u, const float* A,
                              const float* b_row, const float* c_row, float* h, float* y) {
  selective_scan_step_portable(channels, N, delta, u, A, b_row, c_row, h, y);
}

ScanBackwardSums selective_scan_backward_channel_avx2(int64_t, float, float, float, const float*,
                                                      const float*, const float*, const float*, const float*,
                                                      float*, float*, float*, float*) {
  return {0.0f, 0.0f};  // never called: selective_scan_uses_avx2() is false in this build
}

}  // namespace lowrank::ops::detail

#endif
