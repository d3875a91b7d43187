// AVX2 + FMA kernel of group_quant_linear (the twin of group_quant_cpu.cpp, same contract; see
// group_quant_kernels.h). Compiled with -mavx2 -mfma -mf16c and without the precompiled header,
// so it includes no ATen header; group_quant.cpp calls it only when the CPU has AVX2 and FMA.
//
// 4 bits, per 8 packed bytes at offset j of a group's byte run (16 weights: the low nibbles are
// inputs j..j+7 of the group, the high nibbles inputs j+g/2..j+g/2+7):
//   b  = vpmovzxbd(8 bytes)                  (8 int32 lanes, each u_lo + 16 u_hi)
//   lo = cvt_ps(b & 0xF), hi = cvt_ps(b >> 4)  (u = q + 8 in [0, 15], as float)
//   p += lo * x[j..j+7] + hi * x[j+g/2..j+g/2+7]        (per-group partial sums, 8 lanes)
// and per group k:  acc += s_k * (p - 8 x̄_k), where 8 x̄_k is an 8-lane vector whose lanes hold
// 8 times the lane-wise sums of the group's inputs (precomputed once per input row), so that
// sum(lanes) = s_k sum_i (u_i - 8) x_i = s_k sum_i q_i x_i. This removes the q + 8 offset with one
// subtraction per group instead of one per weight. 8 bits: p += cvt_ps(vpmovsxbd(8 int8)) * x.
// The scale multiplies the group's partial sum rather than each weight, so the result differs from
// x · dequantize()ᵀ only by float rounding (summation order and the offset subtraction).
// Blocks of up to 4 input rows share each unpacked weight vector; each row has 2 (4-row blocks)
// or 4 partial accumulators to hide the FMA latency.
#include "lowrank/ops/group_quant_kernels.h"

#if defined(__AVX2__) && defined(__FMA__)

#include <immintrin.h>

#include "lowrank/ops/avx2_common.h"

#include <vector>

namespace lowrank::ops::detail {
namespace {

using avx2::hsum;

inline __m256i load_u8x8(const uint8_t* p) {
  return _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p)));
}

inline __m256i load_i8x8(const int8_t* p) {
  return _mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p)));
}

// For each input row r and group k: the 8-lane vector 8 * sum_{chunks c of the group} x[r, c*8 .. c*8+7],
// whose lane sum is 8 * sum_{i in group k} x[r, i]. Layout [rows][groups][8].
std::vector<float> offset_sums(const float* x, int64_t rows, int64_t in, int64_t g) {
  const int64_t groups = in / g;
  std::vector<float> out(static_cast<size_t>(rows * groups * 8));
  const __m256 eight = _mm256_set1_ps(8.0f);
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t k = 0; k < groups; ++k) {
      const float* xg = x + r * in + k * g;
      __m256 s = _mm256_setzero_ps();
      for (int64_t j = 0; j < g; j += 8) s = _mm256_add_ps(s, _mm256_loadu_ps(xg + j));
      _mm256_storeu_ps(out.data() + (r * groups + k) * 8, _mm256_mul_ps(s, eight));
    }
  }
  return out;
}

// One output feature, one input row, 4-bit with g % 32 == 0: four partial accumulators. G > 0 fixes
// the group size at compile time (the inner loop is then fully unrolled: ~30% faster for g = 64);
// G = 0 reads it from g. Kept out of line so that its loop gets the whole register file.
template <int64_t G>
__attribute__((noinline)) float dot1_4bit(const uint8_t* wrow, const float* srow, const float* x,
                                          const float* xoff, int64_t in, int64_t g_runtime) {
  const int64_t g = G > 0 ? G : g_runtime;
  const int64_t half = g / 2, groups = in / g;
  const __m256i nibble = _mm256_set1_epi32(0x0F);
  __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
  for (int64_t k = 0; k < groups; ++k) {
    const uint8_t* bytes = wrow + k * half;
    const float* xg = x + k * g;
    __m256 p0 = _mm256_setzero_ps(), p1 = p0, p2 = p0, p3 = p0;
    for (int64_t j = 0; j < half; j += 16) {
      const __m256i b0 = load_u8x8(bytes + j), b1 = load_u8x8(bytes + j + 8);
      p0 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_and_si256(b0, nibble)), _mm256_loadu_ps(xg + j), p0);
      p1 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_srli_epi32(b0, 4)), _mm256_loadu_ps(xg + half + j), p1);
      p2 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_and_si256(b1, nibble)), _mm256_loadu_ps(xg + j + 8), p2);
      p3 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_srli_epi32(b1, 4)), _mm256_loadu_ps(xg + half + j + 8),
                           p3);
    }
    const __m256 p = _mm256_sub_ps(_mm256_add_ps(_mm256_add_ps(p0, p1), _mm256_add_ps(p2, p3)),
                                   _mm256_loadu_ps(xoff + k * 8));
    if (k % 2 == 0) {
      acc0 = _mm256_fmadd_ps(_mm256_broadcast_ss(srow + k), p, acc0);
    } else {
      acc1 = _mm256_fmadd_ps(_mm256_broadcast_ss(srow + k), p, acc1);
    }
  }
  return hsum(_mm256_add_ps(acc0, acc1));
}

// One output feature, R input rows (row stride `in`), 4-bit with g % 16 == 0: two partial
// accumulators per row. G as in dot1_4bit.
template <int R, int64_t G>
__attribute__((noinline)) void dotr_4bit(const uint8_t* wrow, const float* srow, const float* x,
                                         const float* xoff, int64_t in, int64_t g_runtime, float* out) {
  const int64_t g = G > 0 ? G : g_runtime;
  const int64_t half = g / 2, groups = in / g;
  const __m256i nibble = _mm256_set1_epi32(0x0F);
  __m256 acc[R];
#pragma GCC unroll 4
  for (int r = 0; r < R; ++r) acc[r] = _mm256_setzero_ps();
  for (int64_t k = 0; k < groups; ++k) {
    const uint8_t* bytes = wrow + k * half;
    const float* xg = x + k * g;
    __m256 plo[R], phi[R];
#pragma GCC unroll 4
    for (int r = 0; r < R; ++r) plo[r] = phi[r] = _mm256_setzero_ps();
    for (int64_t j = 0; j < half; j += 8) {
      const __m256i b = load_u8x8(bytes + j);
      const __m256 lo = _mm256_cvtepi32_ps(_mm256_and_si256(b, nibble));
      const __m256 hi = _mm256_cvtepi32_ps(_mm256_srli_epi32(b, 4));
#pragma GCC unroll 4
      for (int r = 0; r < R; ++r) {
        plo[r] = _mm256_fmadd_ps(lo, _mm256_loadu_ps(xg + r * in + j), plo[r]);
        phi[r] = _mm256_fmadd_ps(hi, _mm256_loadu_ps(xg + r * in + half + j), phi[r]);
      }
    }
    const __m256 s = _mm256_broadcast_ss(srow + k);
#pragma GCC unroll 4
    for (int r = 0; r < R; ++r) {
      const __m256 p =
          _mm256_sub_ps(_mm256_add_ps(plo[r], phi[r]), _mm256_loadu_ps(xoff + (r * groups + k) * 8));
      acc[r] = _mm256_fmadd_ps(s, p, acc[r]);
    }
  }
#pragma GCC unroll 4
  for (int r = 0; r < R; ++r) out[r] = hsum(acc[r]);
}

// One output feature, R input rows, 8-bit (g a multiple of 8): two partial accumulators per row.
template <int R, int64_t G>
__attribute__((noinline)) void dotr_8bit(const int8_t* wrow, const float* srow, const float* x, int64_t in,
                                         int64_t g_runtime, float* out) {
  const int64_t g = G > 0 ? G : g_runtime;
  const int64_t groups = in / g;
  __m256 acc[R];
#pragma GCC unroll 4
  for (int r = 0; r < R; ++r) acc[r] = _mm256_setzero_ps();
  for (int64_t k = 0; k < groups; ++k) {
    const int8_t* q = wrow + k * g;
    const float* xg = x + k * g;
    __m256 p0[R], p1[R];
#pragma GCC unroll 4
    for (int r = 0; r < R; ++r) p0[r] = p1[r] = _mm256_setzero_ps();
    int64_t j = 0;
    for (; j + 16 <= g; j += 16) {
      const __m256 w0 = _mm256_cvtepi32_ps(load_i8x8(q + j));
      const __m256 w1 = _mm256_cvtepi32_ps(load_i8x8(q + j + 8));
#pragma GCC unroll 4
      for (int r = 0; r < R; ++r) {
        p0[r] = _mm256_fmadd_ps(w0, _mm256_loadu_ps(xg + r * in + j), p0[r]);
        p1[r] = _mm256_fmadd_ps(w1, _mm256_loadu_ps(xg + r * in + j + 8), p1[r]);
      }
    }
    if (j < g) {  // g % 16 == 8
      const __m256 w0 = _mm256_cvtepi32_ps(load_i8x8(q + j));
#pragma GCC unroll 4
      for (int r = 0; r < R; ++r) p0[r] = _mm256_fmadd_ps(w0, _mm256_loadu_ps(xg + r * in + j), p0[r]);
    }
    const __m256 s = _mm256_broadcast_ss(srow + k);
#pragma GCC unroll 4
    for (int r = 0; r < R; ++r) acc[r] = _mm256_fmadd_ps(s, _mm256_add_ps(p0[r], p1[r]), acc[r]);
  }
#pragma GCC unroll 4
  for (int r = 0; r < R; ++r) out[r] = hsum(acc[r]);
}

template <int R>
void dot_rows(const GroupQuantView& w, int64_t o, const float* x, const float* xoff, float* out) {
  const int64_t in = w.in_features, g = w.group_size, groups = in / g;
  const float* srow = w.scales + o * groups;
  if (w.bits == 8) {
    const int8_t* wrow = reinterpret_cast<const int8_t*>(w.packed) + o * in;
    if (g == 64) {
      dotr_8bit<R, 64>(wrow, srow, x, in, g, out);
    } else {
      dotr_8bit<R, 0>(wrow, srow, x, in, g, out);
    }
    return;
  }
  const uint8_t* wrow = w.packed + o * (in / 2);
  if constexpr (R == 1) {
    if (g == 64) {
      out[0] = dot1_4bit<64>(wrow, srow, x, xoff, in, g);
    } else if (g == 32) {
      out[0] = dot1_4bit<32>(wrow, srow, x, xoff, in, g);
    } else if (g == 128) {
      out[0] = dot1_4bit<128>(wrow, srow, x, xoff, in, g);
    } else if (g % 32 == 0) {
      out[0] = dot1_4bit<0>(wrow, srow, x, xoff, in, g);
    } else {
      dotr_4bit<1, 0>(wrow, srow, x, xoff, in, g, out);
    }
  } else if (g == 64) {
    dotr_4bit<R, 64>(wrow, srow, x, xoff, in, g, out);
  } else {
    dotr_4bit<R, 0>(wrow, srow, x, xoff, in, g, out);
  }
}

}  // namespace

void group_quant_gemv_rows_avx2(const GroupQuantView& w, const float* x, int64_t rows, const float* bias,
                                int64_t out_begin, int64_t out_end, float* y) {
  const int64_t in = w.in_features, out = w.out_features, groups = in / w.group_size;
  const std::vector<float> xoff = w.bits == 4 ? offset_sums(x, rows, in, w.group_size) : std::vector<float>();
  auto xoff_of = [&](int64_t r) { return w.bits == 4 ? xoff.data() + r * groups * 8 : nullptr; };
  float dots[4];
  for (int64_t o = out_begin; o < out_end; ++o) {
    const float b = bias ? bias[o] : 0.0f;
    int64_t r = 0;
    // Blocks of 4 input rows share each unpacked weight vector; then 2, then 1.
    for (; r + 4 <= rows; r += 4) {
      dot_rows<4>(w, o, x + r * in, xoff_of(r), dots);
      for (int i = 0; i < 4; ++i) y[(r + i) * out + o] = dots[i] + b;
    }
    for (; r + 2 <= rows; r += 2) {
      dot_rows<2>(w, o, x + r * in, xoff_of(r), dots);
      for (int i = 0; i < 2; ++i) y[(r + i) * out + o] = dots[i] + b;
    }
    for (; r < rows; ++r) {
      dot_rows<1>(w, o, x + r * in, xoff_of(r), dots);
      y[r * out + o] = dots[0] + b;
    }
  }
}

}  // namespace lowrank::ops::detail

#else  // no AVX2 at compile time (non-x86 build): group_quant_avx2_usable() is false, never called.

namespace lowrank::ops::detail {

void group_quant_gemv_rows_avx2(const GroupQuantView& w, const float* x, int64_t rows, const float* bias,
                                int64_t out_begin, int64_t out_end, float* y) {
  group_quant_gemv_rows_cpu(w, x, rows, bias, out_begin, out_end, y);
}

}  // namespace lowrank::ops::detail

#endif
