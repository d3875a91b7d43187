// ops/gemv: the portable kernels and their AVX2 twins against float64 products of the same values
// (float32 and bfloat16 weights, row ranges that start and end inside the 4-row blocks, lengths
// that leave tails after the 16- and 8-wide loops), and the bfloat16 conversions against c10's.
#include "lowrank/ops/gemv.h"

#include <gtest/gtest.h>

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>

#include <cmath>
#include <limits>

namespace lowrank::ops {
namespace {

struct Kernels {
  const char* name;
  decltype(&detail::gemv_rows_cpu) gemv;
  decltype(&detail::dot_cpu) dot;
  decltype(&detail::axpy_cpu) axpy;
};

std::vector<Kernels> kernels() {
  std::vector<Kernels> k{{"portable", detail::gemv_rows_cpu, detail::dot_cpu, detail::axpy_cpu}};
  if (gemv_uses_avx2()) k.push_back({"avx2", detail::gemv_rows_avx2, detail::dot_avx2, detail::axpy_avx2});
  return k;
}

TEST(GemvTest, RowRangesMatchFloat64Products) {
  at::Generator gen = at::detail::createCPUGenerator(3);
  for (at::ScalarType dtype : {at::kFloat, at::kBFloat16})
    for (int64_t in : {5, 16, 37, 64}) {
      const int64_t out = 23;
      const at::Tensor W = at::randn({out, in}, gen).to(dtype);
      const at::Tensor b = at::randn({out}, gen).to(dtype);
      const at::Tensor x = at::randn({in}, gen);
      const at::Tensor want = at::mv(W.to(at::kDouble), x.to(at::kDouble)).add(b.to(at::kDouble));
      const ElementType type = dtype == at::kFloat ? ElementType::kF32 : ElementType::kBF16;
      for (const Kernels& k : kernels()) {
        std::vector<float> y(static_cast<size_t>(out), std::numeric_limits<float>::quiet_NaN());
        // Two ranges that split a 4-row block, and the rest.
        k.gemv(type, W.const_data_ptr(), in, x.const_data_ptr<float>(), b.const_data_ptr(), 0, 6, y.data());
        k.gemv(type, W.const_data_ptr(), in, x.const_data_ptr<float>(), b.const_data_ptr(), 6, 19, y.data());
        k.gemv(type, W.const_data_ptr(), in, x.const_data_ptr<float>(), b.const_data_ptr(), 19, out,
               y.data());
        for (int64_t o = 0; o < out; ++o)
          EXPECT_NEAR(y[static_cast<size_t>(o)], want[o].item<double>(),
                      1e-4 * std::sqrt(static_cast<double>(in)))
              << k.name << " " << c10::toString(dtype) << " in " << in << " row " << o;
        // A range writes only its own rows.
        std::vector<float> z(static_cast<size_t>(out), -7.0f);
        k.gemv(type, W.const_data_ptr(), in, x.const_data_ptr<float>(), nullptr, 5, 9, z.data());
        EXPECT_EQ(z[4], -7.0f);
        EXPECT_EQ(z[9], -7.0f);
        EXPECT_NEAR(z[5], want[5].item<double>() - b[5].to(at::kDouble).item<double>(), 1e-4 * std::sqrt(in));
      }
    }
}

TEST(GemvTest, DotAndAxpyMatchFloat64) {
  at::Generator gen = at::detail::createCPUGenerator(4);
  for (at::ScalarType dtype : {at::kFloat, at::kBFloat16})
    for (int64_t n : {1, 8, 21, 48}) {
      const at::Tensor x = at::randn({n}, gen);
      const at::Tensor y = at::randn({n}, gen).to(dtype);
      const double want_dot = at::dot(x.to(at::kDouble), y.to(at::kDouble)).item<double>();
      const at::Tensor want_axpy = x.to(at::kDouble).add(y.to(at::kDouble), 0.5);
      const ElementType type = dtype == at::kFloat ? ElementType::kF32 : ElementType::kBF16;
      for (const Kernels& k : kernels()) {
        EXPECT_NEAR(k.dot(x.const_data_ptr<float>(), type, y.const_data_ptr(), n), want_dot, 1e-4 * n)
            << k.name;
        at::Tensor acc = x.clone();
        k.axpy(0.5f, type, y.const_data_ptr(), acc.mutable_data_ptr<float>(), n);
        EXPECT_LT((acc.to(at::kDouble) - want_axpy).abs().max().item<double>(), 1e-5) << k.name << " n " << n;
      }
    }
}

TEST(GemvTest, Bfloat16ConversionsMatchC10) {
  for (float f : {0.0f, -0.0f, 1.0f, 3.14159f, -2.5e-3f, 1.00390625f, 1.01171875f, 65504.0f, 1e-40f,
                  std::numeric_limits<float>::infinity()}) {
    const c10::BFloat16 want(f);
    EXPECT_EQ(float_to_bf16(f), want.x) << f;
    EXPECT_EQ(bf16_to_float(want.x), static_cast<float>(want)) << f;
  }
  EXPECT_TRUE(std::isnan(bf16_to_float(float_to_bf16(std::numeric_limits<float>::quiet_NaN()))));
}

}  // namespace
}  // namespace lowrank::ops
