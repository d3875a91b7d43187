// One parallel region for fine-grained work: every intra-op thread runs the same function once,
// and the members meet at a spinning barrier between dependent phases. The fused decode step
// (nn/decode_step.h) splits every matrix-vector product of one token across the members and
// crosses ~4 barriers per layer.
//
// Why not one at::parallel_for per product: each is an OpenMP fork and join, and a decode step of a
// small model is ~30 of them with a few microseconds of work each, so on two cores the fork/join
// cost ate what the second thread gained (measured: the quickstart model's bfloat16 batch-1 decode
// fell from 980 to 322 tokens/s going from 1 to 2 threads). Here one at::parallel_for forks once per
// token, on libtorch's own OpenMP threads: a second pool of spinning threads would compete with
// libgomp's workers, which spin for milliseconds after every region (measured: 2-thread decode
// 1.5× slower than 1 thread with a pool of our own, 1.4× faster on libgomp's threads). The barrier
// spins (tens of nanoseconds while the members run on their own CPUs) and yields now and then.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>

namespace lowrank {

// A sense-reversing barrier for `size` threads that spin (yielding now and then, so that a member
// sharing its CPU with another thread still gets to run).
class SpinBarrier {
 public:
  explicit SpinBarrier(int size) : size_(size) {}
  int size() const { return size_.load(std::memory_order_acquire); }
  // Returns when all `size` members have called it (the same number of times each).
  void arrive_and_wait();
  // For parallel_region, whose members learn the size only inside the region: each stores the same
  // value before its first arrival.
  void set_size(int size) { size_.store(size, std::memory_order_release); }

 private:
  std::atomic<int> size_;
  std::atomic<int> arrived_{0};
  std::atomic<uint32_t> phase_{0};
};

// Runs fn(member, members, barrier) once on each of `members` threads of libtorch's intra-op pool
// (members <= at::get_num_threads(); 1 inside another parallel region, where libtorch runs the body
// inline) and returns when all have returned. Every member must cross the barrier the same number
// of times, and fn must not throw between barriers (a member that left would leave the others
// waiting); an exception thrown before the first barrier or after the last is rethrown here.
void parallel_region(const std::function<void(int member, int members, SpinBarrier& barrier)>& fn);

}  // namespace lowrank
