// Portable reference kernel of group_quant_linear: plain loops over raw pointers, float32
// accumulation, one group at a time. The AVX2 twin (group_quant_avx2.cpp) must agree with it up
// to the float summation order.
#include <cstdint>

#include "lowrank/ops/group_quant_kernels.h"

namespace lowrank::ops::detail {
namespace {

// sum_i x[i] * (s * q_i) over one group of g inputs of a 4-bit row: byte j holds q_j + 8 (low
// nibble) and q_{j + g/2} + 8 (high nibble).
float group_dot_4bit(const uint8_t* bytes, float s, const float* x, int64_t g) {
  const int64_t half = g / 2;
  float acc = 0;
  for (int64_t j = 0; j < half; ++j) {
    const float w_lo = s * static_cast<float>(static_cast<int>(bytes[j] & 0x0F) - 8);
    const float w_hi = s * static_cast<float>(static_cast<int>(bytes[j] >> 4) - 8);
    acc += x[j] * w_lo;
    acc += x[j + half] * w_hi;
  }
  return acc;
}

float group_dot_8bit(const int8_t* q, float s, const float* x, int64_t g) {
  float acc = 0;
  for (int64_t j = 0; j < g; ++j) acc += x[j] * (s * static_cast<float>(q[j]));
  return acc;
}

}  // namespace

void group_quant_gemv_rows_cpu(const GroupQuantView& w, const float* x, int64_t rows, const float* bias,
                               int64_t out_begin, int64_t out_end, float* y) {
  const int64_t g = w.group_size, in = w.in_features, out = w.out_features;
  const int64_t groups = in / g;
  const int64_t row_bytes = w.bits == 4 ? in / 2 : in;
  for (int64_t o = out_begin; o < out_end; ++o) {
    const uint8_t* wrow = w.packed + o * row_bytes;
    const float* srow = w.scales + o * groups;
    for (int64_t r = 0; r < rows; ++r) {
      const float* xr = x + r * in;
      float acc = 0;
      for (int64_t k = 0; k < groups; ++k) {
        acc += w.bits == 4
                   ? group_dot_4bit(wrow + k * (g / 2), srow[k], xr + k * g, g)
                   : group_dot_8bit(reinterpret_cast<const int8_t*>(wrow) + k * g, srow[k], xr + k * g, g);
      }
      y[r * out + o] = bias ? acc + bias[o] : acc;
    }
  }
}

void group_quant_dequantize_rows_cpu(const GroupQuantView& w, int64_t out_begin, int64_t out_end, float* W) {
  const int64_t g = w.group_size, in = w.in_features, half = g / 2;
  const int64_t groups = in / g;
  const int64_t row_bytes = w.bits == 4 ? in / 2 : in;
  for (int64_t o = out_begin; o < out_end; ++o) {
    const uint8_t* wrow = w.packed + o * row_bytes;
    const float* srow = w.scales + o * groups;
    float* out = W + o * in;
    for (int64_t k = 0; k < groups; ++k) {
      const float s = srow[k];
      float* dst = out + k * g;
      if (w.bits == 4) {
        const uint8_t* bytes = wrow + k * half;
        for (int64_t j = 0; j < half; ++j)
          dst[j] = s * static_cast<float>(static_cast<int>(bytes[j] & 0x0F) - 8);
        for (int64_t j = 0; j < half; ++j)
          dst[j + half] = s * static_cast<float>(static_cast<int>(bytes[j] >> 4) - 8);
      } else {
        const int8_t* q = reinterpret_cast<const int8_t*>(wrow) + k * g;
        for (int64_t j = 0; j < g; ++j) dst[j] = s * static_cast<float>(q[j]);
      }
    }
  }
}

}  // namespace lowrank::ops::detail
