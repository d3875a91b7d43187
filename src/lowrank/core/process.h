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

}  // namespace lowrank
