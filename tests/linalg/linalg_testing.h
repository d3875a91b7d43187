// Helpers shared by the linalg tests: seeded Gaussians and matrices with a planted spectrum.
#pragma once

#include <cstdint>

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>

namespace lowrank::linalg::testing_util {

inline at::Tensor randn(at::IntArrayRef shape, uint64_t seed, at::ScalarType dtype = at::kDouble) {
  at::Generator gen = at::detail::createCPUGenerator(seed);
  return at::randn(shape, gen, at::TensorOptions().dtype(dtype));
}

// (rows, cols) with orthonormal columns, rows >= cols.
inline at::Tensor random_orthonormal(int64_t rows, int64_t cols, uint64_t seed) {
  return std::get<0>(at::linalg_qr(randn({rows, cols}, seed), "reduced"));
}

// U diag(s) V^T (m, n) in float64 with random orthonormal U (m, r), V (n, r), r = s.numel().
inline at::Tensor planted(int64_t m, int64_t n, const at::Tensor& s, uint64_t seed) {
  const int64_t r = s.numel();
  auto U = random_orthonormal(m, r, seed);
  auto V = random_orthonormal(n, r, seed + 1);
  return at::matmul(U * s.to(at::kDouble).unsqueeze(0), V.mT());
}

// s_i = i^-alpha, i = 1..r (float64).
inline at::Tensor power_law(int64_t r, double alpha) {
  return at::arange(1, r + 1, at::TensorOptions().dtype(at::kDouble)).pow(-alpha);
}

// max |Q^T Q - I| for Q with orthonormal columns.
inline double orthonormality_error(const at::Tensor& Q) {
  auto Qd = Q.to(at::kDouble);
  return (at::matmul(Qd.mT(), Qd) - at::eye(Qd.size(1), Qd.options())).abs().max().item<double>();
}

// ||A - B||_F in float64.
inline double fro_diff(const at::Tensor& A, const at::Tensor& B) {
  return (A.to(at::kDouble) - B.to(at::kDouble)).norm().item<double>();
}

}  // namespace lowrank::linalg::testing_util
