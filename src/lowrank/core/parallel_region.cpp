// One parallel region with a spinning barrier; see parallel_region.h.
#include "lowrank/core/parallel_region.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <thread>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

namespace lowrank {
namespace {

inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  _mm_pause();
#else
  std::this_thread::yield();
#endif
}

// Spins between yields: when members outnumber free CPUs, yielding lets the late one run.
constexpr int kSpinsPerYield = 2048;

}  // namespace

void SpinBarrier::arrive_and_wait() {
  const int size = size_.load(std::memory_order_acquire);
  if (size <= 1) return;
  const uint32_t phase = phase_.load(std::memory_order_acquire);
  if (arrived_.fetch_add(1, std::memory_order_acq_rel) + 1 == size) {
    arrived_.store(0, std::memory_order_relaxed);
    phase_.store(phase + 1, std::memory_order_release);
    return;
  }
  for (int i = 1; phase_.load(std::memory_order_acquire) == phase; ++i) {
    cpu_relax();
    if (i % kSpinsPerYield == 0) std::this_thread::yield();
  }
}

void parallel_region(const std::function<void(int member, int members, SpinBarrier& barrier)>& fn) {
  const int64_t want = std::max(1, at::in_parallel_region() ? 1 : at::get_num_threads());
  if (want == 1) {
    SpinBarrier single(1);
    fn(0, 1, single);
    return;
  }
  // ATen's OpenMP parallel_for gives thread t the items [t·c, (t+1)·c) with c = ceil(want /
  // threads in the region): one item each when the region has `want` threads (libgomp's default,
  // dynamic adjustment off), several when it has fewer. Every member derives the same count of
  // members from c, so the barrier's size is right in either case.
  SpinBarrier barrier(0);
  at::parallel_for(0, want, 1, [&](int64_t begin, int64_t end) {
    const int tid = at::get_thread_num();
    const int64_t chunk = tid == 0 ? end - begin : begin / tid;
    const int count = static_cast<int>((want + chunk - 1) / chunk);
    barrier.set_size(count);
    fn(tid, count, barrier);
  });
}

}  // namespace lowrank
