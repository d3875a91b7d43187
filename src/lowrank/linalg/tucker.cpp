#include "lowrank/linalg/tucker.h"

#include "lowrank/core/error.h"
#include "lowrank/linalg/check_internal.h"

namespace lowrank::linalg {
namespace {

// Leading r left singular vectors of the unfolding Y (I, J), r <= min(I, J).
at::Tensor leading_left(const at::Tensor& Y, int64_t r) {
  auto U = std::get<0>(at::linalg_svd(Y, /*full_matrices=*/false));
  return U.narrow(1, 0, r).contiguous();
}

// T x_m U_m^T for every mode m except `skip` (-1: all modes).
at::Tensor project_all(const at::Tensor& T, const std::vector<at::Tensor>& U, int64_t skip) {
  auto G = T;
  for (int64_t m = 0; m < static_cast<int64_t>(U.size()); ++m) {
    if (m != skip) G = mode_product(G, U[m].mT(), m);
  }
  return G;
}

}  // namespace

at::Tensor unfold(const at::Tensor& T, int64_t mode) {
  LR_CHECK(mode >= 0 && mode < T.dim(), InvalidArgument, "unfold: mode ", mode, " is not in [0, ", T.dim(),
           ")");
  return T.movedim(mode, 0).reshape({T.size(mode), -1});
}

at::Tensor mode_product(const at::Tensor& T, const at::Tensor& M, int64_t mode) {
  LR_CHECK(mode >= 0 && mode < T.dim(), InvalidArgument, "mode_product: mode ", mode, " is not in [0, ",
           T.dim(), ")");
  LR_CHECK(M.dim() == 2 && M.size(1) == T.size(mode), InvalidArgument, "mode_product: M has shape ",
           M.sizes(), " but mode ", mode, " of T has size ", T.size(mode));
  // tensordot puts M's free dimension first; move it back to position `mode`.
  return at::tensordot(M, T, {1}, {mode}).movedim(0, mode);
}

at::Tensor Tucker::reconstruct() const {
  auto T = core;
  for (int64_t m = 0; m < static_cast<int64_t>(factors.size()); ++m) T = mode_product(T, factors[m], m);
  return T;
}

Tucker hosvd(const at::Tensor& T_in, at::IntArrayRef ranks, const TuckerOptions& options) {
  LR_CHECK(T_in.defined() && T_in.dim() >= 2, InvalidArgument,
           "hosvd: T must have at least 2 modes, got shape ",
           T_in.defined() ? T_in.sizes() : at::IntArrayRef{});
  auto T = detail::working_tensor(T_in, T_in.dim(), "hosvd: T");
  const int64_t N = T.dim();
  LR_CHECK(static_cast<int64_t>(ranks.size()) == N, InvalidArgument, "hosvd: ", ranks.size(),
           " ranks given for a ", N, "-way tensor of shape ", T.sizes());
  for (int64_t n = 0; n < N; ++n) {
    LR_CHECK(ranks[n] >= 1 && ranks[n] <= T.size(n), InvalidArgument, "hosvd: rank ", ranks[n], " of mode ",
             n, " is not in [1, ", T.size(n), "] for shape ", T.sizes());
    int64_t others = 1;
    for (int64_t m = 0; m < N; ++m) others *= m == n ? 1 : ranks[m];
    LR_CHECK(ranks[n] <= others, InvalidArgument, "hosvd: ranks ", ranks, " are not a multilinear rank: r_",
             n, " = ", ranks[n], " exceeds the product of the other ranks (", others, ")");
  }
  LR_CHECK(options.hooi_iters >= 0, InvalidArgument, "hosvd: hooi_iters = ", options.hooi_iters,
           " must be >= 0");

  Tucker out;
  for (int64_t n = 0; n < N; ++n) out.factors.push_back(leading_left(unfold(T, n), ranks[n]));
  out.core = project_all(T, out.factors, -1);
  double core_norm = out.core.norm().item<double>();
  for (int64_t sweep = 0; sweep < options.hooi_iters; ++sweep) {
    for (int64_t n = 0; n < N; ++n) {
      out.factors[n] = leading_left(unfold(project_all(T, out.factors, n), n), ranks[n]);
    }
    out.core = project_all(T, out.factors, -1);
    const double next = out.core.norm().item<double>();
    const bool done = next - core_norm <= options.hooi_tol * next;
    core_norm = next;
    if (done) break;
  }
  return out;
}

}  // namespace lowrank::linalg
