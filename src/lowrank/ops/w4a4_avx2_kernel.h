// The W4A4 product's x86 body, shared by w4a4_gemm_avx2.cpp (vpmaddubsw + vpmaddwd) and
// w4a4_gemm_vnni_avx2.cpp (vpdpbusd): the two differ only in how one 32-byte step of u8 × s8
// products reaches the int32 lanes (the Dot policy). Include only from those translation units,
// inside their `#if defined(__AVX2__) && defined(__FMA__)` block. Contract: w4a4_kernels.h.
//
// Per input row m, four output features at a time, per group k and per 32 packed bytes c of the
// group's g/2-byte run (g % 64 == 0):
//   u_lo = bytes & 0x0F  (inputs c..c+31 of the group),  u_hi = (bytes >> 4) & 0x0F  (g/2 + c..)
//   d   += Dot(u_lo, a[c..c+31]) + Dot(u_hi, a[g/2 + c..])            (8 int32 lanes, exact)
// then acc += float(d) · s_mk w_ok and corr += s_mk w_ok t_mk; y = Σ lanes(acc) − 8 corr + bias.
#pragma once

#include <immintrin.h>

#include <algorithm>
#include <cstdint>

#include "lowrank/ops/avx2_common.h"
#include "lowrank/ops/w4a4_kernels.h"

namespace lowrank::ops::detail::w4a4 {

template <class Dot>
void gemm_rows(const GroupQuantView& w, const Int4ActivationView& a, const float* bias, int64_t out_begin,
               int64_t out_end, float* y) {
  constexpr int kBlock = 4;
  const int64_t in = w.in_features, g = w.group_size, half = g / 2, groups = in / g;
  const __m256i nibble = _mm256_set1_epi8(0x0F);
  // Output blocks outside, input rows inside: a block's packed weights (4 · in/2 bytes) stay in L1
  // while every row of activations passes by, so the weights are read from memory once.
  for (int64_t o = out_begin; o < out_end; o += kBlock) {
    const int block = static_cast<int>(std::min<int64_t>(kBlock, out_end - o));
    const uint8_t* wrow[kBlock];
    const float* wsrow[kBlock];
    for (int b = 0; b < kBlock; ++b) {
      const int64_t ob = o + std::min(b, block - 1);  // a short block repeats its last row
      wrow[b] = w.packed + ob * (in / 2);
      wsrow[b] = w.scales + ob * groups;
    }
    for (int64_t m = 0; m < a.rows; ++m) {
      const int8_t* arow = a.values + m * in;
      const float* srow = a.scales + m * groups;
      const int32_t* trow = a.group_sums + m * groups;
      __m256 acc[kBlock];
      float corr[kBlock] = {0, 0, 0, 0};
      for (int b = 0; b < kBlock; ++b) acc[b] = _mm256_setzero_ps();
      for (int64_t k = 0; k < groups; ++k) {
        __m256i d[kBlock];
        for (int b = 0; b < kBlock; ++b) d[b] = _mm256_setzero_si256();
        const int8_t* ag = arow + k * g;
        for (int64_t c = 0; c < half; c += 32) {
          const __m256i xa = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(ag + c));
          const __m256i xb = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(ag + half + c));
#pragma GCC unroll 4
          for (int b = 0; b < kBlock; ++b) {
            const __m256i bytes =
                _mm256_loadu_si256(reinterpret_cast<const __m256i*>(wrow[b] + k * half + c));
            const __m256i lo = _mm256_and_si256(bytes, nibble);
            const __m256i hi = _mm256_and_si256(_mm256_srli_epi16(bytes, 4), nibble);
            d[b] = Dot::step(d[b], lo, xa, hi, xb);
          }
        }
        const float sx = srow[k];
        const int32_t t = trow[k];
#pragma GCC unroll 4
        for (int b = 0; b < kBlock; ++b) {
          const float s = sx * wsrow[b][k];
          acc[b] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(d[b]), _mm256_set1_ps(s), acc[b]);
          corr[b] += s * static_cast<float>(t);
        }
      }
      float* yrow = y + m * w.out_features;
      for (int b = 0; b < block; ++b)
        yrow[o + b] = avx2::hsum(acc[b]) - 8.0f * corr[b] + (bias != nullptr ? bias[o + b] : 0.0f);
    }
  }
}

}  // namespace lowrank::ops::detail::w4a4
