// Dilated reparameterisation (Ding, Zhang, Song, Ge, Ding, Yue, Shan, 2024, "UniRepLKNet: A
// Universal Perception Large-Kernel ConvNet ...", CVPR, arXiv:2311.15599, §3.2, Fig. 2): a large
// depthwise kernel trained beside parallel small dilated depthwise kernels, merged after training.
//   training form: y = BN_0(DW_K(x)) + Σ_i BN_i(DW_{k_i, dilation r_i}(x)),
//                  "same" zero padding (r(k−1)+1)/2 per branch, no conv biases;
//   deploy form:   y = DW_K(x; W, b), with, for BN_i in eval mode (scale s_i, shift t_i, batch_norm.h),
//                  W = s_0 ⊙ W_0 + Σ_i Pad_K(Dilate_{r_i}(s_i ⊙ W_i)),   b = t_0 + Σ_i t_i,
//                  Dilate_r(W) the r(k−1)+1 kernel with r−1 zeros between taps (a dilated conv
//                  equals a dense conv with that kernel), Pad_K a centred zero pad to K×K.
// The (k_i, r_i) per K are the reference table (AILab-CVC/UniRepLKNet, unireplknet.py,
// DilatedReparamBlock; its merge: fuse_bn, convert_dilated_to_nondilated,
// merge_dilated_into_large_kernel):
//   K = 5: k (3,3) r (1,2);  K = 7: k (5,3,3) r (1,2,3);
//   K = 9: k (5,5,3,3) r (1,2,3,4);  K = 11: k (5,5,3,3,3) r (1,2,3,4,5);
//   K = 13: k (5,7,3,3,3) r (1,2,3,4,5);  K = 15: k (5,7,3,3,3) r (1,2,3,5,7);
//   K = 17: k (5,9,3,3,3) r (1,2,4,5,7).
// Any other K is an error listing these. Tensors (under the mixer's prefix): training form
// lk.weight [C,1,K,K], lk_norm.*, dil_k<k>_<r>.weight [C,1,k,k], dil_k<k>_<r>.norm.*; deploy form
// lk.weight, lk.bias.
//
// Token mixer "dilated_reparam_1d": the same block over a sequence x ∈ ℝ^{T×H} (the paper's
// time-series mode: UniRepLKNet treats a sequence as a 1-D map), one depthwise kernel per hidden
// channel:  y = s_0 ⊙ DW_K(x) + t_0 + Σ_i (s_i ⊙ DW_{k_i, r_i}(x) + t_i).
// Deviation (registered under its own name): each BN is its eval-mode form, a learned per-channel
// affine (s, t) (tensors <branch>.scale / .shift, init 1 and 0). The token-mixer contract has no
// training mode, and batch statistics over padded sequences would mix padding into them; the
// reparameterisation (and its merged deploy kernel) is unchanged. Option "causal" (default true):
// every branch padded on the left by r(k−1), each dense kernel right-aligned in K when merged, so
// output t reads x_{t−K+1..t}; step() keeps the last K−1 inputs and applies the merged kernel.
// "causal": false pads each branch by r(k−1)/2 on both sides (bidirectional, classifiers only).
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include <ATen/ATen.h>

#include "lowrank/nn/batch_norm.h"
#include "lowrank/nn/token_mixer.h"

namespace lowrank::mix {

struct DilatedBranchSpec {
  int64_t kernel_size = 0, dilation = 0;
};

// The reference table; throws InvalidArgument "dilated_reparam: kernel_size K is not in the table
// (supported: 5, 7, 9, 11, 13, 15, 17)" for any other K.
std::vector<DilatedBranchSpec> dilated_reparam_branches(int64_t kernel_size);
std::vector<int64_t> dilated_reparam_kernel_sizes();

// A depthwise kernel [C, 1, k, k] of dilation r as the dense kernel [C, 1, r(k−1)+1, r(k−1)+1]
// with r − 1 zeros between taps, so that conv2d(x, dense) = conv2d(x, kernel, dilation = r).
at::Tensor dilated_to_dense(const at::Tensor& kernel, int64_t dilation);
// `small` [C, 1, k, k] zero-padded symmetrically to [C, 1, K, K] (K − k even, K ≥ k).
at::Tensor pad_kernel_to(const at::Tensor& small, int64_t kernel_size);

struct DilatedReparam {
  struct Branch {
    DilatedBranchSpec spec;
    at::Tensor weight;
    nn::BatchNorm norm;
  };
  int64_t channels = 0, kernel_size = 0;
  bool deployed = false;
  at::Tensor lk_weight;          // [C, 1, K, K]
  at::Tensor lk_bias;            // [C]: deploy form only
  nn::BatchNorm lk_norm;         // training form only
  std::vector<Branch> branches;  // training form only

  static DilatedReparam make(const std::string& prefix, int64_t channels, int64_t kernel_size, bool deploy,
                             const nn::ConvTensorSource& source);
  // x [B, C, H, W] -> [B, C, H, W]; `training` selects the BatchNorms' batch statistics.
  at::Tensor forward(const at::Tensor& x, bool training) const;
  // The deploy form's (weight [C,1,K,K], bias [C]) from the training form, BatchNorms in eval mode.
  std::pair<at::Tensor, at::Tensor> merged() const;
  // This module's deploy form (a copy of the merged tensors).
  DilatedReparam deploy() const;
  void append_parameters(const std::string& prefix, nn::NamedTensors& out) const;
  void append_buffers(const std::string& prefix, nn::NamedTensors& out) const;
};

class DilatedReparam1dMixer final : public nn::TokenMixer {
 public:
  explicit DilatedReparam1dMixer(const nn::MixerSpec& spec);
  std::string name() const override { return "dilated_reparam_1d"; }
  at::Tensor forward(const at::Tensor& x, const nn::MixerContext& context) const override;
  bool causal() const override { return causal_; }
  bool has_decode_state() const override { return causal_; }
  std::unique_ptr<nn::MixerState> new_state(int64_t batch) const override;
  at::Tensor step(const at::Tensor& x, nn::MixerState& state, const nn::MixerContext& context) const override;
  std::vector<nn::LinearSlot*> slots() override { return {}; }
  using TokenMixer::slots;
  nn::NamedTensors tensors() const override;
  // The merged depthwise kernel [H, K] and bias [H] (causal: each branch right-aligned).
  std::pair<at::Tensor, at::Tensor> merged() const;

 private:
  struct Branch {
    DilatedBranchSpec spec;  // the large kernel is {K, 1}
    std::string name;
    at::Tensor weight, scale, shift;  // [H, k], [H], [H]
  };
  std::string prefix_;
  int64_t hidden_ = 0, kernel_size_ = 0;
  bool causal_ = true;
  std::vector<Branch> branches_;  // [0]: the large kernel "lk"
};

// Registers "dilated_reparam_1d" (options kernel_size, causal).
void register_dilated_reparam_1d(nn::MixerRegistry& registry);

}  // namespace lowrank::mix
