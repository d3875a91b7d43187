// S4D, the diagonal structured state space layer (Gu, Gupta, Goel and Ré, 2022, "On the
// Parameterization and Initialization of Diagonal State Space Models", arXiv:2206.11893).
// Per channel h (H = hidden channels, each its own single-input single-output SSM with N = d_state
// states, kept as N/2 complex modes and their conjugates):
//   x'(t) = A x(t) + B u(t),  y(t) = C x(t),   A = diag(−exp(log_A_real) + i·A_imag),  B = 1
// discretised with step Δ = exp(log_dt) (ZOH, Eq. 4; or bilinear, option disc):
//   ZOH       Ā = exp(ΔA),                        B̄ = (exp(ΔA) − 1)/A · B
//   bilinear  Ā = (1 + ΔA/2)/(1 − ΔA/2),          B̄ = Δ/(1 − ΔA/2) · B
// and computed either as a convolution with the kernel (Eq. 5, a Vandermonde product; ops/vandermonde.h)
//   K[l] = 2 · Re Σ_n C_n B̄_n Ā_n^l,   y = K ∗ u + D ⊙ u    (FFT, ops/long_fft_conv.h)
// or as the recurrence (step()): h_t = Ā h_{t−1} + B̄ u_t, y_t = 2 · Re(C · h_t) + D u_t; the state is
// H × N/2 complex numbers per row, whatever the length.
// The block around it is the reference S4D layer's: y → GELU → output_linear (H → 2H, bias) → GLU.
// Bidirectional (option, classifiers only): a second C gives a backward kernel k₁ and
//   y_t = Σ_{s≤t} k₀[t−s] u_s + Σ_{s>t} k₁[s−t−1] u_s
// (the reference's pad(k₀, (0, L)) + pad(flip(k₁), (L, 0)) circular convolution of length 2L).
// Initialisations of A (dplr.py): S4D-Lin  A_n = −½ + iπn;  S4D-Inv  A_n = −½ + i(N/π)(N/(2n+1) − 1);
// S4D-Real  A_n = −(n + 1);  n = 0 … N/2 − 1. Δ ~ log-uniform[dt_min, dt_max] per channel; C ~ CN(0, 1)
// (real and imaginary parts N(0, ½), torch.randn of a cfloat); D ~ N(0, 1).
// The SSM parameters log_dt, log_A_real and A_imag train with their own learning rate (ssm_lr) and
// no weight decay (param_groups), as the reference's `register(name, tensor, lr)`.
//
// Authors' code: state-spaces/s4 — models/s4/s4d.py (S4DKernel, S4D: the minimal layer this follows:
// parameter names, log_dt, C, D, GELU, Conv1d(H, 2H, 1) + GLU), src/models/sequence/kernels/ssm.py
// (SSMKernelDiag: disc 'zoh' | 'bilinear', the step() recurrence), dplr.py (the inits),
// src/models/sequence/kernels/fftconv.py (bidirectional kernels), src/models/functional/vandermonde.py.
// Deviations: no dropout (the mixers of this engine are deterministic); B is the constant 1 folded into
// C, as in s4d.py (SSMKernelDiag's trainable B is not kept); padding positions (MixerContext::valid
// false) enter the convolution as zeros and leave the decode state untouched.
// Bad input: an odd d_state (conjugate symmetry needs pairs) and bidirectional in a causal language
// model are refused at construction, naming the option.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <string>
#include <utility>
#include <vector>

#include <ATen/ATen.h>

#include "lowrank/nn/linear_slot.h"
#include "lowrank/nn/token_mixer.h"

namespace lowrank::mix {

enum class S4DInit { kLin, kInv, kReal };
enum class SsmDiscretization { kZoh, kBilinear };

// The options S4D and S4 share.
struct SsmOptions {
  int64_t d_state = 64;  // N: N/2 complex modes per channel
  double dt_min = 0.001, dt_max = 0.1;
  bool bidirectional = false;
  double ssm_lr = 0.001;  // lr of the SSM parameters (weight decay 0)
};

// The layer S4D and S4 share: u → K ∗ u + D ⊙ u → GELU → output_linear (H → 2H) → GLU, with the
// kernel K from the subclass. Tensors D [H] and slot output_linear [2H, H] (bias) are its own.
class SsmConvLayer : public nn::TokenMixer {
 public:
  // x [B, T, hidden]; reads context.valid and context.routing.
  at::Tensor forward(const at::Tensor& x, const nn::MixerContext& context) const final;
  bool causal() const final { return !common_.bidirectional; }
  bool has_decode_state() const final { return causal(); }
  std::vector<nn::LinearSlot*> slots() final { return {&output_linear_}; }
  using TokenMixer::slots;
  // The convolution kernel's first L taps: [1, H, L] (causal) or [2, H, L] (forward, backward), float32
  // or float64 (half-precision parameters are computed in float32).
  virtual at::Tensor kernel(int64_t L) const = 0;

 protected:
  SsmConvLayer(const nn::MixerSpec& spec, const SsmOptions& common);
  // spec.tensor(prefix.leaf) initialised to `value` (float64).
  at::Tensor make_tensor(const nn::MixerSpec& spec, const std::string& leaf, const at::Tensor& value) const;
  // Throws Unsupported when bidirectional (no decode state).
  void check_decodes() const;
  // Throws unless x is [batch, 1, hidden] and the mixer decodes.
  void check_step(const at::Tensor& x, int64_t batch) const;
  // The tail after the SSM: y [B, T, H] (the SSM's output) and u [B, T, H] (its input).
  at::Tensor output(const at::Tensor& y, const at::Tensor& u, const nn::AdapterRouting* routing) const;
  std::vector<nn::ParamGroup> ssm_groups(std::initializer_list<const char*> leaves) const;

  SsmOptions common_;
  std::string prefix_;
  int64_t hidden_ = 0;
  at::Tensor D_;
  nn::LinearSlot output_linear_;
};

struct S4DOptions {
  SsmOptions common;
  S4DInit init = S4DInit::kLin;
  SsmDiscretization disc = SsmDiscretization::kZoh;
};

class S4D final : public SsmConvLayer {
 public:
  explicit S4D(const nn::MixerSpec& spec);

  std::string name() const override { return "s4d"; }
  std::unique_ptr<nn::MixerState> new_state(int64_t batch) const override;
  at::Tensor step(const at::Tensor& x, nn::MixerState& state, const nn::MixerContext& context) const override;
  nn::NamedTensors tensors() const override;
  std::vector<nn::ParamGroup> param_groups() const override;

  const S4DOptions& options() const { return options_; }
  at::Tensor kernel(int64_t L) const override;
  // Ā, B̄ of the discretisation, [H, N/2] complex each.
  std::pair<at::Tensor, at::Tensor> discretized() const;

 private:
  S4D(const nn::MixerSpec& spec, const S4DOptions& options);

  S4DOptions options_;
  at::Tensor log_dt_, log_A_real_, A_imag_, C_;  // [H], [H, N/2] × 2, [c, H, N/2, 2]
};

S4DOptions s4d_options(const nn::MixerSpec& spec);

void register_s4d(nn::MixerRegistry& registry);

// Shared by the S4 family (s4.h).
// The shared options of mixer `mixer` (d_state, dt_min, dt_max, bidirectional, ssm_lr); InvalidArgument
// naming the option for a bad one, and for bidirectional in a causal language model.
SsmOptions ssm_options(const nn::MixerSpec& spec, const std::string& mixer);
// Their help lines, in the order `lowrank methods` lists them.
std::vector<std::pair<std::string, std::string>> ssm_option_help(const std::string& lr_tensors);
// A CPU generator seeded by a hash of `name`: a fresh tensor's value depends only on its file name.
at::Generator ssm_generator(const std::string& name);
// Δ ~ log-uniform[dt_min, dt_max]: log Δ, [H] float64.
at::Tensor ssm_log_dt(const std::string& name, int64_t H, double dt_min, double dt_max);
// C ~ CN(0, 1) as a real view [shape..., 2], float64.
at::Tensor ssm_complex_normal(const std::string& name, std::vector<int64_t> shape);
// The float type SSM arithmetic runs in for parameters of `dtype` (float32 for half precision).
at::ScalarType ssm_real_type(at::ScalarType dtype);
// SSM convolution of u [B, H, L] with kernels k [c, H, ≥ L]: causal for c = 1, two-sided for c = 2.
// By FFT (ops/long_fft_conv.h) beyond 64 positions, directly up to there (exactly causal).
at::Tensor ssm_convolve(const at::Tensor& u, const at::Tensor& k);

}  // namespace lowrank::mix
