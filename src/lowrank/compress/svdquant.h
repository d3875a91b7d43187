// SVDQuant — Li et al., 2024, "SVDQuant: Absorbing Outliers by Low-Rank Components for 4-Bit
// Diffusion Models", arXiv:2411.05007 (§4, Method); calibration as in mit-han-lab/deepcompressor
// (calib/smooth.py, calib/config/smooth.py, calib/lowrank.py, nn/patch/lowrank.py,
// examples/diffusion/configs/svdquant/int4.yaml); tests/fixtures/svdquant/make_fixture.py
// transcribes that code in NumPy and its output is this file's test oracle.
//
// Notation (out x in weights, y = x Wᵀ, calibration inputs X [in, N], one token per column):
//   smoothing   λ_j = xspan_j^α / wspan_j^β,  xspan_j = max_t |X_jt|, wspan_j = max_i |W_ij|
//               (zeros set to 1; any NaN/Inf resets λ to all ones)
//   migration   X̂ = diag(λ)⁻¹ X,  Ŵ = W diag(λ),  so x Wᵀ = (x / λ) Ŵᵀ
//   decompose   Ŵ = L1 L2 + R,  L1 = U_r Σ_r [out, r],  L2 = V_rᵀ [r, in]  (truncated SVD of Ŵ)
//   quantise    R ≈ Q(R) (ops::quantize_groups: INT4, groups of 64 along in, fp16 scales)
//   effective   W_eff = (L1 L2 + Q(R)) diag(λ)⁻¹
// Grid (num_grids = n, deepcompressor's beta = -2 setting): (α, β) ∈ {(0, 0)} ∪ {(a, 0)} ∪
// {(a, 1 − a)}, a = 1/n, ..., (n−1)/n; each candidate gets the full low-rank + quantised residual
// (iteration 0 below) and is scored by the output error; the best is kept (the first on ties, so
// no smoothing wins when nothing helps).
// Alternating refit (deepcompressor LowRankBranch calibration, OutputsError objective, early stop):
//   k = 0:  L_0 = SVD_r(Ŵ),            R_0 = Q(Ŵ − L_0)
//   k ≥ 1:  L_k = SVD_r(Ŵ − Q(R_{k−1})), R_k = Q(Ŵ − L_k)
// keeping the best candidate and stopping at the first k that does not strictly improve it.
// Output error: E(W_eff) = ||(W − W_eff) X||_F² = tr(ΔW H ΔWᵀ), H = X Xᵀ, reported relative to
// tr(W H Wᵀ).
//
// Activations (act_bits = 4, the paper's W4A4): the residual branch reads Q(x̂), x̂ quantised
// per token in groups of group_size input channels (signed INT4, ops/w4a4_gemm.h), while the
// branch L1 L2 reads the unquantised x̂ (nunchaku's fused down projection takes x̂ before
// quantisation). The objective is then deepcompressor's OutputsError on calibration tokens X [N, in]:
//   E = Σ_t ||W x_t − (Q(R) Q(x̂_t) + L1 L2 x̂_t)||²,  x̂_t = x_t / λ,
// which the Gram cannot express, so the calibration tokens themselves are needed.
//
// Deviations:
//   - With act_bits = 16 (W4A16, the default) activations are not quantised and the output error is
//     exactly tr(ΔW H ΔWᵀ), computed from the Gram H instead of by running calibration batches
//     through the layer (deepcompressor's evaluation). With act_bits = 4 the error is computed on
//     the calibration tokens given (a subsample of the calibration set, compress/calibration.h).
//   - λ, L1 and L2 are rounded to float32 (the stored form) before the residual is formed and the
//     candidate is scored, so output_error is the error of exactly the returned tensors.
//   - max_iters counts refit iterations after iteration 0 (deepcompressor's num_iters = 100 counts
//     iteration 0 too), and a tie stops the refit and keeps the earlier candidate (deepcompressor
//     keeps the later one, in the grid too, and continues).
//   - A candidate whose residual would need a float16 scale above 65504 is skipped (the unsmoothed
//     one is always tried, and its quantisation errors out as usual).
//   - No GPTQ pass on R. Q/K/V (and gate/up) sharing is the caller's: compress/methods.cpp stacks
//     their rows into one W and slices L1 and R per slot.
//   - rank = 0 drops the branch: the grid-searched smoothing + quantised W only, a SmoothQuant-style
//     baseline for the paper's comparison with SmoothQuant (whose λ is the fixed α = 0.5), not
//     SVDQuant itself.
//   - The objective forms x̂ = x / λ; the layer forms x · (1/λ) (one multiply per input in the
//     fused kernel), which can differ in the last bit and, rarely, move a value across an INT4
//     rounding boundary.
// Cost: one exact float64 SVD of the out x in weight and one O(out · in²) error (act_bits 16) or
// O(N · out · in) error (act_bits 4) per grid candidate (1 + 2(grid − 1) of them) and per refit
// iteration.
#pragma once

#include <cstdint>

#include <ATen/ATen.h>

#include "lowrank/ops/group_quant.h"

namespace lowrank::compress {

struct SvdQuantOptions {
  int64_t rank = 32;        // r: rank of the 16-bit branch L1 L2 (0: smoothing only, no branch)
  int bits = 4;             // residual bits (4 or 8)
  int act_bits = 16;        // 16: activations unquantised (W4A16); 4: INT4 per token and group (W4A4)
  int64_t group_size = 64;  // residual quantisation group along the input features
  int grid = 20;            // smoothing grid points (num_grids); 1 means no smoothing search
  int max_iters = 100;      // alternating refit iterations (stops at the first that does not improve)
};

struct SvdQuantResult {
  at::Tensor smooth;             // λ [in] float32 (all ones when no smoothing helps)
  at::Tensor lora_up;            // L1 = U_r Σ_r [out, r] float32
  at::Tensor lora_down;          // L2 = V_rᵀ [r, in] float32
  ops::GroupQuantized residual;  // Q(Ŵ − L1 L2), Ŵ = W·diag(λ)
  double alpha = 0, beta = 0;    // chosen migration exponents
  double output_error = 0;       // E / ||W X||_F² (relative; via the Gram for act_bits 16)
  int iterations = 0;            // refit iterations kept (0: iteration 0, the plain SVD + RTN, was best)

  // W_eff = (L1 L2 + dequant(R)) · diag(λ)⁻¹ [out, in], computed in float64, cast to dtype (the
  // weight side only: with act_bits 4 the layer also rounds its inputs).
  at::Tensor effective_weight(at::ScalarType dtype = at::kFloat) const;
};

// The SVDQuant decomposition of W [out, in] (any real floating dtype) from the calibration Gram
// H = X Xᵀ [in, in] (float64 preferred; other floating dtypes are converted), x_absmax [in]
// (per-input-channel max |x| over the calibration tokens) and, for act_bits = 4, calibration tokens
// `inputs` [N, in] (any floating dtype; their absmax need not equal x_absmax, which may come from
// more tokens). The layer then computes y = (x / λ)(L1 L2)ᵀ + Q(x / λ) Q(R)ᵀ. Deterministic. Throws
// InvalidArgument (naming the value) for a rank outside [0, min(out, in)], shapes that do not
// match, in % group_size != 0, bits not in {4, 8}, act_bits not in {4, 16} (4 needs bits 4 and
// inputs), grid < 1, max_iters < 0, or non-finite inputs.
SvdQuantResult svdquant(const at::Tensor& W, const at::Tensor& H, const at::Tensor& x_absmax,
                        const SvdQuantOptions& options = {}, const at::Tensor& inputs = {});

// tr(ΔW H ΔWᵀ) / tr(W H Wᵀ), ΔW = W − W_eff, in float64: the relative output error of any
// effective weight on the calibration data with Gram H. 0 / 0 is 0 and x / 0 (x > 0) is +inf.
// Throws InvalidArgument on shape mismatches.
double relative_output_error(const at::Tensor& W, const at::Tensor& W_eff, const at::Tensor& H);

}  // namespace lowrank::compress
