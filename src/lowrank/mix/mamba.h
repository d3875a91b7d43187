// Mamba's selective-SSM block as a token mixer (Gu & Dao, 2023, "Mamba: Linear-Time Sequence
// Modeling with Selective State Spaces", arXiv:2312.00752, §3.4 and Fig. 3; Algorithm 2):
//   [x; z] = W_in u                                    x, z ∈ ℝ^{E·H}  (in_proj, expand E)
//   x      = SiLU(CausalDWConv_K(x))                   (conv1d, width K = conv_kernel)
//   [δ; B; C] = W_x x                                  δ ∈ ℝ^R, B, C ∈ ℝ^N  (x_proj, R = time_step_rank)
//   Δ      = softplus(W_Δ δ + b_Δ)                     (dt_proj)
//   A      = −exp(A_log)                               A ∈ ℝ^{E·H × N}
//   h_t    = exp(Δ_t A) ⊙ h_{t−1} + Δ_t B_t x_t,  y_t = C_t · h_t + D ⊙ x_t   (ops/selective_scan.h)
//   out    = W_out (y ⊙ SiLU(z))                       (out_proj)
// Initialisation (the authors' and transformers'): A_log[d, n] = log(n + 1) (S4D-Real), D = 1,
// dt_proj's weight U(±R^{−1/2}·time_step_scale) ("random") or that constant ("constant"), and its
// bias the inverse softplus of Δ₀ = exp(U(log Δ_min, log Δ_max)) clamped to ≥ Δ_floor, so that Δ
// starts log-uniform in [time_step_min, time_step_max]; conv1d's weight U(±1/√K) (PyTorch's Conv1d
// default), its bias 0; A_log and D take no weight decay (param_groups(), the authors'
// `_no_weight_decay`). In a bfloat16 or float16 model A_log, D and dt_proj's bias stay float32 (their
// stored or initial float32 values), as mamba_ssm keeps them, and the bias is added to W_Δ δ in
// float32 (its delta_bias); dt_proj's slot therefore has no bias of its own, and the bias is one of
// the mixer's tensors, under the same file name `dt_proj.bias`. save() in a half dtype writes them
// in that dtype, as transformers' save_pretrained of a half-precision model; training checkpoints
// keep them float32.
// Decoding: the state is the last K − 1 inputs of the convolution and h [B, E·H, N]; step() is one
// position of both (raw loops for one float32 sequence, raw_step), prefill() runs the parallel
// path from the state and keeps the last ones.
// scan_inputs() exposes what the block feeds the scan (mamba_lyapunov.h reads Δ and A from it).
// Padding (MixerContext::valid): as transformers, the block's input and the convolution's output
// are zeroed at padding positions; left padding therefore leaves h at zero.
// Code followed: state-spaces/mamba, mamba_ssm/modules/mamba_simple.py (Mamba.__init__ / forward /
// step) and mamba_ssm/ops/selective_scan_interface.py (selective_scan_ref); transformers,
// models/mamba/modeling_mamba.py (MambaMixer slow path, init_mamba_weights) and
// configuration_mamba.py (the option names and defaults below are MambaConfig's).
// Deviations: in_proj, x_proj and out_proj start N(0, initializer_range) like every projection of a
// fresh lowrank model (transformers re-draws out_proj Kaiming-uniform); the residual stream stays in
// the model's dtype (MambaConfig.residual_in_fp32 only matters below float32); hidden_act must be
// silu.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include <ATen/ATen.h>

#include "lowrank/nn/linear_slot.h"
#include "lowrank/nn/token_mixer.h"

namespace lowrank::mix {

struct MambaOptions {
  int64_t state_size = 16;     // N (d_state)
  int64_t expand = 2;          // E: inner width E·hidden
  int64_t conv_kernel = 4;     // K (d_conv)
  int64_t time_step_rank = 0;  // R; 0 = "auto": ⌈hidden / 16⌉
  bool use_bias = false;       // in_proj and out_proj biases
  bool use_conv_bias = true;
  double time_step_min = 1e-3, time_step_max = 0.1, time_step_floor = 1e-4, time_step_scale = 1.0;
  std::string time_step_init_scheme = "random";  // random | constant
  int64_t scan_chunk = 64;  // positions between the scan's saved states in training (selective_scan.h)
};

// What the block feeds the selective scan for an input [B, T, hidden] (mamba.h's equations).
struct MambaScanInputs {
  at::Tensor u;           // [B, T, inner] SiLU(conv(x)), zero at padding positions
  at::Tensor z;           // [B, T, inner] the gate's input
  at::Tensor dt;          // [B, T, inner] W_Δ δ + b_Δ in the scan's precision: Δ before the softplus
  at::Tensor B, C;        // [B, T, N]
  at::Tensor A;           // [inner, N] −exp(A_log), float32 (float64 for a float64 model)
  at::Tensor conv_state;  // [B, inner, K − 1] the convolution's state after the last position
};

// The options of `spec` (mixer_config.mamba), checked; R resolved against the hidden size.
MambaOptions mamba_options(const nn::MixerSpec& spec);

class Mamba final : public nn::TokenMixer {
 public:
  explicit Mamba(const nn::MixerSpec& spec);

  std::string name() const override { return "mamba"; }
  // x [B, T, hidden]; reads context.valid and context.routing.
  at::Tensor forward(const at::Tensor& x, const nn::MixerContext& context) const override;
  bool causal() const override { return true; }
  bool has_decode_state() const override { return true; }
  std::unique_ptr<nn::MixerState> new_state(int64_t batch) const override;
  at::Tensor step(const at::Tensor& x, nn::MixerState& state, const nn::MixerContext& context) const override;
  at::Tensor prefill(const at::Tensor& x, nn::MixerState& state,
                     const nn::MixerContext& context) const override;
  std::vector<nn::LinearSlot*> slots() override { return {&in_proj_, &x_proj_, &dt_proj_, &out_proj_}; }
  using TokenMixer::slots;
  nn::NamedTensors tensors() const override;
  std::vector<nn::ParamGroup> param_groups() const override;

  // The scan's inputs for x [B, T, hidden] from the convolution state `conv_state` (undefined:
  // zeros); forward() is out_proj(selective_scan(these) ⊙ SiLU(z)).
  MambaScanInputs scan_inputs(const at::Tensor& x, const nn::MixerContext& context,
                              const at::Tensor& conv_state = {}) const;

  const MambaOptions& options() const { return options_; }
  const nn::LinearSlot& in_proj() const { return in_proj_; }
  int64_t inner_size() const { return inner_; }

 private:
  struct Scanned;
  // The block from in_proj to out_proj for T positions, starting from the given conv and SSM
  // states (undefined: zeros); returns the output and the states after the last position.
  Scanned run(const at::Tensor& x, const nn::MixerContext& context, const at::Tensor& conv_state,
              const at::Tensor& ssm_state) const;

  // The decode step of one float32 sequence on the CPU without gradients, adapters or padding, as
  // raw loops (the slots' row products, the convolution window, the scan step of
  // ops/selective_scan_kernels.h) instead of ~20 small ATen operations; the states are updated in
  // place. Equal to run() up to summation order (tests: step against forward, the fixtures'
  // cached decoding).
  bool raw_step_applies(const at::Tensor& x, const nn::MixerContext& context) const;
  at::Tensor raw_step(const at::Tensor& x, at::Tensor& conv_state, at::Tensor& ssm_state,
                      const at::Tensor& A) const;

  MambaOptions options_;
  std::string prefix_;
  int64_t inner_ = 0;
  nn::LinearSlot in_proj_, x_proj_, dt_proj_, out_proj_;
  at::Tensor conv_weight_;  // [inner, 1, K]
  at::Tensor conv_bias_;    // [inner] or undefined
  at::Tensor A_log_;        // [inner, N]
  at::Tensor D_;            // [inner]
  at::Tensor dt_bias_;      // [inner] dt_proj's bias
};

// Registers "mamba".
void register_mamba(nn::MixerRegistry& registry);

}  // namespace lowrank::mix
