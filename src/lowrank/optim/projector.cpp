// The projector interface, GaLore's side rule and the dense-matrix projector; see projector.h.
#include "lowrank/optim/projector.h"

#include <algorithm>

#include "lowrank/core/error.h"
#include "lowrank/core/random.h"
#include "lowrank/optim/coordinate_projector.h"
#include "lowrank/optim/dct_projector.h"
#include "lowrank/optim/random_projector.h"
#include "lowrank/optim/svd_projector.h"

namespace lowrank::optim {

std::string_view projector_kind_name(ProjectorKind kind) {
  switch (kind) {
    case ProjectorKind::kSvd:
      return "svd";
    case ProjectorKind::kRandomizedSvd:
      return "randomized_svd";
    case ProjectorKind::kRandomOrthogonal:
      return "random";
    case ProjectorKind::kGaussian:
      return "gaussian";
    case ProjectorKind::kColumns:
      return "columns";
    case ProjectorKind::kRows:
      return "rows";
    case ProjectorKind::kRandK:
      return "randk";
    case ProjectorKind::kDct:
      return "dct";
  }
  return "?";
}

ProjectorKind parse_projector_kind(std::string_view name, int64_t m, int64_t n) {
  if (name == "randperm")
    return std_side(m, n) == ProjectionSide::kRight ? ProjectorKind::kColumns : ProjectorKind::kRows;
  for (ProjectorKind k : {ProjectorKind::kSvd, ProjectorKind::kRandomizedSvd,
                          ProjectorKind::kRandomOrthogonal, ProjectorKind::kGaussian, ProjectorKind::kColumns,
                          ProjectorKind::kRows, ProjectorKind::kRandK, ProjectorKind::kDct})
    if (projector_kind_name(k) == name) return k;
  throw InvalidArgument(str("unknown projector \"", name,
                            "\" (known: svd, randomized_svd, random, gaussian, columns, rows, randk, dct, "
                            "randperm)"));
}

ProjectionSide std_side(int64_t m, int64_t n) {
  return m >= n ? ProjectionSide::kRight : ProjectionSide::kLeft;
}

uint64_t mix_seed(uint64_t seed, int64_t step) {
  return splitmix64(seed + 0x9E3779B97F4A7C15ull * static_cast<uint64_t>(step));
}

const at::Tensor& find_tensor(const NamedTensors& tensors, const std::string& name, std::string_view what) {
  for (const auto& [n, t] : tensors)
    if (n == name) return t;
  throw Corruption(str(what, ": missing tensor \"", name, "\""));
}

void Projector::check_grad(const at::Tensor& g, std::string_view what) const {
  LR_CHECK(g.dim() == 2 && g.size(0) == m_ && g.size(1) == n_, InvalidArgument, what, ": gradient of shape ",
           g.sizes(), " for a projector built for [", m_, ", ", n_, "]");
}

std::unique_ptr<Projector> make_projector(const ProjectorOptions& o, int64_t m, int64_t n) {
  LR_CHECK(m > 0 && n > 0, InvalidArgument, "projector: shape [", m, ", ", n, "] must be positive");
  LR_CHECK(o.rank > 0, InvalidArgument, "projector: rank must be > 0, got ", o.rank);
  switch (o.kind) {
    case ProjectorKind::kSvd:
      return std::make_unique<SvdProjector>(m, n, o.rank);
    case ProjectorKind::kRandomizedSvd:
      return std::make_unique<RandomizedSvdProjector>(m, n, o.rank, o.seed, o.oversample, o.power_iters);
    case ProjectorKind::kRandomOrthogonal:
      return std::make_unique<RandomOrthogonalProjector>(m, n, o.rank, o.seed);
    case ProjectorKind::kGaussian:
      return std::make_unique<GaussianProjector>(m, n, o.rank, o.seed);
    case ProjectorKind::kColumns:
    case ProjectorKind::kRows:
    case ProjectorKind::kRandK:
      return std::make_unique<CoordinateProjector>(o.kind, m, n, o.rank, o.seed);
    case ProjectorKind::kDct:
      return std::make_unique<DctProjector>(m, n, o.rank);
  }
  throw InternalError("make_projector: unhandled kind");
}

// --- MatrixProjector -------------------------------------------------------------------------

MatrixProjector::MatrixProjector(int64_t m, int64_t n, int64_t rank)
    : Projector(m, n, std::min(rank, std::min(m, n))), side_(std_side(m, n)) {}

at::Tensor MatrixProjector::down(const at::Tensor& g) const {
  check_grad(g, "projector down");
  const at::Tensor M = current_matrix().to(g.scalar_type());
  // Right: R = G Qᵀ [m, r]; left: R = Pᵀ G [r, n].
  return side_ == ProjectionSide::kRight ? at::matmul(g, M.t()) : at::matmul(M.t(), g);
}

at::Tensor MatrixProjector::up(const at::Tensor& low) const {
  const at::Tensor M = current_matrix().to(low.scalar_type());
  // Right: N Q [m, n]; left: P N [m, n].
  return side_ == ProjectionSide::kRight ? at::matmul(low, M) : at::matmul(M, low);
}

void MatrixProjector::add_up(at::Tensor& w, const at::Tensor& low, double alpha) const {
  const at::Tensor M = current_matrix().to(low.scalar_type());
  if (side_ == ProjectionSide::kRight) {
    w.addmm_(low, M, /*beta=*/1, alpha);
  } else {
    w.addmm_(M, low, /*beta=*/1, alpha);
  }
}

NamedTensors MatrixProjector::state_tensors() const {
  if (!ready_) return {};
  return {{"ortho", matrix_.detach().to(at::kCPU).contiguous()}};
}

void MatrixProjector::load_state(const NamedTensors& tensors, const at::Device& device) {
  const at::Tensor& t = find_tensor(tensors, "ortho", "projector state");
  const std::vector<int64_t> expected =
      side_ == ProjectionSide::kRight ? std::vector<int64_t>{rank_, n_} : std::vector<int64_t>{m_, rank_};
  LR_CHECK(t.sizes() == at::IntArrayRef(expected), Corruption, "projector state: ortho has shape ", t.sizes(),
           ", expected ", at::IntArrayRef(expected));
  matrix_ = t.to(device).clone();
  ready_ = true;
}

int64_t MatrixProjector::state_bytes() const {
  return matrix_.defined() ? static_cast<int64_t>(matrix_.nbytes()) : 0;
}

}  // namespace lowrank::optim
