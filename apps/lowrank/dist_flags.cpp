// The data-parallel flags; see dist_flags.h.
#include "apps/lowrank/dist_flags.h"

#include <fcntl.h>
#include <unistd.h>

#include <cmath>
#include <vector>

#include "lowrank/core/error.h"
#include "lowrank/core/log.h"
#include "lowrank/dist/launch.h"
#include "lowrank/dist/world.h"

namespace lowrank::cli {
namespace {

int g_terminal_fd = -1;  // the stderr a rank had before it moved its output to its log

std::vector<std::string>& command_line() {
  static std::vector<std::string> argv;
  return argv;
}

std::chrono::milliseconds timeout_ms(double seconds) {
  LR_CHECK(std::isfinite(seconds) && seconds > 0, InvalidArgument, "--dist-timeout must be positive, got ",
           seconds);
  return std::chrono::milliseconds(static_cast<int64_t>(seconds * 1000));
}

// The launcher's argv for each rank: its own, less --nproc and --master-port (with their values).
std::vector<std::string> rank_command() {
  std::vector<std::string> out{"/proc/self/exe"};
  const std::vector<std::string>& argv = command_line();
  for (size_t i = 1; i < argv.size(); ++i) {
    const std::string& a = argv[i];
    if (a == "--nproc" || a == "--master-port") {
      ++i;
      continue;
    }
    if (a.starts_with("--nproc=") || a.starts_with("--master-port=")) continue;
    out.push_back(a);
  }
  // The agent resolves its own executable now: the ranks must run the same file.
  std::error_code ec;
  const auto self = std::filesystem::read_symlink("/proc/self/exe", ec);
  if (!ec) out[0] = self.string();
  return out;
}

}  // namespace

void set_command_line(int argc, char** argv) {
  command_line().assign(argv, argv + argc);
}

void echo_error_to_terminal(const std::string& message) {
  if (g_terminal_fd < 0) return;
  const std::string line = "error: " + message + "\n";
  [[maybe_unused]] const ssize_t n = ::write(g_terminal_fd, line.data(), line.size());
}

void DistFlags::add_to(CLI::App& cmd) {
  cmd.add_option("--nproc", nproc,
                 "Data-parallel ranks to launch on this machine (as torchrun --nproc-per-node N); the global "
                 "batch is split over them")
      ->check(CLI::Range(1, 1024));
  cmd.add_option(
         "--master-port", master_port,
         "With --nproc: the rendezvous port (default: a free one); a busy port fails before any rank starts")
      ->check(CLI::Range(1, 65535));
  cmd.add_option("--dist-backend", backend, "Collectives backend: gloo (CPU tensors)")->capture_default_str();
  cmd.add_option(
         "--dist-timeout", timeout_s,
         "Seconds a rank waits for the rendezvous, a collective or the others' preparation before it fails")
      ->capture_default_str();
  cmd.add_option("--bucket-mb", bucket_mb, "Gradient bucket size in MiB (DDP's bucket_cap_mb)")
      ->capture_default_str();
  cmd.add_option(
         "--zero", zero,
         "1: ZeRO stage 1, the optimizer state partitioned over the ranks by whole tensor (each rank steps "
         "its own tensors and broadcasts them); 0: replicated")
      ->check(CLI::IsMember({0, 1}))
      ->capture_default_str();
}

void DistFlags::check_backend() const {
  LR_CHECK(backend == "gloo", Unsupported, "--dist-backend ", backend,
           ": only gloo is built (NCCL needs a CUDA build with PyTorch's full install)");
}

bool DistFlags::launch(const std::filesystem::path& log_dir) const {
  if (nproc == 0) return false;
  check_backend();
  dist::LaunchOptions o;
  o.nproc = nproc;
  o.master_port = master_port;
  o.timeout = timeout_ms(timeout_s);
  o.command = rank_command();
  o.log_dir = log_dir;
  dist::launch(o);
  return true;
}

std::unique_ptr<dist::Group> DistFlags::join(const std::filesystem::path& log_dir) const {
  const std::optional<dist::World> world = dist::World::from_environment();
  if (!world) return nullptr;
  check_backend();
  if (world->rank > 0 && !log_dir.empty()) {
    std::filesystem::create_directories(log_dir);
    const std::string path = (log_dir / ("rank-" + std::to_string(world->rank) + ".log")).string();
    const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    LR_CHECK(fd >= 0, IoError, "cannot open ", path, " for rank ", world->rank, "'s log");
    g_terminal_fd = ::dup(STDERR_FILENO);
    ::dup2(fd, STDOUT_FILENO);
    ::dup2(fd, STDERR_FILENO);
    ::close(fd);
  }
  log::info("rank ", world->rank, " of ", world->world_size, ": joining ", world->master_addr, ":",
            world->master_port);
  return dist::Group::join(*world, timeout_ms(timeout_s));
}

dist::ReducerOptions DistFlags::reducer() const {
  LR_CHECK(std::isfinite(bucket_mb) && bucket_mb > 0, InvalidArgument, "--bucket-mb must be positive, got ",
           bucket_mb);
  dist::ReducerOptions o;
  o.bucket_bytes = static_cast<int64_t>(bucket_mb * (1 << 20));
  return o;
}

}  // namespace lowrank::cli
