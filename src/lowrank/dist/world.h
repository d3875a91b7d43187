// A rank's place in a data-parallel world, read from the environment variables that torchrun
// (and `lowrank ... --nproc N`, dist/launch.h) give each process: RANK, WORLD_SIZE, LOCAL_RANK,
// LOCAL_WORLD_SIZE, MASTER_ADDR, MASTER_PORT, TORCHELASTIC_USE_AGENT_STORE and
// TORCHELASTIC_RESTART_COUNT. Pure parsing: no c10d here.
#pragma once

#include <functional>
#include <optional>
#include <string>

namespace lowrank::dist {

struct World {
  int rank = 0;
  int world_size = 1;
  int local_rank = 0;
  int local_world_size = 1;
  std::string master_addr = "127.0.0.1";
  int master_port = 0;
  // TORCHELASTIC_USE_AGENT_STORE=True: the agent (torchrun, or our launcher) hosts the TCPStore
  // and every rank is a client; otherwise rank 0 hosts it.
  bool agent_store = false;
  int restart_count = 0;  // TORCHELASTIC_RESTART_COUNT: > 0 when torchrun restarted the group

  bool hosts_store() const { return !agent_store && rank == 0; }

  // Rank `rank` of `size` on this machine, rank 0 hosting the store at 127.0.0.1:`port` (tests and
  // benchmarks that run ranks as threads).
  static World loopback(int rank, int size, int port);

  // The world of this process: std::nullopt when neither RANK nor WORLD_SIZE is set (one process,
  // no group). Throws InvalidArgument naming the variable when one is missing or malformed, or
  // when RANK >= WORLD_SIZE.
  static std::optional<World> from_environment();
  // The same over any lookup (tests).
  static std::optional<World> from_lookup(const std::function<const char*(const char*)>& getenv);
};

}  // namespace lowrank::dist
