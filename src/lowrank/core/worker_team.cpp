// A fixed team of spinning threads; see worker_team.h.
#include "lowrank/core/worker_team.h"

#include <chrono>
#include <exception>
#include <memory>

#include "lowrank/core/error.h"

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

// How long an idle worker spins for the next run() before sleeping: longer than the gap between
// two decode steps (sampling one token), far shorter than anything a user would notice as load.
constexpr auto kIdleSpin = std::chrono::microseconds(300);
// Barrier spins between yields: when members outnumber free cores, yielding lets the one that is
// late run.
constexpr int kSpinsPerYield = 4096;

}  // namespace

WorkerTeam::WorkerTeam(int size) : size_(size) {
  LR_CHECK(size >= 1, InvalidArgument, "a worker team needs at least one member, got ", size);
  workers_.reserve(static_cast<size_t>(size - 1));
  for (int m = 1; m < size; ++m) workers_.emplace_back([this, m] { work(m); });
}

WorkerTeam::~WorkerTeam() {
  stop_.store(true, std::memory_order_release);
  generation_.fetch_add(1, std::memory_order_acq_rel);
  generation_.notify_all();
  for (std::thread& t : workers_) t.join();
}

void WorkerTeam::work(int member) {
  uint64_t seen = 0;
  for (;;) {
    uint64_t now = generation_.load(std::memory_order_acquire);
    if (now == seen) {
      const auto deadline = std::chrono::steady_clock::now() + kIdleSpin;
      for (int i = 0; now == seen; ++i) {
        cpu_relax();
        now = generation_.load(std::memory_order_acquire);
        if ((i & 255) == 255 && std::chrono::steady_clock::now() > deadline) {
          generation_.wait(seen, std::memory_order_acquire);
          now = generation_.load(std::memory_order_acquire);
        }
      }
    }
    seen = now;
    if (stop_.load(std::memory_order_acquire)) return;
    try {
      (*job_)(member);
    } catch (...) {
      if (!failed_.exchange(true)) error_ = std::current_exception();
    }
    running_.fetch_sub(1, std::memory_order_acq_rel);
  }
}

void WorkerTeam::run(const std::function<void(int member)>& fn) {
  if (size_ == 1) {
    fn(0);
    return;
  }
  job_ = &fn;
  failed_.store(false, std::memory_order_relaxed);
  error_ = nullptr;
  running_.store(size_ - 1, std::memory_order_relaxed);
  generation_.fetch_add(1, std::memory_order_acq_rel);
  generation_.notify_all();
  try {
    fn(0);
  } catch (...) {
    if (!failed_.exchange(true)) error_ = std::current_exception();
  }
  for (int i = 0; running_.load(std::memory_order_acquire) != 0; ++i) {
    cpu_relax();
    if (i % kSpinsPerYield == kSpinsPerYield - 1) std::this_thread::yield();
  }
  job_ = nullptr;
  if (failed_.load(std::memory_order_acquire)) std::rethrow_exception(error_);
}

void WorkerTeam::barrier() {
  if (size_ == 1) return;
  const uint32_t phase = barrier_phase_.load(std::memory_order_acquire);
  if (arrived_.fetch_add(1, std::memory_order_acq_rel) + 1 == size_) {
    arrived_.store(0, std::memory_order_relaxed);
    barrier_phase_.store(phase + 1, std::memory_order_release);
    return;
  }
  for (int i = 0; barrier_phase_.load(std::memory_order_acquire) == phase; ++i) {
    cpu_relax();
    if (i % kSpinsPerYield == kSpinsPerYield - 1) std::this_thread::yield();
  }
}

WorkerTeam& WorkerTeam::shared(int size) {
  static std::unique_ptr<WorkerTeam> team;
  if (!team || team->size() != size) {
    team.reset();
    team = std::make_unique<WorkerTeam>(size);
  }
  return *team;
}

}  // namespace lowrank
