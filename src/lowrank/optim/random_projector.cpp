// Random semi-orthogonal and Gaussian projectors; see random_projector.h.
#include "lowrank/optim/random_projector.h"

#include <cmath>

#include <ATen/CPUGeneratorImpl.h>

#include "lowrank/core/error.h"
#include "lowrank/linalg/svd.h"

namespace lowrank::optim {

void RandomOrthogonalProjector::refresh(const at::Tensor& grad, int64_t step) {
  check_grad(grad, "random projector");
  at::Generator gen = at::detail::createCPUGenerator(mix_seed(seed_, step));
  const int64_t rows = side_ == ProjectionSide::kRight ? n_ : m_;
  // Orthonormal columns (rows, r) from the QR of a Gaussian; the right projector is its transpose.
  const at::Tensor basis = linalg::orthonormalize(at::randn({rows, rank_}, gen, at::kFloat));
  matrix_ = (side_ == ProjectionSide::kRight ? basis.t() : basis).contiguous().to(grad.device());
  ready_ = true;
}

void GaussianProjector::refresh(const at::Tensor& grad, int64_t step) {
  check_grad(grad, "gaussian projector");
  draw_seed_ = mix_seed(seed_, step);
  device_ = grad.device();
  ready_ = true;
}

at::Tensor GaussianProjector::current_matrix() const {
  LR_CHECK(ready_, InvalidArgument, "gaussian projector: used before refresh()");
  at::Generator gen = at::detail::createCPUGenerator(draw_seed_);
  // P [m, r] (left) or Q [r, n] (right), entries N(0, 1/r).
  const std::vector<int64_t> shape =
      side_ == ProjectionSide::kRight ? std::vector<int64_t>{rank_, n_} : std::vector<int64_t>{m_, rank_};
  at::Tensor M = at::randn(shape, gen, at::kFloat).mul_(1.0 / std::sqrt(static_cast<double>(rank_)));
  return M.to(device_);
}

NamedTensors GaussianProjector::state_tensors() const {
  if (!ready_) return {};
  // The 64-bit seed, bit-cast into an int64 scalar.
  return {{"seed", at::scalar_tensor(static_cast<int64_t>(draw_seed_), at::kLong)}};
}

void GaussianProjector::load_state(const NamedTensors& tensors, const at::Device& device) {
  const at::Tensor& t = find_tensor(tensors, "seed", "gaussian projector state");
  LR_CHECK(t.numel() == 1 && t.scalar_type() == at::kLong, Corruption,
           "gaussian projector state: seed must be one int64, got ", t.sizes(), " ", t.scalar_type());
  draw_seed_ = static_cast<uint64_t>(t.item<int64_t>());
  device_ = device;
  ready_ = true;
}

}  // namespace lowrank::optim
