// The launcher agent; see launch.h.
#include "lowrank/dist/launch.h"

#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <map>
#include <optional>
#include <thread>

#include "lowrank/core/error.h"
#include "lowrank/core/log.h"
#include "lowrank/core/threads.h"

#ifdef LOWRANK_WITH_DIST
#include <c10/util/Exception.h>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#endif

extern char** environ;

namespace lowrank::dist {
namespace {

// The running ranks, for the signal handler (plain ints: async-signal-safe to read).
constexpr int kMaxRanks = 1024;
std::atomic<pid_t> g_ranks[kMaxRanks];
std::atomic<int> g_rank_count{0};

void forward_signal(int sig) {
  const int n = g_rank_count.load();
  for (int i = 0; i < n; ++i)
    if (const pid_t pid = g_ranks[i].load(); pid > 0) ::kill(pid, sig);
}

std::vector<std::string> rank_environment(const std::map<std::string, std::string>& overrides) {
  std::vector<std::string> env;
  for (char** e = environ; *e; ++e) {
    const std::string entry(*e);
    const std::string key = entry.substr(0, entry.find('='));
    if (!overrides.contains(key)) env.push_back(entry);
  }
  for (const auto& [k, v] : overrides) env.push_back(k + "=" + v);
  return env;
}

std::vector<char*> c_strings(std::vector<std::string>& v) {
  std::vector<char*> out;
  for (std::string& s : v) out.push_back(s.data());
  out.push_back(nullptr);
  return out;
}

std::string describe(int status) {
  if (WIFEXITED(status)) return str("exited with status ", WEXITSTATUS(status));
  if (WIFSIGNALED(status))
    return str("was killed by signal ", WTERMSIG(status), " (", strsignal(WTERMSIG(status)), ")");
  return str("stopped with wait status ", status);
}

}  // namespace

void launch(const LaunchOptions& o) {
  LR_CHECK(o.nproc >= 1 && o.nproc <= kMaxRanks, InvalidArgument, "--nproc must be in [1, ", kMaxRanks,
           "], got ", o.nproc);
  LR_CHECK(std::getenv("RANK") == nullptr, InvalidArgument,
           "--nproc inside a launched rank (RANK=", std::getenv("RANK"),
           " is set): a rank cannot launch ranks; drop --nproc or unset RANK");
  LR_CHECK(o.master_port >= 0 && o.master_port <= 65535, InvalidArgument,
           "--master-port must be in [0, 65535], got ", o.master_port);
  LR_CHECK(!o.command.empty(), InvalidArgument, "launch: no command");
#ifdef LOWRANK_WITH_DIST
  // The agent's store: every rank is a client (TORCHELASTIC_USE_AGENT_STORE=True), as under torchrun.
  c10::intrusive_ptr<c10d::TCPStore> store;
  try {
    c10d::TCPStoreOptions opts;
    opts.port = static_cast<uint16_t>(o.master_port);
    opts.isServer = true;
    opts.waitWorkers = false;
    opts.timeout = o.timeout;
    store = c10::make_intrusive<c10d::TCPStore>("127.0.0.1", opts);
  } catch (const std::exception& e) {
    const auto* c10_error = dynamic_cast<const c10::Error*>(&e);
    std::string why = c10_error ? c10_error->what_without_backtrace() : e.what();
    if (const size_t end = why.find('\n'); end != std::string::npos) why.resize(end);
    throw IoError(
        str("--master-port ", o.master_port, ": cannot host the rendezvous store there (", why,
            "); the port is probably busy: pick another or leave --master-port out for a free one"));
  }
  const int port = store->getPort();
#else
  throw Unsupported(
      "--nproc: data-parallel training is not in this build (configure with -DLOWRANK_DIST=ON; it needs the "
      "Gloo "
      "headers, Debian package libgloo-dev)");
  const int port = 0;
#endif
  const char* omp = std::getenv("OMP_NUM_THREADS");
  const std::string threads =
      omp && *omp ? std::string(omp) : std::to_string(std::max(1, available_cores() / o.nproc));

  struct sigaction forward {};
  forward.sa_handler = forward_signal;
  sigemptyset(&forward.sa_mask);
  struct sigaction old_int {
  }, old_term{};
  sigaction(SIGINT, &forward, &old_int);
  sigaction(SIGTERM, &forward, &old_term);
  g_rank_count = 0;

  std::vector<pid_t> pids(o.nproc, -1);
  std::optional<std::string> failure;
  for (int r = 0; r < o.nproc; ++r) {
    std::vector<std::string> env = rank_environment({{"RANK", std::to_string(r)},
                                                     {"LOCAL_RANK", std::to_string(r)},
                                                     {"WORLD_SIZE", std::to_string(o.nproc)},
                                                     {"LOCAL_WORLD_SIZE", std::to_string(o.nproc)},
                                                     {"GROUP_RANK", "0"},
                                                     {"MASTER_ADDR", "127.0.0.1"},
                                                     {"MASTER_PORT", std::to_string(port)},
                                                     {"TORCHELASTIC_USE_AGENT_STORE", "True"},
                                                     {"TORCHELASTIC_RESTART_COUNT", "0"},
                                                     {"OMP_NUM_THREADS", threads}});
    std::vector<std::string> argv = o.command;
    pid_t pid = -1;
    const int rc =
        posix_spawn(&pid, argv[0].c_str(), nullptr, nullptr, c_strings(argv).data(), c_strings(env).data());
    if (rc != 0) {
      failure = str("rank ", r, " could not start: ", argv[0], ": ", std::strerror(rc));
      break;
    }
    pids[r] = pid;
    g_ranks[r] = pid;
    g_rank_count = r + 1;
  }
  log::info("launched ", g_rank_count.load(), " ranks (store 127.0.0.1:", port, ", ", threads,
            " threads each", o.log_dir.empty() ? std::string() : ", ranks >= 1 log to " + o.log_dir.string(),
            ")");

  // Wait; at the first failure stop the rest: SIGTERM, then SIGKILL after the grace period.
  int running = g_rank_count.load();
  std::optional<std::chrono::steady_clock::time_point> kill_at;
  const auto stop_all = [&](int sig) {
    for (int r = 0; r < o.nproc; ++r)
      if (pids[r] > 0) ::kill(pids[r], sig);
  };
  if (failure) {
    stop_all(SIGTERM);
    kill_at = std::chrono::steady_clock::now() + o.grace;
  }
  while (running > 0) {
    int status = 0;
    const pid_t done = ::waitpid(-1, &status, WNOHANG);
    if (done < 0 && errno != EINTR) break;
    if (done <= 0) {
      if (kill_at && std::chrono::steady_clock::now() >= *kill_at) {
        stop_all(SIGKILL);
        kill_at.reset();
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
      continue;
    }
    const auto it = std::find(pids.begin(), pids.end(), done);
    if (it == pids.end()) continue;
    const int r = static_cast<int>(it - pids.begin());
    pids[r] = -1;
    g_ranks[r] = -1;
    --running;
    const bool ok = WIFEXITED(status) && WEXITSTATUS(status) == 0;
    if (!ok && !failure) {
      failure = str("rank ", r, " ", describe(status),
                    r > 0 && !o.log_dir.empty()
                        ? str(" (its log: ", (o.log_dir / str("rank-", r, ".log")).string(), ")")
                        : std::string());
      if (running > 0) {
        log::warn(*failure, "; stopping the other ranks");
        stop_all(SIGTERM);
        kill_at = std::chrono::steady_clock::now() + o.grace;
      }
    }
  }
  g_rank_count = 0;
  sigaction(SIGINT, &old_int, nullptr);
  sigaction(SIGTERM, &old_term, nullptr);
  if (failure) throw IoError(*failure);
}

}  // namespace lowrank::dist
