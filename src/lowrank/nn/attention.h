// Causal self-attention of the Llama family with grouped-query attention (Ainslie et al., 2023,
// "GQA", arXiv:2305.13245), rotary embeddings, optional q/k/v (and o) bias, an optional sliding
// window (Mistral, Qwen2) and a KV cache:
//   q, k, v = x W_qᵀ (+b), x W_kᵀ (+b), x W_vᵀ (+b)      (B, T, n·D) -> (B, n, T, D)
//   q, k = RoPE(q), RoPE(k)
//   o = softmax(q kᵀ / √D + mask) v,  each group of n_heads / n_kv query heads sharing one k, v
//   y = o W_oᵀ (+b)
// The four projections are linear slots (linear_slot.h) named `<prefix>.{q,k,v,o}_proj`. It is the
// TokenMixer (token_mixer.h) registered as "attention", nn's own and always present.
// With a KVCompression (MatryoshkaKV, compress/matryoshka_kv.h) the rotated keys and the values are
// stored and attended in each KV head's truncated orthonormal basis instead (see KVCompression).
// Deviations from transformers: query rows that can see no key at all (padding before the first
// real token) attend to themselves so that their output stays finite (transformers' SDPA path
// un-masks such rows as well); those rows are padding and never reach a real token.
//
// Option `causal` (mixer_config.attention.causal, default true). false: bidirectional attention,
// as in the encoders that the LRA benchmark (Tay et al., 2021, arXiv:2011.04006) and ViT
// (Dosovitskiy et al., 2021, arXiv:2010.11929) classify with: every query sees every real key,
//   o = softmax(q kᵀ / √D + M) v,   M_ij = 0 where key j is a real token, −∞ where it is padding,
// the padding coming from MixerContext::valid only (no causal or sliding-window part). It is allowed
// only in a model without a language-model head (a classifier), and it cannot decode with a cache.
// Padding queries still attend to the real keys (their rows are never read); a row with no real
// token at all attends to every position so that its output stays finite.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

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

// MatryoshkaKV's cache compression of one attention layer (Lin et al., 2024, arXiv:2410.14731; set by
// compress/matryoshka_kv.h). Per KV head h, an orthonormal key basis U_K and value basis U_V (their
// leading r columns) and the means μ_K, μ_V of the rotated keys and of the values. Attention then
// runs in the compressed space, and the cache holds r_k + r_v numbers per head and position:
//   c_k = U_Kᵀ (k − μ_K),  c_v = U_Vᵀ (v − μ_V),  q′ = U_Kᵀ q            (q, k after RoPE)
//   o = U_V Σ_j softmax_j(q′ · c_k,j / √D) c_v,j + μ_V
// The paper's score term q · μ_K is the same for every key of a query, so softmax cancels it and it
// is not computed (for the same reason μ_K changes no output, only the stored numbers; it is kept
// because the paper stores centred keys). μ_V comes out of the sum exactly because the weights sum
// to 1. At r = D with full bases this is plain attention. A layer's heads share one width (its
// largest rank): the columns of a head beyond its own rank are zero, so they contribute nothing
// (the authors' padding masks).
struct KVCompression {
  at::Tensor key_basis;                         // [n_kv, D, r_k] in the compute dtype
  at::Tensor key_mean;                          // [n_kv, D]
  at::Tensor value_basis;                       // [n_kv, D, r_v]
  at::Tensor value_mean;                        // [n_kv, D]
  std::vector<int64_t> key_ranks, value_ranks;  // per KV head (the true ranks, <= r_k, r_v)
};

// The attention block of one decoder layer. Forward is const and thread-safe.
class Attention final : public TokenMixer {
 public:
  // `prefix` is the HF module name of the block ("model.layers.3.self_attn"); the slots are built
  // from the given operators (q, k, v, o).
  // `causal` false: bidirectional (see the option `causal` above).
  Attention(const ModelConfig& config, int64_t layer, const std::string& prefix,
            std::shared_ptr<const BaseOperator> q, std::shared_ptr<const BaseOperator> k,
            std::shared_ptr<const BaseOperator> v, std::shared_ptr<const BaseOperator> o, bool causal = true);

  std::string name() const override { return "attention"; }
  // x [B, T, hidden] -> [B, T, hidden], reading context.cos/sin [B, T, D], context.mask (required
  // when causal) and context.routing (per-row adapters in the four slots). With context.cache
  // (between begin() and commit()), keys and values of the T new positions are appended and the
  // whole past is attended. Bidirectional: the mask is built from context.valid instead, and a
  // cache is refused.
  at::Tensor forward(const at::Tensor& x, const MixerContext& context) const override;
  bool causal() const override { return causal_; }
  bool uses_kv_store() const override { return causal_; }
  std::vector<LinearSlot*> slots() override { return {&q_proj, &k_proj, &v_proj, &o_proj}; }
  using TokenMixer::slots;

  LinearSlot q_proj, k_proj, v_proj, o_proj;

  // MatryoshkaKV compression of this layer's cache (null: plain attention). Not thread-safe with a
  // forward in flight.
  void set_kv_compression(std::shared_ptr<const KVCompression> compression) {
    kv_compression_ = std::move(compression);
  }
  const std::shared_ptr<const KVCompression>& kv_compression() const { return kv_compression_; }

 private:
  // softmax(q kᵀ · scale + mask) v for q [B, n, T, E], k [B, n_kv, S, E], v [B, n_kv, S, E_v]
  // (query head h reads KV head h / groups) -> [B, n, T, E_v].
  at::Tensor attend(const at::Tensor& q, at::Tensor k, at::Tensor v, const AttentionMask& mask) const;

  int64_t layer_;
  int64_t num_heads_, num_kv_heads_, head_dim_;
  double scale_;
  bool causal_;
  std::shared_ptr<const KVCompression> kv_compression_;
};

// The padding-only mask of bidirectional attention over T positions: key j is allowed where
// valid[b, j] (bool [B, T]; undefined or all true: no mask needed). A row without any real token
// is left unmasked so that its output stays finite.
AttentionMask make_padding_mask(const at::Tensor& valid);

// The option keys the attention mixer takes, with their help (`lowrank methods`).
std::vector<std::pair<std::string, std::string>> attention_options();

// keys {"layer_mixers": ..., "mixer_config": {...}} of a classifier (train/classify.h's mixer_keys)
// with attention made bidirectional (mixer_config.attention.causal = false) when some layer is
// attention and the options do not set `causal` themselves: the encoders of LRA and ViT attend
// both ways, so the classification presets do too.
Json with_bidirectional_attention(Json keys);

// Registers "attention" (the factory builds Attention from MixerSpec; option `causal`).
void register_attention_mixer(MixerRegistry& registry);

}  // namespace lowrank::nn
