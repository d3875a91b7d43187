// The neighborhood mixer (mix/neighborhood.h): forward against a float64 loop over its own slots
// and bias table (1-D causal with dilation, 2-D on the grid); step() equals forward's rows with a
// dilated window shorter than the sequence; a padded batch gives each row its unpadded output;
// options and grids are checked, naming what is wrong.
#include "lowrank/mix/neighborhood.h"

#include <gtest/gtest.h>

#include <cmath>

#include "lowrank/core/error.h"
#include "lowrank/mix/registry.h"
#include "lowrank/nn/config.h"
#include "tests/nn/reference.h"

namespace lowrank::mix {
namespace {

nn::ModelConfig config() {
  testing::TinySpec s;
  s.hidden = 10;
  s.heads = 2;
  s.kv_heads = 2;
  s.head_dim = 4;  // q_size 8 != hidden: the projections' shapes are exercised
  return nn::ModelConfig::from_json(testing::tiny_config(s), "tiny");
}

std::unique_ptr<NeighborhoodMixer> build(const Json& options) {
  static const nn::ModelConfig c = config();
  at::manual_seed(5);
  nn::MixerSpec spec{c, 0, "model.layers.0.mixer", options, nullptr, nullptr};
  spec.projection = [](const std::string&, int64_t out, int64_t in, bool) {
    return std::make_shared<const nn::DenseOperator>(at::randn({out, in}, at::kDouble).mul(0.5),
                                                     at::Tensor());
  };
  spec.tensor = [](const std::string&, std::vector<int64_t> shape, nn::ParamInit, const at::Tensor&) {
    return at::randn(shape, at::kDouble);
  };
  return std::make_unique<NeighborhoodMixer>(spec);
}

at::Tensor weight(const nn::LinearSlot& s) {
  return s.base().dense_weight();
}

// Float64 loop: positions (y, x) on an H × W grid (a sequence: H = 1), windows from the definition.
at::Tensor loop_reference(const NeighborhoodMixer& m, const at::Tensor& x, int64_t H, int64_t W) {
  const int64_t n = 2, D = 4, T = H * W;
  const at::Tensor q = at::matmul(x, weight(m.q_proj).t()), k = at::matmul(x, weight(m.k_proj).t()),
                   v = at::matmul(x, weight(m.v_proj).t());
  const std::vector<ops::NeighborhoodAxis> axes =
      m.axes().size() == 2 ? m.axes() : std::vector<ops::NeighborhoodAxis>{{1, 1, false}, m.axes()[0]};
  auto keys = [](int64_t i, int64_t L, const ops::NeighborhoodAxis& a) {
    std::vector<int64_t> out;
    if (a.causal) {
      for (int64_t t = 0; t < a.kernel && i - t * a.dilation >= 0; ++t) out.push_back(i - t * a.dilation);
      return out;
    }
    const int64_t p = i % a.dilation, members = (L - p + a.dilation - 1) / a.dilation;
    const int64_t start = std::clamp<int64_t>(i / a.dilation - a.kernel / 2, 0, members - a.kernel);
    for (int64_t t = 0; t < a.kernel; ++t) out.push_back(p + a.dilation * (start + t));
    return out;
  };
  at::Tensor o = at::zeros({x.size(0), T, n * D}, at::kDouble);
  for (int64_t b = 0; b < x.size(0); ++b)
    for (int64_t h = 0; h < n; ++h)
      for (int64_t y = 0; y < H; ++y)
        for (int64_t c = 0; c < W; ++c) {
          const int64_t i = y * W + c;
          std::vector<double> s;
          std::vector<int64_t> js;
          for (int64_t ky : keys(y, H, axes[0]))
            for (int64_t kx : keys(c, W, axes[1])) {
              const int64_t j = ky * W + kx;
              double e =
                  (q[b][i].narrow(0, h * D, D) * k[b][j].narrow(0, h * D, D)).sum().item<double>() / 2.0;
              const int64_t by = (ky - y) / axes[0].dilation + axes[0].kernel - 1;
              const int64_t bx = (kx - c) / axes[1].dilation + axes[1].kernel - 1;
              e += m.axes().size() == 2 ? m.rpb()[h][by][bx].item<double>() : m.rpb()[h][bx].item<double>();
              s.push_back(e);
              js.push_back(j);
            }
          double z = 0;
          for (double e : s) z += std::exp(e);
          for (size_t t = 0; t < s.size(); ++t)
            o[b][i].narrow(0, h * D, D) += std::exp(s[t]) / z * v[b][js[t]].narrow(0, h * D, D);
        }
  return at::matmul(o, weight(m.o_proj).t());
}

double max_diff(const at::Tensor& a, const at::Tensor& b) {
  return (a - b).abs().max().item<double>();
}

TEST(NeighborhoodMixerTest, SequenceForwardMatchesAFloat64Loop) {
  for (bool causal : {true, false}) {
    const auto m = build({{"kernel_size", 3}, {"dilation", 2}, {"causal", causal}});
    EXPECT_EQ(m->causal(), causal);
    EXPECT_EQ(m->has_decode_state(), causal);
    const at::Tensor x = at::randn({2, 9, 10}, at::kDouble);
    EXPECT_LE(max_diff(m->forward(x, {}), loop_reference(*m, x, 1, 9)), 1e-10) << "causal " << causal;
  }
}

TEST(NeighborhoodMixerTest, GridForwardMatchesAFloat64LoopAndNeedsTheGrid) {
  const auto m =
      build({{"dims", 2}, {"kernel_size", Json::array({3, 5})}, {"dilation", Json::array({2, 1})}});
  EXPECT_FALSE(m->causal());
  EXPECT_EQ(m->rpb().sizes(), (at::IntArrayRef{2, 5, 9}));
  const at::Tensor x = at::randn({1, 42, 10}, at::kDouble);
  nn::MixerContext context;
  context.grid = nn::Grid2d{6, 7};
  EXPECT_LE(max_diff(m->forward(x, context), loop_reference(*m, x, 6, 7)), 1e-10);
  EXPECT_THROW((void)m->forward(x, {}), InvalidArgument);  // no grid
  context.grid = nn::Grid2d{3, 14};                        // 3 rows < 3 × 2
  try {
    (void)m->forward(x, context);
    FAIL() << "a grid too small for the window was accepted";
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("grid height 3"), std::string::npos) << e.what();
  }
}

TEST(NeighborhoodMixerTest, StepEqualsForwardWithADilatedWindowShorterThanTheSequence) {
  const auto m = build({{"kernel_size", 3}, {"dilation", 2}});  // causal by default in 1-D
  const at::Tensor x = at::randn({2, 11, 10}, at::kDouble);
  const at::Tensor full = m->forward(x, {});
  const auto state = m->new_state(2);
  for (int64_t t = 0; t < 11; ++t)
    EXPECT_LE(max_diff(m->step(x.narrow(1, t, 1), *state, {}), full.narrow(1, t, 1)), 1e-12)
        << "position " << t;
}

TEST(NeighborhoodMixerTest, APaddedBatchGivesEachRowWhatItGetsAlone) {
  for (bool causal : {false, true}) {
    const auto m = build({{"kernel_size", 3}, {"dilation", 2}, {"causal", causal}});
    // Row 0: 9 real tokens then 3 padding; row 1: 2 padding, then 10 real tokens.
    const at::Tensor x = at::randn({2, 12, 10}, at::kDouble);
    at::Tensor valid = at::ones({2, 12}, at::kBool);
    valid[0].slice(0, 9).fill_(false);
    valid[1].slice(0, 0, 2).fill_(false);
    nn::MixerContext context;
    context.valid = valid;
    const at::Tensor y = m->forward(x, context);
    const at::Tensor row0 = loop_reference(*m, x.slice(0, 0, 1).slice(1, 0, 9), 1, 9);
    const at::Tensor row1 = loop_reference(*m, x.slice(0, 1, 2).slice(1, 2, 12), 1, 10);
    EXPECT_LE(max_diff(y.slice(0, 0, 1).slice(1, 0, 9), row0), 1e-10) << "causal " << causal;
    EXPECT_LE(max_diff(y.slice(0, 1, 2).slice(1, 2, 12), row1), 1e-10) << "causal " << causal;
    // Padding positions carry nothing (o_proj has no bias here).
    EXPECT_EQ(y[0].slice(0, 9).abs().max().item<double>(), 0.0);
    EXPECT_EQ(y[1].slice(0, 0, 2).abs().max().item<double>(), 0.0);
  }
  // Real tokens in two runs, and padding on a 2-D grid, are refused.
  const auto m = build({{"kernel_size", 3}, {"causal", false}});
  at::Tensor holes = at::ones({1, 12}, at::kBool);
  holes[0][5] = false;
  nn::MixerContext context;
  context.valid = holes;
  try {
    (void)m->forward(at::randn({1, 12, 10}, at::kDouble), context);
    FAIL() << "a row with a hole was accepted";
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("contiguous"), std::string::npos) << e.what();
  }
  const auto grid = build({{"dims", 2}, {"kernel_size", 3}});
  context.valid = at::ones({1, 9}, at::kBool);
  context.valid[0][8] = false;
  context.grid = nn::Grid2d{3, 3};
  EXPECT_THROW((void)grid->forward(at::randn({1, 9, 10}, at::kDouble), context), Unsupported);
}

TEST(NeighborhoodMixerTest, OptionsAreCheckedNamingTheOption) {
  auto message = [](const Json& options) -> std::string {
    try {
      (void)build(options);
    } catch (const InvalidArgument& e) {
      return e.what();
    }
    return "";
  };
  std::string m = message({{"kernel", 3}});
  EXPECT_NE(m.find("unknown option \"kernel\""), std::string::npos) << m;
  EXPECT_NE(m.find("kernel_size"), std::string::npos) << m;
  EXPECT_NE(message({{"kernel_size", 4}}).find("odd"), std::string::npos);
  EXPECT_NE(message({{"dims", 3}}).find("\"dims\""), std::string::npos);
  EXPECT_NE(message({{"kernel_size", Json::array({3, 3})}}).find("2 values for 1 axes"), std::string::npos);
  EXPECT_NE(message({{"causal", "yes"}}).find("wrong type"), std::string::npos);
  // A non-causal window longer than the sequence is refused at forward, naming the length.
  const auto mixer = build({{"kernel_size", 5}, {"dilation", 2}, {"causal", false}});
  try {
    (void)mixer->forward(at::randn({1, 9, 10}, at::kDouble), {});
    FAIL() << "kernel × dilation > length was accepted";
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("exceeds the sequence length 9"), std::string::npos) << e.what();
  }
}

TEST(NeighborhoodMixerTest, IsRegisteredWithItsOptions) {
  bool found = false;
  for (const MethodInfo& info : registry().list())
    if (info.name == "neighborhood") found = info.options.size() == 5;
  EXPECT_TRUE(found);
}

}  // namespace
}  // namespace lowrank::mix
