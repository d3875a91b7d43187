// Shared by the serving engine's tests (tests/serve, tests/cuda): a small model with grouped-query
// attention, three adapters of ranks 2, 8 and 4, requests, and the oracle every engine result is
// held to: nn::generate on a fresh copy of the model carrying only the request's adapter.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "lowrank/adapt/model_adapters.h"
#include "lowrank/nn/generate.h"
#include "lowrank/serve/engine.h"
#include "tests/testing.h"

namespace lowrank::serve::testing_support {

// The seed of the model's random weights (testing::tiny_llama(shape(), kModelSeed)).
inline constexpr uint64_t kModelSeed = 7;

inline testing::TinyLlama shape() {
  testing::TinyLlama s;
  s.vocab_size = 40;
  s.hidden_size = 32;
  s.intermediate_size = 48;
  s.heads = 4;
  s.kv_heads = 2;  // grouped-query attention: the paged gather serves a shared KV head
  s.context = 96;
  return s;
}

inline adapt::AdapterConfig lora(int64_t r) {
  adapt::AdapterConfig c;
  c.r = r;
  c.lora_alpha = 2.0 * static_cast<double>(r);
  c.target_modules = Json::array({"q_proj", "k_proj", "v_proj", "o_proj", "up_proj", "down_proj"});
  c.init_lora_weights = false;  // B random too: a non-zero Δ
  return c;
}

struct AdapterSpec {
  std::string name;
  int64_t rank;
  uint64_t seed;
};
inline const std::vector<AdapterSpec> kAdapters = {{"a2", 2, 11}, {"b8", 8, 12}, {"c4", 4, 13}};

// The oracle: a fresh copy of the model with only `adapter` attached, generating alone.
inline std::vector<int64_t> reference(const std::string& adapter, const std::vector<int64_t>& prompt,
                                      int64_t n, double repetition_penalty = 1.0) {
  nn::Model model = testing::tiny_llama(shape(), kModelSeed);
  for (const AdapterSpec& a : kAdapters)
    if (a.name == adapter) adapt::create_adapter(model, a.name, lora(a.rank), a.seed);
  nn::GenerateOptions options;
  options.max_new_tokens = n;
  options.repetition_penalty = repetition_penalty;
  return nn::generate(model, {prompt}, options)[0].tokens;
}

inline std::vector<int64_t> prompt_of(int64_t length, int64_t salt) {
  std::vector<int64_t> p;
  for (int64_t i = 0; i < length; ++i) p.push_back((i * 7 + salt * 5 + 3) % 40);
  return p;
}

inline GenerationRequest greedy(const std::string& adapter, std::vector<int64_t> prompt, int64_t n) {
  GenerationRequest r;
  r.adapter = adapter;
  r.prompt = std::move(prompt);
  r.sampling.max_new_tokens = n;
  r.sampling.temperature = 0;
  return r;
}

inline std::vector<int64_t> tokens_of(RequestStream& stream, StreamEvent* finish = nullptr) {
  std::vector<int64_t> tokens;
  StreamEvent f = stream.wait(nullptr, &tokens);
  if (finish) *finish = f;
  return tokens;
}

}  // namespace lowrank::serve::testing_support
