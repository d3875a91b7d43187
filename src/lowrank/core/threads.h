// libtorch's intra-op thread pool. Out of the box libtorch uses one thread per *physical*
// core it detects (and OMP_NUM_THREADS when set); lowrank's default is every logical core
// the process may run on, overridable by LOWRANK_NUM_THREADS or --threads. With more than one
// thread, the threads are bound to CPUs (bind_intra_op_threads).
#pragma once

#include <string>
#include <vector>

namespace lowrank {

// Cores this process may run on (sched_getaffinity), at least 1.
int available_cores();

// Sets libtorch's intra-op threads: `requested` > 0 wins, then LOWRANK_NUM_THREADS, then
// available_cores(). Returns the count in force. Throws InvalidArgument for a bad env value.
int configure_threads(int requested = 0);

// One line for --version --verbose: the count in force and how it was chosen.
std::string thread_summary();

// The CPUs this process may run on, in order, as seen before any thread was bound (recorded at
// the first call of this or configure_threads).
const std::vector<int>& process_cpus();

// Binds the calling thread to process_cpus()[0] and libtorch's intra-op (OpenMP) workers of this
// thread's pool to the next CPUs, one each, as OMP_PROC_BIND=true does. Why: unbound, a worker that
// libgomp wakes from its futex sleep is often queued on the waking thread's own CPU (the
// scheduler's wake-affine placement) while that thread spins at the region's barrier, so every
// parallel region stalls for a spin period; measured on a 2-vCPU machine, a bfloat16 prefill of
// 128 tokens ran at 700 tokens/s with 2 threads against 60 000 with 1 (and 64 000 with 2 threads
// bound). Does nothing when the intra-op count is 1, exceeds the CPUs, or when OMP_PROC_BIND or
// OMP_PLACES is set (libgomp then binds its threads itself), or when LOWRANK_BIND_THREADS=0.
// Threads started later by the caller inherit its single-CPU mask: a thread that runs model work
// (the serving engine's) calls this itself. Returns whether it bound.
// The fused decode step's parallel region (core/parallel_region.h) runs on these same threads.
bool bind_intra_op_threads();

}  // namespace lowrank
