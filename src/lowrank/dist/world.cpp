// Parsing torchrun's environment variables; see world.h.
#include "lowrank/dist/world.h"

#include <charconv>
#include <cstdlib>
#include <string_view>

#include "lowrank/core/error.h"

namespace lowrank::dist {
namespace {

int parse_int(const char* name, const char* text, int min_value, int max_value) {
  const std::string_view s(text);
  int value = 0;
  const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), value);
  LR_CHECK(ec == std::errc() && end == s.data() + s.size() && !s.empty(), InvalidArgument,
           "environment variable ", name, "=\"", s, "\" is not an integer");
  LR_CHECK(value >= min_value && value <= max_value, InvalidArgument, "environment variable ", name, "=",
           value, " is out of range [", min_value, ", ", max_value, "]");
  return value;
}

}  // namespace

std::optional<World> World::from_lookup(const std::function<const char*(const char*)>& getenv) {
  const char* rank = getenv("RANK");
  const char* world_size = getenv("WORLD_SIZE");
  if (!rank && !world_size) return std::nullopt;
  const auto required = [&](const char* name) {
    const char* value = getenv(name);
    LR_CHECK(value && *value, InvalidArgument, "environment variable ", name,
             " is not set (a data-parallel rank needs RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT)");
    return value;
  };
  World w;
  w.world_size = parse_int("WORLD_SIZE", required("WORLD_SIZE"), 1, 1 << 20);
  w.rank = parse_int("RANK", required("RANK"), 0, 1 << 20);
  LR_CHECK(w.rank < w.world_size, InvalidArgument, "environment variable RANK=", w.rank,
           " must be less than WORLD_SIZE=", w.world_size);
  w.master_addr = required("MASTER_ADDR");
  w.master_port = parse_int("MASTER_PORT", required("MASTER_PORT"), 1, 65535);
  const char* local_rank = getenv("LOCAL_RANK");
  w.local_rank = local_rank ? parse_int("LOCAL_RANK", local_rank, 0, w.world_size - 1) : w.rank;
  const char* local_world = getenv("LOCAL_WORLD_SIZE");
  w.local_world_size =
      local_world ? parse_int("LOCAL_WORLD_SIZE", local_world, 1, w.world_size) : w.world_size;
  LR_CHECK(w.local_rank < w.local_world_size, InvalidArgument,
           "environment variable LOCAL_RANK=", w.local_rank,
           " must be less than LOCAL_WORLD_SIZE=", w.local_world_size);
  const char* agent = getenv("TORCHELASTIC_USE_AGENT_STORE");
  w.agent_store = agent && (std::string_view(agent) == "True" || std::string_view(agent) == "true" ||
                            std::string_view(agent) == "1");
  const char* restarts = getenv("TORCHELASTIC_RESTART_COUNT");
  w.restart_count = restarts ? parse_int("TORCHELASTIC_RESTART_COUNT", restarts, 0, 1 << 20) : 0;
  return w;
}

World World::loopback(int rank, int size, int port) {
  World w;
  w.rank = rank;
  w.world_size = size;
  w.local_rank = rank;
  w.local_world_size = size;
  w.master_port = port;
  return w;
}

std::optional<World> World::from_environment() {
  return from_lookup([](const char* name) { return std::getenv(name); });
}

}  // namespace lowrank::dist
