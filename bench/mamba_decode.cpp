// Decoding speed against context length: the `mamba-tiny` shape (MambaForCausalLM, hidden 128,
// 4 layers, N 16, E 2) against the `tiny` Llama (hidden 128, 4 layers, 4 heads, MLP 384) with its
// KV cache, both at random init, vocab 2048, batch 1, float32, in one run. For each model and
// context c the prompt of c tokens is prefilled once (untimed), then `steps` single-token steps
// are timed (the median per token), two ways:
//   warm         each (model, context) decodes its steps back to back: one stream's speed, its
//                weights and cache warm;
//   interleaved  `steps` rounds each time one step of every (model, context) in turn, so that a
//                drift of the machine falls on all of them alike (on a shared machine a 0.25 ms
//                step varies by ±20% from one second to the next); every step then starts with the
//                others' caches in the way, as when one server decodes many sequences.
// The flatness target is read on the interleaved times, where drift cannot fake or hide it. Mamba's step
// costs the same whatever c (a constant-size state); the Llama step reads a cache that grows with c.
// Reported: tok/s of each, Mamba / Llama, and each model's tok/s relative to its own at the shortest context.
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
#include <memory>
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

// One model decoding after a prefilled prompt of `context` tokens: its cache, its last logits and
// the times of its steps.
struct Decoder {
  const lowrank::nn::Model* model;
  lowrank::nn::KVCache cache;
  lowrank::nn::ForwardOptions options;
  at::Tensor logits;
  std::vector<double> seconds;

  Decoder(const lowrank::nn::Model& m, int64_t context, int steps)
      : model(&m), cache(m.new_cache(1, context + steps + 1)) {
    at::NoGradGuard no_grad;
    at::manual_seed(2);
    options.cache = &cache;
    options.last_position_only = true;
    logits = m.forward(at::randint(2048, {1, context}, at::kLong), options);
  }
  Decoder(Decoder&&) = delete;  // `options` points at `cache`

  void step() {
    at::NoGradGuard no_grad;
    const at::Tensor next = logits.argmax(-1).reshape({1, 1});
    const auto t0 = std::chrono::steady_clock::now();
    logits = model->forward(next, options);
    seconds.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  double median_seconds() const {
    std::vector<double> t = seconds;
    std::sort(t.begin(), t.end());
    return t[t.size() / 2];
  }
};

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
  std::vector<int64_t> contexts;
  for (int64_t c = 128; c <= max_context; c *= 2) contexts.push_back(c);
  // Warm: one decoder at a time.
  std::vector<double> warm_mamba, warm_llama;
  for (const int64_t c : contexts)
    for (const lowrank::nn::Model* model : {&m, &l}) {
      Decoder d(*model, c, steps);
      for (int i = 0; i < steps; ++i) d.step();
      (model == &m ? warm_mamba : warm_llama).push_back(1.0 / d.median_seconds());
    }
  // Interleaved: every decoder alive, one step each per round.
  std::vector<std::unique_ptr<Decoder>> mambas, llamas;
  for (const int64_t c : contexts) {
    mambas.push_back(std::make_unique<Decoder>(m, c, steps));
    llamas.push_back(std::make_unique<Decoder>(l, c, steps));
  }
  for (int i = 0; i < steps; ++i)
    for (size_t k = 0; k < contexts.size(); ++k) {
      mambas[k]->step();
      llamas[k]->step();
    }
  std::printf("%-8s %12s %12s %12s | interleaved: %10s %10s %10s %10s %10s\n", "context", "mamba_tok_s",
              "llama_tok_s", "mamba/llama", "mamba", "llama", "m/l", "mamba_rel", "llama_rel");
  lowrank::Json rows = lowrank::Json::array();
  const double mamba_first = 1.0 / mambas[0]->median_seconds(),
               llama_first = 1.0 / llamas[0]->median_seconds();
  for (size_t k = 0; k < contexts.size(); ++k) {
    const double im = 1.0 / mambas[k]->median_seconds(), il = 1.0 / llamas[k]->median_seconds();
    std::printf("%-8lld %12.1f %12.1f %12.2f | %24.1f %10.1f %10.2f %10.2f %10.2f\n",
                static_cast<long long>(contexts[k]), warm_mamba[k], warm_llama[k],
                warm_mamba[k] / warm_llama[k], im, il, im / il, im / mamba_first, il / llama_first);
    rows.push_back({{"context", contexts[k]},
                    {"mamba_tokens_per_s", warm_mamba[k]},
                    {"llama_tokens_per_s", warm_llama[k]},
                    {"mamba_over_llama", warm_mamba[k] / warm_llama[k]},
                    {"interleaved_mamba_tokens_per_s", im},
                    {"interleaved_llama_tokens_per_s", il},
                    {"interleaved_mamba_over_llama", im / il},
                    {"mamba_relative_to_shortest", im / mamba_first},
                    {"llama_relative_to_shortest", il / llama_first}});
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
