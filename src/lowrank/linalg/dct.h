// Orthonormal DCT-II and DCT-III basis matrices.
//
// Ahmed, Natarajan & Rao, 1974, "Discrete Cosine Transform", IEEE Trans. Computers C-23; the
// orthonormal scaling as in Strang, 1999, "The Discrete Cosine Transform", SIAM Review 41(1), and
// scipy.fft.dct(type=2, norm="ortho"):
//   C[k, j] = sqrt(2/n) * c_k * cos(pi * k * (2j + 1) / (2n)),  c_0 = 1/sqrt(2), c_k = 1 otherwise,
// for frequency k (row) and sample j (column): y = C x is the orthonormal DCT-II of x, and
// C^T = C^-1 is the orthonormal DCT-III (the inverse transform). The SVD-free DCT projector of
// Modoranu et al., 2025, arXiv:2505.17967 (optim/dct_projector.h) uses the same matrix, whose
// columns of C^T are the basis vectors it selects from.
// Deviation: built as a dense O(n^2) matrix (evaluated in float64, then cast), not by FFT; the
// consumers multiply by it or select its columns.
#pragma once

#include <cstdint>

#include <ATen/ATen.h>

namespace lowrank::linalg {

// C (n, n) above: rows are the DCT-II basis vectors. Throws InvalidArgument when n < 1 or dtype
// is not floating.
at::Tensor dct2_matrix(int64_t n, at::ScalarType dtype = at::kFloat);

// C^T (n, n): the orthonormal DCT-III, the inverse of dct2_matrix; its columns are the basis.
at::Tensor dct3_matrix(int64_t n, at::ScalarType dtype = at::kFloat);

}  // namespace lowrank::linalg
