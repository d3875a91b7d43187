// Matrix-vector kernels on raw buffers for the fused single-token decode path (nn/decode_step.h):
//   gemv_rows:  y[o] = b[o] + Σ_i W[o, i] x[i]   for o in [begin, end)   (one output row range)
//   dot:        Σ_i x[i] y[i]                                            (attention scores)
//   axpy:       y[i] += a x[i]                                           (attention values)
// W, y-of-dot and x-of-axpy are float32 or bfloat16 (the model's weight and KV-cache dtypes);
// activations and accumulation are float32. Each comes as a portable loop and an AVX2 + FMA twin
// (gemv_avx2.cpp) picked at run time; the twins agree up to float summation order.
// At batch 1 a decode step reads every weight once, so these are bound by memory bandwidth, not
// arithmetic: the AVX2 kernel keeps 8 accumulators (4 rows × 2 vectors) so that the loads, not
// the FMA latency, set the pace, and a bfloat16 weight is widened to float32 with one shift.
// No ATen include: gemv_avx2.cpp is compiled with -mavx2 -mfma and without the precompiled header.
#pragma once

#include <cstdint>
#include <cstring>

namespace lowrank::ops {

enum class ElementType { kF32, kBF16 };

// bfloat16 is the high half of a float32.
inline float bf16_to_float(uint16_t v) {
  const uint32_t bits = static_cast<uint32_t>(v) << 16;
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}

// Round to nearest even, as c10::BFloat16 (NaN stays NaN).
inline uint16_t float_to_bf16(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, sizeof bits);
  if ((bits & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((bits >> 16) | 0x40);
  bits += 0x7fffu + ((bits >> 16) & 1u);
  return static_cast<uint16_t>(bits >> 16);
}

// W: [rows, in] row-major of `type`; bias: [rows] of `type` or nullptr; writes y[begin, end).
// Thread-safe for disjoint ranges.
void gemv_rows(ElementType type, const void* W, int64_t in, const float* x, const void* bias, int64_t begin,
               int64_t end, float* y);
float dot(const float* x, ElementType type, const void* y, int64_t n);
void axpy(float a, ElementType type, const void* x, float* y, int64_t n);

// True when the AVX2 twins are compiled in and this CPU has AVX2 + FMA (what gemv_rows uses).
bool gemv_uses_avx2();

namespace detail {
void gemv_rows_cpu(ElementType type, const void* W, int64_t in, const float* x, const void* bias,
                   int64_t begin, int64_t end, float* y);
float dot_cpu(const float* x, ElementType type, const void* y, int64_t n);
void axpy_cpu(float a, ElementType type, const void* x, float* y, int64_t n);
void gemv_rows_avx2(ElementType type, const void* W, int64_t in, const float* x, const void* bias,
                    int64_t begin, int64_t end, float* y);
float dot_avx2(const float* x, ElementType type, const void* y, int64_t n);
void axpy_avx2(float a, ElementType type, const void* x, float* y, int64_t n);
}  // namespace detail

}  // namespace lowrank::ops
