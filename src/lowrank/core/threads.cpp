#include "lowrank/core/threads.h"

#include <pthread.h>
#include <sched.h>

#include <ATen/Parallel.h>
#include <atomic>
#include <cstdlib>
#include <string>

#include "lowrank/core/error.h"

namespace lowrank {
namespace {
int g_libtorch_default = -1;
std::string g_source = "libtorch default";
}  // namespace

const std::vector<int>& process_cpus() {
  static const std::vector<int> cpus = [] {
    std::vector<int> out;
    cpu_set_t set;
    CPU_ZERO(&set);
    if (sched_getaffinity(0, sizeof(set), &set) == 0)
      for (int c = 0; c < CPU_SETSIZE; ++c)
        if (CPU_ISSET(c, &set)) out.push_back(c);
    return out;
  }();
  return cpus;
}

namespace {

bool g_bound = false;

bool bind_to(int cpu) {
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  return pthread_setaffinity_np(pthread_self(), sizeof(set), &set) == 0;
}

}  // namespace

bool bind_intra_op_threads() {
  const std::vector<int>& cpus = process_cpus();
  const int n = at::get_num_threads();
  if (n <= 1 || cpus.empty() || n > static_cast<int>(cpus.size())) return false;
  for (const char* var : {"OMP_PROC_BIND", "OMP_PLACES"})
    if (const char* v = std::getenv(var); v && *v) return false;
  const char* bind = std::getenv("LOWRANK_BIND_THREADS");
  if (bind == nullptr || std::string(bind) != "1") return false;
  std::atomic<bool> ok{true};
  // One index per thread: ATen's OpenMP backend gives thread t the t-th chunk.
  at::parallel_for(0, n, 1, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i)
      if (at::get_thread_num() != 0 &&
          !bind_to(cpus[static_cast<size_t>(at::get_thread_num()) % cpus.size()]))
        ok = false;
  });
  if (!bind_to(cpus[0])) ok = false;
  return ok;
}

int available_cores() {
  return std::max(1, static_cast<int>(process_cpus().size()));
}

namespace {

// The thread count in environment variable `name`; 0 when it is unset or empty. Throws
// InvalidArgument naming the variable for anything but a count in [1, 4096].
int thread_count_from_env(const char* name) {
  const char* env = std::getenv(name);
  if (env == nullptr || *env == '\0') return 0;
  char* end = nullptr;
  const long v = std::strtol(env, &end, 10);
  LR_CHECK(end && *end == '\0' && v > 0 && v <= 4096, InvalidArgument, name, "=\"", env,
           "\" is not a positive thread count");
  return static_cast<int>(v);
}

}  // namespace

int configure_threads(int requested) {
  if (g_libtorch_default < 0) g_libtorch_default = at::get_num_threads();
  int n = 0;
  if (requested > 0) {
    n = requested;
    g_source = "--threads";
  } else if (const int from_env = thread_count_from_env("LOWRANK_NUM_THREADS"); from_env > 0) {
    n = from_env;
    g_source = "LOWRANK_NUM_THREADS";
  } else if (const int from_omp = thread_count_from_env("OMP_NUM_THREADS"); from_omp > 0) {
    // torchrun and `--nproc N` (dist/launch.h) give each rank its share of the cores here.
    n = from_omp;
    g_source = "OMP_NUM_THREADS";
  } else {
    n = available_cores();
    g_source = "all available cores";
  }
  (void)process_cpus();  // before anything is bound
  if (n != at::get_num_threads()) at::set_num_threads(n);
  g_bound = bind_intra_op_threads();
  return at::get_num_threads();
}

std::string thread_summary() {
  return str(at::get_num_threads(), " intra-op threads (", g_source, "; libtorch default was ",
             g_libtorch_default < 0 ? at::get_num_threads() : g_libtorch_default, ", ", available_cores(),
             " cores available", g_bound ? ", bound to CPUs" : "", ")");
}

}  // namespace lowrank
