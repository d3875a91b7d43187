// CUDA kernels of ops/group_quant (see group_quant_cuda.h for the contract, group_quant.h for the
// format): a packed W4A16 / W8A16 matrix-vector product and a dequantisation.
//
// GEMV: one warp per output feature o. Each lane reads the row's packed weights as 4-byte words
// (coalesced across the warp) and unpacks them in registers (group_quant_word.h, whose index
// arithmetic a CPU test checks): for 4-bit weights a word holds two runs of four consecutive codes
// (low and high nibbles), for 8-bit weights one run of four int8 codes. The group's float32 scale
// multiplies the word's partial dot product. Up to 8 input rows share each unpacked word (decode
// batches); a grid row per 8 input rows covers more. Partial sums are reduced across the warp with
// shuffles. Everything accumulates in float32.
//
// Dequantisation: one thread per packed byte (4-bit) or weight (8-bit); the float32 product s·q is
// formed exactly as on the CPU and then rounded to the output dtype.
#include "lowrank/ops/group_quant_cuda.h"

#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <algorithm>
#include <cstdint>

#include "lowrank/core/error.h"
#include "lowrank/ops/group_quant_word.h"

namespace lowrank::ops::detail {
namespace {

constexpr int kWarpsPerBlock = 4;
constexpr int kRowsPerPass = 8;

template <typename T>
__device__ __forceinline__ float to_float(T v) {
  return static_cast<float>(v);
}

template <typename T, int kBits>
__global__ void __launch_bounds__(kWarpsPerBlock * 32)
    group_quant_gemv_kernel(const uint32_t* __restrict__ words, const float* __restrict__ scales,
                            const T* __restrict__ x, const T* __restrict__ bias, T* __restrict__ y, int rows,
                            int64_t in, int64_t out, int64_t group_size) {
  const int lane = threadIdx.x % 32;
  const int64_t o = static_cast<int64_t>(blockIdx.x) * kWarpsPerBlock + threadIdx.x / 32;
  if (o >= out) return;  // whole warps leave together: the shuffles below see full warps
  const int r0 = blockIdx.y * kRowsPerPass;
  const int nr = min(kRowsPerPass, rows - r0);
  const float* s_row = scales + o * (in / group_size);
  const T* x0 = x + static_cast<int64_t>(r0) * in;
  float acc[kRowsPerPass] = {};
  const int64_t n_words = kBits == 4 ? in / 8 : in / 4;
  const uint32_t* row = words + o * n_words;
  for (int64_t w = lane; w < n_words; w += 32) {
    const PackedWord p = unpack_packed_word(__ldg(row + w), w, kBits, group_size);
    const float s = __ldg(s_row + p.group);
#pragma unroll
    for (int r = 0; r < kRowsPerPass; ++r) {
      if (r < nr) {
        const T* xr = x0 + r * in;
        float d = 0;
#pragma unroll
        for (int run = 0; run < (kBits == 4 ? 2 : 1); ++run) {
#pragma unroll
          for (int t = 0; t < 4; ++t) d += p.q[run][t] * to_float(xr[p.first[run] + t]);
        }
        acc[r] += s * d;
      }
    }
  }
#pragma unroll
  for (int r = 0; r < kRowsPerPass; ++r) {
#pragma unroll
    for (int offset = 16; offset > 0; offset /= 2) acc[r] += __shfl_xor_sync(0xffffffffu, acc[r], offset);
  }
  if (lane == 0) {
    const float b = bias != nullptr ? to_float(bias[o]) : 0.0f;
    for (int r = 0; r < nr; ++r) y[static_cast<int64_t>(r0 + r) * out + o] = static_cast<T>(acc[r] + b);
  }
}

template <typename T, int kBits>
__global__ void group_quant_dequantize_kernel(const uint8_t* __restrict__ packed,
                                              const float* __restrict__ scales, T* __restrict__ W,
                                              int64_t out, int64_t in, int64_t group_size) {
  const int64_t groups = in / group_size;
  const int64_t n = kBits == 4 ? out * (in / 2) : out * in;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; idx < n; idx += stride) {
    if constexpr (kBits == 4) {
      const int64_t o = idx / (in / 2), b = idx % (in / 2), half = group_size / 2;
      const int64_t k = b / half, i = k * group_size + b % half;
      const float s = scales[o * groups + k];
      const uint8_t v = packed[idx];
      W[o * in + i] = static_cast<T>(s * static_cast<float>(static_cast<int>(v & 15u) - 8));
      W[o * in + i + half] = static_cast<T>(s * static_cast<float>(static_cast<int>(v >> 4) - 8));
    } else {
      const int64_t o = idx / in, i = idx % in;
      W[idx] = static_cast<T>(scales[o * groups + i / group_size] *
                              static_cast<float>(static_cast<int8_t>(packed[idx])));
    }
  }
}

// Calls f(T{}) with T the C++ type of a float32, bfloat16 or float16 dtype.
template <typename F>
void with_float_type(at::ScalarType dtype, const char* what, F&& f) {
  switch (dtype) {
    case at::kFloat:
      f(float{});
      break;
    case at::kBFloat16:
      f(c10::BFloat16{});
      break;
    case at::kHalf:
      f(c10::Half{});
      break;
    default:
      throw InvalidArgument(lowrank::str(what, ": dtype ", dtype, " is not float32, bfloat16 or float16"));
  }
}

}  // namespace

at::Tensor group_quant_matmul_cuda(const at::Tensor& x, const at::Tensor& packed, const at::Tensor& scales,
                                   int bits, int64_t group_size, int64_t out_features,
                                   const at::Tensor& bias) {
  LR_CHECK(x.is_cuda() && x.dim() == 2 && x.is_contiguous(), InvalidArgument,
           "group_quant_matmul_cuda: x must be a contiguous 2-D CUDA tensor, got ", x.sizes(), " on ",
           x.device());
  LR_CHECK(packed.device() == x.device() && scales.device() == x.device(), InvalidArgument,
           "group_quant_matmul_cuda: the weights are on ", packed.device(), ", x on ", x.device());
  LR_CHECK(group_quant_cuda_usable(packed, group_size), Unsupported,
           "group_quant_matmul_cuda: group_size = ", group_size,
           " is not a multiple of 8, or the packed weights are not 4-byte aligned");
  LR_CHECK(!bias.defined() || (bias.device() == x.device() && bias.scalar_type() == x.scalar_type() &&
                               bias.is_contiguous() && bias.numel() == out_features),
           InvalidArgument, "group_quant_matmul_cuda: bias must be a contiguous [", out_features, "] ",
           x.scalar_type(), " tensor on ", x.device());
  const c10::cuda::CUDAGuard guard(x.device());
  const int64_t rows = x.size(0), in = x.size(1);
  at::Tensor y = at::empty({rows, out_features}, x.options());
  if (rows == 0 || out_features == 0) return y;
  const dim3 grid(static_cast<unsigned>((out_features + kWarpsPerBlock - 1) / kWarpsPerBlock),
                  static_cast<unsigned>((rows + kRowsPerPass - 1) / kRowsPerPass));
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  const auto* words = static_cast<const uint32_t*>(packed.const_data_ptr());
  with_float_type(x.scalar_type(), "group_quant_matmul_cuda", [&](auto tag) {
    using T = decltype(tag);
    const T* b = bias.defined() ? static_cast<const T*>(bias.const_data_ptr()) : nullptr;
    const auto* xp = static_cast<const T*>(x.const_data_ptr());
    auto* yp = static_cast<T*>(y.mutable_data_ptr());
    if (bits == 4)
      group_quant_gemv_kernel<T, 4>
          <<<grid, kWarpsPerBlock * 32, 0, stream>>>(words, scales.const_data_ptr<float>(), xp, b, yp,
                                                     static_cast<int>(rows), in, out_features, group_size);
    else
      group_quant_gemv_kernel<T, 8>
          <<<grid, kWarpsPerBlock * 32, 0, stream>>>(words, scales.const_data_ptr<float>(), xp, b, yp,
                                                     static_cast<int>(rows), in, out_features, group_size);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return y;
}

at::Tensor group_quant_dequantize_cuda(const at::Tensor& packed, const at::Tensor& scales, int bits,
                                       int64_t group_size, int64_t out_features, int64_t in_features,
                                       at::ScalarType dtype) {
  LR_CHECK(packed.is_cuda() && scales.device() == packed.device(), InvalidArgument,
           "group_quant_dequantize_cuda: packed and scales must be on one CUDA device");
  const c10::cuda::CUDAGuard guard(packed.device());
  at::Tensor W = at::empty({out_features, in_features}, packed.options().dtype(dtype));
  const int64_t n = bits == 4 ? out_features * (in_features / 2) : out_features * in_features;
  if (n == 0) return W;
  const int threads = 256;
  const auto blocks = static_cast<unsigned>(std::min<int64_t>((n + threads - 1) / threads, 65535));
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  with_float_type(dtype, "group_quant_dequantize_cuda", [&](auto tag) {
    using T = decltype(tag);
    const auto* p = static_cast<const uint8_t*>(packed.const_data_ptr());
    auto* w = static_cast<T*>(W.mutable_data_ptr());
    if (bits == 4)
      group_quant_dequantize_kernel<T, 4><<<blocks, threads, 0, stream>>>(
          p, scales.const_data_ptr<float>(), w, out_features, in_features, group_size);
    else
      group_quant_dequantize_kernel<T, 8><<<blocks, threads, 0, stream>>>(
          p, scales.const_data_ptr<float>(), w, out_features, in_features, group_size);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return W;
}

}  // namespace lowrank::ops::detail
