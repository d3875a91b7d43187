// WeLore (Jaiswal et al., 2024, "From GaLore to WeLore: How Low-Rank Weights Non-uniformly Emerge
// from Low-Rank Gradients", arXiv:2407.11239; VITA-Group/WeLore utils.py::adaptive_rank_pruning):
// data-agnostic, non-uniform ranks from each matrix's singular values. With the min-max
// normalised spectrum s̃ = (s − s_min) / (s_max − s_min) and one global threshold τ, a matrix keeps
// k = n − #{i : s̃_i < τ} ranks (heavy-tailed spectra drop many, flat ones few) and is factorised as
// its rank-k truncated SVD when that saves parameters; otherwise it stays dense (the paper's N-LRC).
// A perfectly flat spectrum normalises to 0/0 = NaN in the reference (utils.py lines 131-132), drops
// no rank and stays dense; so does it here (linalg/rank.h).
// Deviations: the reference factorises a matrix when its rank reduction k_drop/n exceeds min_ratio
// (lib/rank_reduction.py::do_rank_reduction; 0.4999 in welore_continual_finetune.py), here when
// k (m + n) < m n, the same test for a square matrix; and the paper looks τ up in a table fitted for LLaMA-2
// 7B/13B by *rank* reduction; here τ is found by bisection as the smallest threshold whose factorisation
// removes the requested fraction of the targeted parameters (or given directly with --tau).
#include <ATen/ATen.h>

#include "lowrank/compress/methods.h"
#include "lowrank/core/error.h"
#include "lowrank/linalg/rank.h"

namespace lowrank::compress {

namespace {

// Ranks at threshold tau and the parameters they remove.
std::pair<std::vector<int64_t>, int64_t> ranks_at(const std::vector<at::Tensor>& spectra,
                                                  const std::vector<std::pair<int64_t, int64_t>>& shapes,
                                                  double tau) {
  std::vector<int64_t> ranks;
  int64_t saved = 0;
  for (size_t i = 0; i < spectra.size(); ++i) {
    const auto [m, n] = shapes[i];
    // At least 1 for a spectrum that is not flat (its largest normalised value is 1 >= tau); all
    // n for a flat one, which then never saves parameters and stays dense, as in the reference.
    const int64_t k = linalg::welore_rank(spectra[i], tau);
    if (k * (m + n) < m * n) {
      ranks.push_back(k);
      saved += m * n - k * (m + n);
    } else {
      ranks.push_back(-1);
    }
  }
  return {ranks, saved};
}

}  // namespace

WeLoreChoice welore_ranks(const std::vector<at::Tensor>& spectra,
                          const std::vector<std::pair<int64_t, int64_t>>& shapes, double ratio, double tau) {
  LR_CHECK(spectra.size() == shapes.size() && !spectra.empty(), InvalidArgument, "WeLore: ", spectra.size(),
           " spectra for ", shapes.size(), " matrices");
  if (tau >= 0) {
    LR_CHECK(tau <= 1, InvalidArgument, "WeLore threshold --tau ", tau, " is not in [0, 1]");
    return {tau, ranks_at(spectra, shapes, tau).first};
  }
  LR_CHECK(ratio > 0 && ratio < 1, InvalidArgument, "WeLore needs --ratio in (0, 1) or --tau, got ratio ",
           ratio);
  int64_t total = 0;
  for (const auto& [m, n] : shapes) total += m * n;
  const double target = ratio * static_cast<double>(total);
  LR_CHECK(static_cast<double>(ranks_at(spectra, shapes, 1.0).second) >= target, InvalidArgument,
           "WeLore cannot remove ", ratio,
           " of the parameters even at tau = 1 (rank 1 wherever the spectrum is not flat); lower --ratio");
  double lo = 0, hi = 1;  // saved(hi) >= target
  for (int it = 0; it < 50; ++it) {
    const double mid = 0.5 * (lo + hi);
    if (static_cast<double>(ranks_at(spectra, shapes, mid).second) >= target)
      hi = mid;
    else
      lo = mid;
  }
  return {hi, ranks_at(spectra, shapes, hi).first};
}

}  // namespace lowrank::compress
