// The run-time choice between the portable matrix-vector kernels (gemv_cpu.cpp) and their AVX2
// twins (gemv_avx2.cpp); see gemv.h.
#include "lowrank/ops/gemv.h"

#include "lowrank/ops/cpu_features.h"

namespace lowrank::ops {

bool gemv_uses_avx2() {
  return detail::cpu_has_avx2_fma();
}

void gemv_rows(ElementType type, const void* W, int64_t in, const float* x, const void* bias, int64_t begin,
               int64_t end, float* y) {
  if (gemv_uses_avx2()) return detail::gemv_rows_avx2(type, W, in, x, bias, begin, end, y);
  detail::gemv_rows_cpu(type, W, in, x, bias, begin, end, y);
}

float dot(const float* x, ElementType type, const void* y, int64_t n) {
  return gemv_uses_avx2() ? detail::dot_avx2(x, type, y, n) : detail::dot_cpu(x, type, y, n);
}

void axpy(float a, ElementType type, const void* x, float* y, int64_t n) {
  if (gemv_uses_avx2()) return detail::axpy_avx2(a, type, x, y, n);
  detail::axpy_cpu(a, type, x, y, n);
}

}  // namespace lowrank::ops
