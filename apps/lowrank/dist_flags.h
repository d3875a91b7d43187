// The data-parallel flags of the training verbs (`pretrain`; docs/distributed.md):
//   --nproc N [--master-port P] [--dist-backend gloo] [--dist-timeout S] [--bucket-mb MB] [--zero 0|1]
// With --nproc this process is the launcher agent (dist/launch.h) and runs N copies of its own
// command line, less --nproc and --master-port, as ranks. Without --nproc and with torchrun's
// variables set (RANK, WORLD_SIZE, ...), it joins that world as one rank (torchrun --no-python
// --nproc-per-node N lowrank pretrain ..., or a scheduler's launch).
#pragma once

#include <filesystem>
#include <memory>
#include <string>

#include <CLI/CLI.hpp>

#include "lowrank/dist/gradient_reducer.h"
#include "lowrank/dist/group.h"

namespace lowrank::cli {

// The process's argv, for the launcher to re-run (main() records it).
void set_command_line(int argc, char** argv);

// A rank whose output went to its log file also writes its final error to the terminal it was
// started from (main() calls this with the message it logs); elsewhere it does nothing.
void echo_error_to_terminal(const std::string& message);

struct DistFlags {
  int nproc = 0;  // 0: no launch
  int master_port = 0;
  std::string backend = "gloo";
  double timeout_s = 300;
  double bucket_mb = 25;
  int zero = 0;

  void add_to(CLI::App& cmd);
  // With --nproc: runs the ranks (ranks >= 1 log to `log_dir`/rank-K.log) and returns true once
  // all succeeded (throws naming the first that failed). Without: false.
  bool launch(const std::filesystem::path& log_dir) const;
  // The world of torchrun's environment variables joined as one rank, or nullptr when they are
  // unset. A rank other than 0 sends its stdout and stderr to `log_dir`/rank-K.log.
  std::unique_ptr<dist::Group> join(const std::filesystem::path& log_dir) const;
  dist::ReducerOptions reducer() const;

 private:
  void check_backend() const;  // Unsupported for anything but gloo
};

}  // namespace lowrank::cli
