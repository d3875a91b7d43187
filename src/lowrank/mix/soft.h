// SOFT: Lu, Yao, Zhang, Zhu, Xu, Gao, Xiang, Xiang and Zhang, 2021, "SOFT: Softmax-free Transformer
// with Linear Complexity", NeurIPS (arXiv:2110.11945). Softmax is replaced by a Gaussian kernel
// between tied queries and keys, approximated by Nyström through m = n/s² landmarks (§3):
//   Q = K = x W_q (+b) / d^{1/4},  V = x W_v (+b)                 (per head, d = head_dim)
//   S_ij = exp(−½ ‖q_i − k_j‖²)                                   (= exp(−‖·‖²/(2√d)) before scaling)
//   Q̃ = GELU(LayerNorm(Conv_{s×s, stride s}(Q on the H×W grid)))  (landmarks, m×d; K̃ = Q̃)
//   A = exp(−½ ‖Q − K̃‖²) (n×m),  Bm = exp(−½ ‖Q̃ − K̃‖²) (m×m)
//   Ŝ = A · Bm⁺ · Aᵀ,   out = (A · NR(Bm)) · (Aᵀ V) + DWConv3×3(V),   y = out W_o (+b)
// Bm⁺ by Newton–Raphson (Eq. 11): P = Bm + 0.01·I, α = 0.9·2/(max_i Σ_j Bm_ij)², V₀ = α·P,
// V_{k+1} = 2V_k − V_k P V_k for 20 iterations, without autograd; the backward is the inverse's
// analytic gradient taken once at the result, dBm = −Vᵀ · dV · Vᵀ (newton_inverse below).
// Symmetric normalisation (option `normalize`, the authors' "norm" configs): D = diag(Bm·1)^{-½}
// and the inverse becomes D · NR(Bm) · D; its Newton start is α = 2/(max Σ_j Bm_ij)², halved
// (at most 10 times) until ‖I − P V₀‖₁ ≤ 1.01, without the 0.01 ridge.
// The DWConv (option `use_conv`) is depthwise over heads: one 3×3 kernel per head, shared by the
// head's d channels, zero-padded (the authors' nn.Conv2d(num_heads, num_heads, 3, groups=heads)).
// Non-causal; the positions must form the 2-D grid of MixerContext::grid.
//
// Authors' code: fudan-zvg/SOFT, `models/softmax_free_transformer.py` (SoftmaxFreeAttentionKernel,
// SoftmaxFreeNormAttentionKernel, the "torch" kernel path ‖a‖² + ‖b‖² − 2a·b) and
// `SOFT/kernel/inverse.py` (newton_inv, _NewtonInverseKernel). Followed from it: one landmark conv
// (d→d, no bias) shared by all heads, LayerNorm(d) and exact GELU; biases on W_q, W_v and W_o.
// Deviations: (1) sr_ratio 1 keeps the same path (a 1×1 conv, m = n landmarks, Nyström); the
// authors' code switches to a Linear + full kernel attention over a class token there.
// (2) The normalised variant backpropagates through the same one-step analytic gradient; the
// authors' norm class lets autograd run through its 20 iterations (equal at convergence).
// (3) Tensors start as the model's other weights, N(0, initializer_range), the LayerNorm at (1, 0);
// the authors keep PyTorch's module defaults.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include <ATen/ATen.h>

#include "lowrank/nn/linear_slot.h"
#include "lowrank/nn/token_mixer.h"

namespace lowrank::mix {

struct SoftOptions {
  int64_t sr_ratio = 2;       // s: landmark conv kernel and stride; m = n / s²
  bool use_conv = true;       // add the depthwise 3×3 conv of V
  bool normalize = false;     // symmetric normalisation D · NR(Bm) · D
  int64_t newton_iters = 20;  // Newton–Raphson iterations
};

// The Newton–Raphson inverse of the square matrices `mat` [..., m, m] (file comment): the forward
// runs without autograd; the gradient is −Vᵀ · dV · Vᵀ with V the result. `ridge` is added to the
// diagonal (0.01 in SOFT); `backoff` selects the normalised variant's start (α halved until
// ‖I − P V₀‖₁ ≤ 1.01) instead of α = 0.9·2/(max row sum)².
at::Tensor newton_inverse(const at::Tensor& mat, int64_t iters, double ridge = 0.01, bool backoff = false);

// The Nyström core for queries `q` [..., n, d] (already scaled by d^{-1/4}), landmarks [..., m, d]
// and values [..., n, dv]: (A · NR(Bm)) · (Aᵀ v) with A, Bm the Gaussian kernels of the file
// comment; with `normalize`, NR(Bm) becomes D · NR(Bm) · D.
at::Tensor soft_nystrom(const at::Tensor& q, const at::Tensor& landmarks, const at::Tensor& v, int64_t iters,
                        bool normalize, double ridge = 0.01);

class Soft final : public nn::TokenMixer {
 public:
  explicit Soft(const nn::MixerSpec& spec);

  std::string name() const override { return "soft"; }
  // x [B, T, hidden] with T = grid height · width (context.grid required, each side divisible by
  // sr_ratio); reads context.routing.
  at::Tensor forward(const at::Tensor& x, const nn::MixerContext& context) const override;
  bool causal() const override { return false; }
  std::vector<nn::LinearSlot*> slots() override { return {&q_proj_, &v_proj_, &o_proj_}; }
  using TokenMixer::slots;
  nn::NamedTensors tensors() const override;

  const SoftOptions& options() const { return options_; }

 private:
  SoftOptions options_;
  std::string prefix_;
  int64_t num_heads_, head_dim_;
  nn::LinearSlot q_proj_, v_proj_, o_proj_;
  at::Tensor landmark_conv_;                      // [d, d, s, s]
  at::Tensor landmark_norm_w_, landmark_norm_b_;  // [d]
  at::Tensor v_conv_;                             // [heads, 1, 3, 3], undefined without use_conv
};

// The options of `spec` (InvalidArgument naming the option for a bad one).
SoftOptions soft_options(const nn::MixerSpec& spec);

void register_soft(nn::MixerRegistry& registry);

}  // namespace lowrank::mix
