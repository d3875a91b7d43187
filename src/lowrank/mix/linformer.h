// Linformer: Wang, Li, Khabsa, Fang and Ma, 2020, "Linformer: Self-Attention with Linear
// Complexity", arXiv:2006.04768. Keys and values are projected along the sequence to a fixed
// length k before softmax attention, so the attention matrix is n×k instead of n×n (Eq. 7):
//   head_i = softmax( Q_i (E_i K_i)ᵀ / √d ) · (F_i V_i),   Q_i, K_i, V_i = x W_iᴼ, x W_iᴷ, x W_iⱽ
//   E_i, F_i ∈ ℝ^{k×n}  (learned; n = max_seq_len, fixed)
//   y = concat_i(head_i) W_o
// Sharing (§4, "Parameter sharing"), option `sharing`:
//   headwise  one E and one F per layer, shared by all heads         (tensors proj_e, proj_f)
//   kv        one E = F per layer, shared by heads, keys and values   (tensor proj_e)
//   layerwise one E = F for every layer, head, key and value          (tensor model.linformer.proj_e)
// Layerwise sharing and the file-name contract (token_mixer.h): every layerwise layer asks
// MixerSpec::tensor for the same model-level file name `model.linformer.proj_e` and lists it in
// tensors(). One name is one tensor: a checkpoint stores it once, loading gives every layer its
// value, and its fresh value is drawn from a generator seeded by the name, so all layers start
// equal. That every layer also holds the same storage (one tensor trained by all layers' gradients)
// is the model builder's part: a builder that returns one tensor per name shares it.
// E and F start U(-1/√k, 1/√k), as lucidrains/linformer (`init_`).
//
// Authors' and reference code: tatp22/linformer-pytorch and lucidrains/linformer
// (`linformer/linformer.py`, LinformerSelfAttention; the PyPI `linformer` 0.2.3 is lucidrains').
// Followed from lucidrains: one E, F per layer over all heads (headwise by default), the
// d_head^{-1/2} scale, q/k/v projections without bias, and a sequence shorter than max_seq_len
// uses the first T columns of E and F ("allow for variable sequence lengths ... by slicing
// projections"); a longer one is an error naming both lengths.
// Deviations: (1) `kv` shares E = F only, as the paper says; lucidrains' share_kv also makes
// V = K (one projection for both) — with W_v = W_k the two agree (tested). (2) The output
// projection's bias follows the model config (`o_bias`), as attention's; lucidrains' to_out has
// one. (3) Padding positions (MixerContext::valid false) have their keys and values zeroed before
// the projection, so they add nothing to E·K and F·V; lucidrains takes no mask.
// No RoPE (positions come from the model, as in the paper); non-causal: E mixes all positions.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include <ATen/ATen.h>

#include "lowrank/nn/linear_slot.h"
#include "lowrank/nn/token_mixer.h"

namespace lowrank::mix {

enum class LinformerSharing { kHeadwise, kKeyValue, kLayerwise };

struct LinformerOptions {
  int64_t max_seq_len = 0;  // n: the columns of E and F (0: the config's max_position_embeddings)
  int64_t k = 256;          // projected length (capped at max_seq_len when not given)
  LinformerSharing sharing = LinformerSharing::kHeadwise;
};

class Linformer final : public nn::TokenMixer {
 public:
  explicit Linformer(const nn::MixerSpec& spec);

  std::string name() const override { return "linformer"; }
  // x [B, T, hidden] with T <= max_seq_len; reads context.valid and context.routing.
  at::Tensor forward(const at::Tensor& x, const nn::MixerContext& context) const override;
  bool causal() const override { return false; }
  std::vector<nn::LinearSlot*> slots() override { return {&q_proj_, &k_proj_, &v_proj_, &o_proj_}; }
  using TokenMixer::slots;
  nn::NamedTensors tensors() const override;

  const LinformerOptions& options() const { return options_; }

 private:
  LinformerOptions options_;
  int64_t num_heads_, head_dim_;
  nn::LinearSlot q_proj_, k_proj_, v_proj_, o_proj_;
  std::string e_name_, f_name_;
  at::Tensor e_, f_;  // [k, n]; f_ is e_ when E = F
};

// The options of `spec` (InvalidArgument naming the option for a bad one).
LinformerOptions linformer_options(const nn::MixerSpec& spec);

void register_linformer(nn::MixerRegistry& registry);

}  // namespace lowrank::mix
