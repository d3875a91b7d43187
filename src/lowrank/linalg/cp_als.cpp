// CP decomposition by alternating least squares (cp_als.h).
#include "lowrank/linalg/cp_als.h"

#include <ATen/CPUGeneratorImpl.h>

#include <cmath>
#include <string>

#include "lowrank/core/error.h"
#include "lowrank/linalg/tucker.h"

namespace lowrank::linalg {

namespace {

// "abcd" for 4 modes; the rank index is 'r'.
std::string mode_letters(int64_t n) {
  return std::string("abcdef").substr(0, n);
}

// [[A_1, …, A_N]]: X̂[i_1..i_N] = Σ_r Π_n A_n[i_n, r].
at::Tensor cp_to_tensor(const std::vector<at::Tensor>& factors) {
  const std::string letters = mode_letters(static_cast<int64_t>(factors.size()));
  std::string equation;
  for (size_t n = 0; n < factors.size(); ++n) equation += (n ? "," : "") + std::string(1, letters[n]) + "r";
  return at::einsum(equation + "->" + letters, factors);
}

// X_(n) (⊙_{m≠n} A_m): [I_n, rank].
at::Tensor mttkrp(const at::Tensor& x, const std::vector<at::Tensor>& factors, int64_t mode) {
  const std::string letters = mode_letters(x.dim());
  std::string equation = letters;
  std::vector<at::Tensor> operands = {x};
  for (int64_t m = 0; m < x.dim(); ++m) {
    if (m == mode) continue;
    equation += "," + std::string(1, letters[m]) + "r";
    operands.push_back(factors[m]);
  }
  return at::einsum(equation + "->" + std::string(1, letters[mode]) + "r", operands);
}

}  // namespace

at::Tensor CpDecomposition::reconstruct() const {
  return cp_to_tensor(factors);
}

CpDecomposition cp_als(const at::Tensor& x_in, int64_t rank, const CpOptions& options,
                       std::optional<std::vector<at::Tensor>> init) {
  LR_CHECK(x_in.dim() >= 2 && x_in.dim() <= 6, InvalidArgument, "CP decomposition takes 2 to 6 modes, got ",
           x_in.dim());
  LR_CHECK(rank >= 1, InvalidArgument, "CP rank ", rank, " must be at least 1");
  const at::Tensor x = x_in.to(at::kDouble).contiguous();
  const int64_t modes = x.dim();
  CpDecomposition cp;
  if (init) {
    LR_CHECK(static_cast<int64_t>(init->size()) == modes, InvalidArgument, "CP initialisation has ",
             init->size(), " factors for a tensor of ", modes, " modes");
    for (int64_t n = 0; n < modes; ++n) {
      const at::Tensor& f = (*init)[n];
      LR_CHECK(f.dim() == 2 && f.size(0) == x.size(n) && f.size(1) == rank, InvalidArgument,
               "CP initial factor ", n, " has shape ", f.sizes(), ", expected [", x.size(n), ", ", rank, "]");
      cp.factors.push_back(f.to(at::kDouble).clone());
    }
  } else {
    at::Generator gen = at::detail::createCPUGenerator(options.seed);
    for (int64_t n = 0; n < modes; ++n) {
      const auto [u, s, vh] = at::linalg_svd(unfold(x, n), /*full_matrices=*/false);
      const int64_t k = std::min(rank, s.size(0));
      at::Tensor f = u.narrow(1, 0, k);
      if (n == 0) f = f * s.narrow(0, 0, k);
      if (k < rank)
        f = at::cat({f, at::rand({x.size(n), rank - k}, gen, at::TensorOptions().dtype(at::kDouble))}, 1);
      cp.factors.push_back(f.contiguous());
    }
  }
  const double norm = x.norm().item<double>();
  LR_CHECK(norm > 0, InvalidArgument, "CP decomposition of an all-zero tensor");
  for (int64_t iter = 0; iter < options.max_iters; ++iter) {
    for (int64_t n = 0; n < modes; ++n) {
      at::Tensor v = at::ones({rank, rank}, at::kDouble);
      for (int64_t m = 0; m < modes; ++m)
        if (m != n) v = v * at::matmul(cp.factors[m].t(), cp.factors[m]);
      // A_n V = M  →  A_n = M V⁻¹ (V symmetric): solve Vᵀ A_nᵀ = Mᵀ, as tensorly does.
      cp.factors[n] = at::linalg_solve(v.t(), mttkrp(x, cp.factors, n).t()).t().contiguous();
    }
    cp.errors.push_back((x - cp.reconstruct()).norm().item<double>() / norm);
    const auto k = cp.errors.size();
    if (options.tol > 0 && k >= 2 && std::abs(cp.errors[k - 2] - cp.errors[k - 1]) < options.tol) break;
  }
  return cp;
}

}  // namespace lowrank::linalg
