// A-priori CP-compressed convolutions (Boukraichi et al., "A-priori compressed convolutions for
// wave simulators"; the CP-decomposed convolution itself is Lebedev et al., 2015, "Speeding-up
// Convolutional Neural Networks Using Fine-tuned CP-Decomposition", ICLR, arXiv:1412.6553, Eq. 4–6):
// the kernel of a k×k convolution from S to T channels is a rank-R CP tensor, trained from scratch
// in that form (a priori) instead of decomposed after training (post hoc):
//   K[t, s, i, j] = Σ_r A[t, r] · B[s, r] · C[i, r] · D[j, r]
// and the convolution runs as four cheap ones, never forming K:
//   x [N, S, H, W] → 1×1 conv S→R (weights Bᵀ) → depthwise k×1 (C) → depthwise 1×k (D)
//                  → 1×1 conv R→T (weights A, plus the bias)
// with "same" zero padding (k odd). The 2-D kernel C[:, r] ⊗ D[:, r] is separable, so padding the
// vertical and the horizontal pass separately is exactly padding once for K: the product equals
// at::conv2d with the reconstructed K (tested to 1e-6, gradients included).
// Parameters: R(T + S + 2k) + T against T·S·k² dense (the constructor checks 1 ≤ R).
#pragma once

#include <cstdint>

#include <ATen/ATen.h>

namespace lowrank::nn {

struct CpConv2d {
  at::Tensor a;     // [T, R]
  at::Tensor b;     // [S, R]
  at::Tensor c;     // [k, R]  vertical factor
  at::Tensor d;     // [k, R]  horizontal factor
  at::Tensor bias;  // [T] (undefined: none)

  int64_t out_channels() const { return a.size(0); }
  int64_t in_channels() const { return b.size(0); }
  int64_t rank() const { return a.size(1); }
  int64_t kernel_size() const { return c.size(0); }
  int64_t parameter_count() const;

  // Fresh factors whose reconstructed kernel has PyTorch's default conv variance scale: each
  // factor ~ U(−β, β) with β chosen so that Var K[t,s,i,j] = 1 / (3·S·k²) (the variance of
  // kaiming_uniform_(a=√5), nn.Conv2d's default), seeded. InvalidArgument for R < 1, an even or
  // non-positive k, or channels < 1.
  static CpConv2d random(int64_t in_channels, int64_t out_channels, int64_t kernel_size, int64_t rank,
                         uint64_t seed, bool with_bias = true, at::ScalarType dtype = at::kFloat);

  // Post-hoc CP compression of a trained dense kernel K [T, S, k, k] (k odd) at rank R: the factors
  // of linalg::cp_als(K) (tensorly's ALS, svd initialisation), the bias kept. Returns the conv and
  // writes the relative error ‖K − [[A, B, C, D]]‖ / ‖K‖ to *error when given.
  static CpConv2d from_kernel(const at::Tensor& kernel, const at::Tensor& bias, int64_t rank,
                              double* error = nullptr, int64_t max_iters = 100);

  // y = K * x (+ bias): x [N, S, H, W] → [N, T, H, W]. Differentiable in x and in every factor.
  at::Tensor forward(const at::Tensor& x) const;
  // K [T, S, k, k], for the oracle and for export to a dense conv.
  at::Tensor kernel() const;
};

}  // namespace lowrank::nn
