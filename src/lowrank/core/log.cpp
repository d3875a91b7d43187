#include "lowrank/core/log.h"

#include <atomic>
#include <cstdio>
#include <mutex>

namespace lowrank::log {
namespace {
std::atomic<Level> g_level{Level::kInfo};
std::mutex g_mutex;
}  // namespace

void set_level(Level level) {
  g_level = level;
}
Level level() {
  return g_level;
}

void write(Level level, std::string_view message) {
  static constexpr const char* kPrefix[] = {"error: ", "warning: ", "", "debug: "};
  std::lock_guard lock(g_mutex);
  std::fprintf(stderr, "%s%.*s\n", kPrefix[static_cast<int>(level)], static_cast<int>(message.size()),
               message.data());
}

}  // namespace lowrank::log
