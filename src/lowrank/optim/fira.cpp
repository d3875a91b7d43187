// Fira's residual and limiter, preset and registration; the equations are in fira.h.
#include "lowrank/optim/fira.h"

#include <algorithm>

#include "lowrank/core/error.h"
#include "lowrank/optim/galore.h"

namespace lowrank::optim {

FiraResidual fira_residual(const at::Tensor& g, const at::Tensor& r, const at::Tensor& n,
                           const at::Tensor& sub, std::optional<double> previous, double gamma) {
  LR_CHECK(r.dim() == 2 && n.sizes() == r.sizes() && g.dim() == 2 && sub.sizes() == g.sizes(),
           InvalidArgument, "fira: needs a 2-D projection (got R ", r.sizes(), ", N ", n.sizes(), ", G ",
           g.sizes(), ")");
  at::NoGradGuard no_grad;
  // The norm runs over the low-rank dimension: the short side of N (the code's norm_dim).
  const int64_t dim = n.size(0) < n.size(1) ? 0 : 1;
  const std::vector<int64_t> dims{dim};
  const at::Tensor phi = at::linalg_vector_norm(n, 2, dims, /*keepdim=*/true) /
                         (at::linalg_vector_norm(r, 2, dims, /*keepdim=*/true) + 1e-8);
  at::Tensor s = (g - sub) * phi;
  double norm = at::linalg_vector_norm(s, 2).item<double>();
  if (previous) {
    // Limiter: shrink S so its norm grows by at most γ per step.
    const double limiter = std::max(norm / (*previous + 1e-8), gamma) / gamma;
    s = s / limiter;
    norm = norm / limiter;
  }
  return {s, norm};
}

LowRankConfig fira_defaults() {
  LowRankConfig c = galore_defaults();
  c.method = "fira";
  c.residual = ResidualRule::kFira;
  c.fira_gamma = 1.01;
  return c;
}

void register_fira(Registry<OptimizerMethod>& registry) {
  registry.add({"fira",
                "GaLore plus the norm-scaled full-rank residual and the norm-growth limiter",
                "Chen et al., 2024, arXiv:2410.01623",
                {{"rank", "r (128)"},
                 {"update_gap", "T (200)"},
                 {"scale", "alpha (0.25); also the code's alpha-residual G - alpha*P P^T G"},
                 {"fira_gamma", "gamma (1.01): max growth of ||S|| per step"},
                 {"projector", "svd (default), randomized_svd, random, gaussian, dct"},
                 {"eps", "1e-6, added to sqrt(V)"},
                 {"weight_decay", "lambda (0), after the update"}}},
               {fira_defaults()});
}

}  // namespace lowrank::optim
