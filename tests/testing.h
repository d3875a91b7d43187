// Shared test helpers: fixture paths, temporary directories, tensor comparisons.
#pragma once

#include <filesystem>
#include <string>

#include <ATen/ATen.h>

namespace lowrank::testing {

// tests/fixtures/<relative>.
std::filesystem::path fixture(const std::string& relative);

// A fresh directory under the system temp dir, removed when the object dies.
class TempDir {
 public:
  TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  ~TempDir();
  const std::filesystem::path& path() const { return path_; }
  std::filesystem::path operator/(const std::string& name) const { return path_ / name; }

 private:
  std::filesystem::path path_;
};

// max |a - b| as a double (both converted to float64).
double max_abs_diff(const at::Tensor& a, const at::Tensor& b);
// ||a - b||_F / ||b||_F in float64.
double rel_fro_error(const at::Tensor& a, const at::Tensor& b);

// Path of the built `lowrank` binary, and a runner returning its exit code and output.
std::filesystem::path lowrank_binary();
struct CommandResult {
  int exit_code;
  std::string out;  // stdout and stderr together
};
CommandResult run_command(const std::string& command);

}  // namespace lowrank::testing
