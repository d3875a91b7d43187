#include "tests/testing.h"

#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cstdio>
#include <cstdlib>
#include <random>

namespace lowrank::testing {
namespace fs = std::filesystem;

fs::path fixture(const std::string& relative) { return fs::path(LOWRANK_TEST_FIXTURES) / relative; }

TempDir::TempDir() {
  std::string templ = (fs::temp_directory_path() / "lowrank-test-XXXXXX").string();
  char* made = ::mkdtemp(templ.data());
  if (!made) throw std::runtime_error("mkdtemp failed");
  path_ = made;
}

TempDir::~TempDir() {
  std::error_code ec;
  fs::remove_all(path_, ec);
}

double max_abs_diff(const at::Tensor& a, const at::Tensor& b) {
  return (a.to(at::kDouble) - b.to(at::kDouble)).abs().max().item<double>();
}

double rel_fro_error(const at::Tensor& a, const at::Tensor& b) {
  auto bd = b.to(at::kDouble);
  return ((a.to(at::kDouble) - bd).norm().item<double>()) / bd.norm().item<double>();
}

fs::path lowrank_binary() { return fs::path(LOWRANK_BINARY_DIR) / "bin" / "lowrank"; }

CommandResult run_command(const std::string& command) {
  std::string full = command + " 2>&1";
  FILE* pipe = ::popen(full.c_str(), "r");
  if (!pipe) throw std::runtime_error("popen failed: " + command);
  std::string out;
  std::array<char, 4096> buf;
  size_t n;
  while ((n = std::fread(buf.data(), 1, buf.size(), pipe)) > 0) out.append(buf.data(), n);
  int status = ::pclose(pipe);
  int code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  return {code, out};
}

}  // namespace lowrank::testing
