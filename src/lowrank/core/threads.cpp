#include "lowrank/core/threads.h"

#include <sched.h>

#include <ATen/Parallel.h>
#include <cstdlib>
#include <string>

#include "lowrank/core/error.h"

namespace lowrank {
namespace {
int g_libtorch_default = -1;
std::string g_source = "libtorch default";
}  // namespace

int available_cores() {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof(set), &set) == 0) return std::max(1, CPU_COUNT(&set));
  return 1;
}

int configure_threads(int requested) {
  if (g_libtorch_default < 0) g_libtorch_default = at::get_num_threads();
  int n = 0;
  if (requested > 0) {
    n = requested;
    g_source = "--threads";
  } else if (const char* env = std::getenv("LOWRANK_NUM_THREADS"); env && *env) {
    char* end = nullptr;
    long v = std::strtol(env, &end, 10);
    LR_CHECK(end && *end == '\0' && v > 0 && v <= 4096, InvalidArgument, "LOWRANK_NUM_THREADS=\"", env,
             "\" is not a positive thread count");
    n = static_cast<int>(v);
    g_source = "LOWRANK_NUM_THREADS";
  } else {
    n = available_cores();
    g_source = "all available cores";
  }
  if (n != at::get_num_threads()) at::set_num_threads(n);
  return at::get_num_threads();
}

std::string thread_summary() {
  return str(at::get_num_threads(), " intra-op threads (", g_source, "; libtorch default was ",
             g_libtorch_default < 0 ? at::get_num_threads() : g_libtorch_default, ", ", available_cores(),
             " cores available)");
}

}  // namespace lowrank
