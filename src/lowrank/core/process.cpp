#include "lowrank/core/process.h"

#include <malloc.h>
#include <sys/resource.h>

#include <climits>
#include <fstream>
#include <string>
#include <string_view>

namespace lowrank {
namespace {

// A "Key:   N kB" line of /proc/self/status in bytes; -1 when absent.
int64_t status_kib_field(std::string_view field) {
  std::ifstream status("/proc/self/status");
  std::string key;
  while (status >> key) {
    if (key == field) {
      int64_t kib = 0;
      status >> kib;
      return kib * 1024;
    }
    status.ignore(1 << 16, '\n');
  }
  return -1;
}

}  // namespace

int64_t current_rss_bytes() {
  const int64_t rss = status_kib_field("VmRSS:");
  return rss < 0 ? 0 : rss;
}

int64_t peak_rss_bytes() {
  if (const int64_t hwm = status_kib_field("VmHWM:"); hwm >= 0) return hwm;
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return static_cast<int64_t>(usage.ru_maxrss) * 1024;  // Linux reports KiB
}

bool reset_peak_rss() {
  std::ofstream clear("/proc/self/clear_refs");
  clear << "5";
  clear.flush();
  return static_cast<bool>(clear);
}

void keep_freed_memory() {
#if defined(__GLIBC__)
  mallopt(M_MMAP_MAX, 0);
  mallopt(M_TRIM_THRESHOLD, INT_MAX);
#endif
}

}  // namespace lowrank
