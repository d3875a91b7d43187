// The agent of `lowrank <verb> --nproc N`, as torchrun's: it hosts the TCPStore, starts N copies
// of the command as ranks 0..N-1 with torchrun's environment (RANK, LOCAL_RANK, WORLD_SIZE,
// LOCAL_WORLD_SIZE, MASTER_ADDR, MASTER_PORT, TORCHELASTIC_USE_AGENT_STORE=True and
// OMP_NUM_THREADS = cores / N unless set), forwards SIGINT and SIGTERM to them, and waits. When
// a rank fails it stops the others (SIGTERM, then SIGKILL after a grace period) and reports the
// first failure.
#pragma once

#include <chrono>
#include <filesystem>
#include <string>
#include <vector>

namespace lowrank::dist {

struct LaunchOptions {
  int nproc = 1;
  int master_port = 0;  // 0: a free port
  std::chrono::milliseconds timeout{300000};
  // Each rank's argv; command[0] is the executable (the agent passes its own, /proc/self/exe).
  std::vector<std::string> command;
  // Where ranks >= 1 write their logs (log_dir/rank-K.log: each rank redirects its own output
  // there, so that torchrun's ranks do too); named in the failure message.
  std::filesystem::path log_dir;
  std::chrono::milliseconds grace{10000};  // between SIGTERM and SIGKILL when stopping ranks
};

// Runs the ranks to completion. Throws InvalidArgument for nproc < 1 or a launch from inside a
// rank (RANK set), IoError naming the port when it is busy (before any rank starts) and
// naming the first rank that failed and how (its exit status or signal).
void launch(const LaunchOptions& options);

}  // namespace lowrank::dist
