// Exact and randomized SVD projectors; see svd_projector.h.
#include "lowrank/optim/svd_projector.h"

#include <algorithm>
#include <tuple>

#include <ATen/CPUGeneratorImpl.h>

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
  if (!ready_) {
    // The first refresh: Halko Alg. 4.4 + 5.1 from a Gaussian sketch, with at least 2 power
    // iterations: every warm refresh starts from this basis, and with 1 the first warm one stays
    // about 1% short of the exact subspace's energy (docs/benchmarks.md). Paid once per run.
    linalg::RandomizedSvdOptions o;
    o.oversample = oversample_;
    o.power_iters = std::max<int64_t>(power_iters_, 2);
    o.seed = mix_seed(seed_, step);
    const linalg::Svd svd = linalg::randomized_svd(grad.detach(), rank_, o);
    matrix_ = (side_ == ProjectionSide::kRight ? svd.Vh : svd.U).contiguous();
    ready_ = true;
    return;
  }
  // Warm refresh, on the projector's side: B = G (left) or Gᵀ (right), (m', n'), so that the basis
  // sought is always the top-r LEFT singular subspace of B, and P0 (m', r) is the previous one.
  const at::Tensor G = grad.detach().to(linalg::working_dtype(grad));
  const at::Tensor B = side_ == ProjectionSide::kRight ? G.mT() : G;
  const at::Tensor P0 = (side_ == ProjectionSide::kRight ? matrix_.t() : matrix_).to(G.scalar_type());
  const int64_t l = std::min(rank_ + oversample_, std::min(m_, n_));
  // Start: Q0 = [P0, B Ω] (m', l), Ω a seeded Gaussian (n', l − r): the old subspace plus l − r fresh
  // range directions. Q0 is not orthonormalized: only its span enters Bᵀ Q0 below.
  at::Tensor Q = P0;
  if (l > rank_) {
    at::Generator gen = at::detail::createCPUGenerator(mix_seed(seed_, step));
    const at::Tensor omega =
        at::randn({B.size(1), l - rank_}, gen, at::TensorOptions().dtype(G.scalar_type())).to(G.device());
    Q = at::cat({P0, at::matmul(B, omega)}, 1);
  }
  // max(q, 1) rounds of subspace iteration: Z = orth(Bᵀ Q) (n', l), Q R = B Z (thin QR).
  at::Tensor R;
  for (int64_t i = 0; i < std::max<int64_t>(power_iters_, 1); ++i) {
    const at::Tensor Z = linalg::orthonormalize(at::matmul(B.mT(), Q));
    std::tie(Q, R) = at::linalg_qr(at::matmul(B, Z), "reduced");
  }
  // Rayleigh–Ritz on the two-sided sketch Qᵀ B Z = R (l, l) instead of on Qᵀ B (l, n'): the
  // top-r left singular vectors of R, rotated by Q. Saves the pass Bᵀ Q over the gradient;
  // exact when the row space of Qᵀ B lies in span(Z), which the pass that built Z approximates.
  const auto [Ur, S, Vh] = at::linalg_svd(R, /*full_matrices=*/false);
  using at::indexing::Slice;
  const at::Tensor P = at::matmul(Q, Ur.index({Slice(), Slice(0, rank_)}));
  matrix_ = (side_ == ProjectionSide::kRight ? P.t() : P).contiguous();
}

}  // namespace lowrank::optim
