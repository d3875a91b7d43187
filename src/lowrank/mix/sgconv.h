// SGConv, the structured global convolution (Li, Cai, Zhang, Chen, Dey, 2023, "What Makes
// Convolutional Models Great on Long Sequence Modeling?", ICLR, arXiv:2210.09298, §3.1, Eq. 1).
// The kernel of each of the C·H channels is built from S small sub-kernels w_i ∈ ℝ^d
// (d = kernel_dim), S = 1 + ⌈log₂(l_max/d)⌉ − init_scale, so it has O(d·log L) parameters:
//   cat:  K = concat_i [ Upsample_{r_i}(w_i) · α_h^{S−1−i} ],  r_i = 2^{max(0, i−1) + init_scale}
//         (sub-kernel 0 covers [0, d·r_0), sub-kernel i the next d·r_i taps: each scale twice as
//         long and twice as coarse as the one before);
//   sum:  K = Σ_i pad(Upsample_{2^{i+init_scale}}(w_i)) · α_h^{S−1−i}  (every scale from tap 0);
// Upsample = linear interpolation (F.interpolate, align_corners false) or nearest; α_h =
// linspace(decay_min, decay_max, H)[h], so with α > 1 each coarser scale weighs 1/α of the one before
// (the decay that makes the kernel's weights fall with distance). K is divided by its norm per
// channel, ‖K‖₂ taken once, at the first forward, and fixed after (tensor `kernel_norm`), then cut or
// zero-padded to the input length T. For x [B, T, H], u = xᵀ:
//   y_c = K_c ∗ u + D_c ⊙ u   (causal FFT convolution padded to 2T, ops/long_fft_conv.h),
//   out = W_out · GELU([y_1; …; y_C]) + b      (postact glu: GLU of a 2H-wide W_out).
// Bidirectional (classifiers only): a second kernel set for the future side, as S4:
//   y_t = Σ_{s≤t} K[t−s] u_s + Σ_{s>t} K̃[s−t−1] u_s.
// Causal SGConv decodes with a shift register of the kernel's length (as long_conv).
// param_groups: the sub-kernels train with lr = kernel_lr (the reference's 0.001) and no weight
// decay; kernel_norm is a fixed buffer (read detached: no gradient reaches it, so it never moves).
// Code followed: ctlllll/SGConv gconv_standalone.py (GConv: num_scales, kernel_list randn or cos
// init with a random channel permutation, the 'cat' and 'sum' constructions with F.interpolate
// and F.pad, multiplier = linspace(decay_min, decay_max, h) to the power num_scales − i − 1,
// kernel_norm at the first forward, truncate or pad to L, the bidirectional (s c) split,
// rfft at 2L, D skip, (c h) flatten, GELU, output_linear with postact).
// Deviations: the kernel norm is taken when the mixer is built, from the initial sub-kernels
// (what the reference's first forward sees: no step has run before it; a loaded model reads the
// saved norm); the 'learnable' decay mode, the optional LayerNorm (ln) and dropout are not
// implemented; the cos init permutes channels by a name-seeded permutation, not torch.randperm.
#pragma once

#include <string>

#include "lowrank/nn/token_mixer.h"

namespace lowrank::mix {

struct SGConvOptions {
  int64_t l_max = 0;  // default max_position_embeddings
  int64_t kernel_dim = 64;
  int64_t init_scale = 0;
  int64_t num_scales = 0;           // default 1 + ⌈log₂(l_max / kernel_dim)⌉ − init_scale
  std::string mode = "cat";         // cat | sum
  std::string init = "randn";       // randn | cos
  std::string upsample = "linear";  // linear | nearest
  double decay_min = 2.0;
  double decay_max = 2.0;
  int64_t channels = 1;
  bool bidirectional = false;
  bool glu = false;  // postact glu
  double kernel_lr = 1e-3;
};

SGConvOptions sgconv_options(const nn::MixerSpec& spec);

// The un-normalised multiscale kernel [C, H, len] of sub-kernels [C, H, d] (S of them) for
// `options` (cat or sum, linear or nearest upsampling, decay linspace(decay_min, decay_max, H)).
at::Tensor sgconv_kernel(const std::vector<at::Tensor>& sub_kernels, const SGConvOptions& options);

class SGConvMixer final : public nn::TokenMixer {
 public:
  explicit SGConvMixer(const nn::MixerSpec& spec);
  std::string name() const override { return "sgconv"; }
  at::Tensor forward(const at::Tensor& x, const nn::MixerContext& context) const override;
  bool causal() const override { return !options_.bidirectional; }
  bool has_decode_state() const override { return causal(); }
  std::unique_ptr<nn::MixerState> new_state(int64_t batch) const override;
  at::Tensor step(const at::Tensor& x, nn::MixerState& state, const nn::MixerContext& context) const override;
  std::vector<nn::LinearSlot*> slots() override { return {&out_proj_}; }
  using TokenMixer::slots;
  nn::NamedTensors tensors() const override;
  std::vector<nn::ParamGroup> param_groups() const override;

  // The normalised kernel cut or padded to `length`: [C (·2 bidirectional), H, length].
  at::Tensor kernel(int64_t length) const;
  const SGConvOptions& options() const { return options_; }

 private:
  at::Tensor output(const at::Tensor& y, const nn::MixerContext& context) const;
  SGConvOptions options_;
  int64_t hidden_;
  int64_t kernel_length_;  // of the whole multiscale kernel
  std::vector<std::string> sub_names_;
  std::vector<at::Tensor> sub_kernels_;
  std::string norm_name_, skip_name_;
  at::Tensor kernel_norm_;  // [C, H, 1], fixed
  at::Tensor skip_;         // D [C, H]
  nn::LinearSlot out_proj_;
};

// Registers "sgconv".
void register_sgconv(nn::MixerRegistry& registry);

}  // namespace lowrank::mix
