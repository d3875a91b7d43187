// Minimal leveled logging to stderr. The CLI sets the level from --quiet / --verbose.
#pragma once

#include <string_view>

#include "lowrank/core/error.h"

namespace lowrank::log {

enum class Level { kError = 0, kWarn = 1, kInfo = 2, kDebug = 3 };

void set_level(Level level);
Level level();
void write(Level level, std::string_view message);

template <typename... Args>
void info(const Args&... args) {
  if (level() >= Level::kInfo) write(Level::kInfo, str(args...));
}
template <typename... Args>
void warn(const Args&... args) {
  if (level() >= Level::kWarn) write(Level::kWarn, str(args...));
}
template <typename... Args>
void debug(const Args&... args) {
  if (level() >= Level::kDebug) write(Level::kDebug, str(args...));
}

}  // namespace lowrank::log
