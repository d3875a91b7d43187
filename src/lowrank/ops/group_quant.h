// Packed group-wise weight quantisation (INT4 / INT8) and its matrix-vector kernel.
//
// The weight format of SVDQuant's INT4 residual (Li et al., 2024, arXiv:2411.05007; deepcompressor
// configs int4.yaml): signed integers in groups of g = 64 consecutive input
// channels (along K), one 16-bit scale per group. Round-to-nearest (RTN), symmetric:
//   s_{o,k} = fp16(absmax_{i in group k} |W_{o,i}| / qmax),   qmax = 2^(bits-1) - 1 (7 or 127)
//   q_{o,i} = clamp(round(W_{o,i} / s_{o,k}), -qmax - 1, qmax)       Ŵ_{o,i} = s_{o,k} q_{o,i}
// and the layer computes y = x Ŵᵀ + b.
//
// Deviations and choices:
//   - Weight-only (W4A16-style): activations stay float32; nunchaku's W4A4 GEMM also quantises the
//     activations per token, which needs 4-bit tensor cores this CPU kernel does not have.
//   - round() is round-half-to-even (torch.round); an all-zero group gets s = 0 and q = 0, and so
//     does a group whose absmax / qmax underflows float16 to 0 (it dequantises to zeros).
//   - Scales are rounded to float16 (the on-disk type) but held as float32 in memory, so that the
//     kernels multiply in float32 without conversions.
//   - The 4-bit packing is chosen for SIMD unpacking, not nunchaku's MMA-tiled layout: within each
//     group of g inputs of a row, byte i (i < g/2) holds q_i + 8 in its low nibble and
//     q_{i + g/2} + 8 in its high nibble. So one AND and one shift give two runs of g/2
//     consecutive weights.
//   - group_quant_linear uses the packed kernel (unpacking on the fly, parallel over output
//     features) for few input rows, where the product is memory-bound and reading 4.5 instead of
//     32 bits per weight is the win; for many rows it dequantises once and calls at::linear.
#pragma once

#include <cstdint>

#include <ATen/ATen.h>

namespace lowrank::ops {

// Weights quantised symmetrically per group of `group_size` consecutive input channels.
struct GroupQuantized {
  int bits = 4;             // 4 or 8
  int64_t group_size = 64;  // even, divides in_features
  int64_t out_features = 0, in_features = 0;
  at::Tensor packed;  // bits 4: uint8 [out, in/2]; bits 8: int8 [out, in]
  at::Tensor scales;  // float32 [out, in/group_size]; every value exactly representable in float16

  // Ŵ = s q as [out, in] (computed in float32, then cast to `dtype`).
  at::Tensor dequantize(at::ScalarType dtype = at::kFloat) const;
  // The same weights with both tensors on `device` (CPU or CUDA).
  GroupQuantized to(at::Device device) const;
  // Packed bytes + 2 bytes per scale: the size on disk (scales stored as F16).
  int64_t storage_bytes() const;
};

// RTN quantisation of W [out, in] (any real floating dtype, quantised from its float32 values).
// Throws InvalidArgument (naming the value) for bits not in {4, 8}, a group_size that is not
// even and positive, in % group_size != 0, a W that is not 2-D or has non-finite entries, or a
// group whose scale overflows float16 (absmax / qmax > 65504).
GroupQuantized quantize_groups(const at::Tensor& W, int bits, int64_t group_size = 64);

// quantize_groups then dequantize: float32 [out, in], the weight the quantised layer computes with.
at::Tensor fake_quantize_groups(const at::Tensor& W, int bits, int64_t group_size = 64);

// Rebuilds a GroupQuantized from stored tensors (as read from a file): packed must be uint8
// [out, in/2] (bits 4) or int8 [out, in] (bits 8); scales F16 or F32 [out, in/group_size], finite,
// non-negative and exactly representable in float16. Throws InvalidArgument for bad bits,
// group_size or features, Corruption naming the tensor for a wrong dtype, shape or value.
GroupQuantized group_quantized_from_tensors(at::Tensor packed, at::Tensor scales, int bits,
                                            int64_t group_size, int64_t out_features, int64_t in_features);

// y = x Ŵᵀ + b for x [..., in] on the weights' device; b is [out] or undefined. On the CPU,
// float32 is computed directly, other floating dtypes are converted to float32 and the result is
// cast back. Rows of x up to a small threshold (decode) take the packed kernel (AVX2 + FMA when the
// CPU has them, else the portable one), parallel over output features on libtorch's threads; more
// rows (prefill) dequantise into float32 once and call at::linear. On CUDA (a CUDA build) the same
// split, in x's dtype when it is float32, bfloat16 or float16: the packed kernel of
// group_quant_cuda.h for up to the same number of rows, else dequantisation + cuBLAS. Inference
// only: no gradient reaches x through the packed path. Throws InvalidArgument for a wrong x or bias
// shape or dtype or for x and the weights on different devices, Unsupported for another device.
at::Tensor group_quant_linear(const at::Tensor& x, const GroupQuantized& w, const at::Tensor& bias = {});

// One input row x [in] through the packed kernel (AVX2 + FMA when usable, else portable) for the
// output features [begin, end) only, on the calling thread: y[o] = bias[o] + Σ_i x[i] Ŵ[o, i]. For
// the fused decode step (nn/decode_step.h), which splits the rows over its own threads. The
// weights must be on the CPU; bias is [out] float32 or nullptr.
void group_quant_row_product(const GroupQuantized& w, const float* x, const float* bias, int64_t begin,
                             int64_t end, float* y);

}  // namespace lowrank::ops
