// DCT column-selection projector; see dct_projector.h.
#include "lowrank/optim/dct_projector.h"

#include <algorithm>
#include <map>
#include <mutex>

#include "lowrank/core/error.h"
#include "lowrank/linalg/dct.h"

namespace lowrank::optim {

at::Tensor dct_basis(int64_t d, const at::Device& device) {
  static std::mutex mutex;
  static std::map<std::pair<int64_t, std::string>, at::Tensor> cache;
  std::lock_guard<std::mutex> lock(mutex);
  at::Tensor& q = cache[{d, device.str()}];
  // Columns of Cᵀ are the DCT-II basis vectors (dct.h).
  if (!q.defined()) q = linalg::dct3_matrix(d, at::kFloat).to(device);
  return q;
}

DctProjector::DctProjector(int64_t m, int64_t n, int64_t rank)
    : Projector(m, n, std::min(rank, std::min(m, n))), side_(std_side(m, n)) {}

at::Tensor DctProjector::selected() const {
  LR_CHECK(ready_, InvalidArgument, "dct projector: used before refresh()");
  return basis_.index_select(1, indices_);
}

void DctProjector::refresh(const at::Tensor& grad, int64_t) {
  check_grad(grad, "dct projector");
  at::NoGradGuard no_grad;
  const int64_t d = std::min(m_, n_);
  if (!basis_.defined() || basis_.device() != grad.device()) basis_ = dct_basis(d, grad.device());
  const at::Tensor g = grad.detach().to(at::kFloat);
  // Tall: score the columns of S = G Q; wide: the rows of S = Qᵀ G (ℓ1 norms).
  const at::Tensor scores = side_ == ProjectionSide::kRight ? at::matmul(g, basis_).abs().sum(0)
                                                            : at::matmul(basis_.t(), g).abs().sum(1);
  indices_ = std::get<1>(at::topk(scores, rank_, /*dim=*/0, /*largest=*/true, /*sorted=*/true));
  ready_ = true;
}

at::Tensor DctProjector::down(const at::Tensor& g) const {
  check_grad(g, "dct projector down");
  const at::Tensor Qi = selected().to(g.scalar_type());
  return side_ == ProjectionSide::kRight ? at::matmul(g, Qi) : at::matmul(Qi.t(), g);
}

at::Tensor DctProjector::up(const at::Tensor& low) const {
  const at::Tensor Qi = selected().to(low.scalar_type());
  return side_ == ProjectionSide::kRight ? at::matmul(low, Qi.t()) : at::matmul(Qi, low);
}

NamedTensors DctProjector::state_tensors() const {
  if (!ready_) return {};
  return {{"indices", indices_.to(at::kCPU).contiguous()}};
}

void DctProjector::load_state(const NamedTensors& tensors, const at::Device& device) {
  const at::Tensor& t = find_tensor(tensors, "indices", "dct projector state");
  const int64_t d = std::min(m_, n_);
  LR_CHECK(t.dim() == 1 && t.size(0) == rank_ && t.scalar_type() == at::kLong, Corruption,
           "dct projector state: indices must be ", rank_, " int64, got ", t.sizes(), " ", t.scalar_type());
  LR_CHECK(t.min().item<int64_t>() >= 0 && t.max().item<int64_t>() < d, Corruption,
           "dct projector state: an index is outside [0, ", d, ")");
  basis_ = dct_basis(d, device);
  indices_ = t.to(device).clone();
  ready_ = true;
}

int64_t DctProjector::state_bytes() const {
  return indices_.defined() ? static_cast<int64_t>(indices_.nbytes()) : 0;
}

}  // namespace lowrank::optim
