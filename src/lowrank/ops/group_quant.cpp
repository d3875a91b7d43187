// Checks and dispatch of ops/group_quant; the kernels live in group_quant_cpu.cpp (portable) and
// group_quant_avx2.cpp (AVX2 + FMA, chosen at run time).
#include "lowrank/ops/group_quant.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <memory>
#include <string_view>
#include <vector>

#include "lowrank/core/error.h"
#include "lowrank/ops/cpu_features.h"
#include "lowrank/ops/group_quant_cuda.h"
#include "lowrank/ops/group_quant_internal.h"

namespace lowrank::ops {
namespace {

int64_t qmax_of(int bits) {
  return bits == 4 ? 7 : 127;
}

void check_format(std::string_view what, int bits, int64_t group_size, int64_t in_features) {
  LR_CHECK(bits == 4 || bits == 8, InvalidArgument, what, ": bits = ", bits, " is not 4 or 8");
  LR_CHECK(group_size > 0 && group_size % 2 == 0, InvalidArgument, what, ": group_size = ", group_size,
           " is not a positive even number");
  LR_CHECK(in_features % group_size == 0, InvalidArgument, what, ": in_features = ", in_features,
           " is not a multiple of group_size = ", group_size);
}

// The kernels read raw memory: the struct's tensors must match its declared format exactly.
void check_quantized(std::string_view what, const GroupQuantized& w) {
  check_format(what, w.bits, w.group_size, w.in_features);
  const int64_t packed_cols = w.bits == 4 ? w.in_features / 2 : w.in_features;
  LR_CHECK(w.packed.defined() && w.scales.defined() &&
               w.packed.scalar_type() == (w.bits == 4 ? at::kByte : at::kChar) && w.packed.is_contiguous() &&
               w.packed.numel() == w.out_features * packed_cols && w.scales.scalar_type() == at::kFloat &&
               w.scales.device() == w.packed.device() && w.scales.is_contiguous() &&
               w.scales.numel() == w.out_features * (w.in_features / w.group_size),
           InvalidArgument, what, ": w is not a consistent ", w.out_features, "x", w.in_features,
           " GroupQuantized (build it with quantize_groups or group_quantized_from_tensors)");
}

}  // namespace

namespace detail {

GroupQuantView view_of(const GroupQuantized& w) {
  GroupQuantView v;
  v.bits = w.bits;
  v.group_size = w.group_size;
  v.out_features = w.out_features;
  v.in_features = w.in_features;
  v.packed = static_cast<const uint8_t*>(w.packed.const_data_ptr());
  v.scales = w.scales.const_data_ptr<float>();
  return v;
}

#ifndef LOWRANK_WITH_CUDA
at::Tensor group_quant_matmul_cuda(const at::Tensor&, const at::Tensor&, const at::Tensor&, int, int64_t,
                                   int64_t, const at::Tensor&) {
  throw Unsupported("group_quant_matmul_cuda: this build has no CUDA");
}

at::Tensor group_quant_dequantize_cuda(const at::Tensor&, const at::Tensor&, int, int64_t, int64_t, int64_t,
                                       at::ScalarType) {
  throw Unsupported("group_quant_dequantize_cuda: this build has no CUDA");
}
#endif

bool group_quant_avx2_usable(const GroupQuantView& w) {
  if (!cpu_has_avx2_fma()) return false;
  return w.bits == 8 ? w.group_size % 8 == 0 : w.group_size % 16 == 0;
}

void group_quant_packed_matmul(const GroupQuantView& w, const float* x, int64_t rows, const float* bias,
                               float* y, GroupQuantKernel kernel) {
  const bool usable = group_quant_avx2_usable(w);
  LR_CHECK(kernel != GroupQuantKernel::kAvx2 || usable, Unsupported,
           "group_quant_packed_matmul: the AVX2 kernel is not available (CPU without AVX2/FMA, a build "
           "without it, or group_size = ",
           w.group_size, " not a multiple of ", w.bits == 8 ? 8 : 16, ")");
  const bool avx2 = kernel == GroupQuantKernel::kAvx2 || (kernel == GroupQuantKernel::kAuto && usable);
  // Chunks of at least ~256 K weights (~15 us of work), so small layers stay on one thread.
  const int64_t work_per_feature = std::max<int64_t>(1, w.in_features * std::max<int64_t>(rows, 1));
  const int64_t grain = std::max<int64_t>(1, (int64_t{1} << 18) / work_per_feature);
  at::parallel_for(0, w.out_features, grain, [&](int64_t begin, int64_t end) {
    if (avx2) {
      group_quant_gemv_rows_avx2(w, x, rows, bias, begin, end, y);
    } else {
      group_quant_gemv_rows_cpu(w, x, rows, bias, begin, end, y);
    }
  });
}

}  // namespace detail

at::Tensor GroupQuantized::dequantize(at::ScalarType dtype) const {
  check_quantized("GroupQuantized::dequantize", *this);
  if (packed.is_cuda()) {
    const bool native = dtype == at::kFloat || dtype == at::kBFloat16 || dtype == at::kHalf;
    const at::Tensor W = detail::group_quant_dequantize_cuda(packed, scales, bits, group_size, out_features,
                                                             in_features, native ? dtype : at::kFloat);
    return native ? W : W.to(dtype);
  }
  LR_CHECK(packed.is_cpu(), Unsupported, "GroupQuantized::dequantize: weights on ", packed.device(),
           "; only CPU and CUDA are supported");
  auto W = at::empty({out_features, in_features}, at::TensorOptions().dtype(at::kFloat));
  const detail::GroupQuantView v = detail::view_of(*this);
  float* dst = W.mutable_data_ptr<float>();
  const int64_t grain = std::max<int64_t>(1, (int64_t{1} << 18) / std::max<int64_t>(1, in_features));
  at::parallel_for(0, out_features, grain, [&](int64_t begin, int64_t end) {
    detail::group_quant_dequantize_rows_cpu(v, begin, end, dst);
  });
  return W.to(dtype);
}

GroupQuantized GroupQuantized::to(at::Device device) const {
  GroupQuantized r = *this;
  r.packed = packed.to(device);
  r.scales = scales.to(device);
  return r;
}

int64_t GroupQuantized::storage_bytes() const {
  return packed.numel() * packed.element_size() + 2 * scales.numel();
}

GroupQuantized quantize_groups(const at::Tensor& W, int bits, int64_t group_size) {
  LR_CHECK(W.defined(), InvalidArgument, "quantize_groups: W is an undefined tensor");
  LR_CHECK(W.dim() == 2, InvalidArgument, "quantize_groups: W must be 2-D [out, in], got shape ", W.sizes());
  LR_CHECK(at::isFloatingType(W.scalar_type()), InvalidArgument, "quantize_groups: W has dtype ",
           W.scalar_type(), "; a floating dtype is required");
  const int64_t out = W.size(0), in = W.size(1);
  check_format("quantize_groups", bits, group_size, in);
  const auto Wf = W.to(at::kCPU, at::kFloat).contiguous();
  LR_CHECK(at::isfinite(Wf).all().item<bool>(), InvalidArgument, "quantize_groups: W (", out, "x", in,
           ") has non-finite entries");
  const int64_t groups = in / group_size;
  const auto qmax = static_cast<double>(qmax_of(bits));
  const auto Wg = Wf.view({out, groups, group_size});
  // s = absmax / qmax rounded to float16 (the stored type), held as float32.
  const auto s = (Wg.abs().amax(-1) / qmax).to(at::kHalf).to(at::kFloat);
  LR_CHECK(at::isfinite(s).all().item<bool>(), InvalidArgument,
           "quantize_groups: a group's scale absmax / qmax overflows float16 (max |W| = ",
           Wf.abs().max().item<float>(), ", qmax = ", qmax, ")");
  const auto s3 = s.unsqueeze(-1);
  const auto q = at::where(s3 > 0, at::round(Wg / s3), at::zeros({}, Wg.options())).clamp(-qmax - 1, qmax);
  GroupQuantized r;
  r.bits = bits;
  r.group_size = group_size;
  r.out_features = out;
  r.in_features = in;
  r.scales = s.contiguous();
  if (bits == 4) {
    const auto u = (q + 8.0).to(at::kByte);
    const auto lo = u.narrow(-1, 0, group_size / 2);
    const auto hi = u.narrow(-1, group_size / 2, group_size / 2);
    r.packed = at::bitwise_or(lo, at::bitwise_left_shift(hi, 4)).reshape({out, in / 2}).contiguous();
  } else {
    r.packed = q.to(at::kChar).reshape({out, in}).contiguous();
  }
  return r;
}

at::Tensor fake_quantize_groups(const at::Tensor& W, int bits, int64_t group_size) {
  return quantize_groups(W, bits, group_size).dequantize(at::kFloat);
}

GroupQuantized group_quantized_from_tensors(at::Tensor packed, at::Tensor scales, int bits,
                                            int64_t group_size, int64_t out_features, int64_t in_features) {
  LR_CHECK(out_features > 0 && in_features > 0, InvalidArgument, "group_quantized_from_tensors: features ",
           out_features, "x", in_features, " must be positive");
  check_format("group_quantized_from_tensors", bits, group_size, in_features);
  const int64_t groups = in_features / group_size;
  LR_CHECK(packed.defined() && scales.defined(), Corruption,
           "group_quantized_from_tensors: packed or scales is an undefined tensor");
  const auto packed_dtype = bits == 4 ? at::kByte : at::kChar;
  const int64_t packed_cols = bits == 4 ? in_features / 2 : in_features;
  LR_CHECK(packed.scalar_type() == packed_dtype, Corruption,
           "group_quantized_from_tensors: packed has dtype ", packed.scalar_type(), ", expected ",
           packed_dtype, " for bits = ", bits);
  LR_CHECK(packed.dim() == 2 && packed.size(0) == out_features && packed.size(1) == packed_cols, Corruption,
           "group_quantized_from_tensors: packed has shape ", packed.sizes(), ", expected [", out_features,
           ", ", packed_cols, "]");
  LR_CHECK(scales.scalar_type() == at::kHalf || scales.scalar_type() == at::kFloat, Corruption,
           "group_quantized_from_tensors: scales has dtype ", scales.scalar_type(), ", expected F16 or F32");
  LR_CHECK(scales.dim() == 2 && scales.size(0) == out_features && scales.size(1) == groups, Corruption,
           "group_quantized_from_tensors: scales has shape ", scales.sizes(), ", expected [", out_features,
           ", ", groups, "]");
  auto s = scales.to(at::kCPU, at::kFloat).contiguous();
  LR_CHECK(at::isfinite(s).all().item<bool>() && (s >= 0).all().item<bool>(), Corruption,
           "group_quantized_from_tensors: scales has negative or non-finite values");
  if (scales.scalar_type() == at::kFloat) {
    LR_CHECK(at::equal(s, s.to(at::kHalf).to(at::kFloat)), Corruption,
             "group_quantized_from_tensors: scales (F32) has values not exactly representable in float16");
  }
  GroupQuantized r;
  r.bits = bits;
  r.group_size = group_size;
  r.out_features = out_features;
  r.in_features = in_features;
  r.packed = packed.to(at::kCPU).contiguous();
  r.scales = std::move(s);
  return r;
}

at::Tensor group_quant_linear(const at::Tensor& x, const GroupQuantized& w, const at::Tensor& bias) {
  LR_CHECK(x.defined(), InvalidArgument, "group_quant_linear: x is an undefined tensor");
  LR_CHECK(x.is_cpu() || x.is_cuda(), Unsupported, "group_quant_linear: x is on ", x.device(),
           "; only CPU and CUDA tensors are supported");
  LR_CHECK(at::isFloatingType(x.scalar_type()), InvalidArgument, "group_quant_linear: x has dtype ",
           x.scalar_type(), "; a floating dtype is required");
  LR_CHECK(x.dim() >= 1 && x.size(-1) == w.in_features, InvalidArgument, "group_quant_linear: x has shape ",
           x.sizes(), ", expected [..., ", w.in_features, "]");
  check_quantized("group_quant_linear", w);
  LR_CHECK(x.device() == w.packed.device(), InvalidArgument, "group_quant_linear: x is on ", x.device(),
           ", the weights on ", w.packed.device());
  if (bias.defined()) {
    LR_CHECK(bias.dim() == 1 && bias.size(0) == w.out_features && at::isFloatingType(bias.scalar_type()),
             InvalidArgument, "group_quant_linear: bias has shape ", bias.sizes(), " and dtype ",
             bias.scalar_type(), ", expected a floating [", w.out_features, "]");
  }
  std::vector<int64_t> out_shape(x.sizes().begin(), x.sizes().end());
  out_shape.back() = w.out_features;
  const int64_t rows = x.numel() / w.in_features;
  if (x.is_cuda()) {
    // The packed kernel reads 4.5 (or 8.5) instead of 16 or 32 bits per weight, which is the whole
    // cost of a decode-sized product; prefill-sized ones dequantise once and use the tensor cores.
    const bool native =
        x.scalar_type() == at::kFloat || x.scalar_type() == at::kBFloat16 || x.scalar_type() == at::kHalf;
    const at::ScalarType dtype = native ? x.scalar_type() : at::kFloat;
    const at::Tensor x2 = x.to(dtype).reshape({rows, w.in_features}).contiguous();
    const at::Tensor b = bias.defined() ? bias.to(x.device(), dtype).contiguous() : at::Tensor();
    at::Tensor y;
    if (rows <= detail::kGroupQuantPackedMaxRows && detail::group_quant_cuda_usable(w.packed, w.group_size))
      y = detail::group_quant_matmul_cuda(x2, w.packed, w.scales, w.bits, w.group_size, w.out_features, b);
    else
      y = at::linear(x2, w.dequantize(dtype), b);
    return y.view(out_shape).to(x.scalar_type());
  }
  at::Tensor b;
  if (bias.defined()) b = bias.to(at::kCPU, at::kFloat).contiguous();
  const auto xf = x.to(at::kFloat).contiguous();
  at::Tensor y;
  if (rows <= detail::kGroupQuantPackedMaxRows) {
    y = at::empty({rows, w.out_features}, xf.options());
    if (rows > 0) {
      detail::group_quant_packed_matmul(detail::view_of(w), xf.const_data_ptr<float>(), rows,
                                        b.defined() ? b.const_data_ptr<float>() : nullptr,
                                        y.mutable_data_ptr<float>());
    }
    y = y.view(out_shape);
  } else {
    // Prefill: the GEMM is compute-bound, so one dequantisation is amortised over the rows.
    y = at::linear(xf, w.dequantize(at::kFloat), b);
  }
  return y.to(x.scalar_type());
}

void group_quant_row_product(const GroupQuantized& w, const float* x, const float* bias, int64_t begin,
                             int64_t end, float* y) {
  const detail::GroupQuantView v = detail::view_of(w);
  if (detail::group_quant_avx512_usable(v))
    detail::group_quant_gemv_row_4bit_avx512(v, x, bias, begin, end, y);
  else if (detail::group_quant_avx2_usable(v))
    detail::group_quant_gemv_rows_avx2(v, x, 1, bias, begin, end, y);
  else
    detail::group_quant_gemv_rows_cpu(v, x, 1, bias, begin, end, y);
}

}  // namespace lowrank::ops
