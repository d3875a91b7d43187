// Portable kernel of ops/lora_gather (see lora_gather.h): h = s·A x, then y += B h, per token.
#include "lowrank/ops/lora_gather.h"

namespace lowrank::ops::detail {

void lora_gather_task_cpu(const LoraGatherTask& t, float* h) {
  for (int64_t k = 0; k < t.tokens; ++k) {
    const float* x = t.x + k * t.in;
    float* y = t.y + k * t.out;
    for (int64_t j = 0; j < t.rank; ++j) {
      const float* a = t.a + j * t.in;
      float dot = 0;
      for (int64_t i = 0; i < t.in; ++i) dot += a[i] * x[i];
      h[j] = t.scale * dot;
    }
    for (int64_t o = 0; o < t.out; ++o) {
      const float* b = t.b + o * t.rank;
      float dot = 0;
      for (int64_t j = 0; j < t.rank; ++j) dot += b[j] * h[j];
      y[o] += dot;
    }
  }
}

}  // namespace lowrank::ops::detail
