// AVX-VNNI kernel of the W4A4 product (contract: w4a4_kernels.h; body: w4a4_avx2_kernel.h). This
// translation unit alone is compiled for AVX-VNNI (the pragma below, on top of the AVX2 + FMA
// flags of every ops/*_avx2.cpp), and w4a4_gemm.cpp calls it only when the CPU reports avxvnni.
#if defined(__AVX2__) && defined(__FMA__) && defined(__GNUC__)
#pragma GCC target("avxvnni")
#endif

#include <algorithm>

#include "lowrank/ops/w4a4_kernels.h"

#if defined(__AVX2__) && defined(__FMA__) && defined(__GNUC__)

#include "lowrank/ops/w4a4_avx2_kernel.h"

namespace lowrank::ops::detail {
namespace {

// vpdpbusd: d += Σ_{4 bytes} u8 · s8 per int32 lane, no intermediate saturation.
struct VnniDot {
  static __m256i step(__m256i d, __m256i lo, __m256i xa, __m256i hi, __m256i xb) {
    return _mm256_dpbusd_avx_epi32(_mm256_dpbusd_avx_epi32(d, lo, xa), hi, xb);
  }
};

}  // namespace

void w4a4_gemm_rows_avxvnni(const GroupQuantView& w, const Int4ActivationView& a, const float* bias,
                            int64_t out_begin, int64_t out_end, float* y) {
  w4a4::gemm_rows<VnniDot>(w, a, bias, out_begin, out_end, y);
}

bool w4a4_avxvnni_available() {
  static const bool has = w4a4_avx2_compiled() && __builtin_cpu_supports("avxvnni");
  return has;
}

}  // namespace lowrank::ops::detail

#else

namespace lowrank::ops::detail {
void w4a4_gemm_rows_avxvnni(const GroupQuantView&, const Int4ActivationView&, const float*, int64_t, int64_t,
                            float*) {}
bool w4a4_avxvnni_available() {
  return false;
}
}  // namespace lowrank::ops::detail

#endif
