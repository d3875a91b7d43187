// A fixed team of threads for short, fine-grained parallel work: the fused decode step
// (nn/decode_step.h) splits every matrix-vector product of one token across the team and meets at a
// barrier between dependent phases, dozens of times per token.
//
// Why not libtorch's pool (at::parallel_for, OpenMP underneath): each parallel_for is a fork and a
// join, and a decode step of a small model is ~30 of them with a few microseconds of work each, so
// on two cores the fork/join and the wake-ups cost more than the second thread gains (measured:
// batch-1 decode of the quickstart model in bfloat16 fell from 980 to 322 tokens/s going from 1 to
// 2 threads). A team enters one parallel region per token, its members split each product's output
// rows, and the phases are separated by a spinning barrier (tens of nanoseconds when the members
// are running, as llama.cpp's ggml threadpool does). Between regions the workers spin briefly and
// then sleep on a futex (std::atomic::wait), so an idle team costs no CPU.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <thread>
#include <vector>

namespace lowrank {

class WorkerTeam {
 public:
  // A team of `size` members: the calling thread of run() plus size - 1 workers. Throws
  // InvalidArgument for size < 1.
  explicit WorkerTeam(int size);
  ~WorkerTeam();
  WorkerTeam(const WorkerTeam&) = delete;
  WorkerTeam& operator=(const WorkerTeam&) = delete;

  int size() const { return size_; }

  // Runs fn(member) on every member (the caller is member 0) and returns when all have returned.
  // The first exception thrown by a member is rethrown here (the others finish their call). Not
  // reentrant: one run at a time, and fn must not call run().
  void run(const std::function<void(int member)>& fn);

  // Inside run(): returns when every member has reached this barrier (the same number of times).
  // Every member must call it the same number of times.
  void barrier();

  // The process's team of `size` members, rebuilt when the size asked for changes. Not thread-safe:
  // for the decode path, which runs one step at a time per process (the serving engine steps from
  // one thread).
  static WorkerTeam& shared(int size);

 private:
  void work(int member);

  int size_;
  std::vector<std::thread> workers_;
  const std::function<void(int)>* job_ = nullptr;
  // Bumped once per run(): workers wait for it to change.
  std::atomic<uint64_t> generation_{0};
  std::atomic<int> running_{0};  // members still inside the current job
  std::atomic<bool> stop_{false};
  // Sense-reversing barrier.
  std::atomic<int> arrived_{0};
  std::atomic<uint32_t> barrier_phase_{0};
  std::exception_ptr error_;
  std::atomic<bool> failed_{false};
};

}  // namespace lowrank
