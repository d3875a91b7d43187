// Neighborhood attention as a token mixer (Hassani et al., 2023, "Neighborhood Attention
// Transformer", arXiv:2204.07143; dilation: Hassani & Shi, 2022, "Dilated Neighborhood Attention
// Transformer", arXiv:2209.15001). Multi-head self-attention in which query i sees only its
// neighborhood ρ(i) of k keys per axis (NATTEN's clamped windows, ops/neighborhood.h):
//   q, k, v = x W_qᵀ, x W_kᵀ, x W_vᵀ                  (B, T, n·D) -> (B, n, T, D)
//   o_i = Σ_{j∈ρ(i)} softmax_j( q_i·k_j/√D + b[(j − i)/d + k − 1] ) v_j
//   y = o W_oᵀ
// 1-D on a sequence, or 2-D on MixerContext::grid (T = height·width, row-major; the window is the
// product of the two axes' windows). Per axis: kernel_size k (odd), dilation d, causal masking.
// b is NAT's relative position bias, one table of 2k − 1 (2-D: (2k_h − 1) × (2k_w − 1)) entries
// per head, the tensor `<prefix>.rpb`.
// Authors' code followed: SHI-Labs/NATTEN, csrc/include/natten/cpu/naive/natten_cpu_commons.h
// (window start/end, causal windows, bias index), .../pointwise_neighborhood_{1d,2d}.hpp and
// neighborhood_neighborhood_{1d,2d}.hpp (QK + RPB, then AV), and src/natten/natten{1d,2d}.py's
// NeighborhoodAttention{1D,2D} (qkv and proj Linears, rpb [heads, 2k − 1 ...] drawn from
// trunc_normal(std 0.02), scale head_dim^−½).
// Deviations: q, k, v are the separate LinearSlots of this project's mixers (NATTEN fuses them
// into one qkv Linear; the same map); the projections follow the model config's attention_bias
// (NATTEN's qkv and proj have biases); the bias table starts from N(0, initializer_range) (the
// model's 0.02, untruncated); a sequence or grid shorter than kernel_size × dilation on an axis
// that is not causal is an error (NATTEN's module pads it with zero tokens up to that length);
// RPB is allowed with causal masking (NATTEN's fused kernels refuse the pair) and indexes the
// same table; a padded batch (MixerContext::valid, 1-D only) runs each row on its real tokens
// alone, as NATTEN would run the unpadded sequence; no RoPE (NAT has none).
// A causal 1-D mixer decodes through step(): its state is the last (k − 1)·d + 1 keys and values.
#pragma once

#include <vector>

#include "lowrank/nn/token_mixer.h"
#include "lowrank/ops/neighborhood.h"

namespace lowrank::mix {

class NeighborhoodMixer final : public nn::TokenMixer {
 public:
  explicit NeighborhoodMixer(const nn::MixerSpec& spec);

  std::string name() const override { return "neighborhood"; }
  at::Tensor forward(const at::Tensor& x, const nn::MixerContext& context) const override;
  // Causal when every axis is causal (a 1-D causal mixer, or a 2-D one causal on both axes, where
  // row-major order makes the product window look only backwards).
  bool causal() const override;
  bool has_decode_state() const override { return axes_.size() == 1 && axes_[0].causal; }
  std::unique_ptr<nn::MixerState> new_state(int64_t batch) const override;
  at::Tensor step(const at::Tensor& x, nn::MixerState& state, const nn::MixerContext& context) const override;
  std::vector<nn::LinearSlot*> slots() override { return {&q_proj, &k_proj, &v_proj, &o_proj}; }
  using TokenMixer::slots;
  nn::NamedTensors tensors() const override;

  const std::vector<ops::NeighborhoodAxis>& axes() const { return axes_; }
  // [heads, 2k − 1] or [heads, 2k_h − 1, 2k_w − 1]; undefined without `rpb`.
  const at::Tensor& rpb() const { return rpb_; }

  nn::LinearSlot q_proj, k_proj, v_proj, o_proj;

 private:
  // q, k, v [B, n, T, D] of a 1-D mixer whose batch has padding (valid [B, T]).
  at::Tensor per_row_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                               const at::Tensor& bias, const at::Tensor& valid) const;

  std::vector<ops::NeighborhoodAxis> axes_;
  int64_t heads_, head_dim_;
  double scale_;
  std::string rpb_name_;
  at::Tensor rpb_;
};

// Registers "neighborhood" (options: dims, kernel_size, dilation, causal, rpb).
void register_neighborhood(nn::MixerRegistry& registry);

}  // namespace lowrank::mix
