// The portable matrix-vector kernels of ops/gemv (the readable reference; see gemv.h).
#include "lowrank/ops/gemv.h"

namespace lowrank::ops {
namespace detail {
namespace {

inline float load(ElementType type, const void* p, int64_t i) {
  return type == ElementType::kF32 ? static_cast<const float*>(p)[i]
                                   : bf16_to_float(static_cast<const uint16_t*>(p)[i]);
}

}  // namespace

void gemv_rows_cpu(ElementType type, const void* W, int64_t in, const float* x, const void* bias,
                   int64_t begin, int64_t end, float* y) {
  const int64_t elem = type == ElementType::kF32 ? 4 : 2;
  for (int64_t o = begin; o < end; ++o) {
    const void* row = static_cast<const char*>(W) + o * in * elem;
    y[o] = (bias ? load(type, bias, o) : 0.0f) + dot_cpu(x, type, row, in);
  }
}

float dot_cpu(const float* x, ElementType type, const void* y, int64_t n) {
  // Four partial sums, so that the compiler may keep them in vector lanes.
  float s[4] = {0, 0, 0, 0};
  int64_t i = 0;
  for (; i + 4 <= n; i += 4)
    for (int j = 0; j < 4; ++j) s[j] += x[i + j] * load(type, y, i + j);
  for (; i < n; ++i) s[0] += x[i] * load(type, y, i);
  return (s[0] + s[1]) + (s[2] + s[3]);
}

void axpy_cpu(float a, ElementType type, const void* x, float* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] += a * load(type, x, i);
}

}  // namespace detail

}  // namespace lowrank::ops
