#include "tests/testing.h"

#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <random>

#include <gtest/gtest.h>

namespace lowrank::testing {
namespace fs = std::filesystem;

fs::path fixture(const std::string& relative) {
  return fs::path(LOWRANK_TEST_FIXTURES) / relative;
}

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

fs::path tiny_hf_model(const fs::path& dir) {
  const fs::path model = dir / "model";
  fs::create_directories(model);
  for (const char* f : {"config.json", "generation_config.json", "model.safetensors"})
    fs::copy_file(fixture("hf/llama-tiny/model") / f, model / f);
  fs::copy_file(fixture("hf/bpe-gpt2style/tokenizer.json"), model / "tokenizer.json");
  return model;
}

void write_text_file(const fs::path& path, const std::string& text) {
  if (path.has_parent_path()) fs::create_directories(path.parent_path());
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << text;
  if (!out.flush()) throw std::runtime_error("cannot write " + path.string());
}

fs::path write_word_corpus(const fs::path& path, int paragraphs, int words) {
  static const char* const kWords[] = {"the", "lord",   "said", "unto", "moses",
                                       "and", "israel", "went", "into", "land"};
  std::string text;
  for (int p = 0; p < paragraphs; ++p) {
    for (int w = 0; w < words; ++w) {
      text += kWords[(p * 7 + w * 3 + w / 4) % 10];
      text += w % 9 == 8 ? ". " : " ";
    }
    text += "\n\n";
  }
  write_text_file(path, text);
  return path;
}

std::vector<Json> read_jsonl(const fs::path& path) {
  std::vector<Json> out;
  std::ifstream in(path);
  std::string line;
  while (std::getline(in, line))
    if (!line.empty()) out.push_back(Json::parse(line));
  return out;
}

void expect_same_metrics(const fs::path& a_path, const fs::path& b_path) {
  const std::vector<Json> a = read_jsonl(a_path), b = read_jsonl(b_path);
  ASSERT_EQ(a.size(), b.size()) << a_path << " vs " << b_path;
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_EQ(a[i].size(), b[i].size()) << "line " << i + 1;
    for (const auto& [key, value] : a[i].items()) {
      if (key == "tokens_per_s") continue;
      EXPECT_TRUE(b[i].contains(key)) << "line " << i + 1 << ": " << key;
      if (b[i].contains(key)) {
        EXPECT_EQ(value, b[i][key]) << "line " << i + 1 << ": " << key;
      }
    }
  }
}

nn::Model tiny_llama(const TinyLlama& s, uint64_t seed) {
  const Json config{{"architectures", Json::array({"LlamaForCausalLM"})},
                    {"model_type", "llama"},
                    {"vocab_size", s.vocab_size},
                    {"hidden_size", s.hidden_size},
                    {"intermediate_size", s.intermediate_size},
                    {"num_hidden_layers", s.layers},
                    {"num_attention_heads", s.heads},
                    {"num_key_value_heads", s.kv_heads},
                    {"max_position_embeddings", s.context},
                    {"rms_norm_eps", 1e-5},
                    {"tie_word_embeddings", s.tie_embeddings}};
  return nn::Model::random(nn::ModelConfig::from_json(config, "tiny test model"), seed);
}

double max_abs_diff(const at::Tensor& a, const at::Tensor& b) {
  return (a.to(at::kCPU, at::kDouble) - b.to(at::kCPU, at::kDouble)).abs().max().item<double>();
}

double rel_max_error(const at::Tensor& a, const at::Tensor& b) {
  return max_abs_diff(a, b) / std::max(b.to(at::kCPU, at::kDouble).abs().max().item<double>(), 1e-30);
}

double rel_fro_error(const at::Tensor& a, const at::Tensor& b) {
  auto bd = b.to(at::kCPU, at::kDouble);
  return ((a.to(at::kCPU, at::kDouble) - bd).norm().item<double>()) / bd.norm().item<double>();
}

fs::path lowrank_binary() {
  return fs::path(LOWRANK_BINARY_DIR) / "bin" / "lowrank";
}

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
