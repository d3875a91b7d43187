// DCT column-selection projector — Modoranu et al., 2025, "SVD-Free Low-Rank Adaptive Gradient
// Optimization for Large Language Models" (later "FFT-based Dynamic Subspace Selection…"),
// arXiv:2505.17967; IST-DASLab/ISTA-DASLab-Optimizers fft_low_rank/fft_projector.py
// (change_subspace, compute_similarity_matmul).
//
// A fixed orthonormal basis Q [d, d], d = min(m, n), shared by every projector of that size; each
// refresh keeps the r basis vectors that carry most of the gradient (ℓ1 score, ell_norm = 1):
//   tall (m >= n, d = n): S = G Q [m, n],  s_j = ||S[:, j]||_1,  idx = top-r(s)
//                         down(G) = G Q[:, idx] [m, r],   up(u) = u Q[:, idx]ᵀ
//   wide (m <  n, d = m): S = Qᵀ G [m, n], s_i = ||S[i, :]||_1,  idx = top-r(s)
//                         down(G) = Q[:, idx]ᵀ G [r, n],  up(u) = Q[:, idx] u
// The state is the r indices (int64 here, int32 in the reference); Q is counted once per size
// (shared_basis()).
// Deviations: Q = linalg::dct3_matrix(d) = Cᵀ, whose columns are the DCT-II basis vectors, so
// G Q is the orthonormal DCT-II of G's rows (as the reference's Makhoul/FFT path computes); the
// reference's matmul path builds the transposed matrix under the same name. Both are orthonormal.
// top-r is taken sorted (deterministic order; the reference passes sorted=False). The reference's
// hard-coded GQA special case (512|1024 × 3584|4096 projected on the long side) and the optional
// state rotation on subspace change (rotate_subspace) are not implemented.
#pragma once

#include "lowrank/optim/projector.h"

namespace lowrank::optim {

// The shared orthonormal basis Q [d, d] (float32) on `device`, built once per (d, device).
// Thread-safe.
at::Tensor dct_basis(int64_t d, const at::Device& device);

class DctProjector final : public Projector {
 public:
  DctProjector(int64_t m, int64_t n, int64_t rank);
  ProjectorKind kind() const override { return ProjectorKind::kDct; }
  void refresh(const at::Tensor& grad, int64_t step) override;
  at::Tensor down(const at::Tensor& g) const override;
  at::Tensor up(const at::Tensor& low) const override;
  NamedTensors state_tensors() const override;
  void load_state(const NamedTensors& tensors, const at::Device& device) override;
  int64_t state_bytes() const override;
  at::Tensor shared_basis() const override { return basis_; }

  ProjectionSide side() const { return side_; }
  const at::Tensor& indices() const { return indices_; }
  // Q[:, idx] [d, r].
  at::Tensor selected() const;

 private:
  ProjectionSide side_;
  at::Tensor basis_;    // Q [d, d], shared
  at::Tensor indices_;  // [r] int64
};

}  // namespace lowrank::optim
