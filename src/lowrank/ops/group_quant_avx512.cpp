// AVX-512 kernel of ops/group_quant for one input row and 4-bit weights (the decode case; see
// group_quant_kernels.h for the contract it shares with the portable and AVX2 kernels). Compiled
// with -mavx512f -mavx512bw and without the precompiled header; group_quant.cpp calls it only when
// the CPU has AVX-512 F and BW.
//
// Per 16 packed bytes at offset j of a group's byte run (32 weights: the low nibbles are inputs
// j..j+15 of the group, the high nibbles inputs j+g/2..j+g/2+15):
//   b  = vpmovzxbd(16 bytes)                     (16 int32 lanes, each u_lo + 16 u_hi)
//   p += cvt_ps(b & 0xF) * x[j..j+15] + cvt_ps(b >> 4) * x[j+g/2..j+g/2+15]
// and per group k:  acc += s_k * (p - x̄_k), with x̄_k = 8 Σ_{i in group} x_i / 16 in every lane, so
// that sum(lanes) = s_k Σ_i (u_i - 8) x_i = s_k Σ_i q_i x_i, as the AVX2 kernel does with 8 lanes.
// Twice the lanes of the AVX2 kernel for the same instruction count: its one-row INT4 loop is
// bound by the unpacking and conversions, not by memory.
#include "lowrank/ops/group_quant_kernels.h"

#if defined(__AVX512F__) && defined(__AVX512BW__)

// GCC 12's AVX-512 headers leave a dummy operand of the conversions undefined on purpose and then
// warn about it (-Wmaybe-uninitialized) at every use.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>
#pragma GCC diagnostic pop

namespace lowrank::ops::detail {
namespace {

template <int64_t G>
float dot1_4bit_avx512(const uint8_t* wrow, const float* srow, const float* x, const float* xbar, int64_t in,
                       int64_t g_runtime) {
  const int64_t g = G > 0 ? G : g_runtime;
  const int64_t half = g / 2, groups = in / g;
  const __m512i nibble = _mm512_set1_epi32(0x0F);
  __m512 acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps();
  for (int64_t k = 0; k < groups; ++k) {
    const uint8_t* bytes = wrow + k * half;
    const float* xg = x + k * g;
    __m512 p0 = _mm512_setzero_ps(), p1 = _mm512_setzero_ps();
    for (int64_t j = 0; j < half; j += 16) {
      const __m512i b = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(bytes + j)));
      p0 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_and_si512(b, nibble)), _mm512_loadu_ps(xg + j), p0);
      p1 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_srli_epi32(b, 4)), _mm512_loadu_ps(xg + half + j), p1);
    }
    const __m512 p = _mm512_sub_ps(_mm512_add_ps(p0, p1), _mm512_set1_ps(xbar[k]));
    if (k % 2 == 0)
      acc0 = _mm512_fmadd_ps(_mm512_set1_ps(srow[k]), p, acc0);
    else
      acc1 = _mm512_fmadd_ps(_mm512_set1_ps(srow[k]), p, acc1);
  }
  return _mm512_reduce_add_ps(_mm512_add_ps(acc0, acc1));
}

}  // namespace

void group_quant_gemv_row_4bit_avx512(const GroupQuantView& w, const float* x, const float* bias,
                                      int64_t out_begin, int64_t out_end, float* y) {
  const int64_t in = w.in_features, g = w.group_size, groups = in / g;
  // x̄_k: 8 Σ x over group k, spread over the 16 lanes (see the file comment). A decode row's
  // widths are at most a few thousand groups: on the stack.
  float xbar_stack[1024];
  float* xbar = groups <= 1024 ? xbar_stack : new float[static_cast<size_t>(groups)];
  for (int64_t k = 0; k < groups; ++k) {
    __m512 s = _mm512_setzero_ps();
    for (int64_t j = 0; j < g; j += 16) s = _mm512_add_ps(s, _mm512_loadu_ps(x + k * g + j));
    xbar[k] = _mm512_reduce_add_ps(s) * 0.5f;  // 8 Σ x / 16
  }
  for (int64_t o = out_begin; o < out_end; ++o) {
    const uint8_t* wrow = w.packed + o * (in / 2);
    const float* srow = w.scales + o * groups;
    float d;
    if (g == 32)
      d = dot1_4bit_avx512<32>(wrow, srow, x, xbar, in, g);
    else if (g == 64)
      d = dot1_4bit_avx512<64>(wrow, srow, x, xbar, in, g);
    else
      d = dot1_4bit_avx512<0>(wrow, srow, x, xbar, in, g);
    y[o] = d + (bias ? bias[o] : 0.0f);
  }
  if (xbar != xbar_stack) delete[] xbar;
}

bool group_quant_avx512_usable(const GroupQuantView& w) {
  static const bool cpu = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw");
  return cpu && w.bits == 4 && w.group_size % 32 == 0;
}

}  // namespace lowrank::ops::detail

#else  // not compiled for AVX-512: never usable, never called.

namespace lowrank::ops::detail {

void group_quant_gemv_row_4bit_avx512(const GroupQuantView& w, const float* x, const float* bias,
                                      int64_t out_begin, int64_t out_end, float* y) {
  group_quant_gemv_rows_cpu(w, x, 1, bias, out_begin, out_end, y);
}

bool group_quant_avx512_usable(const GroupQuantView&) {
  return false;
}

}  // namespace lowrank::ops::detail

#endif
