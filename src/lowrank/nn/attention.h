// Causal self-attention of the Llama family with grouped-query attention (Ainslie et al., 2023,
// "GQA", arXiv:2305.13245), rotary embeddings, optional q/k/v (and o) bias, an optional sliding
// window (Mistral, Qwen2) and a KV cache:
//   q, k, v = x W_qᵀ (+b), x W_kᵀ (+b), x W_vᵀ (+b)      (B, T, n·D) -> (B, n, T, D)
//   q, k = RoPE(q), RoPE(k)
//   o = softmax(q kᵀ / √D + mask) v,  each group of n_heads / n_kv query heads sharing one k, v
//   y = o W_oᵀ (+b)
// The four projections are linear slots (linear_slot.h) named `<prefix>.{q,k,v,o}_proj`. It is the
// TokenMixer (token_mixer.h) registered as "attention", nn's own and always present.
// Deviations from transformers: query rows that can see no key at all (padding before the first
// real token) attend to themselves so that their output stays finite (transformers' SDPA path
// un-masks such rows as well); those rows are padding and never reach a real token.
#pragma once

#include <cstdint>
#include <string>

#include <ATen/ATen.h>

#include "lowrank/nn/config.h"
#include "lowrank/nn/kv_cache.h"
#include "lowrank/nn/linear_slot.h"
#include "lowrank/nn/token_mixer.h"

namespace lowrank::nn {

// The mask for T new queries at positions [past, past + T) over S = past + T keys. key_valid
// [B, S] bool marks real tokens (undefined, or `padded` false: all real); window 0 = full causal,
// W > 0 = query i sees keys j with 0 <= i - j < W (transformers' sliding_window_overlay).
AttentionMask make_attention_mask(const at::Tensor& key_valid, bool padded, int64_t past,
                                  int64_t new_positions, int64_t window, at::Device device);

// The attention block of one decoder layer. Forward is const and thread-safe.
class Attention final : public TokenMixer {
 public:
  // `prefix` is the HF module name of the block ("model.layers.3.self_attn"); the slots are built
  // from the given operators (q, k, v, o).
  Attention(const ModelConfig& config, int64_t layer, const std::string& prefix,
            std::shared_ptr<const BaseOperator> q, std::shared_ptr<const BaseOperator> k,
            std::shared_ptr<const BaseOperator> v, std::shared_ptr<const BaseOperator> o);

  std::string name() const override { return "attention"; }
  // x [B, T, hidden] -> [B, T, hidden], reading context.cos/sin [B, T, D], context.mask (required)
  // and context.routing (per-row adapters in the four slots). With context.cache (between begin()
  // and commit()), keys and values of the T new positions are appended and the whole past is
  // attended.
  at::Tensor forward(const at::Tensor& x, const MixerContext& context) const override;
  bool causal() const override { return true; }
  bool uses_kv_store() const override { return true; }
  std::vector<LinearSlot*> slots() override { return {&q_proj, &k_proj, &v_proj, &o_proj}; }
  using TokenMixer::slots;

  LinearSlot q_proj, k_proj, v_proj, o_proj;

 private:
  int64_t layer_;
  int64_t num_heads_, num_kv_heads_, head_dim_;
  double scale_;
};

// Registers "attention" (the factory builds Attention from MixerSpec; it reads no options).
void register_attention_mixer(MixerRegistry& registry);

}  // namespace lowrank::nn
