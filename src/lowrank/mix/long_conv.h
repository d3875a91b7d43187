// Simple long convolutions (Fu, Epstein, Nguyen, Thomas, Zhang, Dao, Rudra, Ré, 2023, "Simple
// Hardware-Efficient Long Convolutions for Sequence Modeling", arXiv:2302.06646), two mixers:
//
// long_conv (the paper's LongConv layer, §3.1–3.2). A kernel K ∈ ℝ^{C×H×L′} is a parameter (C
// channels of H hidden units; L′ = l_max), regularised before use:
//   Smooth  K ← AvgPool1d_w(K)  (window w = 7, stride 1, zero padding w//2, divided by w);
//   Squash  K ← sign(K) · ReLU(|K| − λ)                       (soft threshold, λ = lam);
//   kernel dropout on the regularised taps while training.
// For x [B, T, H], u = xᵀ [B, H, T] and
//   y_c = K_c[:, :T] ∗ u + D_c ⊙ u                (causal FFT convolution, ops/long_fft_conv.h,
//                                                   padded to L′ + T; D ∈ ℝ^{C×H} the skip)
//   out = GLU(W_out · GELU([y_1; …; y_C]) + b)     (W_out ∈ ℝ^{2H×CH}, the slot out_proj).
// Bidirectional (classifiers only): a second kernel set K̃ for the past-to-future side,
//   y_t = Σ_{s≤t} K[t−s] u_s + Σ_{s>t} K̃[s−t−1] u_s.
// The FFT (impl) is at::fft (fft), the Monarch product of ops/monarch_fft.h (monarch: the same
// function, FlashButterfly's GEMM form), or the learned Monarch product (learned_monarch, §3.3
// "learned butterfly"): trainable factors of the transforms of u and of K, initialised at the DFT,
// with their own learning rate; the inverse stays the exact iDFT. Trained factors no longer give a
// convolution, so output t may see later inputs: learned_monarch is bidirectional (an LM refuses
// it; causal() tells).
//
// gated_long_conv (H3's shape with long-convolution kernels, the paper's language-model layer,
// §5.3): q, k, v = W_q x, W_k x, W_v x (with biases); a shift convolution of k, then the gate:
//   k̄ = K_shift ∗ k + D_shift ⊙ k,    y = q ⊙ (K ∗ (k̄ ⊙ v) + D ⊙ (k̄ ⊙ v)),    out = W_o y + b_o,
// one channel, head dimension 1, both kernels regularised as above. Causal (fft, monarch).
//
// Decoding (causal forms): the convolution keeps the last L′ inputs of each conv (a [B, L′, H]
// shift register, constant in the number of positions); step(x) shifts x in (rows whose position
// is padding leave it unchanged) and takes y_t = Σ_j K[:, j] ⊙ u_{t−j}, so step() equals forward's
// rows. Padding positions of forward are zeroed before the convolution (safari masks u the same).
//
// param_groups: every kernel trains with lr = kernel_lr and no weight decay (safari registers the
// kernel with its own lr and weight_decay 0.0); learned Monarch factors with lr = dft_lr, no weight
// decay.
//
// Code followed: HazyResearch/safari src/models/sequence/long_conv_kernel.py (LongConvKernel:
// init randn·0.002 or "double_exp", AvgPool1d smoothing with an odd window, the squash
// F.relu(|k| − lam)·sign(k), kernel dropout), src/models/sequence/long_conv.py (LongConv: rfft at
// L_kernel + L, D skip, channels flattened as (c h), GELU, Linear + GLU; block_fft_conv), and
// src/models/sequence/h3_conv.py (H3Conv: q/k/v projections, the shift kernel k_kernel + k_D, kv,
// the long kernel + D, q ⊙ y, output_linear); src/models/sequence/block_fft.py (the learnable DFT
// matrices, dft_lr 0.001); configs/model/layer/{long-conv,h3-conv}.yaml (lam 0.003, kernel_dropout
// 0.2, learning_rate ≤ 0.001).
// Deviations, named: the defaults are the plain long convolution (lam 0, no smoothing, no kernel
// dropout; the authors' LRA layer config is {"lam": 0.003, "kernel_dropout": 0.2}, ListOps lam
// 0.002), because at lam 0.003 the randn·0.002 initial kernel is mostly zero until training grows
// it; kernel dropout runs when the kernel is being trained (autograd on and the kernel requiring a
// gradient: mixers have no train/eval flag); channels default to 1 (LongConv's class default; the
// yaml uses 2); the learned factors are safari's per-size DFT matrices in the order-2 Monarch form
// of ops/monarch_fft.h rather than its radix-16 recursion; the Fourier-domain smoothing
// (smooth_freq) is not implemented.
#pragma once

#include <functional>
#include <string>

#include "lowrank/nn/token_mixer.h"
#include "lowrank/ops/long_fft_conv.h"

namespace lowrank::mix {

enum class LongConvImpl { kFft, kMonarch, kLearnedMonarch };

struct LongConvOptions {
  int64_t l_max = 0;  // L′ (default: max_position_embeddings)
  int64_t channels = 1;
  double lam = 0.0;
  bool smooth = false;
  int64_t smooth_window = 7;
  double kernel_dropout = 0.0;
  std::string kernel_init = "random";  // random | double_exp
  double kernel_lr = 1e-3;
  LongConvImpl impl = LongConvImpl::kFft;
  double dft_lr = 1e-3;
  bool bidirectional = false;
};

// Parses and checks `spec.options` of mixer `mixer` (long_conv or gated_long_conv).
LongConvOptions long_conv_options(const nn::MixerSpec& spec, const std::string& mixer);

// The regularisers on a kernel [..., L′], exposed for their oracles:
// AvgPool1d(window, stride 1, padding window//2, zero padding counted) along the last axis.
at::Tensor smooth_kernel(const at::Tensor& kernel, int64_t window);
// sign(K) · ReLU(|K| − λ).
at::Tensor squash_kernel(const at::Tensor& kernel, double lam);

// Helpers the long-convolution mixers share (long_conv, gated_long_conv, sgconv).
// The two-sided convolution of u [..., T]: Σ_{s≤t} past[t−s]·u_s + Σ_{s>t} future[s−t−1]·u_s,
// the future side as a causal convolution of the reversed input with `future` delayed by one
// tap; `conv` is the causal convolution (u, k) -> y.
at::Tensor two_sided_conv(const at::Tensor& u, const at::Tensor& past, const at::Tensor& future,
                          const std::function<at::Tensor(const at::Tensor&, const at::Tensor&)>& conv);
// N(0, 1) of `shape`, float32, by Box–Muller from two draws of uniform_by_name (reproducible per
// name, as the other name-seeded initial values of mix/).
at::Tensor normal_by_name(const std::string& name, at::IntArrayRef shape);
// A decode state's shift register [B, L′, H] (newest last) with x [B, 1, H] shifted in; rows whose
// position is padding (context.valid false) keep theirs.
at::Tensor shift_in(const at::Tensor& inputs, const at::Tensor& x, const nn::MixerContext& context);
// Σ_j K[c, h, j] · inputs[b, L′−1−j, h] for K [C, H, L′] and a shift register [B, L′, H]: [B, C, H],
// the convolution's output at the newest position.
at::Tensor convolve_newest(const at::Tensor& kernel, const at::Tensor& inputs);

// One regularised kernel and its convolution (shared by both mixers).
class LongConvKernel {
 public:
  // kernel [C, H, L′] under `name`; learned factors under `<name>_fft_{u,k}.{f1,f2}`.
  LongConvKernel(const nn::MixerSpec& spec, const LongConvOptions& options, const std::string& name,
                 int64_t channels);
  // Smoothed, squashed and (while training) dropped-out K [C, H, L′].
  at::Tensor kernel() const;
  // Σ_s K[c, h, t−s] u[b, h, s] for u [B, H, T]: [B, C, H, T] (with learned factors, their product).
  at::Tensor convolve(const at::Tensor& u) const;
  void append_tensors(nn::NamedTensors& out) const;
  void append_param_groups(std::vector<nn::ParamGroup>& out) const;
  const std::string& name() const { return name_; }

 private:
  LongConvOptions options_;
  std::string name_;
  at::Tensor weight_;  // [C, H, L′]
  // learned_monarch: [n, n, 2] real views of the complex factors of the transforms of u and of K.
  std::string factor_names_[4];
  at::Tensor factors_[4];
  ops::MonarchFactors factors(int index) const;
};

class LongConvMixer final : public nn::TokenMixer {
 public:
  explicit LongConvMixer(const nn::MixerSpec& spec);
  std::string name() const override { return "long_conv"; }
  at::Tensor forward(const at::Tensor& x, const nn::MixerContext& context) const override;
  bool causal() const override {
    return !options_.bidirectional && options_.impl != LongConvImpl::kLearnedMonarch;
  }
  bool has_decode_state() const override { return causal(); }
  std::unique_ptr<nn::MixerState> new_state(int64_t batch) const override;
  at::Tensor step(const at::Tensor& x, nn::MixerState& state, const nn::MixerContext& context) const override;
  std::vector<nn::LinearSlot*> slots() override { return {&out_proj_}; }
  using TokenMixer::slots;
  nn::NamedTensors tensors() const override;
  std::vector<nn::ParamGroup> param_groups() const override;

 private:
  at::Tensor output(const at::Tensor& y, const nn::MixerContext& context) const;
  LongConvOptions options_;
  int64_t hidden_;
  LongConvKernel kernel_;
  std::string skip_name_;
  at::Tensor skip_;  // D [C, H]
  nn::LinearSlot out_proj_;
};

class GatedLongConvMixer final : public nn::TokenMixer {
 public:
  explicit GatedLongConvMixer(const nn::MixerSpec& spec);
  std::string name() const override { return "gated_long_conv"; }
  at::Tensor forward(const at::Tensor& x, const nn::MixerContext& context) const override;
  bool causal() const override { return options_.impl != LongConvImpl::kLearnedMonarch; }
  bool has_decode_state() const override { return causal(); }
  std::unique_ptr<nn::MixerState> new_state(int64_t batch) const override;
  at::Tensor step(const at::Tensor& x, nn::MixerState& state, const nn::MixerContext& context) const override;
  std::vector<nn::LinearSlot*> slots() override { return {&q_proj_, &k_proj_, &v_proj_, &o_proj_}; }
  using TokenMixer::slots;
  nn::NamedTensors tensors() const override;
  std::vector<nn::ParamGroup> param_groups() const override;

 private:
  LongConvOptions options_;
  int64_t hidden_;
  nn::LinearSlot q_proj_, k_proj_, v_proj_, o_proj_;
  LongConvKernel shift_kernel_, kernel_;
  std::string shift_skip_name_, skip_name_;
  at::Tensor shift_skip_, skip_;  // D_shift [H], D [H]
};

// Registers "long_conv" and "gated_long_conv".
void register_long_conv(nn::MixerRegistry& registry);

}  // namespace lowrank::mix
