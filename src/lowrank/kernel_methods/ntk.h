// Neural tangent kernel and NNGP kernel of fully connected networks — Jacot, Gabriel & Hongler, 2018,
// "Neural Tangent Kernel: Convergence and Generalization in Neural Networks", NeurIPS,
// arXiv:1806.07572; linearised training from Lee, Xiao, Schoenholz, Bahri, Novak, Sohl-Dickstein &
// Pennington, 2019, "Wide Neural Networks of Any Depth Evolve as Linear Models Under Gradient
// Descent", NeurIPS, arXiv:1902.06720; the recursion in the form of Arora, Du, Hu, Li, Salakhutdinov
// & Wang, 2019, "On Exact Computation with an Infinitely Wide Neural Net", arXiv:1904.11955.
//
// Network (NTK parameterisation, all weights and biases N(0, 1)), L hidden layers of width n_l,
// activation φ, scalar output:
//   h¹ = σ_w/√n₀ · W⁰x + σ_b b⁰,   αˡ = φ(hˡ),   hˡ⁺¹ = σ_w/√n_l · Wˡαˡ + σ_b bˡ,   f = h^{L+1}.
// Infinite-width kernels (Jacot et al. Theorem 1; as written by Arora et al.):
//   Σ¹(x, x') = σ_w² xᵀx'/n₀ + σ_b²,   Θ¹ = Σ¹,
//   Σˡ⁺¹ = σ_w² E[φ(u)φ(v)] + σ_b²,   Σ̇ˡ⁺¹ = σ_w² E[φ'(u)φ'(v)],   (u, v) ~ N(0, [[Σˡ(x,x), Σˡ(x,x')],
//   Θˡ⁺¹ = Θˡ Σ̇ˡ⁺¹ + Σˡ⁺¹,                                                 [Σˡ(x,x'), Σˡ(x',x')]]),
// NNGP = Σ^{L+1}, NTK = Θ^{L+1}. The Gaussian expectations in closed form:
//   ReLU (Cho & Saul 2009, with θ the angle of Σ): E[φφ] = ½·arccos1 = √(ΣₓₓΣₓ'ₓ')(sin θ + (π − θ)cos
//   θ)/(2π),
//        E[φ'φ'] = ½·arccos0 = (π − θ)/(2π)   (kernel_methods/gram.h's arccos_from_gram);
//   erf (Williams 1997, the arcsine kernel): E[φφ] = (2/π) arcsin(2Σₓₓ' / √((1 + 2Σₓₓ)(1 + 2Σₓ'ₓ'))),
//        E[φ'φ'] = (4/π) / √((1 + 2Σₓₓ)(1 + 2Σₓ'ₓ') − 4Σₓₓ'²).
// This is neural-tangents' `stax.serial(Dense(n, W_std=σ_w, b_std=σ_b), Relu()|Erf(), ..., Dense(1, ...))`
// with parameterization="ntk": google/neural-tangents, neural_tangents/_src/stax/linear.py (Dense:
// nngp ← W_std²·nngp + b_std², ntk ← nngp + W_std²·ntk) and neural_tangents/_src/stax/elementwise.py
// (ABRelu(0, 1) and Erf(1, 1, 0): the same closed forms, the erf one as arctan2 of the same ratio).
//
// Empirical NTK of a finite network, Θ̂(x, x') = ⟨∂f(x)/∂θ, ∂f(x')/∂θ⟩, without per-sample autograd
// (chain rule): one batched forward gives αˡ, one backward gives the sensitivities δˡ = ∂f/∂hˡ,
//   δ^{L+1} = 1,   δˡ = φ'(hˡ) ⊙ (σ_w/√n_l) Wˡᵀ δˡ⁺¹,
//   Θ̂(x, x') = Σ_{l=0..L} (δˡ⁺¹(x)ᵀδˡ⁺¹(x')) · [(σ_w²/n_l) αˡ(x)ᵀαˡ(x') + σ_b²]   (α⁰ = x),
// a sum of Hadamard products of per-layer Gram matrices, O(N² Σ n_l).
//
// Linearised gradient descent (Lee et al. 2019, §2, the linearised network): full-batch GD on
// L = (1/2N)‖f(X) − Y‖² with learning rate η, in continuous time, of the network linearised around its
// initialisation f₀:
//   f_t(X) = f₀(X) + (I − e^{−ηΘt/N})(Y − f₀(X)),
//   f_t(x) = f₀(x) + Θ(x, X) Θ⁻¹ (I − e^{−ηΘt/N}) (Y − f₀(X)),
// both from one eigendecomposition Θ = V diag(λ) Vᵀ; as t → ∞ the test prediction is kernel regression
// f₀(x) + Θ(x, X)Θ⁻¹(Y − f₀(X)). Modes with |λ| at round-off level take the limit
// (1 − e^{−cλ})/λ → c = ηt/N at finite t, and are left unfitted at t = ∞.
//
// Estimator `ntk`: kernel regression f̂(x) = K(x, X)(K(X, X) + λI)⁻¹Y with K the NTK or the NNGP (the
// infinite-width mean predictor, f₀ = 0); with option "time" t the linearised-GD mean prediction at
// time t instead. Saved state: the training inputs and the dual coefficients.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include <ATen/ATen.h>

#include "lowrank/core/json.h"
#include "lowrank/kernel_methods/estimator.h"

namespace lowrank::kernel_methods {

struct FullyConnectedArchitecture {
  int64_t depth = 2;             // L hidden layers (>= 0; 0 is the linear model σ_w² xᵀx'/n₀ + σ_b²)
  double weight_variance = 2.0;  // σ_w² (> 0)
  double bias_variance = 0.0;    // σ_b² (>= 0)
  std::string activation = "relu";  // relu | erf
};

// Reads "depth", "weight_variance", "bias_variance", "activation" (defaults above), InvalidArgument
// naming the option and the value.
FullyConnectedArchitecture fully_connected_from_options(const Json& options, std::string_view what);
void validate(const FullyConnectedArchitecture& arch, std::string_view what);

struct NeuralKernels {
  at::Tensor nngp;  // Σ^{L+1}(x, y) [n, m]
  at::Tensor ntk;   // Θ^{L+1}(x, y) [n, m]
};

// The infinite-width NNGP and NTK between x [n, d] and y [m, d] (fp64). When y is x (the same tensor)
// the diagonal takes the exact x = x' duals.
NeuralKernels infinite_width_kernels(const FullyConnectedArchitecture& arch, const at::Tensor& x,
                                     const at::Tensor& y);

// The Gaussian expectations σ_w²-free: E[φ(u)φ(v)] and E[φ'(u)φ'(v)] for (u, v) ~ N(0, [[a, c], [c, b]])
// with cross c [n, m], diag_x a [n], diag_y b [m].
struct DualActivation {
  at::Tensor value;       // E[φ(u)φ(v)]
  at::Tensor derivative;  // E[φ'(u)φ'(v)]
};
// The diagonals broadcast: diag_x.unsqueeze(1) against diag_y.unsqueeze(0), so per-node kernels
// cross [n, m, P] with diag_x [n, P], diag_y [m, P] work too (kernel_methods/cnn_kernel.h).
DualActivation dual_activation(const std::string& activation, const at::Tensor& cross,
                               const at::Tensor& diag_x, const at::Tensor& diag_y);
// E[φ(u)²] and E[φ'(u)²] for u ~ N(0, variance), elementwise: the duals at x = x', exactly (the
// general formula's angle acos(c/√(ab)) is off by ~1e-8 there, as √ of the cosine's round-off).
DualActivation dual_activation_diagonal(const std::string& activation, const at::Tensor& variance);

// A finite network of the header's form: weights[l] [n_{l+1}, n_l], biases[l] [n_{l+1}], l = 0..L, with
// n_{L+1} = 1.
struct FullyConnectedNet {
  FullyConnectedArchitecture arch;
  std::vector<at::Tensor> weights, biases;
};

// All parameters N(0, 1) from `seed`; `width` hidden units per layer.
FullyConnectedNet init_fully_connected(const FullyConnectedArchitecture& arch, int64_t input_dim,
                                       int64_t width, uint64_t seed);
// f(x) [n] for x [n, d].
at::Tensor network_output(const FullyConnectedNet& net, const at::Tensor& x);
// Θ̂(x, y) [n, m] by the per-layer Gram formula of the header.
at::Tensor empirical_ntk(const FullyConnectedNet& net, const at::Tensor& x, const at::Tensor& y);
// One full-batch gradient-descent step on L = (1/2N)‖f(X) − Y‖² (x [N, d], y [N]) with learning rate
// η, in place, from the same forward/backward pass: ∂L/∂Wˡ = (1/N) Σᵢ rᵢ (σ_w/√n_l) δˡ⁺¹ᵢ αˡᵢᵀ,
// ∂L/∂bˡ = (1/N) Σᵢ rᵢ σ_b δˡ⁺¹ᵢ, rᵢ = f(xᵢ) − yᵢ. Its small-η limit is the header's gradient flow
// (f moves by −(η/N) Θ̂ r per step to first order). Returns L before the step.
double gradient_descent_step(FullyConnectedNet& net, const at::Tensor& x, const at::Tensor& y,
                             double learning_rate);

// The linearised-GD solution of the header from one eigendecomposition of Θ(X, X).
class LinearisedDynamics {
 public:
  // theta_train Θ(X, X) [N, N] symmetric; residual0 = Y − f₀(X) [N] or [N, k]; η > 0.
  LinearisedDynamics(const at::Tensor& theta_train, const at::Tensor& residual0, double learning_rate);
  // f_t(X) − f₀(X) = V (1 − e^{−ηλt/N}) Vᵀ (Y − f₀(X)); t >= 0 or +∞.
  at::Tensor train_change(double time) const;
  // c_t = V diag((1 − e^{−ηλt/N})/λ) Vᵀ (Y − f₀(X)), so that f_t(x) − f₀(x) = Θ(x, X) c_t.
  at::Tensor dual_coefficients(double time) const;
  // f_t(x) − f₀(x) for theta_test_train Θ(x, X) [m, N].
  at::Tensor test_change(const at::Tensor& theta_test_train, double time) const;
  const at::Tensor& eigenvalues() const { return eigenvalues_; }

 private:
  // diag(g(λ)) Vᵀ(Y − f₀) with g = 1 − e^{−ηλt/N}, divided by λ when asked.
  at::Tensor filtered(double time, bool divide_by_eigenvalue) const;

  at::Tensor eigenvalues_, eigenvectors_, projected_residual_;
  double rate_ = 0;  // η/N
};

// The estimator shared by `ntk` and `cnn_kernel`: kernel regression with a neural kernel K (the NTK or
// the NNGP of the method's architecture), or the linearised-GD mean prediction at a finite time.
// Options common to both: "kernel" (ntk | nngp), "lambda" (ridge >= 0), "time" (t > 0, absent = ∞)
// and "learning_rate" (η > 0); lambda and time exclude each other.
class NeuralKernelRegression final : public Estimator {
 public:
  // Both kernels of the method's architecture between x [n, d] and y [m, d].
  using KernelFunction = std::function<NeuralKernels(const at::Tensor& x, const at::Tensor& y)>;
  NeuralKernelRegression(std::string method, const Json& options, uint64_t seed, KernelFunction kernels);
  std::string_view method() const override { return method_; }

 private:
  at::Tensor kernel(const at::Tensor& x, const at::Tensor& y) const;
  void fit_impl(const Dataset& data) override;
  at::Tensor predict_impl(const at::Tensor& x) const override;
  std::vector<NamedTensor> state() const override;
  void restore(const SafetensorsFile& file) override;

  std::string method_;
  KernelFunction kernels_;
  bool use_nngp_ = false;
  double ridge_ = 0;
  double time_ = 0;  // 0: no time given (kernel regression)
  double learning_rate_ = 1;
  at::Tensor train_x_, dual_coef_;
};

// The MethodInfo option help of the regression part (and σ_w², σ_b², activation), for both
// registrations.
std::vector<std::pair<std::string, std::string>> neural_kernel_regression_options();
// The checks shared by both architectures: σ_w² > 0, σ_b² >= 0, activation relu | erf.
void validate_layer(double weight_variance, double bias_variance, const std::string& activation,
                    std::string_view what);
// Reads "weight_variance", "bias_variance" and "activation" into either architecture (defaults kept).
template <typename Architecture>
void read_layer_options(const Json& options, std::string_view what, Architecture& arch) {
  arch.weight_variance = json_get_or<double>(options, "weight_variance", arch.weight_variance, what);
  arch.bias_variance = json_get_or<double>(options, "bias_variance", arch.bias_variance, what);
  arch.activation = json_get_or<std::string>(options, "activation", arch.activation, what);
}

}  // namespace lowrank::kernel_methods
