// `lowrank serve` as a child process on a free loopback port, for the tests that drive the binary
// over HTTP (generate_serve_test.cpp, serve_shutdown_test.cpp): started with the given flags, its
// stderr in a file, its port read from the serving line; SIGTERM and a wait when the object dies
// unless the test has already reaped it.
#pragma once

#include <csignal>
#include <cstdio>
#include <filesystem>
#include <regex>
#include <stdexcept>
#include <string>
#include <vector>

#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include "tests/testing.h"

namespace lowrank::testing {

class ServerProcess {
 public:
  // Runs `lowrank serve --model MODEL_DIR --port 0 --model-name tiny --pool-mb 16 FLAGS...`.
  ServerProcess(const std::filesystem::path& model_dir, const std::filesystem::path& log,
                const std::vector<std::string>& flags = {}) {
    int fds[2];
    if (::pipe(fds) != 0) throw std::runtime_error("pipe failed");
    std::vector<std::string> args = {lowrank_binary().string(),
                                     "serve",
                                     "--model",
                                     model_dir.string(),
                                     "--port",
                                     "0",
                                     "--model-name",
                                     "tiny",
                                     "--pool-mb",
                                     "16"};
    args.insert(args.end(), flags.begin(), flags.end());
    // Everything the child needs is prepared before fork: between fork and exec only
    // async-signal-safe calls.
    std::vector<char*> argv;
    for (const std::string& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    const int log_fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    pid_ = ::fork();
    if (pid_ == 0) {
      ::dup2(fds[1], STDOUT_FILENO);
      if (log_fd >= 0) ::dup2(log_fd, STDERR_FILENO);
      ::close(fds[0]);
      ::execv(argv[0], argv.data());
      ::_exit(127);
    }
    if (log_fd >= 0) ::close(log_fd);
    ::close(fds[1]);
    out_ = ::fdopen(fds[0], "r");
    // "serving tiny (+0 adapters) on http://127.0.0.1:PORT", printed once it listens.
    char line[512];
    const std::regex serving(R"(serving tiny .* on http://[^:]+:(\d+))");
    while (std::fgets(line, sizeof line, out_)) {
      std::smatch m;
      const std::string text = line;
      if (std::regex_search(text, m, serving)) {
        port_ = std::stoi(m[1].str());
        break;
      }
    }
  }
  ServerProcess(const ServerProcess&) = delete;
  ServerProcess& operator=(const ServerProcess&) = delete;
  ~ServerProcess() {
    if (pid_ > 0) {
      ::kill(pid_, SIGTERM);
      int status = 0;
      ::waitpid(pid_, &status, 0);
    }
    if (out_) std::fclose(out_);
  }
  int port() const { return port_; }
  pid_t pid() const { return pid_; }
  void signal(int number) const {
    if (pid_ > 0) ::kill(pid_, number);
  }
  // Waits up to `seconds` for the process to exit; its wait status, or -1 on timeout (the process
  // is then killed with SIGKILL and reaped).
  int wait_exit(double seconds) {
    for (int i = 0; i < static_cast<int>(seconds * 100); ++i) {
      int status = 0;
      if (::waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        return status;
      }
      ::usleep(10000);
    }
    ::kill(pid_, SIGKILL);
    int status = 0;
    ::waitpid(pid_, &status, 0);
    pid_ = -1;
    return -1;
  }

 private:
  pid_t pid_ = -1;
  std::FILE* out_ = nullptr;
  int port_ = 0;
};

}  // namespace lowrank::testing
