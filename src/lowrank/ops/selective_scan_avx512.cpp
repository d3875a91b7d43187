// The AVX-512 step of the selective scan's forward (selective_scan_kernels.h). Compiled with
// -mavx512f (src/lowrank/CMakeLists.txt) and without the precompiled header; selective_scan_cpu.cpp
// calls it for float32 with N a multiple of 16 when the CPU has AVX-512 F.
//
// The step is bound by its exponentials (bench_selective_scan: 2–3·10⁹ per second on two cores,
// a tenth of the memory roof): sixteen lanes per instruction instead of the AVX2 kernel's eight,
// and for Mamba's N = 16 a channel's states are one register. exp is the AVX2 kernel's (Cody–Waite
// reduction, the Cephes degree-5 polynomial), with 2^k applied by vscalefps.
#include "lowrank/ops/selective_scan_kernels.h"

#if defined(__AVX512F__)

// GCC 12's AVX-512 headers leave a dummy operand of some intrinsics (vminps, vmaxps, the
// conversions) undefined on purpose and then warn about it where they are inlined: off for this
// translation unit's AVX-512 code.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#include <immintrin.h>

namespace lowrank::ops::detail {
namespace {

// exp(x) for 16 lanes, x clamped to ±88.376 (exp_avx2's contract; relative error ≲ 2e-7).
inline __m512 exp16(__m512 x) {
  x = _mm512_max_ps(_mm512_min_ps(x, _mm512_set1_ps(88.3762626647949f)), _mm512_set1_ps(-88.3762626647949f));
  const __m512 k = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(k, _mm512_set1_ps(0.693359375f), x);
  r = _mm512_fnmadd_ps(k, _mm512_set1_ps(-2.12194440e-4f), r);
  __m512 p = _mm512_set1_ps(1.9875691500e-4f);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
  const __m512 e = _mm512_add_ps(_mm512_fmadd_ps(p, _mm512_mul_ps(r, r), r), _mm512_set1_ps(1.0f));
  return _mm512_scalef_ps(e, k);
}

}  // namespace

void exp_avx512(const float* x, float* out) {
  _mm512_storeu_ps(out, exp16(_mm512_loadu_ps(x)));
}

void selective_scan_step_avx512(int64_t channels, int64_t N, const float* delta, const float* u,
                                const float* A, const float* b_row, const float* c_row, float* h, float* y) {
  for (int64_t d = 0; d < channels; ++d) {
    const __m512 dt = _mm512_set1_ps(delta[d]);
    const __m512 du = _mm512_set1_ps(delta[d] * u[d]);
    const float* a_row = A + d * N;
    float* hd = h + d * N;
    __m512 acc = _mm512_setzero_ps();
    for (int64_t n = 0; n < N; n += 16) {
      const __m512 decay = exp16(_mm512_mul_ps(dt, _mm512_loadu_ps(a_row + n)));
      const __m512 hn =
          _mm512_fmadd_ps(decay, _mm512_loadu_ps(hd + n), _mm512_mul_ps(du, _mm512_loadu_ps(b_row + n)));
      _mm512_storeu_ps(hd + n, hn);
      acc = _mm512_fmadd_ps(_mm512_loadu_ps(c_row + n), hn, acc);
    }
    if (y) y[d] = _mm512_reduce_add_ps(acc);
  }
}

bool selective_scan_avx512_usable(int64_t N) {
  static const bool cpu = __builtin_cpu_supports("avx512f");
  return cpu && N % 16 == 0;
}

}  // namespace lowrank::ops::detail

#pragma GCC diagnostic pop

#else  // not compiled for AVX-512: never usable, never called.

#include <cmath>

namespace lowrank::ops::detail {

void exp_avx512(const float* x, float* out) {
  for (int i = 0; i < 16; ++i) out[i] = std::exp(x[i]);
}

void selective_scan_step_avx512(int64_t channels, int64_t N, const float* delta, const float* u,
                                const float* A, const float* b_row, const float* c_row, float* h, float* y) {
  selective_scan_step_portable(channels, N, delta, u, A, b_row, c_row, h, y);
}

bool selective_scan_avx512_usable(int64_t) {
  return false;
}

}  // namespace lowrank::ops::detail

#endif
