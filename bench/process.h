// Fresh-process measurements shared by the benchmark and reproduction programs: a program re-runs
// itself as a child so that a peak-memory figure is the child's own.
#pragma once

#include <sys/wait.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <optional>
#include <string>

namespace lowrank::bench {

// The process's peak resident set so far, in bytes (Linux: VmHWM of /proc/self/status).
inline int64_t peak_rss_bytes() {
  std::ifstream status("/proc/self/status");
  for (std::string line; std::getline(status, line);)
    if (line.rfind("VmHWM:", 0) == 0) return std::atoll(line.c_str() + 6) * 1024;
  return -1;
}

// Runs this program again with `args` (a fresh process, so its peak memory is its own) and returns
// the integer it prints; nullopt when it fails.
inline std::optional<int64_t> run_child_for_number(const std::string& args) {
  char self[4096] = {0};
  const ssize_t len = readlink("/proc/self/exe", self, sizeof self - 1);
  if (len <= 0) return std::nullopt;
  const std::string cmd = "'" + std::string(self, static_cast<size_t>(len)) + "'" + args + " 2>/dev/null";
  FILE* pipe = popen(cmd.c_str(), "r");
  if (pipe == nullptr) return std::nullopt;
  char line[64] = {0};
  const bool got = std::fgets(line, sizeof line, pipe) != nullptr;
  const int status = pclose(pipe);
  if (!got || !WIFEXITED(status) || WEXITSTATUS(status) != 0) return std::nullopt;
  return std::atoll(line);
}

}  // namespace lowrank::bench
