// Portable kernels of ops/lora_gather (see lora_gather.h): h = s·A x, then y += B h, per token;
// contiguous factors (float32), and the paged form reading them through a slot table.
#include "lowrank/ops/lora_gather.h"

#include <algorithm>

#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

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

// ---- Paged form (see lora_gather.h): the same two products, every chunk of A's rows and B's
// columns found through the adapter's slot table; float32 accumulation whatever the element type.

namespace lowrank::ops::detail {
namespace {

template <typename T>
void paged_task(const LoraPagedTask& t, float* h, float* acc) {
  const T* a_arena = static_cast<const T*>(t.a_arena);
  const T* b_arena = static_cast<const T*>(t.b_arena);
  const int64_t W = t.slot_width;
  for (int64_t k = 0; k < t.tokens; ++k) {
    const T* x = static_cast<const T*>(t.x) + k * t.in;
    T* y = static_cast<T*>(t.y) + k * t.out;
    // Shrink: h[j] = s·⟨A[j, :], x⟩, chunk by chunk (a chunk is one slot: contiguous).
    for (int64_t j = 0; j < t.rank; ++j) {
      const int64_t* row = t.slots + t.first + j * t.slots_per_rank;
      float dot = 0;
      for (int64_t c = 0; c * W < t.in; ++c) {
        const T* a = a_arena + row[c] * W;
        const int64_t n = std::min(W, t.in - c * W);
        const T* xc = x + c * W;
        for (int64_t i = 0; i < n; ++i) dot += static_cast<float>(a[i]) * static_cast<float>(xc[i]);
      }
      h[j] = t.scale * dot;
    }
    // Expand: acc += h[j]·B[:, j], one column (a run of slots) at a time, then y += acc.
    std::fill(acc, acc + t.out, 0.0f);
    for (int64_t j = 0; j < t.rank; ++j) {
      const int64_t* column = t.slots + t.first + j * t.slots_per_rank;
      for (int64_t c = 0; c * W < t.out; ++c) {
        const T* b = b_arena + column[c] * W;
        const int64_t n = std::min(W, t.out - c * W);
        float* ac = acc + c * W;
        for (int64_t o = 0; o < n; ++o) ac[o] += h[j] * static_cast<float>(b[o]);
      }
    }
    for (int64_t o = 0; o < t.out; ++o) y[o] = static_cast<T>(static_cast<float>(y[o]) + acc[o]);
  }
}

}  // namespace

void lora_paged_task_cpu(const LoraPagedTask& t, LoraElement element, float* scratch) {
  float* h = scratch;
  float* acc = scratch + t.rank;
  switch (element) {
    case LoraElement::kF32:
      return paged_task<float>(t, h, acc);
    case LoraElement::kBF16:
      return paged_task<c10::BFloat16>(t, h, acc);
    case LoraElement::kF16:
      return paged_task<c10::Half>(t, h, acc);
  }
}

}  // namespace lowrank::ops::detail
