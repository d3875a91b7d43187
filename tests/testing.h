// Shared test helpers: fixture paths, temporary directories and files, tensor comparisons,
// error messages, JSON lines, the `lowrank` binary, and small models for training tests.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include <ATen/ATen.h>

#include "lowrank/core/error.h"
#include "lowrank/core/json.h"
#include "lowrank/nn/model.h"

namespace lowrank::testing {

// tests/fixtures/<relative>.
std::filesystem::path fixture(const std::string& relative);
// `dir`/model: the bundled tiny Llama (hf/llama-tiny/model) with the byte-level BPE tokenizer
// (hf/bpe-gpt2style), a model directory every verb accepts. Returns its path.
std::filesystem::path tiny_hf_model(const std::filesystem::path& dir);

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

// Writes `text` to `path` byte for byte, creating its parent directories.
void write_text_file(const std::filesystem::path& path, const std::string& text);

// A text corpus of `paragraphs` paragraphs separated by blank lines, each `words` words long,
// drawn deterministically from a ten-word vocabulary (a file corpus gives one document per
// paragraph). Returns `path`.
std::filesystem::path write_word_corpus(const std::filesystem::path& path, int paragraphs, int words = 30);

// The message of the lowrank::Error that `fn` throws, or "(no error)".
template <typename Fn>
std::string error_of(Fn&& fn) {
  try {
    fn();
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

// The objects of a JSON-lines file (such as a run's metrics.jsonl), blank lines skipped.
std::vector<Json> read_jsonl(const std::filesystem::path& path);

// Two training runs' metrics.jsonl agree line for line on every field but the timing
// (tokens_per_s), bit for bit (gtest failures name the line and the field).
void expect_same_metrics(const std::filesystem::path& a, const std::filesystem::path& b);

// A small Llama-family model with random float32 weights, for training and evaluation tests.
struct TinyLlama {
  int64_t vocab_size = 24, hidden_size = 16, intermediate_size = 32, layers = 2, heads = 2, kv_heads = 2;
  int64_t context = 64;
  bool tie_embeddings = false;
};
nn::Model tiny_llama(const TinyLlama& shape, uint64_t seed);

// max |a - b| as a double (both converted to float64 on the CPU, from any device).
double max_abs_diff(const at::Tensor& a, const at::Tensor& b);
// max |a - b| / max |b|, likewise.
double rel_max_error(const at::Tensor& a, const at::Tensor& b);
// ||a - b||_F / ||b||_F in float64, likewise.
double rel_fro_error(const at::Tensor& a, const at::Tensor& b);

// Path of the built `lowrank` binary, and a runner returning its exit code and output.
std::filesystem::path lowrank_binary();
struct CommandResult {
  int exit_code;
  std::string out;  // stdout and stderr together
};
CommandResult run_command(const std::string& command);

}  // namespace lowrank::testing
