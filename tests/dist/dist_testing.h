// Shared by the data-parallel tests: a free port, and N ranks run as threads of this process
// (each joins a Group over loopback; Gloo does not mind that its peers share a process).
#pragma once

#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <exception>
#include <functional>
#include <thread>
#include <vector>

#include "lowrank/dist/group.h"
#include "tests/testing.h"
#include "tests/train/trainer_testing.h"

namespace lowrank::dist::testing_support {

// A port that was free a moment ago (bound to 0 and released).
inline int free_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  socklen_t len = sizeof addr;
  if (fd < 0 || ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    if (fd >= 0) ::close(fd);
    throw IoError("free_port: no socket");
  }
  ::close(fd);
  return ntohs(addr.sin_port);
}

// Runs fn(rank, group) on `size` threads joined into one group (rank 0 hosts the store); rethrows
// the first rank's exception after all threads have ended.
inline void run_ranks(int size, const std::function<void(int, Group&)>& fn,
                      std::chrono::milliseconds timeout = std::chrono::seconds(20)) {
  const int port = free_port();
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
