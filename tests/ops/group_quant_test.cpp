#include "lowrank/ops/group_quant.h"

#include <gtest/gtest.h>

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Parallel.h>
#include <c10/util/Half.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "lowrank/core/error.h"
#include "lowrank/ops/group_quant_internal.h"
#include "lowrank/ops/group_quant_word.h"
#include "tests/testing.h"

namespace lowrank::ops {
namespace {

using detail::GroupQuantKernel;

at::Tensor randn(std::vector<int64_t> shape, uint64_t seed, at::ScalarType dtype = at::kFloat) {
  at::Generator gen = at::detail::createCPUGenerator(seed);
  return at::randn(shape, gen, dtype);
}

// The independent oracle: plain loops over W (float32), one group at a time.
struct Oracle {
  std::vector<float> scales;  // [out, groups]
  std::vector<int> q;         // [out, in]
};

Oracle oracle_quantize(const at::Tensor& W, int bits, int64_t g) {
  const int64_t out = W.size(0), in = W.size(1), groups = in / g;
  const float qmax = bits == 4 ? 7.0f : 127.0f;
  const auto Wc = W.to(at::kFloat).contiguous();
  const float* w = Wc.const_data_ptr<float>();
  Oracle o;
  o.scales.resize(out * groups);
  o.q.resize(out * in);
  for (int64_t r = 0; r < out; ++r) {
    for (int64_t k = 0; k < groups; ++k) {
      float absmax = 0;
      for (int64_t j = 0; j < g; ++j) absmax = std::max(absmax, std::fabs(w[r * in + k * g + j]));
      const float s = static_cast<float>(c10::Half(absmax / qmax));  // rounded to float16
      o.scales[r * groups + k] = s;
      for (int64_t j = 0; j < g; ++j) {
        const int64_t i = r * in + k * g + j;
        // std::nearbyint rounds half to even in the default rounding mode, like torch.round.
        o.q[i] =
            s > 0 ? static_cast<int>(std::fmin(std::fmax(std::nearbyint(w[i] / s), -qmax - 1), qmax)) : 0;
      }
    }
  }
  return o;
}

at::Tensor oracle_dequantize(const Oracle& o, int64_t out, int64_t in, int64_t g) {
  auto W = at::empty({out, in}, at::kFloat);
  float* p = W.mutable_data_ptr<float>();
  for (int64_t r = 0; r < out; ++r)
    for (int64_t i = 0; i < in; ++i)
      p[r * in + i] = o.scales[r * (in / g) + i / g] * static_cast<float>(o.q[r * in + i]);
  return W;
}

// x Ŵᵀ + b in float64.
at::Tensor reference_linear(const at::Tensor& x, const GroupQuantized& w, const at::Tensor& bias) {
  auto y = at::matmul(x.to(at::kDouble), w.dequantize(at::kDouble).mT());
  return bias.defined() ? y + bias.to(at::kDouble) : y;
}

// max |y - ref| / max |ref|.
using testing::rel_max_error;

// A weight with very different group magnitudes, an all-zero group and a few exact ties.
at::Tensor test_weight(int64_t out, int64_t in, int64_t g, uint64_t seed) {
  auto W = randn({out, in}, seed) * at::logspace(-3, 1, in, 10.0, at::kFloat).unsqueeze(0);
  W.narrow(1, 0, g).select(0, 0).zero_();  // row 0, group 0 all zero
  return W;
}

TEST(GroupQuantTest, QuantizeMatchesPlainLoopOracle) {
  for (int bits : {4, 8}) {
    for (int64_t g : {64, 16, 2}) {
      SCOPED_TRACE(str("bits ", bits, " group_size ", g));
      const int64_t out = 7, in = 128;
      const auto W = test_weight(out, in, g, 3);
      const GroupQuantized q = quantize_groups(W, bits, g);
      EXPECT_EQ(q.bits, bits);
      EXPECT_EQ(q.group_size, g);
      EXPECT_EQ(q.out_features, out);
      EXPECT_EQ(q.in_features, in);
      EXPECT_EQ(q.scales.scalar_type(), at::kFloat);
      EXPECT_EQ(q.scales.sizes(), (at::IntArrayRef{out, in / g}));
      const Oracle o = oracle_quantize(W, bits, g);
      const auto expected_scales =
          at::from_blob(const_cast<float*>(o.scales.data()), {out, in / g}, at::kFloat);
      EXPECT_TRUE(at::equal(q.scales, expected_scales));
      // Scales are exactly representable in float16.
      EXPECT_TRUE(at::equal(q.scales, q.scales.to(at::kHalf).to(at::kFloat)));
      EXPECT_EQ(q.scales[0][0].item<float>(), 0.0f);  // the all-zero group
      const auto expected = oracle_dequantize(o, out, in, g);
      EXPECT_TRUE(at::equal(q.dequantize(), expected));
      EXPECT_TRUE(at::equal(fake_quantize_groups(W, bits, g), expected));
      EXPECT_TRUE(at::equal(q.dequantize(at::kDouble), expected.to(at::kDouble)));
      const int64_t packed_bytes = bits == 4 ? out * in / 2 : out * in;
      EXPECT_EQ(q.storage_bytes(), packed_bytes + 2 * out * (in / g));
    }
  }
}

TEST(GroupQuantTest, RoundsHalfToEvenAndClampsToTheCodeRange) {
  // absmax 7 -> s = 1 exactly: q = round(w) with ties to even.
  auto W = at::tensor({7.0f, 2.5f, -3.5f, 0.5f, -0.5f, 1.5f, -7.0f, 0.0f}, at::kFloat).view({1, 8});
  const auto Wq = fake_quantize_groups(W, 4, 8);
  const auto expected =
      at::tensor({7.0f, 2.0f, -4.0f, 0.0f, -0.0f, 2.0f, -7.0f, 0.0f}, at::kFloat).view({1, 8});
  EXPECT_TRUE(at::equal(Wq, expected)) << Wq;
}

TEST(GroupQuantTest, PackingLayoutByHand) {
  // Two groups of 8; group 0: absmax 7 -> s = 1, q = W; group 1: W = 2 q, s = 2.
  const std::vector<float> q0 = {1, 2, 3, -4, 5, -6, 7, 0}, q1 = {-7, 6, 0, 1, -1, 2, -2, 3};
  auto W = at::empty({1, 16}, at::kFloat);
  for (int i = 0; i < 8; ++i) {
    W[0][i] = q0[i];
    W[0][8 + i] = 2 * q1[i];
  }
  const GroupQuantized q = quantize_groups(W, 4, 8);
  ASSERT_EQ(q.packed.scalar_type(), at::kByte);
  ASSERT_EQ(q.packed.sizes(), (at::IntArrayRef{1, 8}));
  // Byte i of a group: (q_i + 8) | (q_{i+4} + 8) << 4.
  const std::vector<int> expected = {
      (1 + 8) | (5 + 8) << 4,   (2 + 8) | (-6 + 8) << 4, (3 + 8) | (7 + 8) << 4,  (-4 + 8) | (0 + 8) << 4,
      (-7 + 8) | (-1 + 8) << 4, (6 + 8) | (2 + 8) << 4,  (0 + 8) | (-2 + 8) << 4, (1 + 8) | (3 + 8) << 4};
  for (int i = 0; i < 8; ++i) EXPECT_EQ(q.packed[0][i].item<int>(), expected[i]) << "byte " << i;
  EXPECT_EQ(q.scales[0][0].item<float>(), 1.0f);
  EXPECT_EQ(q.scales[0][1].item<float>(), 2.0f);
  EXPECT_TRUE(at::equal(q.dequantize(), W));
}

TEST(GroupQuantTest, Bits8StoresPlainInt8) {
  auto W = at::tensor({127.0f, -127.0f, 3.0f, -64.0f}, at::kFloat).view({1, 4});
  const GroupQuantized q = quantize_groups(W, 8, 4);
  ASSERT_EQ(q.packed.scalar_type(), at::kChar);
  EXPECT_TRUE(at::equal(q.packed, at::tensor({127, -127, 3, -64}, at::kChar).view({1, 4})));
  EXPECT_EQ(q.scales[0][0].item<float>(), 1.0f);
  EXPECT_EQ(q.storage_bytes(), 4 + 2);
}

TEST(GroupQuantTest, FromTensorsRebuildsTheSameWeight) {
  for (int bits : {4, 8}) {
    const auto W = test_weight(5, 64, 32, 11);
    const GroupQuantized q = quantize_groups(W, bits, 32);
    const GroupQuantized r =
        group_quantized_from_tensors(q.packed.clone(), q.scales.to(at::kHalf), bits, 32, 5, 64);
    EXPECT_EQ(r.scales.scalar_type(), at::kFloat);
    EXPECT_TRUE(at::equal(r.dequantize(), q.dequantize()));
    EXPECT_EQ(r.storage_bytes(), q.storage_bytes());
    const GroupQuantized r32 = group_quantized_from_tensors(q.packed, q.scales, bits, 32, 5, 64);
    EXPECT_TRUE(at::equal(r32.dequantize(), q.dequantize()));
  }
  // Nibble 0 is the code -8 (reachable in stored files even if RTN rarely emits it).
  auto packed = at::zeros({1, 1}, at::kByte);
  const GroupQuantized m = group_quantized_from_tensors(packed, at::ones({1, 1}, at::kHalf), 4, 2, 1, 2);
  EXPECT_TRUE(at::equal(m.dequantize(), at::full({1, 2}, -8.0f)));
}

// Each kernel against the float64 x Ŵᵀ (+ b) for decode-sized and prefill-sized row counts, odd
// out_features, with and without bias, every group-size path of the AVX2 kernel.
TEST(GroupQuantTest, KernelsMatchDequantizedProduct) {
  const bool avx2 = [] {
    const GroupQuantized probe = quantize_groups(randn({1, 64}, 1), 4, 64);
    return detail::group_quant_avx2_usable(detail::view_of(probe));
  }();
  if (!avx2) std::printf("AVX2 kernel not usable on this machine: testing the portable kernel only\n");
  const int64_t out = 37;
  for (int bits : {4, 8}) {
    for (int64_t g : {64, 128, 32, 16, 8, 6}) {
      const int64_t in = bits == 4 && g == 6 ? 246 : 256 + (256 % g ? g - 256 % g : 0);
      const auto W = test_weight(out, in, g, 5);
      const GroupQuantized q = quantize_groups(W, bits, g);
      const auto bias = randn({out}, 6);
      for (int64_t rows : {1, 3, 5, 40}) {
        for (bool with_bias : {false, true}) {
          SCOPED_TRACE(str("bits ", bits, " g ", g, " rows ", rows, " bias ", with_bias));
          const auto x = randn({rows, in}, 7 + rows);
          const at::Tensor b = with_bias ? bias : at::Tensor();
          const auto ref = reference_linear(x, q, b);
          std::vector<GroupQuantKernel> kernels = {GroupQuantKernel::kPortable, GroupQuantKernel::kAuto};
          if (detail::group_quant_avx2_usable(detail::view_of(q))) kernels.push_back(GroupQuantKernel::kAvx2);
          for (GroupQuantKernel kernel : kernels) {
            auto y = at::full({rows, out}, NAN, at::kFloat);
            detail::group_quant_packed_matmul(detail::view_of(q), x.const_data_ptr<float>(), rows,
                                              with_bias ? b.const_data_ptr<float>() : nullptr,
                                              y.mutable_data_ptr<float>(), kernel);
            EXPECT_LT(rel_max_error(y, ref), 1e-5) << "kernel " << static_cast<int>(kernel);
          }
          const auto y = group_quant_linear(x, q, b);
          EXPECT_EQ(y.sizes(), (at::IntArrayRef{rows, out}));
          EXPECT_LT(rel_max_error(y, ref), 1e-5);
        }
      }
    }
  }
}

// The one-row product of the fused decode step (AVX-512 where the CPU has it, else AVX2 or
// portable) over output ranges that split the rows, against the float64 reference, for inputs with
// a large common mean too (the offset removal cancels).
TEST(GroupQuantTest, RowProductMatchesTheReferenceOnEveryRange) {
  if (!detail::group_quant_avx512_usable(detail::view_of(quantize_groups(test_weight(4, 64, 32, 1), 4, 32))))
    std::printf("AVX-512 kernel not usable on this machine: testing the AVX2 or portable kernel\n");
  const int64_t out = 29;
  for (int bits : {4, 8})
    for (int64_t g : {32, 64, 128, 16}) {
      const int64_t in = 4 * 128 + (bits == 4 && g == 16 ? 16 : 0);
      const GroupQuantized q = quantize_groups(test_weight(out, in, g, 9), bits, g);
      const at::Tensor bias = randn({out}, 10);
      for (double mean : {0.0, 50.0}) {
        SCOPED_TRACE(str("bits ", bits, " g ", g, " mean ", mean));
        const at::Tensor x = randn({1, in}, 11).add(mean);
        const at::Tensor ref = reference_linear(x, q, bias);
        at::Tensor y = at::full({1, out}, NAN, at::kFloat);
        for (auto [b, e] : {std::pair<int64_t, int64_t>{0, 7}, {7, 20}, {20, out}})
          group_quant_row_product(q, x.const_data_ptr<float>(), bias.const_data_ptr<float>(), b, e,
                                  y.mutable_data_ptr<float>());
        EXPECT_LT(rel_max_error(y, ref), 1e-5);
      }
    }
}

// The AVX2 kernel removes the q + 8 offset with per-group sums of x: inputs with a large common
// mean must not lose accuracy to that cancellation.
TEST(GroupQuantTest, KernelsAreAccurateForLargeMeanInputs) {
  const GroupQuantized q = quantize_groups(randn({16, 512}, 21), 4, 64);
  for (int64_t rows : {1, 2, 5}) {
    const auto x = randn({rows, 512}, 22) + 100.0;
    const auto ref = reference_linear(x, q, {});
    for (GroupQuantKernel kernel : {GroupQuantKernel::kPortable, GroupQuantKernel::kAuto}) {
      auto y = at::empty({rows, 16}, at::kFloat);
      detail::group_quant_packed_matmul(detail::view_of(q), x.const_data_ptr<float>(), rows, nullptr,
                                        y.mutable_data_ptr<float>(), kernel);
      EXPECT_LT(rel_max_error(y, ref), 1e-5) << "rows " << rows << " kernel " << static_cast<int>(kernel);
    }
  }
}

// The packed path splits output features over libtorch's threads (group_quant.cpp
// parallel_chunks): every feature is computed by the same code, so the result is bit-identical to
// a one-thread run.
TEST(GroupQuantTest, ThreadedRunMatchesOneThread) {
  const int saved = at::get_num_threads();
  const GroupQuantized q = quantize_groups(randn({4099, 256}, 71), 4, 64);
  const auto x = randn({3, 256}, 72);
  at::set_num_threads(1);
  const auto serial = group_quant_linear(x, q);
  at::set_num_threads(2);
  at::Tensor threaded;
  for (int i = 0; i < 5; ++i) {
    threaded = group_quant_linear(x, q);
    EXPECT_TRUE(at::equal(threaded, serial));
  }
  const auto W = q.dequantize();
  at::set_num_threads(1);
  EXPECT_TRUE(at::equal(q.dequantize(), W));
  at::set_num_threads(saved);
  EXPECT_LT(rel_max_error(threaded, reference_linear(x, q, {})), 1e-5);
}

TEST(GroupQuantTest, LinearKeepsLeadingDimsAndDtype) {
  const GroupQuantized q = quantize_groups(randn({9, 128}, 31), 4, 64);
  const auto bias = randn({9}, 32, at::kDouble);
  for (int64_t rows : {1, 40}) {
    const auto x = randn({2, rows, 128}, 33, at::kDouble);
    const auto y = group_quant_linear(x, q, bias);
    EXPECT_EQ(y.scalar_type(), at::kDouble);
    EXPECT_EQ(y.sizes(), (at::IntArrayRef{2, rows, 9}));
    const auto ref = reference_linear(x.to(at::kFloat), q, bias.to(at::kFloat));
    EXPECT_LT(rel_max_error(y, ref), 1e-5);
  }
  const auto x16 = randn({3, 128}, 34).to(at::kBFloat16);
  EXPECT_EQ(group_quant_linear(x16, q).scalar_type(), at::kBFloat16);
  EXPECT_EQ(group_quant_linear(at::empty({0, 128}), q).sizes(), (at::IntArrayRef{0, 9}));
}

TEST(GroupQuantTest, ForcingAnUnusableAvx2KernelThrowsUnsupported) {
  const GroupQuantized q = quantize_groups(randn({3, 8}, 41), 4, 2);  // g = 2: no AVX2 path
  ASSERT_FALSE(detail::group_quant_avx2_usable(detail::view_of(q)));
  const auto x = randn({1, 8}, 42);
  auto y = at::empty({1, 3});
  EXPECT_THROW(detail::group_quant_packed_matmul(detail::view_of(q), x.const_data_ptr<float>(), 1, nullptr,
                                                 y.mutable_data_ptr<float>(), GroupQuantKernel::kAvx2),
               Unsupported);
}

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

// The CUDA GEMV reads packed rows as 4-byte words through unpack_packed_word: rebuilding every row
// from its words (inputs, scale group, codes) gives dequantize() bit for bit and names each input
// exactly once, so the kernel's index arithmetic is checked on machines without a GPU too.
TEST(GroupQuantTest, PackedWordsOfTheCudaKernelRebuildTheWeights) {
  for (int bits : {4, 8}) {
    for (int64_t g : {8, 16, 64, 128}) {
      SCOPED_TRACE(str("bits ", bits, " g ", g));
      const int64_t out = 5, in = 256;
      const GroupQuantized q = quantize_groups(randn({out, in}, 61 + g), bits, g);
      const at::Tensor want = q.dequantize();
      at::Tensor rebuilt = at::full({out, in}, NAN);
      at::Tensor seen = at::zeros({out, in}, at::kInt);
      const auto* bytes = static_cast<const uint8_t*>(q.packed.const_data_ptr());
      const int64_t row_bytes = bits == 4 ? in / 2 : in;
      for (int64_t o = 0; o < out; ++o) {
        for (int64_t w = 0; w < row_bytes / 4; ++w) {
          uint32_t v = 0;
          std::memcpy(&v, bytes + o * row_bytes + 4 * w, 4);  // little-endian, as the GPU reads it
          const detail::PackedWord p = detail::unpack_packed_word(v, w, bits, g);
          ASSERT_EQ(p.runs, bits == 4 ? 2 : 1);
          for (int run = 0; run < p.runs; ++run) {
            for (int t = 0; t < 4; ++t) {
              const int64_t i = p.first[run] + t;
              ASSERT_TRUE(i >= 0 && i < in) << "word " << w;
              ASSERT_EQ(i / g, p.group) << "word " << w;
              rebuilt[o][i] = q.scales[o][p.group].item<float>() * p.q[run][t];
              seen[o][i] += 1;
            }
          }
        }
      }
      EXPECT_TRUE(seen.eq(1).all().item<bool>());
      EXPECT_TRUE(at::equal(rebuilt, want));
    }
  }
}

TEST(GroupQuantTest, RejectsBadArguments) {
  const auto W = randn({4, 64}, 51);
  EXPECT_THROW(quantize_groups(W, 3), InvalidArgument);
  EXPECT_TRUE(contains(testing::error_of([&] { quantize_groups(W, 3); }), "bits = 3"));
  EXPECT_TRUE(contains(testing::error_of([&] { quantize_groups(W, 4, 7); }), "group_size = 7"));
  EXPECT_TRUE(contains(testing::error_of([&] { quantize_groups(W, 4, 0); }), "group_size = 0"));
  EXPECT_TRUE(contains(testing::error_of([&] {
                         quantize_groups(randn({4, 96}, 52), 4, 64);
                       }),
                       "in_features = 96"));
  EXPECT_TRUE(contains(testing::error_of([&] { quantize_groups(randn({64}, 53), 4); }), "2-D"));
  auto bad = W.clone();
  bad[1][3] = NAN;
  EXPECT_TRUE(contains(testing::error_of([&] { quantize_groups(bad, 4); }), "non-finite"));
  bad[1][3] = INFINITY;
  EXPECT_THROW(quantize_groups(bad, 8), InvalidArgument);
  EXPECT_THROW(quantize_groups(W * 1e6, 4), InvalidArgument);  // scale overflows float16

  const GroupQuantized q = quantize_groups(W, 4);
  EXPECT_THROW(group_quant_linear(randn({2, 63}, 54), q), InvalidArgument);
  EXPECT_TRUE(contains(testing::error_of([&] { group_quant_linear(randn({2, 63}, 54), q); }), "[..., 64]"));
  EXPECT_THROW(group_quant_linear(randn({2, 64}, 55), q, randn({5}, 56)), InvalidArgument);
  EXPECT_THROW(group_quant_linear(at::ones({2, 64}, at::kInt), q), InvalidArgument);
  EXPECT_THROW(GroupQuantized().dequantize(), InvalidArgument);
  GroupQuantized no_tensors;  // a shape but no packed weights: refused before their device is read
  no_tensors.out_features = 4;
  no_tensors.in_features = 64;
  EXPECT_TRUE(contains(testing::error_of([&] {
                         group_quant_linear(randn({1, 64}, 57), no_tensors);
                       }),
                       "not a consistent 4x64 GroupQuantized"));
}

TEST(GroupQuantTest, FromTensorsRejectsCorruptTensors) {
  const GroupQuantized q = quantize_groups(randn({4, 64}, 61), 4, 32);
  const auto half = q.scales.to(at::kHalf);
  auto msg =
      testing::error_of([&] { group_quantized_from_tensors(q.packed.to(at::kChar), half, 4, 32, 4, 64); });
  EXPECT_TRUE(contains(msg, "packed has dtype")) << msg;
  EXPECT_THROW(group_quantized_from_tensors(q.packed.to(at::kChar), half, 4, 32, 4, 64), Corruption);
  msg =
      testing::error_of([&] { group_quantized_from_tensors(q.packed.narrow(1, 0, 16), half, 4, 32, 4, 64); });
  EXPECT_TRUE(contains(msg, "packed has shape")) << msg;
  msg =
      testing::error_of([&] { group_quantized_from_tensors(q.packed, half.narrow(1, 0, 1), 4, 32, 4, 64); });
  EXPECT_TRUE(contains(msg, "scales has shape")) << msg;
  EXPECT_THROW(group_quantized_from_tensors(q.packed, half.to(at::kDouble), 4, 32, 4, 64), Corruption);
  EXPECT_THROW(group_quantized_from_tensors(q.packed, -q.scales, 4, 32, 4, 64), Corruption);
  msg = testing::error_of([&] { group_quantized_from_tensors(q.packed, q.scales + 1e-4f, 4, 32, 4, 64); });
  EXPECT_TRUE(contains(msg, "float16")) << msg;
  EXPECT_THROW(group_quantized_from_tensors(q.packed, half, 5, 32, 4, 64), InvalidArgument);
  EXPECT_THROW(group_quantized_from_tensors(q.packed, half, 4, 48, 4, 64), InvalidArgument);
  EXPECT_THROW(group_quantized_from_tensors(q.packed, half, 4, 32, 0, 64), InvalidArgument);
}

}  // namespace
}  // namespace lowrank::ops
