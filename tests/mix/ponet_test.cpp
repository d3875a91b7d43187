// PoNet (mix/ponet.h): each pooling against a float64 loop (segment ids, segment max, local max,
// global aggregation, with and without padding), and the whole mixer against a loop over its slots.
#include "lowrank/mix/ponet.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>

#include "lowrank/core/error.h"
#include "lowrank/nn/config.h"
#include "tests/nn/reference.h"

namespace lowrank::mix {
namespace {

double max_diff(const at::Tensor& a, const at::Tensor& b) {
  return (a - b).abs().max().item<double>();
}

// The LRA rule written out: positions are dealt into chunks of ⌊T/segment_num⌋ + 1.
int64_t segment_of(int64_t i, int64_t T, int64_t segment_num) {
  return i / (T / segment_num + 1);
}

TEST(PoNetTest, SegmentIndexFollowsTheReferenceRule) {
  // T = 10, segment_num 4: chunks of 3 (0,0,0,1,1,1,2,2,2,3); T = 12, segment_num 4: chunks of 4,
  // so only 3 segments, as the reference code cuts them.
  EXPECT_TRUE(
      ponet_segment_index(10, 4, at::kCPU).equal(at::tensor({0, 0, 0, 1, 1, 1, 2, 2, 2, 3}, at::kLong)));
  EXPECT_TRUE(ponet_segment_index(12, 4, at::kCPU)
                  .equal(at::tensor({0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2}, at::kLong)));
}

TEST(PoNetTest, SegmentMaxMatchesALoop) {
  for (int64_t segment_num : {1, 3, 4, 64}) {
    const int64_t B = 2, T = 11, C = 5;
    const at::Tensor x = at::randn({B, T, C}, at::kDouble);
    const at::Tensor got = ponet_segment_max(x, segment_num);
    at::Tensor want = at::empty_like(x);
    for (int64_t b = 0; b < B; ++b)
      for (int64_t i = 0; i < T; ++i)
        for (int64_t c = 0; c < C; ++c) {
          double m = -INFINITY;
          for (int64_t j = 0; j < T; ++j)
            if (segment_of(j, T, segment_num) == segment_of(i, T, segment_num))
              m = std::max(m, x[b][j][c].item<double>());
          want[b][i][c] = m;
        }
    EXPECT_EQ(max_diff(got, want), 0.0) << "segment_num " << segment_num;
  }
}

TEST(PoNetTest, LocalMaxMatchesALoop) {
  const int64_t B = 2, T = 7, C = 3;
  const at::Tensor x = at::randn({B, T, C}, at::kDouble);
  at::Tensor want = at::empty_like(x);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t i = 0; i < T; ++i)
      for (int64_t c = 0; c < C; ++c) {
        double m = x[b][i][c].item<double>();
        if (i > 0) m = std::max(m, x[b][i - 1][c].item<double>());
        if (i + 1 < T) m = std::max(m, x[b][i + 1][c].item<double>());
        want[b][i][c] = m;
      }
  EXPECT_EQ(max_diff(ponet_local_max(x), want), 0.0);
}

// g′ per (b, head) by loops; padding excluded from the mean and scored −10000.
at::Tensor aggregation_loop(const at::Tensor& q, const at::Tensor& k, const at::Tensor& valid) {
  const int64_t B = q.size(0), n = q.size(1), T = q.size(2), D = q.size(3);
  at::Tensor out = at::zeros({B, n, D}, at::kDouble);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < n; ++h) {
      at::Tensor g = at::zeros({D}, at::kDouble);
      double count = 0;
      for (int64_t i = 0; i < T; ++i)
        if (!valid.defined() || valid[b][i].item<bool>()) {
          g += q[b][h][i];
          count += 1;
        }
      g /= count;
      std::vector<double> s(T);
      for (int64_t j = 0; j < T; ++j)
        s[j] = (!valid.defined() || valid[b][j].item<bool>())
                   ? (g * k[b][h][j]).sum().item<double>() / std::sqrt(D)
                   : -10000.0;
      const double m = *std::max_element(s.begin(), s.end());
      double z = 0;
      for (double& e : s) z += (e = std::exp(e - m));
      for (int64_t j = 0; j < T; ++j) out[b][h] += s[j] / z * k[b][h][j];
    }
  return out;
}

TEST(PoNetTest, GlobalAggregationMatchesALoopWithAndWithoutPadding) {
  const at::Tensor q = at::randn({2, 3, 6, 4}, at::kDouble), k = at::randn({2, 3, 6, 4}, at::kDouble);
  const at::Tensor valid =
      at::tensor({0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1}, at::kLong).to(at::kBool).view({2, 6});
  EXPECT_LE(max_diff(ponet_global_aggregation(q, k, {}), aggregation_loop(q, k, {})), 1e-12);
  EXPECT_LE(max_diff(ponet_global_aggregation(q, k, valid), aggregation_loop(q, k, valid)), 1e-12);
}

std::unique_ptr<PoNetMixer> build(const Json& options) {
  testing::TinySpec s;
  s.hidden = 8;
  s.heads = 2;
  s.kv_heads = 2;
  s.head_dim = 4;
  static const nn::ModelConfig c = nn::ModelConfig::from_json(testing::tiny_config(s), "tiny");
  at::manual_seed(9);
  nn::MixerSpec spec{c, 0, "model.layers.0.mixer", options, nullptr, nullptr};
  spec.projection = [](const std::string&, int64_t out, int64_t in, bool bias) {
    return std::make_shared<const nn::DenseOperator>(at::randn({out, in}, at::kDouble).mul(0.5),
                                                     bias ? at::randn({out}, at::kDouble) : at::Tensor());
  };
  return std::make_unique<PoNetMixer>(spec);
}

at::Tensor linear(const nn::LinearSlot& s, const at::Tensor& x) {
  return at::matmul(x, s.base().dense_weight().t()) + s.base().bias();
}

TEST(PoNetTest, MixerMatchesTheFusionWrittenOut) {
  const auto m = build({{"segment_num", 3}});
  EXPECT_FALSE(m->causal());
  const int64_t B = 2, T = 8, n = 2, D = 4;
  const at::Tensor x = at::randn({B, T, 8}, at::kDouble);
  const at::Tensor q = linear(m->dense_q, x), k = linear(m->dense_k, x), o = linear(m->dense_o, x);
  const at::Tensor xs = linear(m->dense_segment, x), xl = linear(m->dense_local, x);
  auto heads = [&](const at::Tensor& t) { return t.reshape({B, T, n, D}).transpose(1, 2); };
  const at::Tensor g = aggregation_loop(heads(q), heads(k), {});
  at::Tensor fused = at::empty({B, T, n * D}, at::kDouble);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t i = 0; i < T; ++i)
      for (int64_t c = 0; c < n * D; ++c) {
        double s = -INFINITY, l = -INFINITY;
        for (int64_t j = 0; j < T; ++j) {
          if (segment_of(j, T, 3) == segment_of(i, T, 3)) s = std::max(s, xs[b][j][c].item<double>());
          if (std::abs(j - i) <= 1) l = std::max(l, xl[b][j][c].item<double>());
        }
        fused[b][i][c] = (g[b][c / D][c % D].item<double>() + s) * o[b][i][c].item<double>() + l;
      }
  EXPECT_LE(max_diff(m->forward(x, {}), linear(m->dense, fused)), 1e-10);
}

TEST(PoNetTest, PaddedRowsGiveZeroBeforeTheOutputProjectionAndDoNotLeak) {
  const auto m = build(Json::object());
  EXPECT_EQ(m->segment_num(), 64);
  const at::Tensor x = at::randn({1, 6, 8}, at::kDouble);
  nn::MixerContext context;
  context.valid = at::tensor({0, 0, 1, 1, 1, 1}, at::kLong).to(at::kBool).view({1, 6});
  const at::Tensor y = m->forward(x, context);
  const at::Tensor out_bias = m->dense.base().bias();
  EXPECT_LE(max_diff(y[0][0], out_bias), 1e-12);
  // Changing a padded input leaves every real row as it was.
  at::Tensor x2 = x.clone();
  x2[0][1] += 3.0;
  EXPECT_LE(max_diff(m->forward(x2, context).narrow(1, 2, 4), y.narrow(1, 2, 4)), 1e-12);
}

TEST(PoNetTest, OptionsAreChecked) {
  EXPECT_THROW((void)build({{"segments", 4}}), InvalidArgument);
  EXPECT_THROW((void)build({{"segment_num", 0}}), InvalidArgument);
  try {
    (void)build({{"segment_num", "many"}});
    FAIL();
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("\"segment_num\""), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace lowrank::mix
