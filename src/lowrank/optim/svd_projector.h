// SVD projectors — GaLore (Zhao et al., 2024, arXiv:2403.03507, galore_torch/galore_projector.py,
// proj_type "std"), and the randomized variant of GaLore 2 (Meta, 2025, "GaLore 2: Large-Scale
// LLM Pre-Training by Gradient Low-Rank Projection", arXiv:2504.20437; read second-hand, from
// summaries of the paper).
//
// Exact: G = U S Vh (thin, float32), right projector Q = Vh[:r] [r, n] when m >= n, else left
// P = U[:, :r] [m, r] (linalg::truncated_svd, i.e. torch.linalg.svd(G.float(), full_matrices=False)).
// Randomized: the first refresh is the rank-r randomized SVD of Halko et al. 2011
// (linalg::randomized_svd) with l = r + p columns and q power iterations. Later refreshes start
// from the previous subspace, so a slowly rotating gradient subspace is tracked with few passes
// over G (GaLore issues #14/#28: SVD cost at refresh steps). On the projector's side, B = G (left)
// or Gᵀ (right), with P0 the previous basis: Q = [P0, B Ω] (Ω Gaussian, p columns), then max(q, 1)
// rounds of Z = orth(Bᵀ Q), Q R = B Z (Halko Alg. 4.4 from the warm start), and the basis is Q times
// the top-r left singular vectors of R = Qᵀ B Z: 2 passes over G per round, none for the
// Rayleigh–Ritz step (it uses the two-sided sketch instead of Qᵀ B). bench/projectors.cpp measures
// time and captured energy against the exact SVD and torch.svd_lowrank (docs/benchmarks.md).
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
