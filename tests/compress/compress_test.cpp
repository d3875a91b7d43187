// Compression methods and operators against independent oracles: Eckart–Young for the truncated
// SVD, the whitened error identity for SVD-LLM and EoRA, hand-computed ASVD, the calibration Gram
// against the layer's inputs computed by hand, finite differences for the Fisher statistics,
// a loop oracle for 2:4 pruning, and file round trips of every operator kind.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>

#include "lowrank/compress/calibration.h"
#include "lowrank/compress/format.h"
#include "lowrank/compress/methods.h"
#include "lowrank/compress/operators.h"
#include "lowrank/compress/pipeline.h"
#include "lowrank/core/error.h"
#include "lowrank/core/file.h"
#include "lowrank/core/safetensors.h"
#include "lowrank/linalg/whiten.h"
#include "lowrank/nn/model.h"
#include "lowrank/nn/shared_input.h"
#include "tests/compress/compress_testing.h"
#include "tests/testing.h"

namespace lowrank::compress {
namespace {
namespace fs = std::filesystem;
using compress_testing::small_model;
using compress_testing::token_stream;
using testing::max_abs_diff;

at::Tensor randn(std::vector<int64_t> shape, uint64_t seed, at::ScalarType dtype = at::kFloat) {
  at::Generator gen = at::detail::createCPUGenerator(seed);
  return at::randn(shape, gen, at::TensorOptions().dtype(dtype));
}

// A weight with a decaying spectrum, and activations with a few outlier channels (an
// anisotropic Gram, where data-aware methods should win).
struct Problem {
  at::Tensor W, X, H;
  SlotStatistics stats;
};

Problem make_problem(int64_t m, int64_t n, int64_t tokens, uint64_t seed) {
  Problem p;
  const at::Tensor decay = at::pow(at::full({n}, 0.85, at::kDouble), at::arange(n, at::kDouble));
  p.W = (randn({m, n}, seed, at::kDouble) * decay).to(at::kFloat);
  at::Tensor scale = at::ones({n}, at::kDouble);
  scale.narrow(0, 0, 3).fill_(8.0);
  p.X = (randn({n, tokens}, seed + 1, at::kDouble) * scale.unsqueeze(1));
  p.H = at::matmul(p.X, p.X.t());
  p.stats.gram = p.H;
  p.stats.absmax = std::get<0>(p.X.abs().max(1)).to(at::kFloat);
  p.stats.abs_sum = p.X.abs().sum(1);
  p.stats.tokens = tokens;
  return p;
}

SlotInput input_of(const Problem& p, int64_t rank) {
  SlotInput in;
  in.name = "w";
  in.weight = p.W;
  in.stats = &p.stats;
  in.rank = rank;
  return in;
}

CompressOptions method(const std::string& name) {
  CompressOptions o;
  o.method = name;
  return o;
}

double output_error2(const at::Tensor& W, const at::Tensor& What, const at::Tensor& X) {
  return at::matmul(W.to(at::kDouble) - What.to(at::kDouble), X).square().sum().item<double>();
}

TEST(TruncatedSvdTest, PlainSvdMeetsEckartYoung) {
  const Problem p = make_problem(24, 20, 64, 1);
  const int64_t k = 6;
  auto op = compress_truncated_svd(input_of(p, k), method("svd"));
  const at::Tensor s = at::linalg_svdvals(p.W.to(at::kDouble));
  const double tail = s.narrow(0, k, s.size(0) - k).square().sum().item<double>();
  const double err = (p.W.to(at::kDouble) - op->dense_weight().to(at::kDouble)).square().sum().item<double>();
  EXPECT_NEAR(err, tail, 1e-5 * tail);
  EXPECT_EQ(op->kind(), "lowrank");
}

TEST(TruncatedSvdTest, SvdLlmOutputErrorIsTheWhitenedTailAndBeatsPlainSvd) {
  const Problem p = make_problem(24, 20, 64, 2);
  const int64_t k = 6;
  auto llm = compress_truncated_svd(input_of(p, k), method("svd_llm"));
  auto plain = compress_truncated_svd(input_of(p, k), method("svd"));
  // ||(W − Ŵ) X||² = Σ_{i>k} σ_i(W S)², S = chol(X Xᵀ): computed with the explicit X here.
  const at::Tensor S = at::linalg_cholesky(p.H);
  const at::Tensor s = at::linalg_svdvals(at::matmul(p.W.to(at::kDouble), S));
  const double tail = s.narrow(0, k, s.size(0) - k).square().sum().item<double>();
  const double err_llm = output_error2(p.W, llm->dense_weight(), p.X);
  EXPECT_NEAR(err_llm, tail, 1e-4 * tail);
  EXPECT_LT(err_llm, output_error2(p.W, plain->dense_weight(), p.X));
}

TEST(TruncatedSvdTest, AsvdScalesColumnsByMeanAbsoluteActivation) {
  const Problem p = make_problem(16, 12, 40, 3);
  const int64_t k = 4;
  auto op = compress_truncated_svd(input_of(p, k), method("asvd"));
  // Hand-computed: s_j = (mean |x_j|)^0.5, Ŵ = [W diag(s)]_k diag(s)⁻¹.
  const at::Tensor sj = at::sqrt(p.X.abs().mean(1));
  const at::Tensor Ws = p.W.to(at::kDouble) * sj;
  auto [U, S, Vh] = at::linalg_svd(Ws, false);
  const at::Tensor best = at::matmul(U.narrow(1, 0, k) * S.narrow(0, 0, k), Vh.narrow(0, 0, k)) / sj;
  EXPECT_LT(max_abs_diff(op->dense_weight(), best), 1e-5);
}

CompressOptions svd_llm_with_update() {
  CompressOptions o = method("svd_llm");
  o.method_options = Json{{"update", true}};
  return o;
}

// SVD-LLM's closed-form update: the right factor stays √Σ_k V_kᵀ S⁻¹ (from the whitening Gram) and
// the left factor is the least-squares fit of W X' on V X' for the shifted inputs X' — here checked
// against at::linalg_lstsq on the explicit X' in float64 (the implementation sees only X' X'ᵀ).
TEST(TruncatedSvdTest, SvdLlmUpdateIsTheLeastSquaresLeftFactorOnTheShiftedInputs) {
  const Problem p = make_problem(24, 20, 64, 11);
  const int64_t k = 6;
  // Inputs after earlier layers were compressed: the same tokens, drifted.
  const at::Tensor X2 = p.X + 0.5 * randn({20, 64}, 12, at::kDouble) + 0.3 * p.X.roll(1, 0);
  SlotInput in = input_of(p, k);
  in.update_gram = at::matmul(X2, X2.t());
  auto updated = compress_truncated_svd(in, svd_llm_with_update());
  auto plain = compress_truncated_svd(input_of(p, k), method("svd_llm"));
  const auto* u = dynamic_cast<const LowRankOperator*>(updated.get());
  const auto* w = dynamic_cast<const LowRankOperator*>(plain.get());
  ASSERT_NE(u, nullptr);
  ASSERT_NE(w, nullptr);
  EXPECT_LT(max_abs_diff(u->v(), w->v()), 1e-6);  // the right factor is kept
  // Oracle: Lᵀ = argmin ||X2ᵀ Rᵀ Lᵀ − X2ᵀ Wᵀ||, one equation per token.
  const at::Tensor R = u->v().to(at::kDouble), Wd = p.W.to(at::kDouble);
  const at::Tensor L =
      std::get<0>(at::linalg_lstsq(at::matmul(X2.t(), R.t()), at::matmul(X2.t(), Wd.t()))).t();
  EXPECT_LT(testing::rel_max_error(u->u(), L), 1e-5);
  const double err_updated = output_error2(p.W, updated->dense_weight(), X2);
  EXPECT_NEAR(err_updated, output_error2(p.W, at::matmul(L, R), X2), 1e-5 * err_updated);
  EXPECT_LT(err_updated, output_error2(p.W, plain->dense_weight(), X2));
}

// On the very inputs it was whitened with, the update changes nothing: U_k Σ_k^{1/2} already
// solves the least squares (W H Rᵀ = U_k Σ_k^{3/2}, R H Rᵀ = Σ_k).
TEST(TruncatedSvdTest, SvdLlmUpdateOnTheWhiteningInputsIsTheIdentity) {
  const Problem p = make_problem(16, 12, 48, 13);
  SlotInput in = input_of(p, 4);
  in.update_gram = p.H;
  auto updated = compress_truncated_svd(in, svd_llm_with_update());
  auto plain = compress_truncated_svd(input_of(p, 4), method("svd_llm"));
  EXPECT_LT(testing::rel_max_error(updated->dense_weight(), plain->dense_weight()), 1e-5);
}

// FWSVD minimises the Fisher-weighted error ||(W − Ŵ) diag(d)||_F, d_j = √(Fisher_j) (Hsu et al.'s
// ||√I ⊙ (W − AB)|| with one importance per input channel, as ASVD4LLM's code keeps it). Oracles
// in float64: alternating least squares on the weighted objective (B-step: each column's weight
// scales both sides, so b_j = A⁺ w_j; A-step: weighted least squares), and the truncated SVD of
// W diag(d) by at::linalg_svd, unweighted.
TEST(TruncatedSvdTest, FwsvdMinimisesTheFisherWeightedError) {
  const int64_t m = 10, n = 8, k = 3;
  const at::Tensor W = randn({m, n}, 21, at::kDouble);
  SlotStatistics stats;
  stats.fisher = at::pow(at::full({n}, 3.0, at::kDouble), at::arange(n, at::kDouble)) * 1e-3;  // 1e-3 … 2.2
  stats.fisher_batches = 2;
  SlotInput in;
  in.name = "w";
  in.weight = W.to(at::kFloat);
  in.stats = &stats;
  in.rank = k;
  auto op = compress_truncated_svd(in, method("fwsvd"));
  const at::Tensor d = at::sqrt(stats.fisher);  // a constant factor does not move the minimiser
  auto weighted = [&](const at::Tensor& What) {
    return ((W - What.to(at::kDouble)) * d).square().sum().item<double>();
  };

  at::Tensor A = randn({m, k}, 22, at::kDouble), B;
  for (int it = 0; it < 2000; ++it) {
    B = at::matmul(at::linalg_pinv(A), W);
    A = at::matmul(W * d, at::linalg_pinv(B * d));
  }
  const double als = weighted(at::matmul(A, B));
  const double got = weighted(op->dense_weight());
  EXPECT_NEAR(got, als, 1e-4 * als);

  auto [U, S, Vh] = at::linalg_svd(W * d, false);
  const at::Tensor closed = at::matmul(U.narrow(1, 0, k) * S.narrow(0, 0, k), Vh.narrow(0, 0, k)) / d;
  EXPECT_LT(testing::rel_max_error(op->dense_weight(), closed), 1e-5);
  // The weighting matters on this problem: the unweighted SVD is clearly worse in the weighted norm.
  auto [U0, S0, Vh0] = at::linalg_svd(W, false);
  EXPECT_GT(weighted(at::matmul(U0.narrow(1, 0, k) * S0.narrow(0, 0, k), Vh0.narrow(0, 0, k))), 1.5 * got);
}

TEST(TruncatedSvdTest, RankForRatioFollowsSvdLlm) {
  EXPECT_EQ(rank_for_ratio(100, 100, 0.2), 40);  // 20% fewer parameters: 40% of the rank
  EXPECT_EQ(rank_for_ratio(64, 176, 0.5), 23);   // floor(64·176·0.5 / 240)
  EXPECT_EQ(rank_for_ratio(8, 8, 0.99), 1);
}

TEST(WeLoreTest, RanksFollowTheNormalisedSpectrumAndTheSearchMeetsTheRatio) {
  // Spectra of two 10×10 matrices: one heavy-tailed, one flat.
  const at::Tensor heavy = at::tensor({10.0, 4.0, 1.0, 0.5, 0.4, 0.3, 0.2, 0.1, 0.05, 0.0}, at::kDouble);
  const at::Tensor flat = at::tensor({1.0, 0.98, 0.96, 0.94, 0.92, 0.9, 0.88, 0.86, 0.84, 0.8}, at::kDouble);
  const std::vector<std::pair<int64_t, int64_t>> shapes = {{10, 10}, {10, 10}};
  // tau = 0.06: heavy keeps s̃ >= 0.06 -> {1, 0.4, 0.1} = 3 ranks (saves 100 − 60); flat keeps 9 (no saving).
  const WeLoreChoice fixed = welore_ranks({heavy, flat}, shapes, 0, 0.06);
  EXPECT_EQ(fixed.ranks[0], 3);
  EXPECT_EQ(fixed.ranks[1], -1);
  // Searching for 20% of 200 parameters = 40 removed: the smallest tau doing that.
  const WeLoreChoice searched = welore_ranks({heavy, flat}, shapes, 0.2);
  int64_t saved = 0;
  for (int64_t r : searched.ranks)
    if (r > 0) saved += 100 - 20 * r;
  EXPECT_GE(saved, 40);
  const WeLoreChoice below = welore_ranks({heavy, flat}, shapes, 0, searched.tau * 0.999);
  int64_t saved_below = 0;
  for (int64_t r : below.ranks)
    if (r > 0) saved_below += 100 - 20 * r;
  EXPECT_LT(saved_below, 40);
}

TEST(WeLoreTest, AFlatSpectrumStaysDenseAtEveryThreshold) {
  // s_max = s_min: the reference's normalisation is 0/0 (NaN), no rank is dropped and the matrix
  // stays dense (utils.py lines 131-132); it must not be factorised at rank 1 even at tau = 1.
  const at::Tensor heavy = at::tensor({10.0, 4.0, 1.0, 0.5, 0.4, 0.3, 0.2, 0.1, 0.05, 0.0}, at::kDouble);
  const at::Tensor flat = at::full({10}, 3.0, at::kDouble);
  const std::vector<std::pair<int64_t, int64_t>> shapes = {{10, 10}, {10, 10}};
  for (double tau : {0.0, 0.175, 0.5, 1.0})
    EXPECT_EQ(welore_ranks({heavy, flat}, shapes, 0, tau).ranks[1], -1);
  // The search meets a ratio from the heavy-tailed matrix alone, the flat one still dense.
  EXPECT_EQ(welore_ranks({heavy, flat}, shapes, 0.3).ranks[1], -1);
}

TEST(CompensationTest, EoraIsTheWhitenedMinimiserAndBeatsSvdCompensation) {
  const Problem p = make_problem(32, 64, 128, 4);
  CompressOptions o = method("rtn");
  o.bits = 4;
  o.group_size = 16;
  auto base = compress_rtn(input_of(p, 0), o);
  const int64_t r = 4;
  auto eora = compensate(base, p.W, p.H, r, "eora");
  auto svd = compensate(base, p.W, p.H, r, "svd");
  const at::Tensor delta = p.W.to(at::kDouble) - base->dense_weight().to(at::kDouble);
  // EoRA's residual error equals the tail of σ(ΔW Q'), Q' = Q Λ^{1/2} from eigh(X Xᵀ).
  auto [L, Q] = at::linalg_eigh(p.H);
  const at::Tensor s = at::linalg_svdvals(at::matmul(delta, Q * at::sqrt(at::clamp_min(L, 0))));
  const double tail = s.narrow(0, r, s.size(0) - r).square().sum().item<double>();
  const double err_eora = output_error2(p.W, eora->dense_weight(), p.X);
  EXPECT_NEAR(err_eora, tail, 1e-4 * tail);
  EXPECT_LT(err_eora, output_error2(p.W, svd->dense_weight(), p.X));
  EXPECT_LT(err_eora, output_error2(p.W, base->dense_weight(), p.X));
  // The operator computes base(x) + B A x.
  const at::Tensor x = randn({5, 64}, 9);
  EXPECT_LT(max_abs_diff(eora->forward(x), at::matmul(x, eora->dense_weight().t())), 1e-4);
}

TEST(Prune24Test, KeepsTheTwoLargestOfEveryFourAndRoundTrips) {
  const at::Tensor W = randn({6, 16}, 5);
  auto op = compress_prune24({"w", W, {}, nullptr, 0, {}}, method("prune24"));
  const at::Tensor D = op->dense_weight();
  for (int64_t i = 0; i < 6; ++i)
    for (int64_t g = 0; g < 4; ++g) {
      std::vector<std::pair<float, int64_t>> mags;
      for (int64_t j = 0; j < 4; ++j) mags.emplace_back(std::abs(W[i][4 * g + j].item<float>()), j);
      std::sort(mags.rbegin(), mags.rend());
      for (int64_t t = 0; t < 4; ++t) {
        const int64_t j = mags[t].second;
        const float expect = t < 2 ? W[i][4 * g + j].item<float>() : 0.0f;
        EXPECT_EQ(D[i][4 * g + j].item<float>(), expect) << "row " << i << " group " << g;
      }
    }
  // From its stored tensors: the same weight.
  nn::NamedTensors t = op->tensors();
  Sparse24Operator again(t[0].second, t[1].second);
  EXPECT_EQ(max_abs_diff(again.dense_weight(), D), 0);
  EXPECT_EQ(op->storage_bytes(2), 6 * 8 * 2 + 6 * 4);
}

TEST(RpcaTest, SplitsALowRankPlusSparseWeight) {
  const at::Tensor low = at::matmul(randn({30, 3}, 6, at::kDouble), randn({3, 30}, 7, at::kDouble));
  at::Tensor sparse = at::zeros({30, 30}, at::kDouble);
  for (int64_t i = 0; i < 30; i += 3) sparse[i][(7 * i) % 30] = 25.0;
  const at::Tensor W = (low + sparse).to(at::kFloat);
  auto op = compress_rpca({"w", W, {}, nullptr, 0, {}}, method("rpca"));
  const auto* sl = dynamic_cast<const SparseLowRankOperator*>(op.get());
  ASSERT_NE(sl, nullptr);
  EXPECT_EQ(sl->rank(), 3);
  EXPECT_LT(testing::rel_fro_error(op->dense_weight(), W), 1e-4);
  const at::Tensor x = randn({4, 30}, 8);
  EXPECT_LT(max_abs_diff(op->forward(x), at::matmul(x, op->dense_weight().t())), 1e-3);
}

TEST(CalibrationTest, GramIsTheSumOfTheSlotInputsOuterProducts) {
  nn::Model model = small_model(1);
  const at::Tensor tokens = token_stream(200);
  CalibrationOptions o;
  o.samples = 3;
  o.seq_len = 10;
  o.batch_size = 2;
  o.progress = false;
  const CalibrationStatistics stats = calibrate(model, tokens, o);
  // Layer 0's q/k/v read RMSNorm(E[ids]): recompute it by hand for the same windows.
  const std::string q = "model.layers.0.self_attn.q_proj";
  const nn::NamedTensors named = model.named_tensors();
  at::Tensor embed, norm;
  for (const auto& [n, t] : named) {
    if (n == "model.embed_tokens.weight") embed = t;
    if (n == "model.layers.0.input_layernorm.weight") norm = t;
  }
  at::Tensor H = at::zeros({64, 64}, at::kDouble);
  at::Tensor absmax = at::zeros({64});
  for (int64_t start : {int64_t{0}, int64_t{(200 - 11) / 2}, int64_t{200 - 11}}) {
    const at::Tensor h = embed.index_select(0, tokens.narrow(0, start, 10)).to(at::kDouble);
    const at::Tensor x = h * at::rsqrt(h.square().mean(-1, true) + 1e-5) * norm.to(at::kDouble);
    H += at::matmul(x.t(), x);
    absmax = at::maximum(absmax, std::get<0>(x.abs().max(0)).to(at::kFloat));
  }
  EXPECT_LT(max_abs_diff(stats.at(q).gram, H), 1e-4 * H.abs().max().item<double>());
  EXPECT_LT(max_abs_diff(stats.at(q).absmax, absmax), 1e-4);
  EXPECT_EQ(stats.at(q).tokens, 30);
  EXPECT_FALSE(stats.contains("lm_head"));
  // The model's bases are back.
  for (const nn::LinearSlot* s : model.slots()) EXPECT_EQ(s->base().kind(), "dense");
}

TEST(CalibrationTest, FisherMatchesFiniteDifferencesOfTheLoss) {
  testing::TempDir dir;
  testing::tiny_llama({}, 3).save(dir / "m");
  nn::Model model = nn::Model::load(dir / "m", {at::kDouble});  // float64: finite differences stay exact
  at::Tensor tokens = at::empty({40}, at::kLong);
  for (int64_t i = 0; i < 40; ++i) tokens[i] = (i * 5 + 1) % 24;
  CalibrationOptions o;
  o.samples = 1;
  o.seq_len = 12;
  o.fisher = true;
  o.gram = false;
  o.progress = false;
  const CalibrationStatistics stats = calibrate(model, tokens, o);
  const std::string name = "model.layers.1.mlp.down_proj";
  // Oracle: ∂L/∂W_ij by central differences in float64, then mean_i (∂L/∂W_ij)² for column j.
  at::Tensor W = dynamic_cast<const nn::DenseOperator&>(model.slot(name).base()).weight();
  const at::Tensor batch = tokens.narrow(0, 0, 13).unsqueeze(0);
  auto loss = [&] {
    c10::InferenceMode guard;
    const at::Tensor logits = model.forward(batch.narrow(1, 0, 12));
    return at::cross_entropy_loss(logits.reshape({12, -1}).to(at::kDouble),
                                  batch.narrow(1, 1, 12).reshape({-1}))
        .item<double>();
  };
  const int64_t j = 3;
  double sum = 0;
  const double eps = 1e-5;
  for (int64_t i = 0; i < W.size(0); ++i) {
    const double w0 = W[i][j].item<double>();
    {
      at::NoGradGuard g;
      W[i][j] = w0 + eps;
    }
    const double up = loss();
    {
      at::NoGradGuard g;
      W[i][j] = w0 - eps;
    }
    const double down = loss();
    {
      at::NoGradGuard g;
      W[i][j] = w0;
    }
    const double grad = (up - down) / (2 * eps);
    sum += grad * grad;
  }
  const double expect = sum / static_cast<double>(W.size(0));
  const double got = stats.at(name).fisher[j].item<double>();
  EXPECT_NEAR(got, expect, 1e-5 * expect + 1e-14);
  EXPECT_FALSE(W.requires_grad());
}

TEST(CompressModelTest, FullRankSvdKeepsTheLogits) {
  nn::Model model = small_model(2);
  const at::Tensor ids = token_stream(24).reshape({2, 12});
  at::Tensor before;
  {
    c10::InferenceMode g;
    before = model.forward(ids);
  }
  // Rank 64 = min(m, n) for q, o (64×64) and the MLP (64×128, 128×64): exact factorisations.
  CompressOptions o = method("svd");
  o.rank = 64;
  o.targets = {"q_proj", "o_proj", "gate_proj", "up_proj", "down_proj"};
  const CompressReport r = compress_model(model, o, nullptr);
  EXPECT_EQ(r.slots.size(), 10u);
  c10::InferenceMode g;
  EXPECT_LT(max_abs_diff(model.forward(ids), before), 1e-4);
}

// SVD-LLM's update through compress_model: layer l is fitted on its inputs in the model whose
// layers before l are compressed and updated. Layer 0 reads the dense model's inputs, so its left
// factors are the least-squares fits on the first calibration's Gram; layer 1's q_proj reads the
// output of compressed layer 0, and its left factor is the fit on those inputs (their Gram taken
// from the finished model, where q_proj's input depends on layer 0 only). The oracle solves the
// least squares through a Cholesky factor of the Gram with at::linalg_lstsq. (This token stream
// makes the Grams singular, so the whitening's damping makes even layer 0's update move U.)
TEST(CompressModelTest, SvdLlmUpdateFitsEachLayerOnTheInputsOfTheCompressedEarlierLayers) {
  const at::Tensor calib = token_stream(600);
  CalibrationOptions co;
  co.samples = 6;
  co.seq_len = 16;
  co.progress = false;
  nn::Model dense = small_model(5), with_update = small_model(5);
  const CalibrationStatistics stats = calibrate(dense, calib, co);
  CompressOptions plain = method("svd_llm");
  plain.ratio = 0.4;
  CompressOptions upd = plain;
  upd.method_options = Json{{"update", true}};
  const CalibrationSource source{calib, co};
  EXPECT_THROW(compress_model(with_update, upd, &stats, nullptr), InvalidArgument);
  compress_model(with_update, upd, &stats, &source);
  auto weight = [&](const std::string& name) {
    return dense.find_slot(name)->base().dense_weight().to(at::kDouble);
  };
  auto factors = [](const nn::Model& m, const std::string& name) -> const LowRankOperator& {
    return dynamic_cast<const LowRankOperator&>(m.find_slot(name)->base());
  };
  auto least_squares_left = [](const at::Tensor& W, const at::Tensor& R, const at::Tensor& H) {
    const at::Tensor C =
        at::linalg_cholesky(H + 1e-10 * H.diagonal().mean() * at::eye(H.size(0), at::kDouble));
    return std::get<0>(at::linalg_lstsq(at::matmul(C.t(), R.t()), at::matmul(C.t(), W.t()))).t();
  };
  for (const char* name : {"model.layers.0.self_attn.q_proj", "model.layers.0.self_attn.o_proj",
                           "model.layers.0.mlp.down_proj"}) {
    const LowRankOperator& op = factors(with_update, name);
    const at::Tensor L = least_squares_left(weight(name), op.v().to(at::kDouble), stats.at(name).gram);
    EXPECT_LT(testing::rel_max_error(op.u(), L), 1e-3) << name;
  }
  const std::string q1 = "model.layers.1.self_attn.q_proj";
  CalibrationOptions only_q1 = co;
  only_q1.slots = {q1};
  const at::Tensor H1 = calibrate(with_update, calib, only_q1).at(q1).gram;
  const LowRankOperator& op = factors(with_update, q1);
  EXPECT_LT(testing::rel_max_error(op.u(), least_squares_left(weight(q1), op.v().to(at::kDouble), H1)), 1e-3);
  // ... and not the fit on the dense model's inputs.
  EXPECT_GT(testing::rel_max_error(op.u(),
                                   least_squares_left(weight(q1), op.v().to(at::kDouble), stats.at(q1).gram)),
            1e-2);
}

// The report's bytes are the bytes written: every tensor of a compressed slot in the 16-bit
// model.safetensors, indices included (CSR: int64 row offsets, int32 column indices).
TEST(CompressModelTest, RpcaReportedBytesAreTheBytesOfTheTensorsWritten) {
  testing::TempDir dir;
  nn::Model model = small_model(7);
  model.save(dir / "dense");
  CompressOptions o = method("rpca");
  o.targets = {"model.layers.0.self_attn.o_proj", "model.layers.1.mlp.down_proj"};
  o.method_options = Json{{"max_iters", 30}};
  const CompressReport r = compress_model(model, o, nullptr);
  save_compressed_model(model, dir / "c", dir / "dense", at::kBFloat16);
  const SafetensorsFile file = SafetensorsFile::open(dir / "c" / "model.safetensors");
  ASSERT_EQ(r.slots.size(), 2u);
  int64_t total = 0;
  for (const SlotReport& slot : r.slots) {
    int64_t written = 0, index_bytes = 0;
    for (const TensorInfo& t : file.tensors()) {
      if (!t.name.starts_with(slot.name + ".")) continue;
      written += static_cast<int64_t>(t.nbytes());
      if (t.name.ends_with("_offsets") || t.name.ends_with("_indices"))
        index_bytes += static_cast<int64_t>(t.nbytes());
    }
    EXPECT_EQ(slot.bytes_after, written) << slot.name;
    const auto& op = dynamic_cast<const SparseLowRankOperator&>(model.slot(slot.name).base());
    EXPECT_GT(op.nonzeros(), 0) << slot.name;
    EXPECT_EQ(index_bytes, 4 * op.nonzeros() + 8 * (slot.out_features + 1)) << slot.name;
    total += written;
  }
  EXPECT_EQ(r.bytes_after, total);
  // The directory loads back to the same tensors (floating ones rounded to bfloat16).
  nn::Model loaded = load_model(dir / "c");
  for (const SlotReport& slot : r.slots) {
    const nn::NamedTensors a = loaded.slot(slot.name).base().tensors(),
                           b = model.slot(slot.name).base().tensors();
    ASSERT_EQ(a.size(), b.size());
    for (size_t i = 0; i < a.size(); ++i) {
      EXPECT_EQ(a[i].first, b[i].first);
      const at::Tensor want = b[i].second.is_floating_point() ? b[i].second.to(at::kBFloat16) : b[i].second;
      EXPECT_EQ(max_abs_diff(a[i].second, want), 0) << slot.name << "." << a[i].first;
    }
  }
}

TEST(CompressModelTest, RpcaTakesTheRankCap) {
  nn::Model model = small_model(6);
  CompressOptions o = method("rpca");
  o.rank = 2;
  o.targets = {"model.layers.0.self_attn.q_proj"};
  o.method_options = Json{{"max_iters", 20}};
  const CompressReport r = compress_model(model, o, nullptr);
  ASSERT_EQ(r.slots.size(), 1u);
  EXPECT_EQ(r.slots[0].rank, 2);
}

// Compensated operators (a method's operator plus an EoRA or SVD low-rank term): compress, save,
// load, and the loaded model computes the same logits; the dense export computes them too. Every
// method without compensation goes through the same in compression_contract_test.cpp.
TEST(CompressModelTest, CompensatedOperatorsRoundTripThroughTheDirectoryAndTheDenseExport) {
  const at::Tensor ids = token_stream(24).reshape({2, 12});
  const at::Tensor calib = token_stream(400);
  struct Case {
    std::string method, compensation;
    int64_t rank;
    double ratio;
  };
  const std::vector<Case> cases = {
      {"prune24", "eora", 0, 0}, {"asvd", "svd", 0, 0.25}, {"rtn", "eora", 0, 0}};
  for (const Case& c : cases) {
    SCOPED_TRACE(c.method + "+" + c.compensation);
    testing::TempDir dir;
    nn::Model model = small_model(3);
    model.save(dir / "dense");
    CompressOptions o = method(c.method);
    o.rank = c.rank;
    o.ratio = c.ratio;
    o.compensation = c.compensation;
    o.compensation_rank = c.compensation.empty() ? 0 : 4;
    if (c.method == "rpca") o.method_options = Json{{"max_iters", 50}};
    std::optional<CalibrationStatistics> stats;
    if (calibration_needs(o).any) {
      CalibrationOptions co;
      co.samples = 4;
      co.seq_len = 16;
      co.progress = false;
      stats = calibrate(model, calib, co);
    }
    const CompressReport report = compress_model(model, o, stats ? &*stats : nullptr);
    EXPECT_GT(report.slots.size(), 0u);
    at::Tensor logits;
    {
      c10::InferenceMode g;
      logits = model.forward(ids);
    }
    save_compressed_model(model, dir / "compressed", dir / "dense", at::kFloat);
    ASSERT_TRUE(is_compressed_model(dir / "compressed"));
    nn::Model loaded = load_model(dir / "compressed");
    export_dense(dir / "compressed", dir / "exported");
    EXPECT_FALSE(is_compressed_model(dir / "exported"));
    nn::Model exported = nn::Model::load(dir / "exported");
    c10::InferenceMode g;
    EXPECT_LT(max_abs_diff(loaded.forward(ids), logits), 1e-5);
    EXPECT_LT(max_abs_diff(exported.forward(ids), logits), 1e-4);
  }
}

// A tied lm_head quantised with the decoder slots (rtn --targets ... lm_head, what a 4-bit model
// whose head is most of its bytes wants): the saved directory loads with the quantised head and the
// stored embedding, computes the same logits, and decodes on the fused step.
TEST(CompressModelTest, AQuantisedTiedHeadLoadsBack) {
  testing::TinyLlama shape;
  shape.vocab_size = 32;
  shape.hidden_size = 64;
  shape.intermediate_size = 128;
  shape.tie_embeddings = true;
  nn::Model model = testing::tiny_llama(shape, 5);
  testing::TempDir dir;
  model.save(dir / "dense");
  CompressOptions o = method("rtn");
  o.targets = {"q_proj", "lm_head"};
  const CompressReport report = compress_model(model, o, nullptr);
  EXPECT_EQ(report.slots.size(), 3u);  // two layers' q_proj and the head
  const at::Tensor ids = token_stream(12).reshape({1, 12});
  at::Tensor logits;
  {
    c10::InferenceMode g;
    logits = model.forward(ids);
  }
  save_compressed_model(model, dir / "compressed", dir / "dense", at::kFloat);
  nn::Model loaded = load_model(dir / "compressed");
  EXPECT_EQ(loaded.slot("lm_head").base().kind(), "quantized");
  EXPECT_EQ(loaded.fused_decode_obstacle(), "");
  c10::InferenceMode g;
  EXPECT_LT(max_abs_diff(loaded.forward(ids), logits), 1e-5);
}

// SVDQuant's shared branch: q, k and v (gate and up) hold one λ and one L2, in memory after
// compression and again after a save and load (each slot stores its own copy; the loader shares
// equal ones), so that within one shared-input forward x̂ L2ᵀ is computed once (one cache entry for
// the three slots) and the outputs are those of each slot alone.
TEST(CompressModelTest, SvdQuantSharedBranchIsComputedOncePerInput) {
  testing::TempDir dir;
  nn::Model model = small_model(3);
  model.save(dir / "dense");
  CompressOptions o = method("svdquant");
  o.rank = 8;
  CalibrationOptions co;
  co.samples = 4;
  co.seq_len = 16;
  co.progress = false;
  const CalibrationStatistics stats = calibrate(model, token_stream(400), co);
  compress_model(model, o, &stats);
  save_compressed_model(model, dir / "compressed", dir / "dense", at::kFloat);
  nn::Model loaded = load_model(dir / "compressed");
  const std::string layer = "model.layers.0.";
  for (nn::Model* m : {&model, &loaded}) {
    std::vector<const nn::LinearSlot*> qkv;
    for (const char* name : {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"})
      qkv.push_back(&m->slot(layer + name));
    auto down = [](const nn::LinearSlot* s) {
      for (const auto& [n, t] : s->base().tensors())
        if (n == "lora_down") return t.const_data_ptr();
      return static_cast<const void*>(nullptr);
    };
    ASSERT_NE(down(qkv[0]), nullptr);
    EXPECT_EQ(down(qkv[0]), down(qkv[1]));
    EXPECT_EQ(down(qkv[0]), down(qkv[2]));
    const at::Tensor x = randn({2, 5, qkv[0]->in_features()}, 9);
    c10::InferenceMode g;
    std::vector<at::Tensor> alone;
    for (const nn::LinearSlot* s : qkv) alone.push_back(s->base().forward(x));
    nn::SharedInputScope scope(x);
    for (size_t i = 0; i < qkv.size(); ++i) EXPECT_TRUE(at::equal(qkv[i]->base().forward(x), alone[i]));
    EXPECT_EQ(scope.size(), 1u);  // one x̂ L2ᵀ for the three slots
    // Another tensor, even an equal one, is not the scope's input: nothing is shared with it.
    const at::Tensor copy = x.clone();
    EXPECT_TRUE(at::equal(qkv[0]->base().forward(copy), alone[0]));
    EXPECT_EQ(scope.size(), 1u);
  }
}

TEST(CompressModelTest, BadRequestsFailBeforeAnyWork) {
  nn::Model model = small_model(4);
  auto err = [&](CompressOptions o, const CalibrationStatistics* stats = nullptr) {
    return testing::error_of([&] { validate(model, o, stats); });
  };
  CompressOptions o = method("svd");
  o.ratio = 1.5;
  EXPECT_NE(err(o).find("outside (0, 1)"), std::string::npos);
  o.ratio = 0;
  o.rank = 65;
  EXPECT_NE(err(o).find("exceeds min"), std::string::npos);
  EXPECT_NE(err(method("svd")).find("exactly one of --ratio or --rank"), std::string::npos);
  CompressOptions llm = method("svd_llm");
  llm.ratio = 0.2;
  EXPECT_NE(err(llm).find("needs calibration data"), std::string::npos);
  EXPECT_NE(err(method("nope")).find("unknown compression method"), std::string::npos);
  CompressOptions rtn = method("rtn");
  rtn.group_size = 48;
  EXPECT_NE(err(rtn).find("not a multiple of --group-size 48"), std::string::npos);
  CompressOptions t = method("rtn");
  t.targets = {"qq_proj"};
  EXPECT_NE(err(t).find("matches no slot"), std::string::npos);
  CompressOptions comp = method("rtn");
  comp.compensation = "eora";
  EXPECT_NE(err(comp).find("--compensation-rank"), std::string::npos);
  CompressOptions typo = llm;
  typo.method_options = Json{{"updat", true}};
  EXPECT_NE(err(typo).find("has no option \"updat\" (it takes: update)"), std::string::npos);
  typo.method_options = Json{{"update", "yes"}};
  EXPECT_NE(err(typo).find("\"update\": \"yes\" must be true or false"), std::string::npos);
  // A non-empty output directory is refused before the model is read.
  testing::TempDir dir;
  testing::write_text_file(dir / "out/keep.txt", "x");
  RunOptions run;
  run.model = dir / "missing-model";
  run.out = dir / "out";
  EXPECT_NE(testing::error_of([&] { compress::run(run); }).find("no such directory"), std::string::npos);
  model.save(dir / "dense");
  run.model = dir / "dense";
  run.compress = method("rtn");
  EXPECT_NE(testing::error_of([&] { compress::run(run); }).find("not an empty directory"), std::string::npos);
}

TEST(CompressModelTest, LoadingRejectsACorruptConfig) {
  testing::TempDir dir;
  nn::Model model = small_model(5);
  CompressOptions o = method("svd");
  o.rank = 8;
  compress_model(model, o, nullptr);
  save_compressed_model(model, dir / "m", dir.path(), at::kFloat);
  Json cfg = read_json_file(dir / "m" / kCompressedConfigFile);
  cfg["slots"]["model.layers.0.self_attn.q_proj"]["kind"] = "mystery";
  write_json_file(dir / "m" / kCompressedConfigFile, cfg);
  const std::string e = testing::error_of([&] { load_model(dir / "m"); });
  EXPECT_NE(e.find("unknown operator kind \"mystery\""), std::string::npos) << e;
  EXPECT_NE(e.find("model.layers.0.self_attn.q_proj"), std::string::npos) << e;
}

}  // namespace
}  // namespace lowrank::compress
