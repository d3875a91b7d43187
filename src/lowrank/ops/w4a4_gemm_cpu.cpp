// Portable W4A4 kernels (the reference twins of w4a4_gemm_avx2.cpp; contract in w4a4_kernels.h):
// plain loops over int32 dot products, one group at a time.
#include <algorithm>
#include <cmath>
#include <vector>

#include "lowrank/ops/w4a4_kernels.h"

namespace lowrank::ops::detail {

void w4a4_quantize_rows_cpu(const float* x, int64_t in, int64_t group_size, const float* inv_smooth,
                            const float* lora_down, int64_t rank, int64_t row_begin, int64_t row_end,
                            int8_t* values, float* scales, int32_t* group_sums, float* h) {
  const int64_t groups = in / group_size;
  std::vector<float> xs(static_cast<size_t>(group_size));
  for (int64_t m = row_begin; m < row_end; ++m) {
    const float* xrow = x + m * in;
    float* hrow = h != nullptr ? h + m * rank : nullptr;
    if (hrow != nullptr) std::fill(hrow, hrow + rank, 0.0f);
    for (int64_t k = 0; k < groups; ++k) {
      const int64_t i0 = k * group_size;
      float absmax = 0;
      for (int64_t i = 0; i < group_size; ++i) {
        xs[i] = inv_smooth != nullptr ? xrow[i0 + i] * inv_smooth[i0 + i] : xrow[i0 + i];
        absmax = std::max(absmax, std::fabs(xs[i]));
      }
      const float s = absmax / 7.0f;
      int32_t sum = 0;
      int8_t* a = values + m * in + i0;
      for (int64_t i = 0; i < group_size; ++i) {
        const float q = s > 0 ? std::clamp(std::nearbyint(xs[i] / s), -8.0f, 7.0f) : 0.0f;
        a[i] = static_cast<int8_t>(q);
        sum += a[i];
      }
      scales[m * groups + k] = s;
      group_sums[m * groups + k] = sum;
      // The down projection reads the group while it is at hand (the fusion).
      if (hrow != nullptr)
        for (int64_t j = 0; j < rank; ++j) {
          const float* l = lora_down + j * in + i0;
          float p = 0;
          for (int64_t i = 0; i < group_size; ++i) p += xs[i] * l[i];
          hrow[j] += p;
        }
    }
  }
}

void w4a4_gemm_rows_cpu(const GroupQuantView& w, const Int4ActivationView& a, const float* bias,
                        int64_t out_begin, int64_t out_end, float* y) {
  const int64_t in = w.in_features, g = w.group_size, half = g / 2, groups = in / g;
  for (int64_t m = 0; m < a.rows; ++m) {
    const int8_t* arow = a.values + m * in;
    const float* srow = a.scales + m * groups;
    const int32_t* trow = a.group_sums + m * groups;
    for (int64_t o = out_begin; o < out_end; ++o) {
      const uint8_t* wrow = w.packed + o * (in / 2);
      const float* wsrow = w.scales + o * groups;
      float acc = 0;
      for (int64_t k = 0; k < groups; ++k) {
        const uint8_t* bytes = wrow + k * half;
        const int8_t* ag = arow + k * g;
        int32_t dot = 0;
        for (int64_t i = 0; i < half; ++i) {
          dot += static_cast<int32_t>(bytes[i] & 0x0F) * ag[i];
          dot += static_cast<int32_t>(bytes[i] >> 4) * ag[half + i];
        }
        acc += srow[k] * wsrow[k] * static_cast<float>(dot - 8 * trow[k]);
      }
      y[m * w.out_features + o] = acc + (bias != nullptr ? bias[o] : 0.0f);
    }
  }
}

}  // namespace lowrank::ops::detail
