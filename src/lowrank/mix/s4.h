// S4, the structured state space layer with a diagonal plus low-rank (DPLR) state matrix (Gu, Goel
// and Ré, 2022, "Efficiently Modeling Long Sequences with Structured State Spaces", arXiv:2111.00396).
// Per channel (H of them), N = d_state states kept as N/2 complex modes and their conjugates:
//   x'(t) = A x(t) + B u(t),  y(t) = C x(t) + D u(t),   A = Λ − P P*
// with (Λ, P, B) the normal-plus-low-rank form of HiPPO-LegS (§3.1, Theorem 1): the LegS matrix
//   A_nk = −√((2n+1)(2k+1)) (n > k),  −(n+1) (n = k),  0 (n < k),   B_n = √(2n+1)
// plus P Pᵀ, P_n = √(n + ½), is −½ I + a skew-symmetric S; Λ = −½ + i·eig(−iS) (the N/2 with negative
// imaginary part), V its eigenvectors, and P ← V* P, B ← V* B (Im B clipped to [−2, 2]).
// Discretisation: bilinear (Eq. 3), Ā = (I − Δ/2·A)⁻¹(I + Δ/2·A), B̄ = (I − Δ/2·A)⁻¹ Δ B, Δ =
// softplus(inv_dt). Kernel (Algorithm 1): the truncated generating function of K_l = C̃ Ā^l B̄ (l < L), with C̃
// = C (I − Ā^L) the trained C (it absorbs the truncation), evaluated at the L-th roots of unity ω_k:
//   z_k = 2(1 − ω_k)/(1 + ω_k)                               (bilinear change of variable)
//   r_ab(ω) = Δ · Σ_n a_n b_n / (z − ΔΛ_n)  (+ the conjugate modes)  the Cauchy kernel, ops/cauchy.h
//   K̂(ω) = 2/(1 + ω) · [ r_{C̃B} − r_{C̃P} r_{Q B} / (1 + r_{Q P}) ],  Q = P̄   (Woodbury, rank 1)
//   K = irfft(K̂, L)
// then y = K ∗ u + D ⊙ u by FFT (ops/long_fft_conv.h), GELU, output_linear (H → 2H) and GLU, the S4 block's
// final_act 'glu'. Bidirectional (option, classifiers only): a second C̃ gives the backward kernel,
// as in s4d.h.
// The decode step (step()) runs the dense bilinear recurrence h_t = Ā h_{t−1} + B̄ u_t, y = Re(C h_t),
// with Ā the full 2·(N/2) × 2·(N/2) complex matrix of the conjugate-extended basis and C recovered from
// C̃ as C = C̃ (I − Ā^L)⁻¹ (ssm.py's `_setup_step(mode='dense')`): O(N²) per channel and token, constant
// in the length; Ā, B̄, C are computed at the first step of a state and kept in it (the tensors do
// not change during a decode).
// Initialisation: Λ, P, B of LegS for every channel; Δ ~ log-uniform[dt_min, dt_max]; C ~ CN(0, 1),
// stored as C̃ = C(I − Ā^L) at L = l_max (the reference's `_setup_C` at the first forward); D ~ N(0, 1).
// inv_dt, A_real, A_imag, P (the reference's 'dt' and 'A' groups) and B ('B') train with ssm_lr and no
// weight decay (param_groups); C and D with the run's settings.
//
// Authors' code: state-spaces/s4 — src/models/sequence/kernels/ssm.py (SSMKernelDPLR: forward,
// _omega, _setup_C, _setup_state, _setup_step), src/models/hippo/hippo.py (transition 'legs',
// rank_correction, nplr), src/models/sequence/kernels/dplr.py, src/models/functional/cauchy.py
// (cauchy_naive), src/models/functional/krylov.py, src/models/sequence/kernels/fftconv.py,
// configs/model/layer/s4.yaml (dt_transform softplus, lr 0.001 for dt, A, B; rank 1).
// Deviations: the kernel length is fixed at l_max (default max_position_embeddings): a shorter
// sequence takes the first T taps, a longer one is refused naming l_max (the reference doubles its
// internal length and rewrites C̃ in place, which a const forward cannot); one (Λ, P, B, Δ) per channel
// (the reference's n_ssm = H; its LRA configs tie them with n_ssm = 1); no dropout; padding positions
// enter the convolution as zeros and leave the decode state untouched.
#pragma once

#include <cstdint>
#include <string>

#include <ATen/ATen.h>

#include "lowrank/mix/s4d.h"
#include "lowrank/nn/token_mixer.h"

namespace lowrank::mix {

struct S4Options {
  SsmOptions common;
  int64_t l_max = 0;  // kernel length C̃ is set for (0: max_position_embeddings)
};

// HiPPO-LegS in normal-plus-low-rank form for state size N (even): Λ, P, B, [N/2] complex double each.
struct LegsNplr {
  at::Tensor Lambda, P, B;
};
LegsNplr legs_nplr(int64_t N);

// The dense bilinear discretisation in the conjugate-extended basis (2M = N states):
// dA [H, 2M, 2M], dB [H, 2M], from Δ [H], Λ, P, B [H, M] complex.
struct S4Dense {
  at::Tensor dA, dB;
};
S4Dense s4_dense(const at::Tensor& dt, const at::Tensor& Lambda, const at::Tensor& P, const at::Tensor& B);

class S4 final : public SsmConvLayer {
 public:
  explicit S4(const nn::MixerSpec& spec);

  std::string name() const override { return "s4"; }
  std::unique_ptr<nn::MixerState> new_state(int64_t batch) const override;
  at::Tensor step(const at::Tensor& x, nn::MixerState& state, const nn::MixerContext& context) const override;
  nn::NamedTensors tensors() const override;
  std::vector<nn::ParamGroup> param_groups() const override;

  const S4Options& options() const { return options_; }
  // The kernel's first L taps (L ≤ l_max), by Cauchy + Woodbury + iFFT: [c, H, L] real.
  at::Tensor kernel(int64_t L) const override;
  // Δ [H] real, Λ, P, B [H, M] complex and C̃ [c, H, M] complex, in the compute type.
  struct Params {
    at::Tensor dt, Lambda, P, B, C;
  };
  Params params() const;

 private:
  S4(const nn::MixerSpec& spec, const S4Options& options);

  S4Options options_;
  at::Tensor inv_dt_, A_real_, A_imag_, P_, B_, C_;
};

S4Options s4_options(const nn::MixerSpec& spec);

void register_s4(nn::MixerRegistry& registry);

}  // namespace lowrank::mix
