// Coordinate (RandK) projector; see coordinate_projector.h.
#include "lowrank/optim/coordinate_projector.h"

#include <algorithm>

#include <ATen/CPUGeneratorImpl.h>

#include "lowrank/core/error.h"

namespace lowrank::optim {
namespace {

int64_t axis_of(ProjectorKind kind, int64_t m, int64_t n) {
  switch (kind) {
    case ProjectorKind::kColumns:
      return n;
    case ProjectorKind::kRows:
      return m;
    case ProjectorKind::kRandK:
      return m * n;
    default:
      throw InvalidArgument("coordinate projector: kind must be columns, rows or randk");
  }
}

}  // namespace

CoordinateProjector::CoordinateProjector(ProjectorKind kind, int64_t m, int64_t n, int64_t rank,
                                         uint64_t seed)
    : Projector(m, n, std::min(rank, axis_of(kind, m, n))), kind_(kind), seed_(seed) {}

int64_t CoordinateProjector::axis_length() const {
  return axis_of(kind_, m_, n_);
}

void CoordinateProjector::refresh(const at::Tensor& grad, int64_t step) {
  check_grad(grad, "coordinate projector");
  at::Generator gen = at::detail::createCPUGenerator(mix_seed(seed_, step));
  indices_ = at::randperm(axis_length(), gen, at::kLong).slice(0, 0, rank_).to(grad.device());
  ready_ = true;
}

at::Tensor CoordinateProjector::down(const at::Tensor& g) const {
  check_grad(g, "coordinate projector down");
  switch (kind_) {
    case ProjectorKind::kColumns:
      return g.index_select(1, indices_);
    case ProjectorKind::kRows:
      return g.index_select(0, indices_);
    default:
      return g.reshape({-1}).index_select(0, indices_);
  }
}

at::Tensor CoordinateProjector::up(const at::Tensor& low) const {
  // Scatter into zeros: the coordinates not chosen get no update from the projected part.
  switch (kind_) {
    case ProjectorKind::kColumns:
      return at::zeros({m_, n_}, low.options()).index_copy_(1, indices_, low);
    case ProjectorKind::kRows:
      return at::zeros({m_, n_}, low.options()).index_copy_(0, indices_, low);
    default:
      return at::zeros({m_ * n_}, low.options()).index_copy_(0, indices_, low).view({m_, n_});
  }
}

NamedTensors CoordinateProjector::state_tensors() const {
  if (!ready_) return {};
  return {{"indices", indices_.to(at::kCPU).contiguous()}};
}

void CoordinateProjector::load_state(const NamedTensors& tensors, const at::Device& device) {
  const at::Tensor& t = find_tensor(tensors, "indices", "coordinate projector state");
  LR_CHECK(t.dim() == 1 && t.size(0) == rank_ && t.scalar_type() == at::kLong, Corruption,
           "coordinate projector state: indices must be ", rank_, " int64, got ", t.sizes(), " ",
           t.scalar_type());
  LR_CHECK(rank_ == 0 || (t.min().item<int64_t>() >= 0 && t.max().item<int64_t>() < axis_length()),
           Corruption, "coordinate projector state: an index is outside [0, ", axis_length(), ")");
  indices_ = t.to(device).clone();
  ready_ = true;
}

int64_t CoordinateProjector::state_bytes() const {
  return indices_.defined() ? static_cast<int64_t>(indices_.nbytes()) : 0;
}

}  // namespace lowrank::optim
