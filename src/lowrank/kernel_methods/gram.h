// Kernel (Gram) matrices K_ij = k(x_i, y_j) for the kernel methods, in the inputs' dtype (fp64 by
// default throughout kernel_methods/). With r = ‖x − y‖₂ and bandwidth (length scale) h:
//   rbf       exp(−r²/(2h²))
//   laplace   exp(−‖x − y‖₁/h)   (L1, scikit-learn's laplacian_kernel with γ = 1/h)
//   matern    ν = 1/2: exp(−r/h);  ν = 3/2: (1 + √3 r/h) e^{−√3 r/h};
//             ν = 5/2: (1 + √5 r/h + 5r²/(3h²)) e^{−√5 r/h}
//             (Rasmussen & Williams, 2006, "Gaussian Processes for Machine Learning", eq. 4.17)
//   arccos0   1 − θ/π                                   (Cho & Saul, 2009, "Kernel Methods for Deep
//   arccos1   ‖x‖‖y‖ (sin θ + (π − θ) cos θ)/π           Learning", NeurIPS, eq. 6 with n = 0, 1)
// with θ = arccos(xᵀy/(‖x‖‖y‖)), the cosine clamped to [−1, 1] before acos. arccos1 is the NNGP
// kernel of an infinitely wide ReLU layer with σ_w² = 2 and twice E_g[ReLU(gᵀx) ReLU(gᵀy)] (the
// random-feature estimate of linalg/random_features.h). The arc-cosine kernels also act on a Gram
// matrix G (arccos_from_gram), as the NNGP/NTK recursions and deep kernel machines need.
#pragma once

#include <string>
#include <vector>

#include <ATen/ATen.h>

#include "lowrank/core/json.h"

namespace lowrank::kernel_methods {

struct KernelSpec {
  std::string name = "rbf";  // rbf | laplace | matern | arccos0 | arccos1
  double bandwidth = 1.0;    // h (> 0); unused by the arc-cosine kernels
  double nu = 2.5;           // Matérn smoothness: 0.5, 1.5 or 2.5
};

// The kernels gram() knows, for messages and `lowrank kernel gram --method`.
const std::vector<std::string>& kernel_names();

// Reads "kernel", "bandwidth" and "nu" from an options object (defaults as above) and validates
// them: InvalidArgument naming the option and the value.
KernelSpec kernel_spec_from_options(const Json& options, std::string_view what);
void validate(const KernelSpec& spec, std::string_view what);

// ‖x_i − y_j‖² for x [n, d], y [m, d]: [n, m], clamped at 0 (the expanded form can go slightly
// negative by cancellation).
at::Tensor squared_distances(const at::Tensor& x, const at::Tensor& y);

// K [n, m] for x [n, d], y [m, d]. Throws InvalidArgument for mismatched widths or a bad spec.
at::Tensor gram(const KernelSpec& spec, const at::Tensor& x, const at::Tensor& y);

// The arc-cosine kernel of `degree` 0 or 1 computed from inner products: cross [n, m] = xᵢᵀyⱼ,
// and the squared norms diag_x [n] = ‖xᵢ‖², diag_y [m] = ‖yⱼ‖².
at::Tensor arccos_from_gram(const at::Tensor& cross, const at::Tensor& diag_x, const at::Tensor& diag_y,
                            int degree);

}  // namespace lowrank::kernel_methods
