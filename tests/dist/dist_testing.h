// Shared by the data-parallel tests: N ranks run as threads of this process
// (each joins a Group over loopback; Gloo does not mind that its peers share a process).
#pragma once

#include <exception>
#include <functional>
#include <thread>
#include <vector>

#include "lowrank/core/net.h"
#include "lowrank/dist/group.h"
#include "tests/testing.h"
#include "tests/train/trainer_testing.h"

namespace lowrank::dist::testing_support {

using lowrank::free_loopback_port;

// Runs fn(rank, group) on `size` threads joined into one group (rank 0 hosts the store); rethrows
// the first rank's exception after all threads have ended.
inline void run_ranks(int size, const std::function<void(int, Group&)>& fn,
                      std::chrono::milliseconds timeout = std::chrono::seconds(20)) {
  const int port = free_loopback_port();
  std::vector<std::exception_ptr> errors(size);
  std::vector<std::thread> threads;
  for (int r = 0; r < size; ++r)
    threads.emplace_back([&, r] {
      try {
        const std::unique_ptr<Group> group = Group::join(World::loopback(r, size, port), timeout);
        fn(r, *group);
      } catch (...) {
        errors[r] = std::current_exception();
      }
    });
  for (std::thread& t : threads) t.join();
  for (const std::exception_ptr& e : errors)
    if (e) std::rethrow_exception(e);
}

}  // namespace lowrank::dist::testing_support

namespace lowrank::train::testing_support {

// small_config() with a global batch of 4 windows: 2 per rank on 2 ranks.
inline TrainerConfig two_rank_config(int64_t steps) {
  TrainerConfig c = small_config();
  c.steps = steps;
  c.batch_size = 4;
  return c;
}

}  // namespace lowrank::train::testing_support
