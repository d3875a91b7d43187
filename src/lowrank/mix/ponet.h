// PoNet's pooling network as a token mixer (Tan et al., 2022, "PoNet: Pooling Network for
// Efficient Token Mixing in Long Sequences", ICLR, arXiv:2110.02442, §3). Per head (n heads of
// D = hidden/n), with Q = xW_q, K = xW_k (V = K shared), O = xW_o and X_s = xW_s, X_l = xW_l
// (all with bias):
//   global aggregation (GA):  g = mean_i Q_i (real tokens),  a = softmax_j(g·K_jᵀ/√D),
//                             g′ = Σ_j a_j K_j                             (one vector per head)
//   segment max-pooling (SMP): s_i = max_{j ∈ seg(i)} X_s[j]   (channelwise; LRA segments: the
//                             positions are cut into chunks of ⌊T/segment_num⌋ + 1, the last
//                             shorter, so there may be fewer than segment_num of them)
//   local max-pooling (LMP):   l_i = max(X_l[i−1], X_l[i], X_l[i+1])  (MaxPool1d k 3, stride 1,
//                             padding 1: the borders pool over two)
//   fusion:                    Y_i = (g′ + s_i) ⊙ O_i + l_i,  then y = Y W_dense + b
// Padding (MixerContext::valid false): excluded from g's mean, scored −10000 in a, and set to
// −10000 in X_s, X_l before pooling; its output rows are zero.
// Authors' code followed: lxchtan/PoNet examples/LRA/code/attention_ponet.py (PoNetAttention:
// get_segment_index, segment_max, get_win_max, the fusion and the masking) and
// examples/LRA/code/attention.py (W_q, W_k, W_v as O, W_local, W_segment, the output dense ff);
// models/modeling_ponet.py's PoNetSelfAttention names the projections (dense_q, dense_k, dense_o,
// dense_segment, dense_local) and the slots keep those names; the output projection is `dense`
// (BertSelfOutput's; its residual and LayerNorm are the decoder layer's own here).
// Deviations: sentence segments from [CLS]/[SEP] ids and the `clsgsepg` trick of the GLUE model
// are not implemented (the LRA form, `segment_num` equal chunks, is); the pre-norm residual of
// this project's decoder layer replaces BERT's post-LayerNorm. Bidirectional.
#pragma once

#include "lowrank/nn/token_mixer.h"

namespace lowrank::mix {

// Segment id of each of T positions for `segment_num` (attention_ponet.py's get_segment_index).
at::Tensor ponet_segment_index(int64_t T, int64_t segment_num, at::Device device);
// SMP: x [B, T, C] -> [B, T, C], the channelwise max over each position's segment.
at::Tensor ponet_segment_max(const at::Tensor& x, int64_t segment_num);
// LMP: x [B, T, C] -> [B, T, C], the channelwise max over positions i − 1, i, i + 1.
at::Tensor ponet_local_max(const at::Tensor& x);
// GA: q, k [B, n, T, D], valid [B, T] bool or undefined -> g′ [B, n, D].
at::Tensor ponet_global_aggregation(const at::Tensor& q, const at::Tensor& k, const at::Tensor& valid);

class PoNetMixer final : public nn::TokenMixer {
 public:
  explicit PoNetMixer(const nn::MixerSpec& spec);
  std::string name() const override { return "ponet"; }
  at::Tensor forward(const at::Tensor& x, const nn::MixerContext& context) const override;
  bool causal() const override { return false; }
  std::vector<nn::LinearSlot*> slots() override {
    return {&dense_q, &dense_k, &dense_o, &dense_segment, &dense_local, &dense};
  }
  using TokenMixer::slots;
  int64_t segment_num() const { return segment_num_; }

  nn::LinearSlot dense_q, dense_k, dense_o, dense_segment, dense_local, dense;

 private:
  int64_t heads_, head_dim_, segment_num_;
};

// Registers "ponet" (option: segment_num).
void register_ponet(nn::MixerRegistry& registry);

}  // namespace lowrank::mix
