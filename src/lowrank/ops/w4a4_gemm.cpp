// W4A4 dispatch (ops/w4a4_gemm.h): checks, kernel choice, threads.
#include "lowrank/ops/w4a4_gemm.h"

#include <vector>

#include <ATen/Parallel.h>

#include "lowrank/core/error.h"
#include "lowrank/ops/group_quant_internal.h"

namespace lowrank::ops {

namespace {

// Rows per task of the quantiser and output features per task of the product: enough work per
// task to amortise at::parallel_for's dispatch.
constexpr int64_t kQuantizeGrain = 4;
constexpr int64_t kGemmGrain = 16;

}  // namespace

at::Tensor Int4Activations::dequantize() const {
  const int64_t rows = values.size(0), in = values.size(1);
  return (values.to(at::kFloat).reshape({rows, in / group_size, group_size}) * scales.unsqueeze(-1))
      .reshape({rows, in});
}

Int4Activations quantize_activations_int4(const at::Tensor& x, int64_t group_size,
                                          const at::Tensor& inv_smooth, const at::Tensor& lora_down,
                                          detail::W4A4Kernel kernel) {
  LR_CHECK(x.defined() && x.dim() == 2 && x.scalar_type() == at::kFloat && x.device().is_cpu(),
           InvalidArgument, "quantize_activations_int4: x must be a 2-D float32 CPU tensor, got ",
           x.defined() ? x.sizes() : at::IntArrayRef{});
  const int64_t rows = x.size(0), in = x.size(1);
  LR_CHECK(group_size > 0 && in % group_size == 0, InvalidArgument,
           "quantize_activations_int4: group_size = ", group_size,
           " must be positive and divide in_features = ", in);
  LR_CHECK(!inv_smooth.defined() || (inv_smooth.dim() == 1 && inv_smooth.size(0) == in &&
                                     inv_smooth.scalar_type() == at::kFloat && inv_smooth.device().is_cpu()),
           InvalidArgument, "quantize_activations_int4: inv_smooth must be float32 [", in, "], got ",
           inv_smooth.sizes());
  LR_CHECK(!lora_down.defined() || (lora_down.dim() == 2 && lora_down.size(1) == in &&
                                    lora_down.scalar_type() == at::kFloat && lora_down.device().is_cpu()),
           InvalidArgument, "quantize_activations_int4: lora_down must be float32 [rank, ", in, "], got ",
           lora_down.sizes());
  const bool avx2 = detail::w4a4_avx2_compiled() && group_size % 8 == 0;
  LR_CHECK(kernel == detail::W4A4Kernel::kAuto || kernel == detail::W4A4Kernel::kPortable || avx2,
           Unsupported, "quantize_activations_int4: the AVX2 kernel is not usable here (group_size ",
           group_size, ")");
  const bool use_avx2 = avx2 && kernel != detail::W4A4Kernel::kPortable;
  const at::Tensor xc = x.contiguous();
  const at::Tensor inv = inv_smooth.defined() ? inv_smooth.contiguous() : at::Tensor();
  const at::Tensor down = lora_down.defined() ? lora_down.contiguous() : at::Tensor();
  const int64_t rank = down.defined() ? down.size(0) : 0;
  Int4Activations a;
  a.group_size = group_size;
  a.values = at::empty({rows, in}, x.options().dtype(at::kChar));
  a.scales = at::empty({rows, in / group_size}, x.options());
  a.group_sums = at::empty({rows, in / group_size}, x.options().dtype(at::kInt));
  if (rank > 0) a.lora_act = at::empty({rows, rank}, x.options());
  const float* xp = xc.const_data_ptr<float>();
  const float* ip = inv.defined() ? inv.const_data_ptr<float>() : nullptr;
  const float* dp = rank > 0 ? down.const_data_ptr<float>() : nullptr;
  int8_t* vp = a.values.mutable_data_ptr<int8_t>();
  float* sp = a.scales.mutable_data_ptr<float>();
  int32_t* tp = a.group_sums.mutable_data_ptr<int32_t>();
  float* hp = rank > 0 ? a.lora_act.mutable_data_ptr<float>() : nullptr;
  at::parallel_for(0, rows, kQuantizeGrain, [&](int64_t begin, int64_t end) {
    if (use_avx2)
      detail::w4a4_quantize_rows_avx2(xp, in, group_size, ip, dp, rank, begin, end, vp, sp, tp, hp);
    else
      detail::w4a4_quantize_rows_cpu(xp, in, group_size, ip, dp, rank, begin, end, vp, sp, tp, hp);
  });
  return a;
}

at::Tensor w4a4_gemm(const Int4Activations& a, const GroupQuantized& w, const at::Tensor& bias,
                     detail::W4A4Kernel kernel) {
  LR_CHECK(w.bits == 4, InvalidArgument, "w4a4_gemm: the weights have ", w.bits, " bits; W4A4 needs 4");
  LR_CHECK(w.packed.device().is_cpu(), InvalidArgument, "w4a4_gemm: the weights must be on the CPU");
  LR_CHECK(a.values.defined() && a.values.dim() == 2 && a.values.size(1) == w.in_features, InvalidArgument,
           "w4a4_gemm: activations of shape ", a.values.defined() ? a.values.sizes() : at::IntArrayRef{},
           " for a weight with ", w.in_features, " inputs");
  LR_CHECK(a.group_size == w.group_size, InvalidArgument, "w4a4_gemm: activation group size ", a.group_size,
           " differs from the weight group size ", w.group_size);
  LR_CHECK(!bias.defined() || (bias.dim() == 1 && bias.size(0) == w.out_features &&
                               bias.scalar_type() == at::kFloat && bias.device().is_cpu()),
           InvalidArgument, "w4a4_gemm: bias must be float32 [", w.out_features, "], got ", bias.sizes());
  const bool avx2 = detail::w4a4_avx2_compiled() && w.group_size % 64 == 0;
  const bool vnni = avx2 && detail::w4a4_avxvnni_available();
  LR_CHECK(kernel != detail::W4A4Kernel::kAvx2 || avx2, Unsupported,
           "w4a4_gemm: the AVX2 kernel is not usable here (needs AVX2 and group_size % 64 == 0, got ",
           w.group_size, ")");
  LR_CHECK(kernel != detail::W4A4Kernel::kAvxVnni || vnni, Unsupported,
           "w4a4_gemm: the AVX-VNNI kernel is not usable here (needs AVX-VNNI and group_size % 64 == 0)");
  const GroupQuantized wc = {w.bits,        w.group_size,          w.out_features,
                             w.in_features, w.packed.contiguous(), w.scales.to(at::kFloat).contiguous()};
  const at::Tensor values = a.values.contiguous(), scales = a.scales.contiguous(),
                   sums = a.group_sums.contiguous();
  const at::Tensor b = bias.defined() ? bias.contiguous() : at::Tensor();
  detail::Int4ActivationView av;
  av.rows = values.size(0);
  av.in_features = values.size(1);
  av.group_size = a.group_size;
  av.values = values.const_data_ptr<int8_t>();
  av.scales = scales.const_data_ptr<float>();
  av.group_sums = sums.const_data_ptr<int32_t>();
  const detail::GroupQuantView wv = detail::view_of(wc);
  at::Tensor y = at::empty({av.rows, w.out_features}, values.options().dtype(at::kFloat));
  float* yp = y.mutable_data_ptr<float>();
  const float* bp = b.defined() ? b.const_data_ptr<float>() : nullptr;
  using K = detail::W4A4Kernel;
  const K chosen = kernel != K::kAuto ? kernel : vnni ? K::kAvxVnni : avx2 ? K::kAvx2 : K::kPortable;
  at::parallel_for(0, w.out_features, kGemmGrain, [&](int64_t begin, int64_t end) {
    switch (chosen) {
      case K::kAvxVnni:
        detail::w4a4_gemm_rows_avxvnni(wv, av, bp, begin, end, yp);
        break;
      case K::kAvx2:
        detail::w4a4_gemm_rows_avx2(wv, av, bp, begin, end, yp);
        break;
      default:
        detail::w4a4_gemm_rows_cpu(wv, av, bp, begin, end, yp);
        break;
    }
  });
  return y;
}

at::Tensor fake_quantize_activations_int4(const at::Tensor& x, int64_t group_size) {
  LR_CHECK(x.defined() && x.dim() >= 1 && group_size > 0 && x.size(-1) % group_size == 0, InvalidArgument,
           "fake_quantize_activations_int4: group_size = ", group_size, " must divide the last dimension of ",
           x.defined() ? x.sizes() : at::IntArrayRef{});
  const at::Tensor xf = x.to(at::kFloat);
  const at::Tensor g = xf.reshape({-1, x.size(-1) / group_size, group_size});
  const at::Tensor s = g.abs().amax(-1, true) / 7.0f;
  const at::Tensor q = at::where(s > 0, at::clamp(at::round(g / s), -8, 7), at::zeros_like(g));
  return (q * s).reshape(x.sizes());
}

at::Tensor w4a4_linear(const at::Tensor& x, const GroupQuantized& w, const at::Tensor& bias,
                       const at::Tensor& inv_smooth) {
  LR_CHECK(x.defined() && x.dim() >= 1 && x.size(-1) == w.in_features && x.is_floating_point(),
           InvalidArgument, "w4a4_linear: input of shape ", x.defined() ? x.sizes() : at::IntArrayRef{},
           " for a weight with ", w.in_features, " inputs");
  std::vector<int64_t> shape(x.sizes().begin(), x.sizes().end());
  shape.back() = w.out_features;
  if (!x.device().is_cpu()) {
    const at::Tensor xs =
        inv_smooth.defined() ? x.to(at::kFloat) * inv_smooth.to(x.device(), at::kFloat) : x.to(at::kFloat);
    const at::Tensor xq = fake_quantize_activations_int4(xs, w.group_size);
    const at::Tensor b = bias.defined() ? bias.to(at::kFloat) : at::Tensor();
    return at::linear(xq, w.dequantize(at::kFloat), b).to(x.scalar_type());
  }
  const at::Tensor x2 = x.reshape({-1, w.in_features}).to(at::kFloat).contiguous();
  const at::Tensor inv = inv_smooth.defined() ? inv_smooth.to(at::kFloat) : at::Tensor();
  const at::Tensor b = bias.defined() ? bias.to(at::kFloat) : at::Tensor();
  const at::Tensor y = w4a4_gemm(quantize_activations_int4(x2, w.group_size, inv), w, b);
  return y.reshape(shape).to(x.scalar_type());
}

}  // namespace lowrank::ops
