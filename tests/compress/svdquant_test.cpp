#include "lowrank/compress/svdquant.h"

#include <gtest/gtest.h>

#include <ATen/CPUGeneratorImpl.h>

#include <cmath>
#include <cstdio>
#include <map>
#include <string>
#include <vector>

#include "lowrank/compress/calibration.h"
#include "lowrank/compress/format.h"
#include "lowrank/compress/methods.h"
#include "lowrank/compress/operators.h"
#include "lowrank/core/error.h"
#include "lowrank/core/json.h"
#include "lowrank/core/safetensors.h"
#include "lowrank/nn/shared_input.h"
#include "lowrank/ops/group_quant.h"
#include "tests/compress/compress_testing.h"
#include "tests/testing.h"

namespace lowrank::compress {
namespace {

at::Tensor randn(std::vector<int64_t> shape, uint64_t seed) {
  at::Generator gen = at::detail::createCPUGenerator(seed);
  return at::randn(shape, gen, at::kDouble);
}

// A layer with a few outlier input channels in both the weight and the activations (the setting
// SVDQuant targets): W [out, in] float32, X [in, tokens] float64.
struct OutlierLayer {
  at::Tensor W, X, H, x_absmax;
};

OutlierLayer outlier_layer(int64_t out, int64_t in, int64_t tokens, uint64_t seed) {
  OutlierLayer l;
  auto w_scale = at::ones({in}, at::kDouble);
  auto x_scale = at::ones({in}, at::kDouble);
  for (int64_t j : {3, 17, 40, 77}) {
    if (j >= in) continue;
    w_scale[j] = 8.0;
    x_scale[j] = 30.0;
  }
  l.W = (randn({out, in}, seed) * 0.02 * w_scale.unsqueeze(0)).to(at::kFloat);
  l.X = randn({in, tokens}, seed + 1) * x_scale.unsqueeze(1);
  l.H = at::matmul(l.X, l.X.mT());
  l.x_absmax = l.X.abs().amax(1);
  return l;
}

// ||(W − W_eff) X||_F² / ||W X||_F² with the explicit inputs: the Gram-free oracle.
double direct_output_error(const at::Tensor& W, const at::Tensor& W_eff, const at::Tensor& X) {
  const auto Wd = W.to(at::kDouble);
  return at::matmul(Wd - W_eff.to(at::kDouble), X).pow(2).sum().item<double>() /
         at::matmul(Wd, X).pow(2).sum().item<double>();
}

// (L1 L2 + dequant(R)) / λ, rebuilt from the result's stored tensors.
at::Tensor rebuild(const SvdQuantResult& r) {
  auto low_rank = at::matmul(r.lora_up.to(at::kDouble), r.lora_down.to(at::kDouble));
  return (low_rank + r.residual.dequantize(at::kDouble)) / r.smooth.to(at::kDouble).unsqueeze(0);
}

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

TEST(SvdQuantTest, RelativeOutputErrorMatchesExplicitInputs) {
  const auto W = randn({12, 32}, 1);
  const auto W_eff = W + 0.05 * randn({12, 32}, 2);
  const auto X = randn({32, 50}, 3) * at::logspace(-1, 1, 32, 10.0, at::kDouble).unsqueeze(1);
  const double expected = direct_output_error(W, W_eff, X);
  EXPECT_NEAR(relative_output_error(W, W_eff, at::matmul(X, X.mT())), expected, 1e-12 * expected);
  EXPECT_EQ(relative_output_error(W, W, at::matmul(X, X.mT())), 0.0);
  EXPECT_EQ(relative_output_error(at::zeros({2, 3}), at::zeros({2, 3}), at::eye(3)), 0.0);
  EXPECT_TRUE(std::isinf(relative_output_error(at::zeros({2, 3}), at::ones({2, 3}), at::eye(3))));
  EXPECT_THROW(relative_output_error(W, W_eff.narrow(1, 0, 31), at::eye(32)), InvalidArgument);
  EXPECT_THROW(relative_output_error(W, W_eff, at::eye(31)), InvalidArgument);
}

TEST(SvdQuantTest, FullRankLeavesNoResidualError) {
  const OutlierLayer l = outlier_layer(16, 64, 80, 10);
  SvdQuantOptions o;
  o.rank = 16;
  o.grid = 4;
  const SvdQuantResult r = svdquant(l.W, l.H, l.x_absmax, o);
  EXPECT_EQ(r.lora_up.sizes(), (at::IntArrayRef{16, 16}));
  EXPECT_EQ(r.lora_down.sizes(), (at::IntArrayRef{16, 64}));
  EXPECT_EQ(r.lora_up.scalar_type(), at::kFloat);
  EXPECT_EQ(r.smooth.sizes(), (at::IntArrayRef{64}));
  // Only the float32 rounding of the factors is left for the residual to carry.
  EXPECT_LT(r.output_error, 1e-10);
  EXPECT_LT(r.residual.dequantize().abs().max().item<double>(), 1e-5 * l.W.abs().max().item<double>());
}

TEST(SvdQuantTest, BeatsRoundToNearestOnOutlierChannels) {
  const OutlierLayer l = outlier_layer(64, 128, 512, 20);
  const double rtn = relative_output_error(l.W, ops::fake_quantize_groups(l.W, 4, 64), l.H);
  // Rank 2 cannot take all four outlier channels into the branch: smoothing has to help too.
  for (int64_t rank : {2, 8}) {
    SvdQuantOptions o;
    o.rank = rank;
    const SvdQuantResult r = svdquant(l.W, l.H, l.x_absmax, o);
    std::printf(
        "RTN W4 g64 output error %.3e, SVDQuant r=%ld %.3e (alpha %.2f, beta %.2f, %d refit iterations)\n",
        rtn, static_cast<long>(rank), r.output_error, r.alpha, r.beta, r.iterations);
    EXPECT_LT(r.output_error, 0.5 * rtn) << "rank " << rank;
  }
}

TEST(SvdQuantTest, ReportedErrorIsTheErrorOfTheReturnedTensors) {
  const OutlierLayer l = outlier_layer(32, 128, 256, 30);
  SvdQuantOptions o;
  o.rank = 4;
  o.grid = 10;
  const SvdQuantResult r = svdquant(l.W, l.H, l.x_absmax, o);
  const auto W_eff = rebuild(r);
  EXPECT_NEAR(r.output_error, relative_output_error(l.W, W_eff, l.H), 1e-9 * r.output_error);
  EXPECT_NEAR(r.output_error, direct_output_error(l.W, W_eff, l.X), 1e-8 * r.output_error);
  EXPECT_LT(testing::max_abs_diff(r.effective_weight(at::kDouble), W_eff), 1e-12);
  // λ is the grid formula at the chosen (alpha, beta) (this layer has no zero spans).
  const auto wspan = l.W.to(at::kDouble).abs().amax(0);
  const auto expected = (l.x_absmax.pow(r.alpha) / wspan.pow(r.beta)).to(at::kFloat);
  EXPECT_TRUE(at::equal(r.smooth, expected));
  // The chosen candidate is on the grid.
  const double a = r.alpha * o.grid;
  EXPECT_NEAR(a, std::round(a), 1e-9);
  EXPECT_TRUE(r.beta == 0 || std::fabs(r.alpha + r.beta - 1) < 1e-12);
  // The residual is what is left of Ŵ after the branch, quantised.
  const auto W_hat = l.W.to(at::kDouble) * r.smooth.to(at::kDouble).unsqueeze(0);
  const auto rest = W_hat - at::matmul(r.lora_up.to(at::kDouble), r.lora_down.to(at::kDouble));
  if (r.iterations == 0) {
    EXPECT_TRUE(at::equal(r.residual.dequantize(), ops::fake_quantize_groups(rest.to(at::kFloat), 4, 64)));
  }
}

// The independent oracle: tests/fixtures/svdquant/make_fixture.py, a NumPy transcription of
// deepcompressor's smoothing grid and low-rank calibration (the file names the sources), run once
// on a 48x128 layer with 96 calibration tokens, rank 4, a 10-point grid. Both activation settings:
// W4A16 (the Gram objective here, the tokens' output error there) and W4A4 (both on the tokens,
// with the inputs x / λ quantised to INT4 per token and group).
struct SvdQuantFixture {
  SafetensorsFile file = SafetensorsFile::open(testing::fixture("svdquant/svdquant_layer.safetensors"));
  Json results = Json::parse(file.metadata().at("results"));
};

void expect_matches_fixture(int act_bits) {
  const SvdQuantFixture f;
  const std::string key = "a" + std::to_string(act_bits);
  const at::Tensor W = f.file.load("weight"), X = f.file.load("inputs");
  const at::Tensor Xd = X.to(at::kDouble);
  SvdQuantOptions o;
  o.rank = 4;
  o.grid = 10;
  o.act_bits = act_bits;
  const SvdQuantResult r = svdquant(W, at::matmul(Xd.t(), Xd), X.abs().amax(0), o, X);
  const Json& want = f.results[key];
  EXPECT_NEAR(r.alpha, want["alpha"].get<double>(), 1e-12);
  EXPECT_NEAR(r.beta, want["beta"].get<double>(), 1e-12);
  EXPECT_EQ(r.iterations, want["iterations"].get<int>());
  EXPECT_NEAR(r.output_error, want["relative_error"].get<double>(),
              1e-6 * want["relative_error"].get<double>());
  // λ: the same float32 values (up to the last bit of pow in another library).
  const at::Tensor smooth = f.file.load(key + ".smooth");
  EXPECT_LT(testing::rel_max_error(r.smooth, smooth), 1e-6);
  // L1 L2: the same rank-4 product (the factors themselves are unique only up to signs).
  const at::Tensor low_rank = f.file.load(key + ".low_rank");
  const at::Tensor mine = at::matmul(r.lora_up.to(at::kDouble), r.lora_down.to(at::kDouble));
  EXPECT_LT(testing::rel_max_error(mine, low_rank), 1e-5);
  // Q(R): the same quantised residual, entry for entry (a few may sit on a rounding boundary and
  // differ by one step after another SVD library's last bits; none here).
  const at::Tensor residual = f.file.load(key + ".residual").to(at::kDouble);
  const at::Tensor differ =
      (r.residual.dequantize(at::kDouble) - residual).abs() > 1e-6 * residual.abs().max();
  EXPECT_EQ(differ.sum().item<int64_t>(), 0) << key;
}

TEST(SvdQuantTest, MatchesTheReferenceAlgorithmWithFloatActivations) {
  expect_matches_fixture(16);
}

TEST(SvdQuantTest, MatchesTheReferenceAlgorithmWithInt4Activations) {
  expect_matches_fixture(4);
}

TEST(SvdQuantTest, GridOfOneMeansNoSmoothing) {
  const OutlierLayer l = outlier_layer(16, 64, 64, 50);
  SvdQuantOptions o;
  o.rank = 2;
  o.grid = 1;
  const SvdQuantResult r = svdquant(l.W, l.H, l.x_absmax, o);
  EXPECT_TRUE(at::equal(r.smooth, at::ones({64}, at::kFloat)));
  EXPECT_EQ(r.alpha, 0);
  EXPECT_EQ(r.beta, 0);
}

TEST(SvdQuantTest, RejectsBadArguments) {
  const OutlierLayer l = outlier_layer(8, 64, 16, 60);
  auto with = [](auto edit) {
    SvdQuantOptions o;
    o.rank = 4;
    o.grid = 2;
    edit(o);
    return o;
  };
  auto msg = testing::error_of([&] { svdquant(l.W, l.H, l.x_absmax, with([](auto& o) { o.rank = -1; })); });
  EXPECT_TRUE(contains(msg, "rank = -1")) << msg;
  msg = testing::error_of([&] { svdquant(l.W, l.H, l.x_absmax, with([](auto& o) { o.act_bits = 4; })); });
  EXPECT_TRUE(contains(msg, "act_bits = 4 needs calibration tokens")) << msg;
  msg = testing::error_of([&] { svdquant(l.W, l.H, l.x_absmax, with([](auto& o) { o.act_bits = 8; })); });
  EXPECT_TRUE(contains(msg, "act_bits = 8")) << msg;
  msg = testing::error_of([&] { svdquant(l.W, l.H, l.x_absmax, with([](auto& o) { o.rank = 9; })); });
  EXPECT_TRUE(contains(msg, "rank = 9")) << msg;
  msg = testing::error_of([&] { svdquant(l.W, l.H, l.x_absmax, with([](auto& o) { o.group_size = 48; })); });
  EXPECT_TRUE(contains(msg, "group_size = 48")) << msg;
  msg = testing::error_of([&] { svdquant(l.W, l.H, l.x_absmax, with([](auto& o) { o.bits = 2; })); });
  EXPECT_TRUE(contains(msg, "bits = 2")) << msg;
  EXPECT_THROW(svdquant(l.W, l.H, l.x_absmax, with([](auto& o) { o.grid = 0; })), InvalidArgument);
  EXPECT_THROW(svdquant(l.W, l.H, l.x_absmax, with([](auto& o) { o.max_iters = -1; })), InvalidArgument);
  msg = testing::error_of([&] { svdquant(l.W, l.H.narrow(0, 0, 63), l.x_absmax, with([](auto&) {})); });
  EXPECT_TRUE(contains(msg, "H has shape")) << msg;
  msg = testing::error_of([&] { svdquant(l.W, l.H, l.x_absmax.narrow(0, 0, 60), with([](auto&) {})); });
  EXPECT_TRUE(contains(msg, "x_absmax has shape")) << msg;
  EXPECT_THROW(svdquant(l.W.flatten(), l.H, l.x_absmax, with([](auto&) {})), InvalidArgument);
  EXPECT_THROW(svdquant(l.W, l.H, -l.x_absmax, with([](auto&) {})), InvalidArgument);
  auto bad = l.W.clone();
  bad[0][0] = NAN;
  EXPECT_THROW(svdquant(bad, l.H, l.x_absmax, with([](auto&) {})), InvalidArgument);
}

// Q(x) in float64 from the definition: per token and group of g, s = absmax / 7 (float32),
// a = clamp(round(x / s), −8, 7).
at::Tensor int4_tokens(const at::Tensor& x, int64_t g) {
  const at::Tensor groups = x.to(at::kFloat).reshape({x.size(0), -1, g});
  const at::Tensor s = groups.abs().amax(-1, true) / 7.0f;
  const at::Tensor a = at::clamp(at::round(groups / s.clamp_min(1e-30f)), -8, 7);
  return (a.to(at::kDouble) * s.to(at::kDouble)).reshape(x.sizes());
}

SvdQuantOptions small_options(int64_t rank, int grid, int act_bits = 16) {
  SvdQuantOptions o;
  o.rank = rank;
  o.grid = grid;
  o.act_bits = act_bits;
  return o;
}

// load_operator over the operator's own description and tensors (the stored form).
std::shared_ptr<StoredOperator> reload(const StoredOperator& op, const Json& description) {
  std::map<std::string, at::Tensor> stored;
  for (const auto& [name, t] : op.tensors()) stored[name] = t;
  return load_operator(
      description, "slot", false, [&](const std::string& n) { return stored.at(n); }, at::kFloat, at::kCPU);
}

TEST(SvdQuantOperatorTest, W4A4ForwardIsTheBranchPlusTheInt4Product) {
  const OutlierLayer l = outlier_layer(24, 128, 64, 60);
  const at::Tensor X = l.X.t().to(at::kFloat).contiguous();  // [tokens, in]
  const SvdQuantResult r = svdquant(l.W, l.H, l.x_absmax, small_options(4, 4, 4), X);
  const at::Tensor bias = randn({24}, 61).to(at::kFloat);
  for (int act_bits : {4, 16}) {
    const SvdQuantOperator op(r.smooth, r.lora_up, r.lora_down, r.residual, bias, act_bits);
    const at::Tensor y = op.forward(X.reshape({4, 16, 128})).reshape({64, 24}).to(at::kDouble);
    const at::Tensor xs = X * at::reciprocal(r.smooth).unsqueeze(0);  // x ⊘ λ as the operator forms it
    const at::Tensor branch = at::matmul(at::matmul(xs.to(at::kDouble), r.lora_down.to(at::kDouble).t()),
                                         r.lora_up.to(at::kDouble).t());
    const at::Tensor xq = act_bits == 4 ? int4_tokens(xs, 64) : xs.to(at::kDouble);
    const at::Tensor want =
        branch + at::matmul(xq, r.residual.dequantize(at::kDouble).t()) + bias.to(at::kDouble);
    EXPECT_LT(testing::max_abs_diff(y, want), 1e-5 * want.abs().max().item<double>())
        << "act_bits " << act_bits;
    // The description carries the activation bits (absent for 16: older directories read as 16).
    EXPECT_EQ(op.describe().contains("act_bits"), act_bits == 4);
  }
  // Rank 0 (smoothing only): no branch, the product alone.
  const SvdQuantOperator bare(r.smooth, r.lora_up.narrow(1, 0, 0), r.lora_down.narrow(0, 0, 0), r.residual,
                              {}, 4);
  const at::Tensor xs = X * at::reciprocal(r.smooth).unsqueeze(0);
  const at::Tensor want = at::matmul(int4_tokens(xs, 64), r.residual.dequantize(at::kDouble).t());
  EXPECT_LT(testing::max_abs_diff(bare.forward(X).to(at::kDouble), want),
            1e-5 * want.abs().max().item<double>());
  EXPECT_THROW(SvdQuantOperator(r.smooth, r.lora_up, r.lora_down, ops::quantize_groups(l.W, 8, 64), {}, 4),
               InvalidArgument);
}

TEST(SvdQuantOperatorTest, ActBitsSurviveTheStoredForm) {
  const OutlierLayer l = outlier_layer(16, 64, 32, 70);
  const SvdQuantResult r = svdquant(l.W, l.H, l.x_absmax, small_options(2, 2));
  for (int act_bits : {4, 16}) {
    const SvdQuantOperator op(r.smooth, r.lora_up, r.lora_down, r.residual, {}, act_bits);
    const auto back =
        std::dynamic_pointer_cast<SvdQuantOperator>(reload(op, Json::parse(op.describe().dump())));
    ASSERT_NE(back, nullptr);
    EXPECT_EQ(back->act_bits(), act_bits);
  }
  const SvdQuantOperator op(r.smooth, r.lora_up, r.lora_down, r.residual);
  Json bad = Json::parse(op.describe().dump());
  bad["act_bits"] = 8;
  const std::string msg = testing::error_of([&] { reload(op, bad); });
  EXPECT_NE(msg.find("act_bits 8"), std::string::npos) << msg;
}

TEST(SvdQuantModelTest, W4A4KeepsCalibrationTokensSharesTheBranchAndReloads) {
  testing::TempDir dir;
  nn::Model model = compress_testing::small_model(5);
  model.save(dir / "dense");
  CompressOptions o;
  o.method = "svdquant";
  o.rank = 8;
  o.act_bits = 4;
  o.method_options = Json{{"grid", 4}, {"calib_tokens", 40}};
  const CalibrationNeeds needs = calibration_needs(o);
  ASSERT_EQ(needs.inputs, 40);
  CalibrationOptions co;
  co.samples = 4;
  co.seq_len = 16;
  co.progress = false;
  co.keep_inputs = needs.inputs;
  const CalibrationStatistics stats = calibrate(model, compress_testing::token_stream(400), co);
  const std::string layer = "model.layers.0.";
  // Stride ⌊4·16 / 40⌋ = 1: the first 40 of the 64 calibration tokens, as the slot saw them.
  const SlotStatistics& q = stats.at(layer + "self_attn.q_proj");
  ASSERT_EQ(q.inputs.sizes(), (at::IntArrayRef{40, 64}));
  EXPECT_LE(q.inputs.abs().amax(0).sub(q.absmax).max().item<float>(), 0.0f);
  compress_model(model, o, &stats);
  save_compressed_model(model, dir / "compressed", dir / "dense", at::kFloat);
  nn::Model loaded = load_model(dir / "compressed");
  for (nn::Model* m : {&model, &loaded}) {
    std::vector<const nn::LinearSlot*> qkv;
    for (const char* name : {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"})
      qkv.push_back(&m->slot(layer + name));
    const auto* op = dynamic_cast<const SvdQuantOperator*>(&qkv[0]->base());
    ASSERT_NE(op, nullptr);
    EXPECT_EQ(op->act_bits(), 4);
    const at::Tensor x = randn({2, 5, 64}, 9).to(at::kFloat);
    c10::InferenceMode g;
    std::vector<at::Tensor> alone;
    for (const nn::LinearSlot* s : qkv) alone.push_back(s->base().forward(x));
    nn::SharedInputScope scope(x);
    for (size_t i = 0; i < qkv.size(); ++i) EXPECT_TRUE(at::equal(qkv[i]->base().forward(x), alone[i]));
    EXPECT_EQ(scope.size(), 1u);  // one quantisation and one x̂ L2ᵀ for the three slots
  }
}

}  // namespace
}  // namespace lowrank::compress
