// Coordinate (RandK) projector — FRUGAL (Zmushko et al., ICML 2025), coordinate_projector.py
// (CoordOptimizer): a random subset of k coordinates of G [m, n], redrawn at each refresh, stored
// as indices only.
//   columns: idx ⊂ [0, n), k = rank;  down(G) = G[:, idx] [m, k];  up(u) = zeros, [:, idx] = u
//   rows:    idx ⊂ [0, m), k = rank;  down(G) = G[idx, :] [k, n]
//   randk:   idx ⊂ [0, mn), k = rank; down(G) = vec(G)[idx] [k]
// so up(down(G)) keeps the chosen coordinates and zeroes the rest. With k = the full axis the
// projector is a permutation and Adam on down(G) is AdamW exactly (the test's oracle).
// Indices are the first k of a seeded randperm, in that (unsorted) order.
#pragma once

#include "lowrank/optim/projector.h"

namespace lowrank::optim {

class CoordinateProjector final : public Projector {
 public:
  // kind is kColumns, kRows or kRandK; rank is clamped to the axis length.
  CoordinateProjector(ProjectorKind kind, int64_t m, int64_t n, int64_t rank, uint64_t seed);
  ProjectorKind kind() const override { return kind_; }
  void refresh(const at::Tensor& grad, int64_t step) override;
  at::Tensor down(const at::Tensor& g) const override;
  at::Tensor up(const at::Tensor& low) const override;
  NamedTensors state_tensors() const override;
  void load_state(const NamedTensors& tensors, const at::Device& device) override;
  int64_t state_bytes() const override;

  // The chosen coordinates (int64, on the gradient's device).
  const at::Tensor& indices() const { return indices_; }

 private:
  int64_t axis_length() const;
  ProjectorKind kind_;
  uint64_t seed_;
  at::Tensor indices_;
};

}  // namespace lowrank::optim
