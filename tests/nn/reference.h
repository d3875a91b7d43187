// Test oracle for nn/: tiny random Llama-family checkpoints written by hand (config.json +
// safetensors) and a straightforward forward pass written from the equations with per-head
// loops and plain ATen matmuls. It shares no code with src/lowrank/nn.
#pragma once

#include <cmath>
#include <filesystem>
#include <limits>
#include <map>
#include <string>
#include <vector>

#include <ATen/ATen.h>

#include "lowrank/core/json.h"
#include "lowrank/core/safetensors.h"

namespace lowrank::testing {

struct TinySpec {
  std::string arch = "LlamaForCausalLM";
  std::string model_type = "llama";
  int64_t vocab = 37, hidden = 24, intermediate = 40, layers = 2, heads = 4, kv_heads = 2, head_dim = 6;
  double theta = 10000.0, eps = 1e-5;
  bool qkv_bias = false, o_bias = false, mlp_bias = false, tied = false;
  std::vector<int64_t> window;  // per layer, 0 = none (what the reference applies)
};

using Weights = std::map<std::string, at::Tensor>;

// Random weights (float32, CPU) with HF names for `spec`; norms around 1, biases nonzero.
inline Weights random_weights(const TinySpec& s, uint64_t seed) {
  at::manual_seed(seed);
  Weights w;
  auto rnd = [](std::vector<int64_t> shape, double scale) { return at::randn(shape, at::kFloat).mul(scale); };
  const int64_t q = s.heads * s.head_dim, kv = s.kv_heads * s.head_dim;
  w["model.embed_tokens.weight"] = rnd({s.vocab, s.hidden}, 1.0);
  for (int64_t l = 0; l < s.layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l);
    w[p + ".input_layernorm.weight"] = rnd({s.hidden}, 0.1).add(1);
    w[p + ".post_attention_layernorm.weight"] = rnd({s.hidden}, 0.1).add(1);
    const double sc = 1.0 / std::sqrt(static_cast<double>(s.hidden));
    w[p + ".self_attn.q_proj.weight"] = rnd({q, s.hidden}, sc);
    w[p + ".self_attn.k_proj.weight"] = rnd({kv, s.hidden}, sc);
    w[p + ".self_attn.v_proj.weight"] = rnd({kv, s.hidden}, sc);
    w[p + ".self_attn.o_proj.weight"] = rnd({s.hidden, q}, 1.0 / std::sqrt(static_cast<double>(q)));
    if (s.qkv_bias) {
      w[p + ".self_attn.q_proj.bias"] = rnd({q}, 0.5);
      w[p + ".self_attn.k_proj.bias"] = rnd({kv}, 0.5);
      w[p + ".self_attn.v_proj.bias"] = rnd({kv}, 0.5);
    }
    if (s.o_bias) w[p + ".self_attn.o_proj.bias"] = rnd({s.hidden}, 0.5);
    w[p + ".mlp.gate_proj.weight"] = rnd({s.intermediate, s.hidden}, sc);
    w[p + ".mlp.up_proj.weight"] = rnd({s.intermediate, s.hidden}, sc);
    w[p + ".mlp.down_proj.weight"] = rnd({s.hidden, s.intermediate}, 1.0 / std::sqrt(double(s.intermediate)));
    if (s.mlp_bias) {
      w[p + ".mlp.gate_proj.bias"] = rnd({s.intermediate}, 0.5);
      w[p + ".mlp.up_proj.bias"] = rnd({s.intermediate}, 0.5);
      w[p + ".mlp.down_proj.bias"] = rnd({s.hidden}, 0.5);
    }
  }
  w["model.norm.weight"] = rnd({s.hidden}, 0.1).add(1);
  if (!s.tied) w["lm_head.weight"] = rnd({s.vocab, s.hidden}, 1.0 / std::sqrt(double(s.hidden)));
  return w;
}

// config.json for `spec` (the caller may add keys such as sliding_window before writing).
inline Json tiny_config(const TinySpec& s) {
  return Json{{"architectures", {s.arch}},
              {"model_type", s.model_type},
              {"vocab_size", s.vocab},
              {"hidden_size", s.hidden},
              {"intermediate_size", s.intermediate},
              {"num_hidden_layers", s.layers},
              {"num_attention_heads", s.heads},
              {"num_key_value_heads", s.kv_heads},
              {"head_dim", s.head_dim},
              {"rms_norm_eps", s.eps},
              {"rope_theta", s.theta},
              {"max_position_embeddings", 128},
              {"hidden_act", "silu"},
              {"tie_word_embeddings", s.tied},
              {"attention_bias", s.qkv_bias},
              {"mlp_bias", s.mlp_bias},
              {"bos_token_id", 1},
              {"eos_token_id", 2}};
}

inline void write_checkpoint(const std::filesystem::path& dir, const Json& config, const Weights& w,
                             at::ScalarType stored = at::kFloat) {
  std::filesystem::create_directories(dir);
  std::vector<NamedTensor> tensors;
  for (const auto& [name, t] : w) tensors.push_back({name, t.to(stored).contiguous()});
  save_safetensors(dir / "model.safetensors", tensors);
  write_json_file(dir / "config.json", config);
}

inline at::Tensor ref_rms(const at::Tensor& x, const at::Tensor& w, double eps) {
  return x / at::sqrt((x * x).mean({-1}, true) + eps) * w;
}

// Logits [T, vocab] (float64) of one unpadded sequence `ids` at positions 0..T-1.
inline at::Tensor reference_logits(const TinySpec& s, const Weights& w32, const std::vector<int64_t>& ids) {
  Weights w;
  for (const auto& [n, t] : w32) w[n] = t.to(at::kDouble);
  const int64_t T = static_cast<int64_t>(ids.size());
  const int64_t D = s.head_dim, half = D / 2;
  const int64_t group = s.heads / s.kv_heads;
  auto lin = [&](const at::Tensor& x, const std::string& name) {
    at::Tensor y = at::matmul(x, w.at(name + ".weight").t());
    if (w.count(name + ".bias")) y = y + w.at(name + ".bias");
    return y;
  };
  // RoPE angles: position t times 1 / theta^(2i / D).
  at::Tensor angle = at::empty({T, half}, at::kDouble);
  for (int64_t t = 0; t < T; ++t)
    for (int64_t i = 0; i < half; ++i)
      angle[t][i] =
          static_cast<double>(t) / std::pow(s.theta, 2.0 * static_cast<double>(i) / static_cast<double>(D));
  const at::Tensor c = at::cos(angle), sn = at::sin(angle);
  auto rotate = [&](const at::Tensor& x) {  // x [T, D]: pairs (i, i + D/2)
    at::Tensor x1 = x.slice(1, 0, half), x2 = x.slice(1, half, D);
    return at::cat({x1 * c - x2 * sn, x2 * c + x1 * sn}, 1);
  };

  at::Tensor x = w.at("model.embed_tokens.weight").index_select(0, at::tensor(ids, at::kLong));
  for (int64_t l = 0; l < s.layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l);
    const int64_t win = s.window.empty() ? 0 : s.window[l];
    at::Tensor h = ref_rms(x, w.at(p + ".input_layernorm.weight"), s.eps);
    at::Tensor q = lin(h, p + ".self_attn.q_proj"), k = lin(h, p + ".self_attn.k_proj");
    at::Tensor v = lin(h, p + ".self_attn.v_proj");
    std::vector<at::Tensor> heads;
    for (int64_t hd = 0; hd < s.heads; ++hd) {
      const int64_t kvh = hd / group;
      at::Tensor qh = rotate(q.slice(1, hd * D, (hd + 1) * D));
      at::Tensor kh = rotate(k.slice(1, kvh * D, (kvh + 1) * D));
      at::Tensor vh = v.slice(1, kvh * D, (kvh + 1) * D);
      at::Tensor scores = at::matmul(qh, kh.t()) / std::sqrt(static_cast<double>(D));
      for (int64_t i = 0; i < T; ++i)
        for (int64_t j = 0; j < T; ++j)
          if (j > i || (win > 0 && i - j >= win)) scores[i][j] = -std::numeric_limits<double>::infinity();
      heads.push_back(at::matmul(at::softmax(scores, 1), vh));
    }
    x = x + lin(at::cat(heads, 1), p + ".self_attn.o_proj");
    h = ref_rms(x, w.at(p + ".post_attention_layernorm.weight"), s.eps);
    at::Tensor g = lin(h, p + ".mlp.gate_proj");
    x = x + lin(g * at::sigmoid(g) * lin(h, p + ".mlp.up_proj"), p + ".mlp.down_proj");
  }
  x = ref_rms(x, w.at("model.norm.weight"), s.eps);
  const at::Tensor head = s.tied ? w.at("model.embed_tokens.weight") : w.at("lm_head.weight");
  return at::matmul(x, head.t());
}

}  // namespace lowrank::testing
