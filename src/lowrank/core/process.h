// The process's resident memory, for the memory figures of run summaries and benchmarks.
#pragma once

#include <cstdint>

namespace lowrank {

// Resident set size now (VmRSS of /proc/self/status), in bytes; 0 where it cannot be read.
int64_t current_rss_bytes();

// The largest resident set size of the process so far (getrusage's ru_maxrss), in bytes.
int64_t peak_rss_bytes();

}  // namespace lowrank
