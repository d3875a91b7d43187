// FRUGAL (Zmushko et al., 2025) at density ρ < 1, where the state-free part matters: every step
// recomputed in float64 from the equations of frugal.h (the authors' GaloreOptimizer step in
// frugal/proj_optimizer_templates.py and AdamW._compute_update in frugal/adamw.py): decay first,
// Adam (AdamW form) on R = down(G) with lr·α, signSGD on G − up(R) with lr·α·ρ_lr, and at each
// refresh (every T steps) a new subspace with M = V = 0 and t = 0. A refresh then equals the first
// step of a freshly constructed optimizer.
#include <cmath>

#include <gtest/gtest.h>

#include "lowrank/optim/methods.h"
#include "lowrank/optim/projector.h"
#include "tests/optim/optim_testing.h"
#include "tests/testing.h"

namespace lowrank::optim {
namespace {

using testing::max_abs_diff;
using testing_support::randn;

constexpr double kLr = 0.01, kDecay = 0.1, kScale = 0.5, kResidualScale = 0.3, kBeta1 = 0.9, kBeta2 = 0.99,
                 kEps = 1e-8;

Json frugal_options(const std::string& projector, int64_t gap) {
  return {{"projector", projector},
          {"density", 0.5},
          {"update_gap", gap},
          {"scale", kScale},
          {"residual_lr_scale", kResidualScale},
          {"weight_decay", kDecay},
          {"beta2", kBeta2}};
}

TEST(FrugalTest, PartialDensityMatchesAdamPlusSignSgdRecomputedInFloat64) {
  for (const char* kind : {"svd", "random"}) {
    for (const bool tall : {true, false}) {
      const int64_t m = tall ? 8 : 6, n = tall ? 6 : 10, r = 3;  // r = round(0.5·min(m, n))
      const at::Tensor W0 = randn({m, n}, 1, 1.0, at::kDouble);
      const NamedTensors params = {{"l.mlp.w", W0.clone().requires_grad_(true)}};
      LowRankAdam opt = make_optimizer("frugal", params, frugal_options(kind, 3));
      at::Tensor W = W0.clone(), M, V, B;
      int64_t t = 0;
      for (int64_t k = 0; k < 7; ++k) {
        const at::Tensor G = randn({m, n}, 10 + k, 1.0, at::kDouble);
        params[0].second.mutable_grad() = G;
        opt.step(kLr);
        W = W * (1 - kLr * kDecay);
        if (k % 3 == 0) {
          // The new subspace: read it, and check what it must be.
          const auto* P = dynamic_cast<const MatrixProjector*>(opt.projector("l.mlp.w"));
          ASSERT_NE(P, nullptr);
          B = P->matrix().to(at::kDouble);  // Q [r, n] (tall) or P [m, r] (wide)
          ASSERT_EQ(B.sizes(), tall ? (std::vector<int64_t>{r, n}) : (std::vector<int64_t>{m, r})) << kind;
          const at::Tensor gram = tall ? at::matmul(B, B.t()) : at::matmul(B.t(), B);
          ASSERT_LE(max_abs_diff(gram, at::eye(r, at::kDouble)), 1e-6) << kind;  // random: float32
          if (std::string(kind) == "svd") {
            auto [u, s, vh] = at::linalg_svd(G, false);
            const at::Tensor top = tall ? vh.slice(0, 0, r) : u.slice(1, 0, r);
            const at::Tensor want = tall ? at::matmul(top.t(), top) : at::matmul(top, top.t());
            const at::Tensor got = tall ? at::matmul(B.t(), B) : at::matmul(B, B.t());
            ASSERT_LE(max_abs_diff(got, want), 1e-10) << "step " << k;
          }
          M = at::zeros(tall ? std::vector<int64_t>{m, r} : std::vector<int64_t>{r, n}, at::kDouble);
          V = at::zeros_like(M);
          t = 0;
        }
        ++t;
        const at::Tensor R = tall ? at::matmul(G, B.t()) : at::matmul(B.t(), G);
        M = kBeta1 * M + (1 - kBeta1) * R;
        V = kBeta2 * V + (1 - kBeta2) * R * R;
        const double bc1 = 1 - std::pow(kBeta1, t), bc2 = 1 - std::pow(kBeta2, t);
        const at::Tensor u = -(kLr * kScale / bc1) * M / (V.sqrt() / std::sqrt(bc2) + kEps);
        auto up = [&](const at::Tensor& x) { return tall ? at::matmul(x, B) : at::matmul(B, x); };
        W = W + up(u) - kLr * kScale * kResidualScale * (G - up(R)).sign();
        ASSERT_LE(max_abs_diff(params[0].second, W), 1e-12)
            << kind << (tall ? " tall" : " wide") << " step " << k;
      }
    }
  }
}

// At a refresh the moments and t restart, so the step equals a new optimizer's first step on the
// same weights and gradient (the SVD subspace of that gradient is the same for both); keeping t
// (reset_step false) does not.
TEST(FrugalTest, ARefreshIsARestartedAdam) {
  for (const bool reset_step : {true, false}) {
    const NamedTensors params = {{"l.mlp.w", randn({8, 6}, 1, 1.0, at::kDouble).requires_grad_(true)}};
    Json options = frugal_options("svd", 3);
    options["reset_step"] = reset_step;
    LowRankAdam opt = make_optimizer("frugal", params, options);
    for (int64_t k = 0; k < 3; ++k) {
      params[0].second.mutable_grad() = randn({8, 6}, 10 + k, 1.0, at::kDouble);
      opt.step(kLr);
    }
    const NamedTensors fresh_params = testing_support::clone_params(params);
    LowRankAdam fresh = make_optimizer("frugal", fresh_params, options);
    const at::Tensor G = randn({8, 6}, 20, 1.0, at::kDouble);
    params[0].second.mutable_grad() = G.clone();
    fresh_params[0].second.mutable_grad() = G.clone();
    opt.step(kLr);  // step 3: a refresh
    fresh.step(kLr);
    const double diff = max_abs_diff(params[0].second, fresh_params[0].second);
    if (reset_step) {
      EXPECT_LE(diff, 1e-14);
    } else {
      EXPECT_GT(diff, 1e-4);  // bias correction of t = 4 instead of 1
    }
  }
}

}  // namespace
}  // namespace lowrank::optim
