// SVD projectors — GaLore (Zhao et al., 2024, arXiv:2403.03507, galore_torch/galore_projector.py,
// proj_type "std"), and the randomized variant of GaLore 2 (Meta, arXiv:2504.20437, 2nd-hand via
// reference/optimizers.md §7).
//
// Exact: G = U S Vh (thin, float32), right projector Q = Vh[:r] [r, n] when m >= n, else left
// P = U[:, :r] [m, r] (linalg::truncated_svd, i.e. torch.linalg.svd(G.float(), full_matrices=False)).
// Randomized: the rank-r randomized SVD of Halko et al. 2011 (linalg::randomized_svd) with l = r + p
// columns and q power iterations; from the second refresh on, the sketch starts from the previous
// subspace (Qᵀ or P) instead of a Gaussian, so a slowly rotating gradient subspace is tracked with
// few iterations (GaLore issues #14/#28: SVD cost at refresh steps).
// Deviation: the matrix is kept in float32 (GaLore casts it back to the gradient's bf16).
#pragma once

#include "lowrank/optim/projector.h"

namespace lowrank::optim {

class SvdProjector final : public MatrixProjector {
 public:
  SvdProjector(int64_t m, int64_t n, int64_t rank) : MatrixProjector(m, n, rank) {}
  ProjectorKind kind() const override { return ProjectorKind::kSvd; }
  void refresh(const at::Tensor& grad, int64_t step) override;
};

class RandomizedSvdProjector final : public MatrixProjector {
 public:
  RandomizedSvdProjector(int64_t m, int64_t n, int64_t rank, uint64_t seed, int64_t oversample,
                         int64_t power_iters);
  ProjectorKind kind() const override { return ProjectorKind::kRandomizedSvd; }
  void refresh(const at::Tensor& grad, int64_t step) override;

 private:
  uint64_t seed_;
  int64_t oversample_, power_iters_;
};

}  // namespace lowrank::optim
