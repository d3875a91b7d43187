// Exact and randomized SVD projectors; see svd_projector.h.
#include "lowrank/optim/svd_projector.h"

#include "lowrank/core/error.h"
#include "lowrank/linalg/svd.h"

namespace lowrank::optim {

void SvdProjector::refresh(const at::Tensor& grad, int64_t) {
  check_grad(grad, "svd projector");
  at::NoGradGuard no_grad;
  const linalg::Svd svd = linalg::truncated_svd(grad.detach(), rank_);
  // Right: Q = Vh[:r] [r, n]; left: P = U[:, :r] [m, r].
  matrix_ = (side_ == ProjectionSide::kRight ? svd.Vh : svd.U).contiguous();
  ready_ = true;
}

RandomizedSvdProjector::RandomizedSvdProjector(int64_t m, int64_t n, int64_t rank, uint64_t seed,
                                               int64_t oversample, int64_t power_iters)
    : MatrixProjector(m, n, rank), seed_(seed), oversample_(oversample), power_iters_(power_iters) {
  LR_CHECK(oversample >= 0 && power_iters >= 0, InvalidArgument,
           "randomized_svd projector: oversample and power_iters must be >= 0, got ", oversample, " and ",
           power_iters);
}

void RandomizedSvdProjector::refresh(const at::Tensor& grad, int64_t step) {
  check_grad(grad, "randomized_svd projector");
  at::NoGradGuard no_grad;
  linalg::RandomizedSvdOptions o;
  o.oversample = oversample_;
  o.power_iters = power_iters_;
  o.seed = mix_seed(seed_, step);
  if (ready_) {
    // Warm start from the previous subspace: right -> the (n, r) basis Qᵀ, left -> P (m, r).
    if (side_ == ProjectionSide::kRight) {
      o.warm_start = matrix_.t();
      o.warm_start_side = linalg::WarmStartSide::kRight;
    } else {
      o.warm_start = matrix_;
      o.warm_start_side = linalg::WarmStartSide::kLeft;
    }
  }
  const linalg::Svd svd = linalg::randomized_svd(grad.detach(), rank_, o);
  matrix_ = (side_ == ProjectionSide::kRight ? svd.Vh : svd.U).contiguous();
  ready_ = true;
}

}  // namespace lowrank::optim
