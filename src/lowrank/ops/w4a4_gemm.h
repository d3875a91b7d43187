// W4A4: 4-bit weights times 4-bit activations with integer dot products — the product of
// SVDQuant's residual branch (Li et al., 2024, arXiv:2411.05007, §4 and §5 "Kernel fusion"; the
// INT4 format of mit-han-lab/deepcompressor examples/diffusion/configs/svdquant/int4.yaml and the
// nunchaku engine's quantize_w4a4_act_fuse_lora + gemm_w4a4, src/kernels/zgemm/).
//
// Activations are quantised dynamically, per token (input row) and per group of g = 64 input
// channels, signed INT4 with a float32 scale (w4a4_kernels.h has the exact rounding):
//   s = max_group |x̂| / 7,   a = clamp(round(x̂ / s), −8, 7),   x̂ = x / λ (λ: SVDQuant's smoothing)
// and the weights are ops::GroupQuantized INT4 with the same group size, so each group's partial
// sum is one exact int32 dot product scaled by s_act · s_weight:
//   y = Σ_k s_mk w_ok Σ_{i in k} a_mi q_oi + b.
// The fused quantiser also computes the low-rank branch's down projection x̂ L2ᵀ in the same pass
// over x (nunchaku's "Down Projection and Quantize share an input"), so the 16-bit branch adds no
// second read of the activations.
//
// Deviations and choices:
//   - Activation scales stay float32 (deepcompressor's int4.yaml keeps them in the model dtype,
//     fp16/bf16); activations are signed INT4 always (its allow_unsigned / shift_activations option
//     for non-negative inputs is not implemented).
//   - CPU only for the integer path (x86: AVX-VNNI, else AVX2 vpmaddubsw, else portable loops).
//     On another device w4a4_linear quantises the same way with ATen operations and multiplies the
//     dequantised values (a simulation with the same numbers, not an integer kernel).
#pragma once

#include <cstdint>

#include <ATen/ATen.h>

#include "lowrank/ops/group_quant.h"
#include "lowrank/ops/w4a4_kernels.h"

namespace lowrank::ops {

// Activations quantised to INT4 per row and group, with the fused down projection.
struct Int4Activations {
  int64_t group_size = 64;
  at::Tensor values;      // int8 [rows, in], each in [−8, 7]
  at::Tensor scales;      // float32 [rows, in / group_size]
  at::Tensor group_sums;  // int32 [rows, in / group_size]: Σ of each group's values
  at::Tensor lora_act;    // float32 [rows, rank] = x̂ L2ᵀ, or undefined without a branch

  // a · s as float32 [rows, in]: the activations the product computes with.
  at::Tensor dequantize() const;
};

// Quantises x [rows, in] (float32, CPU, contiguous) after scaling by inv_smooth [in] (1/λ; undefined:
// none), and with lora_down [rank, in] (float32; undefined: none) computes x̂ L2ᵀ in the same pass.
// Throws InvalidArgument naming the value for a wrong shape, dtype or device, or a group_size that
// is not positive or does not divide in.
Int4Activations quantize_activations_int4(const at::Tensor& x, int64_t group_size,
                                          const at::Tensor& inv_smooth = {}, const at::Tensor& lora_down = {},
                                          detail::W4A4Kernel kernel = detail::W4A4Kernel::kAuto);

// y = a ⊛ w + bias [rows, out] float32 with integer dot products, in parallel over output features.
// w: 4-bit, CPU, same group size as a. Throws InvalidArgument on a mismatch, Unsupported when a
// forced kernel is not usable.
at::Tensor w4a4_gemm(const Int4Activations& a, const GroupQuantized& w, const at::Tensor& bias = {},
                     detail::W4A4Kernel kernel = detail::W4A4Kernel::kAuto);

// y = Q(x / λ) Q(W)ᵀ + b for x [..., in] of any floating dtype (computed in float32 and cast back):
// the W4A4 layer. inv_smooth as above. On a non-CPU device: the ATen simulation.
at::Tensor w4a4_linear(const at::Tensor& x, const GroupQuantized& w, const at::Tensor& bias = {},
                       const at::Tensor& inv_smooth = {});

// The same activation quantisation in ATen operations on any device and floating dtype (computed in
// float32): Q(x) dequantised, [..., in]. The simulation path and the calibration objective use it.
at::Tensor fake_quantize_activations_int4(const at::Tensor& x, int64_t group_size);

}  // namespace lowrank::ops
