// libtorch's intra-op thread pool. Out of the box libtorch uses one thread per *physical*
// core it detects (and OMP_NUM_THREADS when set); lowrank's default is every logical core
// the process may run on, overridable by --threads, LOWRANK_NUM_THREADS or OMP_NUM_THREADS (which
// torchrun and `--nproc` set per rank); LOWRANK_BIND_THREADS=1
// binds them to CPUs (bind_intra_op_threads).
#pragma once

#include <string>
#include <vector>

namespace lowrank {

// Cores this process may run on (sched_getaffinity), at least 1.
int available_cores();

// Sets libtorch's intra-op threads: `requested` > 0 wins, then LOWRANK_NUM_THREADS, then
// OMP_NUM_THREADS, then available_cores(). Returns the count in force. Throws InvalidArgument for a bad env
// value.
int configure_threads(int requested = 0);

// One line for --version --verbose: the count in force and how it was chosen.
std::string thread_summary();

// The CPUs this process may run on, in order, as seen before any thread was bound (recorded at
// the first call of this or configure_threads).
const std::vector<int>& process_cpus();

// With LOWRANK_BIND_THREADS=1: binds the calling thread to process_cpus()[0] and libtorch's
// intra-op (OpenMP) workers of this thread's pool to the next CPUs, one each, as OMP_PROC_BIND=true
// does. Off by default: measured on a 2-vCPU machine (bench/decode.py, docs/benchmarks.md), bound
// threads decode about as fast as unbound ones on an idle machine and up to 25% slower when another
// process keeps a CPU busy (a bound thread cannot leave it). Does nothing when the intra-op count
// is 1 or exceeds the CPUs, or when OMP_PROC_BIND or OMP_PLACES is set (libgomp then binds its
// threads itself). Threads started later by the caller inherit its single-CPU mask, so a thread
// that runs model work (the serving engine's) calls this itself. Returns whether it bound.
bool bind_intra_op_threads();

}  // namespace lowrank
