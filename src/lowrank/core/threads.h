// libtorch's intra-op thread pool. Out of the box libtorch uses one thread per *physical*
// core it detects (and OMP_NUM_THREADS when set); lowrank's default is every logical core
// the process may run on, overridable by LOWRANK_NUM_THREADS or --threads.
#pragma once

#include <string>

namespace lowrank {

// Cores this process may run on (sched_getaffinity), at least 1.
int available_cores();

// Sets libtorch's intra-op threads: `requested` > 0 wins, then LOWRANK_NUM_THREADS, then
// available_cores(). Returns the count in force. Throws InvalidArgument for a bad env value.
int configure_threads(int requested = 0);

// One line for --version --verbose: the count in force and how it was chosen.
std::string thread_summary();

}  // namespace lowrank
