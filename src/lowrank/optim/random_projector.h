// Random (data-independent) projectors.
//
// RandomOrthogonalProjector — FRUGAL (Zmushko et al., ICML 2025, "FRUGAL: Memory-Efficient
// Optimization by Reducing State Overhead for Scalable Training"), galore_projector.py proj_type
// "random" (nn.init.orthogonal_): a semi-orthogonal matrix, here the Q of a QR of a seeded Gaussian
// (m, r) or (n, r) matrix, on GaLore's std side (P [m, r] or Q [r, n], orthonormal columns/rows).
//
// GaussianProjector — APOLLO (Zhu et al., MLSys 2025, "APOLLO: SGD-like Memory, AdamW-level
// Performance", arXiv:2412.05270; zhuhanqing/APOLLO): entries i.i.d. N(0, 1/r), redrawn from a
// seed at every refresh, no SVD. Only the seed is state: the matrix is regenerated on every
// down()/up() rather than stored (state_bytes() = 8), trading a Gaussian draw per call for memory.
// With E[P Pᵀ] ≠ I this is not an orthogonal projection; APOLLO's norm-ratio scaling copes with
// that, GaLore-style back-projection sees the N(0, 1/r) scale as is.
// Deviation: draws use the CPU generator (reproducible across devices), then move to the device.
#pragma once

#include "lowrank/optim/projector.h"

namespace lowrank::optim {

class RandomOrthogonalProjector final : public MatrixProjector {
 public:
  RandomOrthogonalProjector(int64_t m, int64_t n, int64_t rank, uint64_t seed)
      : MatrixProjector(m, n, rank), seed_(seed) {}
  ProjectorKind kind() const override { return ProjectorKind::kRandomOrthogonal; }
  void refresh(const at::Tensor& grad, int64_t step) override;

 private:
  uint64_t seed_;
};

class GaussianProjector final : public MatrixProjector {
 public:
  GaussianProjector(int64_t m, int64_t n, int64_t rank, uint64_t seed)
      : MatrixProjector(m, n, rank), seed_(seed) {}
  ProjectorKind kind() const override { return ProjectorKind::kGaussian; }
  void refresh(const at::Tensor& grad, int64_t step) override;
  NamedTensors state_tensors() const override;
  void load_state(const NamedTensors& tensors, const at::Device& device) override;
  int64_t state_bytes() const override { return ready_ ? 8 : 0; }

 protected:
  at::Tensor current_matrix() const override;

 private:
  uint64_t seed_;
  uint64_t draw_seed_ = 0;  // the seed of the current matrix: mix_seed(seed, refresh step)
  at::Device device_ = at::kCPU;
};

}  // namespace lowrank::optim
