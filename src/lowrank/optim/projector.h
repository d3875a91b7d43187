// Gradient projectors for the low-rank optimizers (GaLore family): GaLore (Zhao et al., 2024,
// "GaLore: Memory-Efficient LLM Training by Gradient Low-Rank Projection", arXiv:2403.03507, §3 and
// Alg. 1; galore_torch/galore_projector.py), whose conventions (side rule, SVD of the current
// gradient, refresh timing) its successors share; docs/optimizers.md, "Shared conventions".
//
// A projector maps a gradient G [m, n] to a smaller tensor R = down(G) on which the optimizer keeps
// its state, and maps an update of R's shape back with up(). With GaLore's side rule
// (proj_type "std") a dense projector sits on the short side of G:
//   m >= n: right projector Q [r, n],  R = G Qᵀ [m, r],  up(N) = N Q      (states r×D, D = m)
//   m <  n: left projector  P [m, r],  R = Pᵀ G [r, n],  up(N) = P N
// so up(down(G)) = G Qᵀ Q or P Pᵀ G, the orthogonal projection of G when Q (P) is orthonormal.
// Coordinate projectors (FRUGAL RandK) and the DCT projector select columns/rows instead and store
// only indices. refresh() recomputes the subspace from the current minibatch gradient (not the
// momentum); the optimizer decides when (every update_gap steps).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <ATen/ATen.h>

namespace lowrank::optim {

using NamedTensors = std::vector<std::pair<std::string, at::Tensor>>;

enum class ProjectorKind {
  kSvd,               // exact thin SVD of G (svd_projector.h)
  kRandomizedSvd,     // randomized SVD, warm-started from the previous subspace (svd_projector.h)
  kRandomOrthogonal,  // seeded semi-orthogonal matrix, FRUGAL proj_type "random" (random_projector.h)
  kGaussian,          // seeded N(0, 1/r) matrix, APOLLO; state is the seed (random_projector.h)
  kColumns,           // random subset of columns, FRUGAL coord_choice "columns" (coordinate_projector.h)
  kRows,              // random subset of rows, coord_choice "rows"
  kRandK,             // random subset of entries, coord_choice "randk"
  kDct,               // top-ℓ1 columns of a fixed DCT basis (dct_projector.h)
};

// "svd", "randomized_svd", "random", "gaussian", "columns", "rows", "randk", "dct".
std::string_view projector_kind_name(ProjectorKind kind);
// The inverse of projector_kind_name; "randperm" (FRUGAL) is accepted as an alias for the
// coordinate axes of the short side (kColumns for m >= n, else kRows), so it needs the shape.
// Throws InvalidArgument listing the names.
ProjectorKind parse_projector_kind(std::string_view name, int64_t m, int64_t n);

enum class ProjectionSide { kLeft, kRight };
// GaLore proj_type "std": the projector sits on the short side, right when m >= n.
ProjectionSide std_side(int64_t m, int64_t n);

struct ProjectorOptions {
  ProjectorKind kind = ProjectorKind::kSvd;
  int64_t rank = 128;  // r; dense projectors clamp it to min(m, n), coordinate ones to their axis
  uint64_t seed = 0;   // random, gaussian, coordinate and randomized-SVD projectors
  // Randomized SVD only (Halko et al. 2011): oversampling p and power iterations q per refresh.
  int64_t oversample = 4;
  int64_t power_iters = 1;
};

class Projector {
 public:
  virtual ~Projector() = default;

  virtual ProjectorKind kind() const = 0;
  // Recomputes the subspace from the gradient `grad` [m, n] (any floating dtype). `step` is the
  // optimizer's step count; seeded projectors derive their draw from (seed, step), so a resumed
  // run draws the same subspace.
  virtual void refresh(const at::Tensor& grad, int64_t step) = 0;
  // R = down(G) for G [m, n]; the shape depends on the projector (see the header comment).
  virtual at::Tensor down(const at::Tensor& g) const = 0;
  // The [m, n] back-projection of `low` (a tensor of down()'s shape).
  virtual at::Tensor up(const at::Tensor& low) const = 0;
  // w += alpha·up(low), in place (w [m, n] of low's dtype). Projectors that can accumulate
  // without materialising up(low) override it.
  virtual void add_up(at::Tensor& w, const at::Tensor& low, double alpha) const { w.add_(up(low), alpha); }
  // The state that defines the subspace, for checkpoints: names are relative ("ortho",
  // "indices", "seed"), tensors are CPU copies. Empty before the first refresh.
  virtual NamedTensors state_tensors() const = 0;
  // Restores state_tensors() output onto `device`. Throws Corruption for a missing or mis-shaped
  // tensor.
  virtual void load_state(const NamedTensors& tensors, const at::Device& device) = 0;
  // Bytes this projector keeps between steps (its matrix or its indices). A basis shared by all
  // projectors of one size (DCT) is reported by shared_basis() instead.
  virtual int64_t state_bytes() const = 0;
  // A matrix shared between projectors (the DCT basis), counted once by the optimizer; undefined
  // when there is none.
  virtual at::Tensor shared_basis() const { return {}; }

  // Whether refresh() (or load_state) has run.
  bool ready() const { return ready_; }
  int64_t rows() const { return m_; }
  int64_t cols() const { return n_; }
  // The effective rank (r clamped to what the shape allows).
  int64_t rank() const { return rank_; }

 protected:
  Projector(int64_t m, int64_t n, int64_t rank) : m_(m), n_(n), rank_(rank) {}
  void check_grad(const at::Tensor& g, std::string_view what) const;
  int64_t m_, n_, rank_;
  bool ready_ = false;
};

// A projector for a [m, n] gradient. Throws InvalidArgument for a non-positive shape or rank.
std::unique_ptr<Projector> make_projector(const ProjectorOptions& options, int64_t m, int64_t n);

// A seed for draw number `step` of a projector seeded with `seed` (splitmix64 of both), so that
// consecutive refreshes are independent and reproducible.
uint64_t mix_seed(uint64_t seed, int64_t step);

// Finds `name` in `tensors`; throws Corruption naming `what` when it is missing.
const at::Tensor& find_tensor(const NamedTensors& tensors, const std::string& name, std::string_view what);

// A projector given by one dense matrix on GaLore's std side: P [m, r] (left) or Q [r, n]
// (right). Subclasses compute the matrix in refresh(); down/up/state are shared.
class MatrixProjector : public Projector {
 public:
  at::Tensor down(const at::Tensor& g) const override;
  at::Tensor up(const at::Tensor& low) const override;
  // One GEMM accumulating into w (addmm), without the [m, n] temporary of up().
  void add_up(at::Tensor& w, const at::Tensor& low, double alpha) const override;
  NamedTensors state_tensors() const override;
  void load_state(const NamedTensors& tensors, const at::Device& device) override;
  int64_t state_bytes() const override;

  ProjectionSide side() const { return side_; }
  // P [m, r] or Q [r, n] (float32 or float64, on the gradient's device).
  const at::Tensor& matrix() const { return matrix_; }

 protected:
  MatrixProjector(int64_t m, int64_t n, int64_t rank);
  // The matrix for down/up; the Gaussian projector regenerates it from its seed instead.
  virtual at::Tensor current_matrix() const { return matrix_; }
  ProjectionSide side_;
  at::Tensor matrix_;
};

}  // namespace lowrank::optim
