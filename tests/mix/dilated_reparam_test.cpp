// Dilated reparam (mix/dilated_reparam.h): the dilated-to-dense conversion against libtorch's
// dilated conv2d, the deploy form against the training form with BatchNorm in eval mode, the
// reference table and its error; BatchNorm's training / eval semantics (nn/batch_norm.h) against
// a float64 hand computation.
#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include <map>

#include "lowrank/core/error.h"
#include "lowrank/mix/dilated_reparam.h"
#include "lowrank/nn/batch_norm.h"
#include "tests/mix/mixer_test_util.h"
#include "tests/testing.h"

namespace lowrank::mix {
namespace {

using ::lowrank::testing::error_of;
using ::lowrank::testing::max_abs_diff;

// Fresh tensors of the source's shapes: N(0, 0.3) weights, BN affine and statistics away from the
// identity, so that every branch's fold shows in the merged kernel.
nn::ConvTensorSource random_source(at::ScalarType dtype, uint64_t seed) {
  auto gen = std::make_shared<at::Generator>(at::detail::createCPUGenerator(seed));
  return [gen, dtype](const std::string& name, std::vector<int64_t> shape, nn::ParamInit, const at::Tensor&) {
    at::Tensor t = at::empty(shape, at::TensorOptions().dtype(at::kDouble));
    if (name.ends_with("running_var")) {
      t.uniform_(0.5, 1.5, *gen);
    } else if (name.ends_with("norm.weight")) {
      t.uniform_(0.5, 1.5, *gen);
    } else {
      t.normal_(0.0, 0.3, *gen);
    }
    return t.to(dtype);
  };
}

TEST(DilatedReparamTest, DilatedToDenseEqualsDilatedConv) {
  at::manual_seed(3);
  const at::Tensor x = at::randn({2, 4, 17, 15}, at::kDouble);
  for (int64_t k : {3, 5, 7}) {
    const at::Tensor kernel = at::randn({4, 1, k, k}, at::kDouble);
    for (int64_t r = 1; r <= 5; ++r) {
      const at::Tensor dense = dilated_to_dense(kernel, r);
      const int64_t K = r * (k - 1) + 1;
      ASSERT_EQ(dense.sizes(), at::IntArrayRef({4, 1, K, K}));
      const int64_t pad = K / 2;
      const at::Tensor dilated_out = at::conv2d(x, kernel, {}, {1, 1}, {pad, pad}, {r, r}, 4);
      const at::Tensor dense_out = at::conv2d(x, dense, {}, {1, 1}, {pad, pad}, {1, 1}, 4);
      EXPECT_LE(max_abs_diff(dense_out, dilated_out), 1e-12) << "k " << k << " r " << r;
      // The closed form: tap (i, j) at (r·i, r·j), zeros elsewhere.
      EXPECT_EQ(dense.ne(0).sum().item<int64_t>(), 4 * k * k) << "k " << k << " r " << r;
    }
  }
}

TEST(DilatedReparamTest, TableIsTheReferenceTable) {
  const std::vector<std::pair<int64_t, std::vector<std::pair<int64_t, int64_t>>>> expected{
      {5, {{3, 1}, {3, 2}}},
      {7, {{5, 1}, {3, 2}, {3, 3}}},
      {9, {{5, 1}, {5, 2}, {3, 3}, {3, 4}}},
      {11, {{5, 1}, {5, 2}, {3, 3}, {3, 4}, {3, 5}}},
      {13, {{5, 1}, {7, 2}, {3, 3}, {3, 4}, {3, 5}}},
      {15, {{5, 1}, {7, 2}, {3, 3}, {3, 5}, {3, 7}}},
      {17, {{5, 1}, {9, 2}, {3, 4}, {3, 5}, {3, 7}}}};
  for (const auto& [K, branches] : expected) {
    const std::vector<DilatedBranchSpec> got = dilated_reparam_branches(K);
    ASSERT_EQ(got.size(), branches.size()) << K;
    for (size_t i = 0; i < got.size(); ++i) {
      EXPECT_EQ(got[i].kernel_size, branches[i].first) << K;
      EXPECT_EQ(got[i].dilation, branches[i].second) << K;
      // Every branch fits inside the large kernel.
      EXPECT_LE(got[i].dilation * (got[i].kernel_size - 1) + 1, K) << K;
    }
  }
}

TEST(DilatedReparamTest, UnknownKernelSizeListsTheSupportedOnes) {
  for (int64_t K : {3, 19, 8}) {
    const std::string e = error_of([&] { (void)dilated_reparam_branches(K); });
    EXPECT_NE(e.find(std::to_string(K)), std::string::npos) << e;
    EXPECT_NE(e.find("supported: 5, 7, 9, 11, 13, 15, 17"), std::string::npos) << e;
  }
}

TEST(DilatedReparamTest, DeployFormEqualsTrainingFormInEvalMode) {
  for (const int64_t K : dilated_reparam_kernel_sizes()) {
    for (const at::ScalarType dtype : {at::kDouble, at::kFloat}) {
      const DilatedReparam training = DilatedReparam::make("m", 3, K, false, random_source(dtype, 7 + K));
      const DilatedReparam deployed = training.deploy();
      ASSERT_TRUE(deployed.deployed);
      ASSERT_TRUE(deployed.branches.empty());
      at::manual_seed(K);
      const at::Tensor x = at::randn({2, 3, 19, 12}, dtype);
      const double tol = dtype == at::kDouble ? 1e-11 : 1e-5;
      EXPECT_LE(max_abs_diff(deployed.forward(x, false), training.forward(x, false)), tol) << "K " << K;
    }
  }
}

TEST(DilatedReparamTest, TrainingFormIsTheSumOfItsBranches) {
  // K = 7: y = BN_0(DW_7 x) + BN(DW_{5,1} x) + BN(DW_{3,2} x) + BN(DW_{3,3} x), each written out.
  const DilatedReparam m = DilatedReparam::make("m", 2, 7, false, random_source(at::kDouble, 1));
  at::manual_seed(2);
  const at::Tensor x = at::randn({1, 2, 9, 9}, at::kDouble);
  auto bn = [](const nn::BatchNorm& n, const at::Tensor& y) {
    auto v = [](const at::Tensor& t) { return t.view({1, -1, 1, 1}); };
    return (y - v(n.running_mean)) / (v(n.running_var) + n.eps).sqrt() * v(n.weight) + v(n.bias);
  };
  at::Tensor expected = bn(m.lk_norm, at::conv2d(x, m.lk_weight, {}, {1, 1}, {3, 3}, {1, 1}, 2));
  const std::vector<std::pair<int64_t, int64_t>> kr{{5, 1}, {3, 2}, {3, 3}};
  ASSERT_EQ(m.branches.size(), kr.size());
  for (size_t i = 0; i < kr.size(); ++i) {
    const auto [k, r] = kr[i];
    const int64_t p = (r * (k - 1) + 1) / 2;
    expected =
        expected + bn(m.branches[i].norm, at::conv2d(x, m.branches[i].weight, {}, {1, 1}, {p, p}, {r, r}, 2));
  }
  EXPECT_LE(max_abs_diff(m.forward(x, false), expected), 1e-12);
}

TEST(BatchNormTest, TrainingModeUsesBatchStatisticsAndMovesTheRunningOnes) {
  const nn::BatchNorm bn = nn::BatchNorm::make("n", 3, random_source(at::kDouble, 4));
  const at::Tensor mean0 = bn.running_mean.clone(), var0 = bn.running_var.clone();
  at::manual_seed(5);
  const at::Tensor x = at::randn({4, 3, 5, 6}, at::kDouble) * 2 + 1;
  const at::Tensor y = bn.forward(x, /*training=*/true);
  // Hand computation over (B, H, W): n = 120 values per channel.
  const double n = 4 * 5 * 6;
  const at::Tensor mean = x.sum({0, 2, 3}) / n;
  const at::Tensor centred = x - mean.view({1, -1, 1, 1});
  const at::Tensor var_biased = (centred * centred).sum({0, 2, 3}) / n;
  const at::Tensor expected =
      centred / (var_biased + 1e-5).sqrt().view({1, -1, 1, 1}) * bn.weight.view({1, -1, 1, 1}) +
      bn.bias.view({1, -1, 1, 1});
  EXPECT_LE(max_abs_diff(y, expected), 1e-12);
  EXPECT_LE(max_abs_diff(bn.running_mean, 0.9 * mean0 + 0.1 * mean), 1e-14);
  EXPECT_LE(max_abs_diff(bn.running_var, 0.9 * var0 + 0.1 * var_biased * n / (n - 1)), 1e-14);
  // Eval mode reads the running statistics and leaves them alone.
  const at::Tensor mean1 = bn.running_mean.clone();
  const at::Tensor z = bn.forward(x, /*training=*/false);
  const auto [scale, shift] = bn.eval_affine();
  EXPECT_LE(max_abs_diff(z, x * scale.view({1, -1, 1, 1}) + shift.view({1, -1, 1, 1})), 1e-12);
  EXPECT_TRUE(at::equal(bn.running_mean, mean1));
}

// The 1-D token mixer: its branch sum (forward) against a conv with the merged kernel and a
// float64 loop over the taps, causal (right-aligned kernel: y_t reads x_{t-K+1..t}) and centred;
// options refused by name.
TEST(DilatedReparam1dTest, ForwardEqualsTheMergedKernelTapByTap) {
  for (const bool causal : {true, false}) {
    const nn::ModelConfig config =
        testing::mixer_config("dilated_reparam_1d", 4, 1, Json{{"kernel_size", 7}, {"causal", causal}});
    std::map<std::string, at::Tensor> given;
    at::manual_seed(8);
    for (const char* branch : {"lk", "dil_k5_1", "dil_k3_2", "dil_k3_3"}) {
      const std::string p = std::string("model.layers.0.mixer.") + branch;
      given[p + ".scale"] = at::rand({4}, at::kDouble) + 0.5;
      given[p + ".shift"] = at::randn({4}, at::kDouble) * 0.1;
    }
    const auto built = testing::build_mixer("dilated_reparam_1d", config, given);
    const auto& mixer = dynamic_cast<const DilatedReparam1dMixer&>(*built);
    EXPECT_EQ(mixer.causal(), causal);
    EXPECT_EQ(mixer.tensors().size(), 12u);
    const auto [w, b] = mixer.merged();  // [H, 7], [H]
    const at::Tensor x = at::randn({2, 10, 4}, at::kDouble);
    const at::Tensor y = mixer.forward(x, nn::MixerContext{});
    for (int64_t n = 0; n < 2; ++n)
      for (int64_t t = 0; t < 10; ++t)
        for (int64_t h = 0; h < 4; ++h) {
          double want = b[h].item<double>();
          for (int64_t m = 0; m < 7; ++m) {
            const int64_t src = causal ? t - 6 + m : t - 3 + m;
            if (src >= 0 && src < 10) want += w[h][m].item<double>() * x[n][src][h].item<double>();
          }
          EXPECT_NEAR(y[n][t][h].item<double>(), want, 1e-12) << causal << " " << t << " " << h;
        }
  }
  const std::string e = error_of([] {
    (void)testing::build_mixer("dilated_reparam_1d",
                               testing::mixer_config("dilated_reparam_1d", 4, 1, Json{{"kernel_size", 12}}));
  });
  EXPECT_NE(e.find("supported: 5, 7, 9, 11, 13, 15, 17"), std::string::npos) << e;
  const std::string f = error_of([] {
    (void)testing::build_mixer("dilated_reparam_1d",
                               testing::mixer_config("dilated_reparam_1d", 4, 1, Json{{"dilation", 2}}));
  });
  EXPECT_NE(f.find("\"dilation\""), std::string::npos) << f;
}

}  // namespace
}  // namespace lowrank::mix
