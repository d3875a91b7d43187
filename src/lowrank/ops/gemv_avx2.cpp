// AVX2 + FMA twins of ops/gemv (same contract; see gemv.h). Compiled with -mavx2 -mfma and without
// the precompiled header; gemv.cpp calls them only when the CPU has AVX2 and FMA.
//
// gemv_rows does four rows at a time with two 8-lane accumulators each: every load of x serves
// four FMAs, and the eight independent accumulators cover the FMA latency, so the weight stream
// runs at the speed memory delivers it. bfloat16 weights are widened with a zero-extension and a
// 16-bit shift (exact).
#include "lowrank/ops/gemv.h"

#if defined(__AVX2__) && defined(__FMA__)

#include <immintrin.h>

#include "lowrank/ops/avx2_common.h"

namespace lowrank::ops::detail {
namespace {

using avx2::hsum;
using avx2::hsum4;

// Eight float32 values of a row of `Type` starting at element i.
template <ElementType Type>
inline __m256 load8(const void* p, int64_t i) {
  if constexpr (Type == ElementType::kF32) {
    return _mm256_loadu_ps(static_cast<const float*>(p) + i);
  } else {
    const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(static_cast<const uint16_t*>(p) + i));
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
  }
}

template <ElementType Type>
inline float load1(const void* p, int64_t i) {
  if constexpr (Type == ElementType::kF32)
    return static_cast<const float*>(p)[i];
  else
    return bf16_to_float(static_cast<const uint16_t*>(p)[i]);
}

template <ElementType Type>
float dot_t(const float* x, const void* y, int64_t n) {
  __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    a0 = _mm256_fmadd_ps(_mm256_loadu_ps(x + i), load8<Type>(y, i), a0);
    a1 = _mm256_fmadd_ps(_mm256_loadu_ps(x + i + 8), load8<Type>(y, i + 8), a1);
  }
  for (; i + 8 <= n; i += 8) a0 = _mm256_fmadd_ps(_mm256_loadu_ps(x + i), load8<Type>(y, i), a0);
  float s = hsum(_mm256_add_ps(a0, a1));
  for (; i < n; ++i) s += x[i] * load1<Type>(y, i);
  return s;
}

template <ElementType Type>
void gemv_t(const void* W, int64_t in, const float* x, const void* bias, int64_t begin, int64_t end,
            float* y) {
  constexpr int64_t elem = Type == ElementType::kF32 ? 4 : 2;
  auto row = [&](int64_t o) { return static_cast<const char*>(W) + o * in * elem; };
  int64_t o = begin;
  for (; o + 4 <= end; o += 4) {
    const void* r0 = row(o);
    const void* r1 = row(o + 1);
    const void* r2 = row(o + 2);
    const void* r3 = row(o + 3);
    __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps(), a2 = _mm256_setzero_ps(),
           a3 = _mm256_setzero_ps(), b0 = _mm256_setzero_ps(), b1 = _mm256_setzero_ps(),
           b2 = _mm256_setzero_ps(), b3 = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 16 <= in; i += 16) {
      const __m256 x0 = _mm256_loadu_ps(x + i);
      const __m256 x1 = _mm256_loadu_ps(x + i + 8);
      a0 = _mm256_fmadd_ps(load8<Type>(r0, i), x0, a0);
      a1 = _mm256_fmadd_ps(load8<Type>(r1, i), x0, a1);
      a2 = _mm256_fmadd_ps(load8<Type>(r2, i), x0, a2);
      a3 = _mm256_fmadd_ps(load8<Type>(r3, i), x0, a3);
      b0 = _mm256_fmadd_ps(load8<Type>(r0, i + 8), x1, b0);
      b1 = _mm256_fmadd_ps(load8<Type>(r1, i + 8), x1, b1);
      b2 = _mm256_fmadd_ps(load8<Type>(r2, i + 8), x1, b2);
      b3 = _mm256_fmadd_ps(load8<Type>(r3, i + 8), x1, b3);
    }
    for (; i + 8 <= in; i += 8) {
      const __m256 x0 = _mm256_loadu_ps(x + i);
      a0 = _mm256_fmadd_ps(load8<Type>(r0, i), x0, a0);
      a1 = _mm256_fmadd_ps(load8<Type>(r1, i), x0, a1);
      a2 = _mm256_fmadd_ps(load8<Type>(r2, i), x0, a2);
      a3 = _mm256_fmadd_ps(load8<Type>(r3, i), x0, a3);
    }
    float s[4];
    _mm_storeu_ps(
        s, hsum4(_mm256_add_ps(a0, b0), _mm256_add_ps(a1, b1), _mm256_add_ps(a2, b2), _mm256_add_ps(a3, b3)));
    for (; i < in; ++i) {
      s[0] += x[i] * load1<Type>(r0, i);
      s[1] += x[i] * load1<Type>(r1, i);
      s[2] += x[i] * load1<Type>(r2, i);
      s[3] += x[i] * load1<Type>(r3, i);
    }
    for (int r = 0; r < 4; ++r) y[o + r] = s[r] + (bias ? load1<Type>(bias, o + r) : 0.0f);
  }
  for (; o < end; ++o) y[o] = dot_t<Type>(x, row(o), in) + (bias ? load1<Type>(bias, o) : 0.0f);
}

template <ElementType Type>
void axpy_t(float a, const void* x, float* y, int64_t n) {
  const __m256 av = _mm256_set1_ps(a);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    _mm256_storeu_ps(y + i, _mm256_fmadd_ps(av, load8<Type>(x, i), _mm256_loadu_ps(y + i)));
  for (; i < n; ++i) y[i] += a * load1<Type>(x, i);
}

}  // namespace

void gemv_rows_avx2(ElementType type, const void* W, int64_t in, const float* x, const void* bias,
                    int64_t begin, int64_t end, float* y) {
  if (type == ElementType::kF32) return gemv_t<ElementType::kF32>(W, in, x, bias, begin, end, y);
  gemv_t<ElementType::kBF16>(W, in, x, bias, begin, end, y);
}

float dot_avx2(const float* x, ElementType type, const void* y, int64_t n) {
  return type == ElementType::kF32 ? dot_t<ElementType::kF32>(x, y, n) : dot_t<ElementType::kBF16>(x, y, n);
}

void axpy_avx2(float a, ElementType type, const void* x, float* y, int64_t n) {
  if (type == ElementType::kF32) return axpy_t<ElementType::kF32>(a, x, y, n);
  axpy_t<ElementType::kBF16>(a, x, y, n);
}

}  // namespace lowrank::ops::detail

#else  // no AVX2 in this build: gemv_uses_avx2() is false, so these are never called.

namespace lowrank::ops::detail {

void gemv_rows_avx2(ElementType type, const void* W, int64_t in, const float* x, const void* bias,
                    int64_t begin, int64_t end, float* y) {
  gemv_rows_cpu(type, W, in, x, bias, begin, end, y);
}
float dot_avx2(const float* x, ElementType type, const void* y, int64_t n) {
  return dot_cpu(x, type, y, n);
}
void axpy_avx2(float a, ElementType type, const void* x, float* y, int64_t n) {
  axpy_cpu(a, type, x, y, n);
}

}  // namespace lowrank::ops::detail

#endif
