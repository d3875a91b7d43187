// Row kernels of ops/shifted_exp (internal: shared by shifted_exp.cpp, shifted_exp_avx2.cpp and
// the tests). No ATen include: shifted_exp_avx2.cpp is compiled with -mavx2 -mfma and without the
// precompiled header.
#pragma once

#include <cstdint>

namespace lowrank::ops::detail {

// x[0..m) ← exp(x − shift) + eps; returns the sum of the new values. The AVX2 + FMA twin; only
// call it when cpu_has_avx2_fma() (cpu_features.h).
float shifted_exp_row_avx2(float* x, int64_t m, float shift, float eps);

}  // namespace lowrank::ops::detail
