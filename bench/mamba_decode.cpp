// Decoding speed against context length: the `mamba-tiny` shape (MambaForCausalLM, hidden 128,
// 4 layers, N 16, E 2) against the `tiny` Llama (hidden 128, 4 layers, 4 heads, MLP 384) with its
// KV cache, both at random init, vocab 2048, batch 1, float32, in one run. For each context c the
// prompt of c tokens is prefilled once (untimed), then `steps` single-token steps are timed
// (median per token). Mamba's step costs the same whatever c (a constant-size state); the
// Llama step reads a cache that grows with c. Reported: tok/s of each, Mamba / Llama, and each
// model's tok/s relative to its own at the shortest context.
// Targets (Mixers II): Mamba's tok/s flat within 10% over 128…16K and ≥ 3× Llama's at 8K (Mamba
// paper: 5× inference throughput; S4: 60× faster generation).
//
//   build/bin/bench_mamba_decode [--out bench/results/mamba_decode.json] [--steps 32]
//                                [--max-context 16384]
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "lowrank/core/json.h"
#include "lowrank/mix/registry.h"
#include "lowrank/nn/config.h"
#include "lowrank/nn/kv_cache.h"
#include "lowrank/nn/model.h"

namespace {

lowrank::nn::Model llama(int64_t context) {
  const lowrank::Json c{{"architectures", {"LlamaForCausalLM"}},
                        {"model_type", "llama"},
                        {"vocab_size", 2048},
                        {"hidden_size", 128},
                        {"intermediate_size", 384},
                        {"num_hidden_layers", 4},
                        {"num_attention_heads", 4},
                        {"num_key_value_heads", 4},
                        {"max_position_embeddings", context},
                        {"rms_norm_eps", 1e-5},
                        {"tie_word_embeddings", true}};
  return lowrank::nn::Model::random(lowrank::nn::ModelConfig::from_json(c, "bench llama"), 1);
}

lowrank::nn::Model mamba() {
  const lowrank::Json c{{"architectures", {"MambaForCausalLM"}},
                        {"model_type", "mamba"},
                        {"vocab_size", 2048},
                        {"hidden_size", 128},
                        {"num_hidden_layers", 4},
                        {"state_size", 16},
                        {"expand", 2},
                        {"conv_kernel", 4},
                        {"tie_word_embeddings", true}};
  return lowrank::nn::Model::random(lowrank::nn::ModelConfig::from_json(c, "bench mamba"), 1);
}

// Median seconds per decoded token after prefilling `context` tokens.
double seconds_per_token(const lowrank::nn::Model& model, int64_t context, int steps) {
  at::NoGradGuard no_grad;
  at::manual_seed(2);
  const at::Tensor prompt = at::randint(2048, {1, context}, at::kLong);
  lowrank::nn::KVCache cache = model.new_cache(1, context + steps + 1);
  lowrank::nn::ForwardOptions o;
  o.cache = &cache;
  o.last_position_only = true;
  at::Tensor logits = model.forward(prompt, o);
  std::vector<double> t;
  for (int i = 0; i < steps; ++i) {
    const at::Tensor next = logits.argmax(-1).reshape({1, 1});
    const auto t0 = std::chrono::steady_clock::now();
    logits = model.forward(next, o);
    t.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  std::string out = "bench/results/mamba_decode.json";
  int steps = 32;
  int64_t max_context = 16384;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (std::strcmp(argv[i], "--out") == 0) out = argv[i + 1];
    if (std::strcmp(argv[i], "--steps") == 0) steps = std::stoi(argv[i + 1]);
    if (std::strcmp(argv[i], "--max-context") == 0) max_context = std::stoll(argv[i + 1]);
  }
  (void)lowrank::mix::registry();
  const lowrank::nn::Model m = mamba();
  const lowrank::nn::Model l = llama(max_context + steps + 1);
  std::printf("%-8s %12s %12s %12s %12s %12s\n", "context", "mamba_tok_s", "llama_tok_s", "mamba/llama",
              "mamba_rel", "llama_rel");
  lowrank::Json rows = lowrank::Json::array();
  double mamba_first = 0, llama_first = 0;
  for (int64_t c = 128; c <= max_context; c *= 2) {
    const double tm = 1.0 / seconds_per_token(m, c, steps), tl = 1.0 / seconds_per_token(l, c, steps);
    if (mamba_first == 0) {
      mamba_first = tm;
      llama_first = tl;
    }
    std::printf("%-8lld %12.1f %12.1f %12.2f %12.2f %12.2f\n", static_cast<long long>(c), tm, tl, tm / tl,
                tm / mamba_first, tl / llama_first);
    rows.push_back({{"context", c},
                    {"mamba_tokens_per_s", tm},
                    {"llama_tokens_per_s", tl},
                    {"mamba_over_llama", tm / tl},
                    {"mamba_relative_to_shortest", tm / mamba_first},
                    {"llama_relative_to_shortest", tl / llama_first}});
  }
  lowrank::write_json_file(out, lowrank::Json{{"benchmark", "mamba_decode"},
                                              {"dtype", "float32"},
                                              {"batch", 1},
                                              {"threads", at::get_num_threads()},
                                              {"steps", steps},
                                              {"rows", rows}});
  std::printf("wrote %s\n", out.c_str());
  return 0;
}
