// AFM (compress/afm.h) against independent computations: the expected squared output error on the
// calibration data equals the sum of the dropped eigenvalues (PCA's identity, measured on the data
// itself); uncentred AFM on a bias-free layer equals SVD-LLM's truncation-aware whitening (a
// different derivation: [W S]_k S⁻¹ with S = chol(X Xᵀ)); the slot path's statistics from the input
// Gram equal those of the collected outputs; an embedding table's reconstruction error is its tail.
#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include "lowrank/compress/afm.h"
#include "lowrank/compress/methods.h"
#include "lowrank/compress/operators.h"
#include "tests/testing.h"

namespace lowrank::compress {
namespace {

using testing::max_abs_diff;

// Correlated inputs with a non-zero mean: X = Z M + m, [n, in].
at::Tensor inputs(int64_t n, int64_t in, uint64_t seed) {
  at::manual_seed(seed);
  return at::matmul(at::randn({n, in}, at::kDouble), at::randn({in, in}, at::kDouble)) + 0.7;
}

TEST(Afm, CalibrationOutputErrorIsTheSumOfTheDroppedEigenvalues) {
  const at::Tensor X = inputs(400, 12, 1);
  at::manual_seed(2);
  const at::Tensor W = at::randn({10, 12}, at::kDouble), b = at::randn({10}, at::kDouble);
  const at::Tensor Y = at::linear(X, W, b);
  OutputStatistics stats;
  stats.add(Y.slice(0, 0, 150));
  stats.add(Y.slice(0, 150));  // accumulation over batches
  for (int64_t k : {1, 4, 9}) {
    SCOPED_TRACE(k);
    const AfmProjection p = afm_projection(stats, k);
    const AfmLinear f = afm_linear(W, b, p);
    const at::Tensor approx = at::linear(at::linear(X, f.w1.to(at::kDouble), f.b1.to(at::kDouble)),
                                         f.w2.to(at::kDouble), f.b2.to(at::kDouble));
    const double mse = (approx - Y).pow(2).sum(1).mean().item<double>();
    // The eigenvalues of the sample covariance, computed here on their own (population form, 1/n).
    const at::Tensor centred = Y - Y.mean(0);
    const at::Tensor lambda = at::linalg_eigvalsh(at::matmul(centred.t(), centred) / 400.0).flip(0);
    const double dropped = lambda.slice(0, k).sum().item<double>();
    EXPECT_NEAR(p.tail(), dropped, 1e-9 * lambda.sum().item<double>());
    // float32 factors: the measured error matches to float32 rounding of the outputs.
    EXPECT_NEAR(mse, dropped, 1e-4 * lambda.sum().item<double>());
  }
}

TEST(Afm, UncentredOnABiasFreeSlotEqualsSvdLlm) {
  const at::Tensor X = inputs(300, 16, 3);
  at::manual_seed(4);
  const at::Tensor W = at::randn({12, 16}, at::kFloat);
  SlotStatistics stats;
  stats.gram = at::matmul(X.t(), X);
  stats.sum = X.sum(0);
  stats.tokens = X.size(0);
  stats.abs_sum = X.abs().sum(0);
  stats.absmax = std::get<0>(X.abs().max(0)).to(at::kFloat);
  SlotInput in;
  in.name = "layer";
  in.weight = W;
  in.stats = &stats;
  in.rank = 5;
  CompressOptions afm;
  afm.method = "afm";
  afm.method_options = Json{{"centred", false}};
  CompressOptions svd_llm;
  svd_llm.method = "svd_llm";
  const auto a = compress_afm(in, afm);
  const auto s = compress_truncated_svd(in, svd_llm);
  EXPECT_LT(max_abs_diff(a->dense_weight().to(at::kDouble), s->dense_weight().to(at::kDouble)), 1e-6);
  // Uncentred on a bias-free layer: no bias is added.
  EXPECT_LT(a->bias().abs().max().item<double>(), 1e-6);
}

TEST(Afm, SlotStatisticsFromTheInputGramEqualCollectedOutputs) {
  const at::Tensor X = inputs(250, 10, 5);
  at::manual_seed(6);
  const at::Tensor W = at::randn({8, 10}, at::kFloat), b = at::randn({8}, at::kFloat);
  SlotStatistics stats;
  stats.gram = at::matmul(X.t(), X);
  stats.sum = X.sum(0);
  stats.tokens = X.size(0);
  SlotInput in{"layer", W, b, &stats, 3, {}};
  CompressOptions o;
  o.method = "afm";
  const auto op = compress_afm(in, o);
  // The same projection from the outputs themselves, then one folded operator.
  OutputStatistics out;
  out.add(at::linear(X, W.to(at::kDouble), b.to(at::kDouble)));
  const AfmLinear f = afm_linear(W, b, afm_projection(out, 3));
  const at::Tensor x = inputs(7, 10, 7).to(at::kFloat);
  const at::Tensor expected = at::linear(at::linear(x, f.w1, f.b1), f.w2, f.b2);
  EXPECT_LT(max_abs_diff(op->forward(x), expected), 1e-4);
  EXPECT_EQ(std::string(op->kind()), "lowrank");
}

TEST(Afm, EmbeddingReconstructionErrorIsTheTail) {
  at::manual_seed(8);
  const at::Tensor table = at::randn({30, 6}, at::kDouble).matmul(at::randn({6, 6}, at::kDouble));
  const at::Tensor ids = at::randint(0, 30, {500}, at::kLong);
  const at::Tensor E = table.index_select(0, ids);
  OutputStatistics stats;
  stats.add(E);
  const AfmProjection p = afm_projection(stats, 2);
  const AfmEmbedding r = afm_embedding(table, p);
  EXPECT_EQ(r.table.sizes(), (at::IntArrayRef{30, 2}));
  const at::Tensor approx = at::linear(r.table.to(at::kDouble).index_select(0, ids),
                                       r.proj_weight.to(at::kDouble), r.proj_bias.to(at::kDouble));
  const double mse = (approx - E).pow(2).sum(1).mean().item<double>();
  EXPECT_NEAR(mse, p.tail(), 1e-5 * p.eigenvalues.sum().item<double>());
}

TEST(Afm, RefusesARankAtOrAboveTheWidthAndEmptyStatistics) {
  OutputStatistics empty;
  EXPECT_THROW(afm_projection(empty, 1), InvalidArgument);
  OutputStatistics s;
  s.add(at::randn({20, 4}, at::kDouble));
  EXPECT_THROW(afm_projection(s, 4), InvalidArgument);
  EXPECT_THROW(afm_projection(s, 0), InvalidArgument);
  EXPECT_NO_THROW(afm_projection(s, 3));
}

}  // namespace
}  // namespace lowrank::compress
