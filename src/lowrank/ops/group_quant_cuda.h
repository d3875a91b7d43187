// CUDA twins of the ops/group_quant kernels (group_quant_cuda.cu), built only with LOWRANK_WITH_CUDA.
// The same format and contract as group_quant_kernels.h, on tensors that live on one CUDA device:
//   y[r, o] = bias[o] + sum_i x[r, i] * (s[o, i / g] * q[o, i])
// Activations stay in their own 16- or 32-bit type (W4A16 / W8A16: Hopper has no INT4 tensor
// cores, so the weights are unpacked to the activation type in registers) and every product is
// accumulated in float32.
#pragma once

#include <cstdint>

#include <ATen/ATen.h>

namespace lowrank::ops::detail {

// Whether the packed CUDA kernel handles these weights: group_size a multiple of 8 (each thread
// reads 4-byte words that must not straddle a group's two nibble halves) and packed 4-byte aligned.
inline bool group_quant_cuda_usable(const at::Tensor& packed, int64_t group_size) {
  return group_size % 8 == 0 && reinterpret_cast<uintptr_t>(packed.const_data_ptr()) % 4 == 0;
}

// y = x Ŵᵀ + bias for x [rows, in] (contiguous float32, bfloat16 or float16, on the weights'
// device), packed and scales as in GroupQuantized, bias [out] in x's dtype or undefined. One warp
// per output feature, 8 input rows per pass. Returns [rows, out] in x's dtype.
at::Tensor group_quant_matmul_cuda(const at::Tensor& x, const at::Tensor& packed, const at::Tensor& scales,
                                   int bits, int64_t group_size, int64_t out_features,
                                   const at::Tensor& bias);

// Ŵ = s q as [out, in] in `dtype` (float32, bfloat16 or float16) on the weights' device.
at::Tensor group_quant_dequantize_cuda(const at::Tensor& packed, const at::Tensor& scales, int bits,
                                       int64_t group_size, int64_t out_features, int64_t in_features,
                                       at::ScalarType dtype);

}  // namespace lowrank::ops::detail
