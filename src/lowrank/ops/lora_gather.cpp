// Checks and dispatch of ops/lora_gather; the kernels live in lora_gather_cpu.cpp (portable, and
// the paged form) and lora_gather_avx2.cpp (AVX2 + FMA, chosen at run time).
#include "lowrank/ops/lora_gather.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <atomic>
#include <vector>

#include "lowrank/core/error.h"
#include "lowrank/ops/cpu_features.h"

namespace lowrank::ops {

namespace {
std::atomic<int64_t> max_tokens{4};
}  // namespace

int64_t lora_gather_max_tokens() {
  return max_tokens.load(std::memory_order_relaxed);
}

void set_lora_gather_max_tokens(int64_t tokens) {
  LR_CHECK(tokens >= 0, InvalidArgument, "set_lora_gather_max_tokens: tokens = ", tokens, " is negative");
  max_tokens.store(tokens, std::memory_order_relaxed);
}

bool lora_gather_avx2_usable() {
  return detail::cpu_has_avx2_fma();
}

namespace detail {

int64_t check_lora_gather_tasks(std::span<const LoraGatherTask> tasks) {
  int64_t max_rank = 0;
  for (size_t i = 0; i < tasks.size(); ++i) {
    const LoraGatherTask& t = tasks[i];
    LR_CHECK(t.x != nullptr && t.y != nullptr && t.a != nullptr && t.b != nullptr, InvalidArgument,
             "lora_gather: task ", i, " has a null pointer");
    LR_CHECK(t.tokens > 0 && t.in > 0 && t.out > 0 && t.rank > 0, InvalidArgument, "lora_gather: task ", i,
             " has tokens = ", t.tokens, ", in = ", t.in, ", out = ", t.out, ", rank = ", t.rank,
             " (all must be positive)");
    max_rank = std::max(max_rank, t.rank);
  }
  return max_rank;
}

int64_t check_lora_paged_tasks(std::span<const LoraPagedTask> tasks, int64_t* max_out) {
  int64_t max_rank = 0;
  *max_out = 0;
  for (size_t i = 0; i < tasks.size(); ++i) {
    const LoraPagedTask& t = tasks[i];
    LR_CHECK(t.x != nullptr && t.y != nullptr && t.a_arena != nullptr && t.b_arena != nullptr &&
                 t.slots != nullptr,
             InvalidArgument, "lora_gather_paged: task ", i, " has a null pointer");
    LR_CHECK(t.tokens > 0 && t.in > 0 && t.out > 0 && t.rank > 0 && t.slot_width > 0 && t.first >= 0,
             InvalidArgument, "lora_gather_paged: task ", i, " has tokens = ", t.tokens, ", in = ", t.in,
             ", out = ", t.out, ", rank = ", t.rank, ", slot_width = ", t.slot_width, ", first = ", t.first,
             " (sizes must be positive, first non-negative)");
    const int64_t chunks = (std::max(t.in, t.out) + t.slot_width - 1) / t.slot_width;
    LR_CHECK(t.slots_per_rank >= chunks, InvalidArgument, "lora_gather_paged: task ", i,
             " has slots_per_rank = ", t.slots_per_rank, " but in = ", t.in, " and out = ", t.out, " need ",
             chunks, " slots of ", t.slot_width);
    max_rank = std::max(max_rank, t.rank);
    *max_out = std::max(*max_out, t.out);
  }
  return max_rank;
}

}  // namespace detail

void lora_gather_paged(std::span<const LoraPagedTask> tasks, LoraElement element) {
  int64_t max_out = 0;
  const int64_t max_rank = detail::check_lora_paged_tasks(tasks, &max_out);
  if (tasks.empty()) return;
  int64_t work = 0;
  for (const LoraPagedTask& t : tasks) work += t.tokens * t.rank * (t.in + t.out);
  // As lora_gather: chunks of at least ~64 K multiply-adds per thread.
  const int64_t per_task = std::max<int64_t>(1, work / static_cast<int64_t>(tasks.size()));
  const int64_t grain = std::max<int64_t>(1, (int64_t{1} << 16) / per_task);
  at::parallel_for(0, static_cast<int64_t>(tasks.size()), grain, [&](int64_t begin, int64_t end) {
    std::vector<float> scratch(static_cast<size_t>(max_rank + max_out));
    for (int64_t i = begin; i < end; ++i)
      detail::lora_paged_task_cpu(tasks[static_cast<size_t>(i)], element, scratch.data());
  });
}

#ifndef LOWRANK_WITH_CUDA
bool lora_gather_cuda_built() {
  return false;
}

void lora_gather_cuda(std::span<const LoraGatherTask>, int) {
  throw Unsupported("lora_gather_cuda: this build has no CUDA");
}

void lora_gather_paged_cuda(std::span<const LoraPagedTask>, LoraElement, int) {
  throw Unsupported("lora_gather_paged_cuda: this build has no CUDA");
}
#endif

void lora_gather(std::span<const LoraGatherTask> tasks, LoraGatherKernel kernel) {
  const int64_t max_rank = detail::check_lora_gather_tasks(tasks);
  int64_t work = 0;
  for (const LoraGatherTask& t : tasks) work += t.tokens * t.rank * (t.in + t.out);
  if (tasks.empty()) return;
  const bool usable = lora_gather_avx2_usable();
  LR_CHECK(kernel != LoraGatherKernel::kAvx2 || usable, Unsupported,
           "lora_gather: the AVX2 kernel is not available (a build or a CPU without AVX2/FMA)");
  const bool avx2 = kernel == LoraGatherKernel::kAvx2 || (kernel == LoraGatherKernel::kAuto && usable);
  // Chunks of at least ~64 K multiply-adds (a few microseconds), so that a small batch stays on one
  // thread rather than paying for waking the others.
  const int64_t per_task = std::max<int64_t>(1, work / static_cast<int64_t>(tasks.size()));
  const int64_t grain = std::max<int64_t>(1, (int64_t{1} << 16) / per_task);
  at::parallel_for(0, static_cast<int64_t>(tasks.size()), grain, [&](int64_t begin, int64_t end) {
    std::vector<float> h(static_cast<size_t>(max_rank));
    for (int64_t i = begin; i < end; ++i) {
      if (avx2)
        detail::lora_gather_task_avx2(tasks[static_cast<size_t>(i)], h.data());
      else
        detail::lora_gather_task_cpu(tasks[static_cast<size_t>(i)], h.data());
    }
  });
}

}  // namespace lowrank::ops
