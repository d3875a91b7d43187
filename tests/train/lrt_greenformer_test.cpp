// Greenformers' low-rank transformation (docs/methods/greenformers.md): the `lowrank`
// parameterisation's factors from an SVD (LowRankBaOperator::refactor, train/lowrank_ba.h) equal
// those of greenformer's auto_fact(solver='svd') (the thesis author's package; fixture
// tests/fixtures/mixers/greenformer/make.py) up to the sign of each component. auto_fact keeps all
// of Σ in the input-side factor (led0 = Σ_r V_rᵀ, led1 = U_r); lowrank splits √Σ into both
// (A = √Σ_r V_rᵀ, B = U_r √Σ_r), so B = ±led1·√σ and A = ±led0 / √σ with one sign per component.
#include <gtest/gtest.h>

#include "lowrank/core/safetensors.h"
#include "lowrank/train/lowrank_ba.h"
#include "tests/testing.h"

namespace lowrank::train {
namespace {

using ::lowrank::testing::fixture;
using ::lowrank::testing::max_abs_diff;

TEST(LrtGreenformerTest, SvdFactorsEqualAutoFactsUpToSign) {
  const auto f = SafetensorsFile::open(fixture("mixers/greenformer/greenformer.safetensors"));
  const at::Tensor led0 = f.load("led0"), led1 = f.load("led1");  // [r, in], [out, r]
  // B·A = W (scale 1), a rank-3 weight that refactor() re-splits through its SVD.
  const LowRankBaOperator op(f.load("b0").clone(), f.load("a0").clone(), 1.0);
  op.refactor();
  EXPECT_LE(max_abs_diff(op.dense_weight(), f.load("w")), 1e-10);
  const at::Tensor sigma = led0.norm(2, 1);  // the rows of Σ_r V_rᵀ have norms σ
  const at::Tensor root = sigma.sqrt();
  for (int64_t i = 0; i < led0.size(0); ++i) {
    // The component's sign: where auto_fact's and lowrank's singular vectors point.
    const double sign = at::dot(op.b().select(1, i), led1.select(1, i)).item<double>() >= 0 ? 1.0 : -1.0;
    EXPECT_LE(max_abs_diff(op.b().select(1, i), sign * led1.select(1, i) * root[i]), 1e-9)
        << "B column " << i;
    EXPECT_LE(max_abs_diff(op.a().select(0, i), sign * led0.select(0, i) / root[i]), 1e-9) << "A row " << i;
  }
}

}  // namespace
}  // namespace lowrank::train
