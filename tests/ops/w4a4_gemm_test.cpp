#include "lowrank/ops/w4a4_gemm.h"

#include <gtest/gtest.h>

#include <ATen/CPUGeneratorImpl.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "lowrank/core/error.h"
#include "tests/testing.h"

namespace lowrank::ops {
namespace {

using detail::W4A4Kernel;

at::Tensor randn(std::vector<int64_t> shape, uint64_t seed) {
  at::Generator gen = at::detail::createCPUGenerator(seed);
  return at::randn(shape, gen, at::kFloat);
}

// Activations with a few outlier channels, as LLM inputs have.
at::Tensor activations(int64_t rows, int64_t in, uint64_t seed) {
  at::Tensor x = randn({rows, in}, seed);
  x.select(1, 3).mul_(40.0f);
  x.select(1, in - 5).mul_(-25.0f);
  x.select(0, 0).zero_();  // an all-zero row: its groups have scale 0
  return x;
}

// Oracle of the quantiser: loops in float32 over the definition (s = absmax / 7, round half to
// even, clamp to [−8, 7]) and the down projection in float64.
struct ActOracle {
  std::vector<int> q;
  std::vector<float> s;
  std::vector<double> h;
};

ActOracle oracle_activations(const at::Tensor& x, const at::Tensor& inv, const at::Tensor& down, int64_t g) {
  const int64_t rows = x.size(0), in = x.size(1), groups = in / g, rank = down.defined() ? down.size(0) : 0;
  const auto xa = x.accessor<float, 2>();
  ActOracle o;
  o.q.assign(rows * in, 0);
  o.s.assign(rows * groups, 0);
  o.h.assign(rows * rank, 0);
  for (int64_t m = 0; m < rows; ++m) {
    std::vector<float> xs(in);
    for (int64_t i = 0; i < in; ++i) xs[i] = inv.defined() ? xa[m][i] * inv[i].item<float>() : xa[m][i];
    for (int64_t k = 0; k < groups; ++k) {
      float amax = 0;
      for (int64_t i = k * g; i < (k + 1) * g; ++i) amax = std::max(amax, std::abs(xs[i]));
      const float s = amax / 7.0f;
      o.s[m * groups + k] = s;
      for (int64_t i = k * g; i < (k + 1) * g; ++i)
        o.q[m * in + i] = s > 0 ? static_cast<int>(std::clamp(std::nearbyint(xs[i] / s), -8.0f, 7.0f)) : 0;
    }
    for (int64_t j = 0; j < rank; ++j)
      for (int64_t i = 0; i < in; ++i) o.h[m * rank + j] += double(xs[i]) * down[j][i].item<double>();
  }
  return o;
}

// The float64 simulation of the product of the same quantised values: Σ_i (a s)(q w) + b.
at::Tensor simulate(const Int4Activations& a, const GroupQuantized& w, const at::Tensor& bias) {
  const at::Tensor xq = a.dequantize().to(at::kDouble);
  const at::Tensor wq = w.dequantize(at::kDouble);
  at::Tensor y = at::matmul(xq, wq.t());
  if (bias.defined()) y = y + bias.to(at::kDouble);
  return y;
}

std::vector<W4A4Kernel> usable_kernels(int64_t g) {
  std::vector<W4A4Kernel> k = {W4A4Kernel::kPortable};
  if (detail::w4a4_avx2_compiled() && g % 64 == 0) k.push_back(W4A4Kernel::kAvx2);
  if (detail::w4a4_avxvnni_available() && g % 64 == 0) k.push_back(W4A4Kernel::kAvxVnni);
  return k;
}

TEST(W4A4, QuantiserMatchesTheDefinitionOnEveryKernel) {
  const int64_t rows = 5, in = 128, g = 64;
  const at::Tensor x = activations(rows, in, 1);
  const at::Tensor inv = at::rand({in}, at::detail::createCPUGenerator(2)) + 0.5f;
  const at::Tensor down = randn({3, in}, 3);
  const ActOracle o = oracle_activations(x, inv, down, g);
  for (W4A4Kernel k : {W4A4Kernel::kPortable, W4A4Kernel::kAvx2}) {
    if (k == W4A4Kernel::kAvx2 && !detail::w4a4_avx2_compiled()) continue;
    const Int4Activations a = quantize_activations_int4(x, g, inv, down, k);
    const auto v = a.values.accessor<int8_t, 2>();
    const auto s = a.scales.accessor<float, 2>();
    const auto t = a.group_sums.accessor<int32_t, 2>();
    const auto h = a.lora_act.accessor<float, 2>();
    for (int64_t m = 0; m < rows; ++m) {
      for (int64_t i = 0; i < in; ++i) ASSERT_EQ(v[m][i], o.q[m * in + i]) << "row " << m << " input " << i;
      for (int64_t kk = 0; kk < in / g; ++kk) {
        ASSERT_EQ(s[m][kk], o.s[m * (in / g) + kk]);
        int sum = 0;
        for (int64_t i = kk * g; i < (kk + 1) * g; ++i) sum += o.q[m * in + i];
        ASSERT_EQ(t[m][kk], sum);
      }
      for (int64_t j = 0; j < 3; ++j)
        EXPECT_NEAR(h[m][j], o.h[m * 3 + j], 1e-5 * (1 + std::abs(o.h[m * 3 + j])));
    }
    // Both signs reach the end of the range (s = absmax / 7, so −8 never occurs).
    EXPECT_EQ(a.values.min().item<int>(), -7);
    EXPECT_EQ(a.values.max().item<int>(), 7);
  }
}

TEST(W4A4, IntegerProductEqualsTheFloat64SimulationOnEveryKernel) {
  for (int64_t g : {64, 128, 32}) {
    const int64_t rows = 7, in = 256, out = 37;  // out not a multiple of the 4-feature block
    const at::Tensor x = activations(rows, in, 10 + g);
    const GroupQuantized w = quantize_groups(randn({out, in}, 20 + g), 4, g);
    const at::Tensor bias = randn({out}, 30);
    const Int4Activations a = quantize_activations_int4(x, g);
    const at::Tensor want = simulate(a, w, bias);
    for (W4A4Kernel k : usable_kernels(g)) {
      const at::Tensor y = w4a4_gemm(a, w, bias, k).to(at::kDouble);
      const double scale = want.abs().max().item<double>();
      EXPECT_LT((y - want).abs().max().item<double>(), 1e-5 * scale)
          << "group " << g << " kernel " << static_cast<int>(k);
    }
  }
}

TEST(W4A4, LinearRunsTheQuantisedProductAndKeepsTheShape) {
  const at::Tensor x = activations(6, 128, 40).reshape({2, 3, 128});
  const GroupQuantized w = quantize_groups(randn({16, 128}, 41), 4, 64);
  const at::Tensor y = w4a4_linear(x, w);
  ASSERT_EQ(y.sizes(), (at::IntArrayRef{2, 3, 16}));
  const at::Tensor xq = fake_quantize_activations_int4(x, 64).to(at::kDouble);
  const at::Tensor want = at::matmul(xq, w.dequantize(at::kDouble).t());
  EXPECT_LT((y.to(at::kDouble) - want).abs().max().item<double>(), 1e-5 * want.abs().max().item<double>());
  // And it is not the weight-only product: the activations really are rounded.
  const at::Tensor w4a16 = at::matmul(x.to(at::kDouble), w.dequantize(at::kDouble).t());
  EXPECT_GT((y.to(at::kDouble) - w4a16).abs().max().item<double>(), 1e-2 * want.abs().max().item<double>());
}

TEST(W4A4, BadInputsNameTheValue) {
  const GroupQuantized w8 = quantize_groups(randn({4, 64}, 50), 8, 64);
  const Int4Activations a = quantize_activations_int4(randn({2, 64}, 51), 64);
  EXPECT_THROW(w4a4_gemm(a, w8), InvalidArgument);
  EXPECT_NE(testing::error_of([&] {
              quantize_activations_int4(randn({2, 64}, 52), 48);
            }).find("group_size = 48"),
            std::string::npos);
  const GroupQuantized w32 = quantize_groups(randn({4, 64}, 53), 4, 32);
  EXPECT_THROW(w4a4_gemm(a, w32), InvalidArgument);
}

}  // namespace
}  // namespace lowrank::ops
