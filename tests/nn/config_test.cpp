// nn/config: config.json parsing, defaults per architecture, RoPE keys old and new, errors.
#include "lowrank/nn/config.h"

#include <gtest/gtest.h>

#include "lowrank/core/error.h"
#include "lowrank/core/file.h"
#include "tests/nn/reference.h"
#include "tests/testing.h"

namespace lowrank::nn {
namespace {

using testing::TinySpec;

ModelConfig parse(const Json& j) {
  return ModelConfig::from_json(j, "dir/config.json");
}

// Runs `f`, expects an Error of `kind` whose message contains every needle.
template <typename F>
void expect_error(F&& f, ErrorKind kind, std::initializer_list<std::string> needles) {
  try {
    f();
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), kind) << e.what();
    for (const auto& n : needles) EXPECT_NE(std::string(e.what()).find(n), std::string::npos) << e.what();
  }
}

TEST(ConfigTest, ReadsTheFixture) {
  ModelConfig c = ModelConfig::load(testing::fixture("hf/llama-tiny/model"));
  EXPECT_EQ(c.architecture, Architecture::kLlama);
  EXPECT_EQ(c.vocab_size, 512);
  EXPECT_EQ(c.hidden_size, 64);
  EXPECT_EQ(c.intermediate_size, 176);
  EXPECT_EQ(c.num_hidden_layers, 2);
  EXPECT_EQ(c.num_attention_heads, 4);
  EXPECT_EQ(c.num_key_value_heads, 2);
  EXPECT_EQ(c.head_dim, 16);
  EXPECT_DOUBLE_EQ(c.rms_norm_eps, 1e-5);
  EXPECT_EQ(c.rope.type, "default");
  EXPECT_DOUBLE_EQ(c.rope.theta, 10000.0);
  EXPECT_FALSE(c.tie_word_embeddings);
  EXPECT_FALSE(c.qkv_bias);
  EXPECT_EQ(c.eos_token_ids, std::vector<int64_t>{2});
  EXPECT_EQ(c.sliding_window, std::vector<int64_t>(2, 0));
}

TEST(ConfigTest, ArchitectureDecidesBiasesAndDefaults) {
  TinySpec s;
  Json j = testing::tiny_config(s);
  j["attention_bias"] = true;
  j["mlp_bias"] = true;
  ModelConfig llama = parse(j);
  EXPECT_TRUE(llama.qkv_bias && llama.o_bias && llama.mlp_bias);

  j["architectures"] = {"Qwen2ForCausalLM"};
  j["model_type"] = "qwen2";
  j["attention_bias"] = false;
  ModelConfig qwen = parse(j);
  EXPECT_TRUE(qwen.qkv_bias);  // Qwen2 always has q/k/v bias, never o or mlp bias
  EXPECT_FALSE(qwen.o_bias);
  EXPECT_FALSE(qwen.mlp_bias);

  j["architectures"] = {"MistralForCausalLM"};
  j["model_type"] = "mistral";
  j["attention_bias"] = true;
  ModelConfig mistral = parse(j);
  EXPECT_FALSE(mistral.qkv_bias || mistral.o_bias || mistral.mlp_bias);
  EXPECT_EQ(mistral.sliding_window, std::vector<int64_t>(2, 4096));  // MistralConfig default

  j.erase("head_dim");
  EXPECT_EQ(parse(j).head_dim, 24 / 4);
  j.erase("num_key_value_heads");
  j["architectures"] = {"LlamaForCausalLM"};
  EXPECT_EQ(parse(j).num_key_value_heads, 4);  // LlamaConfig: = num_attention_heads
}

TEST(ConfigTest, SlidingWindowPerArchitecture) {
  Json j = testing::tiny_config(TinySpec{});
  j["num_hidden_layers"] = 4;
  j["sliding_window"] = 7;
  EXPECT_EQ(parse(j).sliding_window, std::vector<int64_t>(4, 0));  // Llama: ignored

  j["architectures"] = {"MistralForCausalLM"};
  EXPECT_EQ(parse(j).sliding_window, std::vector<int64_t>(4, 7));
  j["sliding_window"] = nullptr;
  EXPECT_EQ(parse(j).sliding_window, std::vector<int64_t>(4, 0));

  j["architectures"] = {"Qwen2ForCausalLM"};
  j["sliding_window"] = 7;
  EXPECT_EQ(parse(j).sliding_window, std::vector<int64_t>(4, 0));  // use_sliding_window defaults to false
  j["use_sliding_window"] = true;
  j["max_window_layers"] = 2;
  EXPECT_EQ(parse(j).sliding_window, (std::vector<int64_t>{0, 0, 7, 7}));
  j["layer_types"] = {"sliding_attention", "full_attention", "full_attention", "sliding_attention"};
  EXPECT_EQ(parse(j).sliding_window, (std::vector<int64_t>{7, 0, 0, 7}));
}

TEST(ConfigTest, RopeFromOldAndNewKeys) {
  Json j = testing::tiny_config(TinySpec{});
  j.erase("rope_theta");
  EXPECT_DOUBLE_EQ(parse(j).rope.theta, 10000.0);

  // Old layout: rope_theta at top level plus rope_scaling {"type": ...}.
  j["rope_theta"] = 500000.0;
  j["rope_scaling"] = {{"type", "linear"}, {"factor", 4.0}};
  ModelConfig c = parse(j);
  EXPECT_EQ(c.rope.type, "linear");
  EXPECT_DOUBLE_EQ(c.rope.theta, 500000.0);
  EXPECT_DOUBLE_EQ(c.rope.factor, 4.0);

  // Llama 3.1 as published (rope_scaling + rope_theta).
  j["rope_scaling"] = {{"rope_type", "llama3"},
                       {"factor", 8.0},
                       {"low_freq_factor", 1.0},
                       {"high_freq_factor", 4.0},
                       {"original_max_position_embeddings", 8192}};
  c = parse(j);
  EXPECT_EQ(c.rope.type, "llama3");
  EXPECT_EQ(c.rope.original_max_position_embeddings, 8192);
  EXPECT_DOUBLE_EQ(c.rope.high_freq_factor, 4.0);

  // New layout: everything inside rope_parameters; its rope_theta wins.
  j.erase("rope_scaling");
  j["rope_parameters"] = {{"rope_type", "yarn"}, {"rope_theta", 1e6}, {"factor", 4.0}, {"beta_fast", 0}};
  c = parse(j);
  EXPECT_EQ(c.rope.type, "yarn");
  EXPECT_DOUBLE_EQ(c.rope.theta, 1e6);
  EXPECT_DOUBLE_EQ(c.rope.beta_fast, 32.0);  // `or 32`
  EXPECT_DOUBLE_EQ(c.rope.beta_slow, 1.0);
  EXPECT_EQ(c.rope.original_max_position_embeddings, 128);  // defaults to max_position_embeddings
  EXPECT_FALSE(c.rope.attention_factor.has_value());
  j["original_max_position_embeddings"] = 32;  // a top-level key wins
  EXPECT_EQ(parse(j).rope.original_max_position_embeddings, 32);
}

TEST(ConfigTest, ErrorsNameTheFileAndKey) {
  const Json good = testing::tiny_config(TinySpec{});
  Json j = good;
  j.erase("hidden_size");
  expect_error([&] { parse(j); }, ErrorKind::kInvalidArgument, {"dir/config.json", "hidden_size", "missing"});
  j = good;
  j["num_attention_heads"] = "four";
  expect_error([&] { parse(j); }, ErrorKind::kInvalidArgument,
               {"dir/config.json", "num_attention_heads", "integer"});
  j = good;
  j["vocab_size"] = 3.5;
  expect_error([&] { parse(j); }, ErrorKind::kInvalidArgument, {"vocab_size"});
  j = good;
  j["tie_word_embeddings"] = 1;
  expect_error([&] { parse(j); }, ErrorKind::kInvalidArgument, {"tie_word_embeddings", "true or false"});
  j = good;
  j["num_key_value_heads"] = 3;
  expect_error([&] { parse(j); }, ErrorKind::kInvalidArgument, {"num_key_value_heads", "multiple"});
  j = good;
  j["architectures"] = {"GPT2LMHeadModel"};
  expect_error([&] { parse(j); }, ErrorKind::kUnsupported,
               {"GPT2LMHeadModel", "LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM"});
  // lowrank's image classifier is named as such, not as an unknown architecture.
  j = good;
  j["architectures"] = {"LowrankMixerForImageClassification"};
  expect_error([&] { parse(j); }, ErrorKind::kUnsupported,
               {"LowrankMixerForImageClassification is an image classifier", "lowrank eval --task"});
  j = good;
  j["rope_scaling"] = {{"rope_type", "longrope"}, {"factor", 2.0}};
  expect_error([&] { parse(j); }, ErrorKind::kUnsupported, {"longrope", "rope_scaling", "yarn"});
  j = good;
  j["rope_scaling"] = {{"rope_type", "linear"}};
  expect_error([&] { parse(j); }, ErrorKind::kInvalidArgument, {"rope_scaling", "factor"});
  j = good;
  j["rope_parameters"] = {{"rope_type", "llama3"}, {"factor", 8.0}};
  expect_error([&] { parse(j); }, ErrorKind::kInvalidArgument, {"rope_parameters", "low_freq_factor"});
  j = good;
  j["hidden_act"] = "relu";
  expect_error([&] { parse(j); }, ErrorKind::kUnsupported, {"hidden_act", "relu"});

  testing::TempDir dir;
  expect_error([&] { ModelConfig::load(dir.path()); }, ErrorKind::kNotFound, {"config.json"});
  write_file_atomic(dir / "config.json", "{\"vocab_size\": ");
  expect_error([&] { ModelConfig::load(dir.path()); }, ErrorKind::kCorruption, {"config.json"});
}

}  // namespace
}  // namespace lowrank::nn
