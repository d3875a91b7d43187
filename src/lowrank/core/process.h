// The process's resident memory, for the memory figures of run summaries and benchmarks.
#pragma once

#include <cstdint>

namespace lowrank {

// Resident set size now (VmRSS of /proc/self/status), in bytes; 0 where it cannot be read.
int64_t current_rss_bytes();

// The largest resident set size of the process so far, or since reset_peak_rss() (VmHWM of
// /proc/self/status; getrusage's ru_maxrss where that cannot be read), in bytes.
int64_t peak_rss_bytes();

// Sets the peak back to the current resident size (Linux: "5" into /proc/self/clear_refs), so
// that peak_rss_bytes() measures what follows. Returns false where that is not possible.
bool reset_peak_rss();

// Keeps large freed blocks in the heap for reuse instead of returning them to the system (glibc:
// no mmap'd chunks, no trimming). A training step allocates and frees the same large temporaries
// (logits and their gradients: tens of MB each) every step; glibc serves blocks above its mmap
// threshold (at most 32 MiB) with fresh mappings, which the kernel zeroes page by page on first
// touch: 9% of a 1-thread training step in a profile (docs/benchmarks.md). The process keeps its
// peak heap instead. For programs (the CLI, benchmarks), not for a library to call on its own.
void keep_freed_memory();

}  // namespace lowrank
