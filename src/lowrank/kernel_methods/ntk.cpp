#include "lowrank/kernel_methods/ntk.h"

#include <ATen/CPUGeneratorImpl.h>

#include <cmath>
#include <numbers>

#include "lowrank/core/error.h"
#include "lowrank/kernel_methods/gram.h"
#include "lowrank/kernel_methods/krr.h"
#include "lowrank/kernel_methods/methods.h"

namespace lowrank::kernel_methods {
namespace {

constexpr const char* kName = "ntk";

void check_pair(const at::Tensor& x, const at::Tensor& y, std::string_view what) {
  LR_CHECK(x.dim() == 2 && y.dim() == 2 && x.size(1) == y.size(1) && x.size(1) >= 1, InvalidArgument, what,
           ": inputs must be [n, d] and [m, d] with the same d >= 1, got ", x.sizes(), " and ", y.sizes());
}

// φ and φ' elementwise, for the finite network.
at::Tensor activate(const std::string& activation, const at::Tensor& h) {
  return activation == "erf" ? at::erf(h) : at::relu(h);
}
at::Tensor activation_derivative(const std::string& activation, const at::Tensor& h) {
  if (activation == "erf") return (2.0 / std::sqrt(std::numbers::pi)) * at::exp(-h * h);
  return h.gt(0).to(h.scalar_type());
}

}  // namespace

DualActivation dual_activation_diagonal(const std::string& activation, const at::Tensor& variance) {
  if (activation == "erf") {
    return {(2.0 / std::numbers::pi) * at::asin(2 * variance / (1 + 2 * variance)),
            (4.0 / std::numbers::pi) / at::sqrt(1 + 4 * variance)};
  }
  return {0.5 * variance, at::full_like(variance, 0.5)};
}

void validate_layer(double weight_variance, double bias_variance, const std::string& activation,
                    std::string_view what) {
  LR_CHECK(std::isfinite(weight_variance) && weight_variance > 0, InvalidArgument, what,
           ": option \"weight_variance\" must be > 0, got ", weight_variance);
  LR_CHECK(std::isfinite(bias_variance) && bias_variance >= 0, InvalidArgument, what,
           ": option \"bias_variance\" must be >= 0, got ", bias_variance);
  LR_CHECK(activation == "relu" || activation == "erf", InvalidArgument, what,
           ": option \"activation\" must be \"relu\" or \"erf\", got \"", activation, "\"");
}

void validate(const FullyConnectedArchitecture& arch, std::string_view what) {
  LR_CHECK(arch.depth >= 0 && arch.depth <= 1000, InvalidArgument, what,
           ": option \"depth\" must be in [0, 1000], got ", arch.depth);
  validate_layer(arch.weight_variance, arch.bias_variance, arch.activation, what);
}

FullyConnectedArchitecture fully_connected_from_options(const Json& options, std::string_view what) {
  FullyConnectedArchitecture arch;
  arch.depth = json_get_or<int64_t>(options, "depth", arch.depth, what);
  read_layer_options(options, what, arch);
  validate(arch, what);
  return arch;
}

DualActivation dual_activation(const std::string& activation, const at::Tensor& cross,
                               const at::Tensor& diag_x, const at::Tensor& diag_y) {
  if (activation == "erf") {
    // (1 + 2a)(1 + 2b) ≥ (2c)² + 1 by Cauchy–Schwarz, so the square root stays real and positive.
    const at::Tensor prod = (1 + 2 * diag_x).unsqueeze(1) * (1 + 2 * diag_y).unsqueeze(0);
    const at::Tensor ratio = (2 * cross / at::sqrt(prod)).clamp(-1.0, 1.0);
    const at::Tensor root = at::sqrt((prod - 4 * cross * cross).clamp_min(1e-300));
    return {(2.0 / std::numbers::pi) * at::asin(ratio), (4.0 / std::numbers::pi) / root};
  }
  LR_CHECK(activation == "relu", InvalidArgument, "activation must be \"relu\" or \"erf\", got \"",
           activation, "\"");
  return {0.5 * arccos_from_gram(cross, diag_x, diag_y, 1), 0.5 * arccos_from_gram(cross, diag_x, diag_y, 0)};
}

NeuralKernels infinite_width_kernels(const FullyConnectedArchitecture& arch, const at::Tensor& x_in,
                                     const at::Tensor& y_in) {
  validate(arch, "ntk");
  check_pair(x_in, y_in, "ntk");
  const bool same = x_in.is_same(y_in);
  const at::Tensor x = x_in.to(at::kDouble), y = y_in.to(at::kDouble);
  const double n0 = static_cast<double>(x.size(1));
  const double w2 = arch.weight_variance, b2 = arch.bias_variance;
  at::Tensor sigma = w2 * at::matmul(x, y.t()) / n0 + b2;
  at::Tensor sigma_xx = w2 * (x * x).sum(1) / n0 + b2;
  at::Tensor sigma_yy = w2 * (y * y).sum(1) / n0 + b2;
  at::Tensor theta = sigma.clone();
  for (int64_t layer = 0; layer < arch.depth; ++layer) {
    const DualActivation dual = dual_activation(arch.activation, sigma, sigma_xx, sigma_yy);
    const DualActivation on_diagonal = dual_activation_diagonal(arch.activation, sigma_xx);
    if (same) {
      dual.value.diagonal().copy_(on_diagonal.value);
      dual.derivative.diagonal().copy_(on_diagonal.derivative);
    }
    sigma = w2 * dual.value + b2;
    theta = theta * (w2 * dual.derivative) + sigma;
    sigma_xx = w2 * on_diagonal.value + b2;
    sigma_yy = w2 * dual_activation_diagonal(arch.activation, sigma_yy).value + b2;
  }
  return {sigma, theta};
}

FullyConnectedNet init_fully_connected(const FullyConnectedArchitecture& arch, int64_t input_dim,
                                       int64_t width, uint64_t seed) {
  validate(arch, "ntk");
  LR_CHECK(input_dim >= 1 && width >= 1, InvalidArgument, "ntk: input_dim (", input_dim, ") and width (",
           width, ") must be >= 1");
  at::Generator gen = at::detail::createCPUGenerator(seed);
  FullyConnectedNet net;
  net.arch = arch;
  int64_t fan_in = input_dim;
  for (int64_t layer = 0; layer <= arch.depth; ++layer) {
    const int64_t fan_out = layer == arch.depth ? 1 : width;
    net.weights.push_back(at::empty({fan_out, fan_in}, at::kDouble).normal_(0, 1, gen));
    net.biases.push_back(at::empty({fan_out}, at::kDouble).normal_(0, 1, gen));
    fan_in = fan_out;
  }
  return net;
}

namespace {

// The forward pass keeping what the per-layer Gram formula needs: the layer inputs αˡ (α⁰ = x) and
// the pre-activations hˡ⁺¹, l = 0..L.
struct ForwardTrace {
  std::vector<at::Tensor> inputs, preactivations;
};

ForwardTrace forward_trace(const FullyConnectedNet& net, const at::Tensor& x) {
  LR_CHECK(x.dim() == 2 && !net.weights.empty() && x.size(1) == net.weights.front().size(1), InvalidArgument,
           "ntk: inputs must be [n, ", net.weights.empty() ? 0 : net.weights.front().size(1), "], got ",
           x.sizes());
  const double sw = std::sqrt(net.arch.weight_variance), sb = std::sqrt(net.arch.bias_variance);
  ForwardTrace trace;
  at::Tensor alpha = x.to(at::kDouble);
  for (size_t layer = 0; layer < net.weights.size(); ++layer) {
    const double fan_in = static_cast<double>(net.weights[layer].size(1));
    const at::Tensor h =
        (sw / std::sqrt(fan_in)) * at::matmul(alpha, net.weights[layer].t()) + sb * net.biases[layer];
    trace.inputs.push_back(alpha);
    trace.preactivations.push_back(h);
    alpha = activate(net.arch.activation, h);
  }
  return trace;
}

// δˡ⁺¹ = ∂f/∂hˡ⁺¹ for l = 0..L (index l), from the top: δ^{L+1} = 1.
std::vector<at::Tensor> sensitivities(const FullyConnectedNet& net, const ForwardTrace& trace) {
  const double sw = std::sqrt(net.arch.weight_variance);
  const size_t layers = net.weights.size();
  std::vector<at::Tensor> delta(layers);
  delta[layers - 1] = at::ones({trace.inputs.front().size(0), 1}, at::kDouble);
  for (size_t layer = layers - 1; layer > 0; --layer) {
    const double fan_in = static_cast<double>(net.weights[layer].size(1));
    const at::Tensor back = (sw / std::sqrt(fan_in)) * at::matmul(delta[layer], net.weights[layer]);
    delta[layer - 1] = activation_derivative(net.arch.activation, trace.preactivations[layer - 1]) * back;
  }
  return delta;
}

}  // namespace

at::Tensor network_output(const FullyConnectedNet& net, const at::Tensor& x) {
  return forward_trace(net, x).preactivations.back().squeeze(1);
}

at::Tensor empirical_ntk(const FullyConnectedNet& net, const at::Tensor& x, const at::Tensor& y) {
  check_pair(x, y, "ntk");
  const ForwardTrace tx = forward_trace(net, x), ty = forward_trace(net, y);
  const std::vector<at::Tensor> dx = sensitivities(net, tx), dy = sensitivities(net, ty);
  const double w2 = net.arch.weight_variance, b2 = net.arch.bias_variance;
  at::Tensor theta = at::zeros({x.size(0), y.size(0)}, at::kDouble);
  for (size_t layer = 0; layer < net.weights.size(); ++layer) {
    const double fan_in = static_cast<double>(net.weights[layer].size(1));
    const at::Tensor input_gram = (w2 / fan_in) * at::matmul(tx.inputs[layer], ty.inputs[layer].t()) + b2;
    theta += at::matmul(dx[layer], dy[layer].t()) * input_gram;
  }
  return theta;
}

double gradient_descent_step(FullyConnectedNet& net, const at::Tensor& x, const at::Tensor& y,
                             double learning_rate) {
  LR_CHECK(std::isfinite(learning_rate) && learning_rate > 0, InvalidArgument,
           "ntk: learning_rate must be > 0, got ", learning_rate);
  const ForwardTrace trace = forward_trace(net, x);
  LR_CHECK(y.dim() == 1 && y.size(0) == x.size(0), InvalidArgument, "ntk: targets must be [", x.size(0),
           "], got ", y.sizes());
  const at::Tensor residual = trace.preactivations.back() - y.to(at::kDouble).unsqueeze(1);  // [N, 1]
  const double n = static_cast<double>(x.size(0));
  const double loss = 0.5 * residual.pow(2).sum().item<double>() / n;
  const std::vector<at::Tensor> delta = sensitivities(net, trace);
  const double sw = std::sqrt(net.arch.weight_variance), sb = std::sqrt(net.arch.bias_variance);
  for (size_t layer = 0; layer < net.weights.size(); ++layer) {
    const double fan_in = static_cast<double>(net.weights[layer].size(1));
    const at::Tensor weighted = delta[layer] * residual;  // rᵢ δˡ⁺¹ᵢ [N, n_{l+1}]
    net.weights[layer] -=
        (learning_rate * sw / (n * std::sqrt(fan_in))) * at::matmul(weighted.t(), trace.inputs[layer]);
    net.biases[layer] -= (learning_rate * sb / n) * weighted.sum(0);
  }
  return loss;
}

LinearisedDynamics::LinearisedDynamics(const at::Tensor& theta_train, const at::Tensor& residual0,
                                       double learning_rate) {
  LR_CHECK(theta_train.dim() == 2 && theta_train.size(0) == theta_train.size(1) && theta_train.size(0) >= 1,
           InvalidArgument, "linearised GD: Θ must be square [N, N], got ", theta_train.sizes());
  LR_CHECK(residual0.dim() >= 1 && residual0.dim() <= 2 && residual0.size(0) == theta_train.size(0),
           InvalidArgument,
           "linearised GD: residual Y − f₀ must be [N] or [N, k] with N = ", theta_train.size(0), ", got ",
           residual0.sizes());
  LR_CHECK(std::isfinite(learning_rate) && learning_rate > 0, InvalidArgument,
           "linearised GD: learning_rate must be > 0, got ", learning_rate);
  const at::Tensor theta = theta_train.to(at::kDouble);
  auto [eigenvalues, eigenvectors] = at::linalg_eigh(0.5 * (theta + theta.t()));
  eigenvalues_ = eigenvalues;
  eigenvectors_ = eigenvectors;
  projected_residual_ = at::matmul(eigenvectors_.t(), residual0.to(at::kDouble));
  rate_ = learning_rate / static_cast<double>(theta.size(0));
}

at::Tensor LinearisedDynamics::filtered(double time, bool divide_by_eigenvalue) const {
  LR_CHECK(time >= 0, InvalidArgument, "linearised GD: time must be >= 0, got ", time);
  at::Tensor gain;
  if (std::isinf(time)) {
    // t = ∞: every mode with λ > 0 is fitted; a round-off null mode never moves.
    const at::Tensor positive = eigenvalues_.gt(0);
    gain = divide_by_eigenvalue
               ? at::where(positive, 1.0 / eigenvalues_.clamp_min(1e-300), at::zeros_like(eigenvalues_))
               : positive.to(at::kDouble);
  } else {
    const at::Tensor exponent = -rate_ * time * eigenvalues_;
    const at::Tensor fitted = -at::expm1(exponent);  // 1 − e^{−ηλt/N}, accurate for small ηλt/N
    if (divide_by_eigenvalue) {
      // (1 − e^{−cλ})/λ → c as λ → 0; below that scale the limit is exact to round-off.
      const at::Tensor tiny = eigenvalues_.abs().lt(1e-12 * eigenvalues_.abs().max().clamp_min(1e-300));
      gain = at::where(tiny, at::full_like(eigenvalues_, rate_ * time), fitted / eigenvalues_);
    } else {
      gain = fitted;
    }
  }
  return projected_residual_.dim() == 1 ? gain * projected_residual_
                                        : gain.unsqueeze(1) * projected_residual_;
}

at::Tensor LinearisedDynamics::train_change(double time) const {
  return at::matmul(eigenvectors_, filtered(time, false));
}

at::Tensor LinearisedDynamics::dual_coefficients(double time) const {
  return at::matmul(eigenvectors_, filtered(time, true));
}

at::Tensor LinearisedDynamics::test_change(const at::Tensor& theta_test_train, double time) const {
  LR_CHECK(theta_test_train.dim() == 2 && theta_test_train.size(1) == eigenvalues_.size(0), InvalidArgument,
           "linearised GD: Θ(x, X) must be [m, ", eigenvalues_.size(0), "], got ", theta_test_train.sizes());
  return at::matmul(theta_test_train.to(at::kDouble), dual_coefficients(time));
}

NeuralKernelRegression::NeuralKernelRegression(std::string method, const Json& options, uint64_t seed,
                                               KernelFunction kernels)
    : Estimator(options, seed), method_(std::move(method)), kernels_(std::move(kernels)) {
  const std::string_view what = method_;
  const std::string kernel_name = json_get_or<std::string>(options, "kernel", "ntk", what);
  LR_CHECK(kernel_name == "ntk" || kernel_name == "nngp", InvalidArgument, what,
           ": option \"kernel\" must be \"ntk\" or \"nngp\", got \"", kernel_name, "\"");
  use_nngp_ = kernel_name == "nngp";
  ridge_ = json_get_or<double>(options, "lambda", 0.0, what);
  LR_CHECK(std::isfinite(ridge_) && ridge_ >= 0, InvalidArgument, what,
           ": option \"lambda\" must be >= 0, got ", ridge_);
  time_ = json_get_or<double>(options, "time", 0.0, what);
  LR_CHECK(!options.contains("time") || (time_ > 0 && !std::isnan(time_)), InvalidArgument, what,
           ": option \"time\" must be > 0, got ", time_);
  LR_CHECK(!(options.contains("time") && ridge_ > 0), InvalidArgument, what,
           ": give option \"lambda\" (kernel regression) or \"time\" (linearised GD), not both");
  learning_rate_ = json_get_or<double>(options, "learning_rate", 1.0, what);
  LR_CHECK(std::isfinite(learning_rate_) && learning_rate_ > 0, InvalidArgument, what,
           ": option \"learning_rate\" must be > 0, got ", learning_rate_);
}

void NeuralKernelRegression::fit_impl(const Dataset& data) {
  LR_CHECK(data.y.defined(), InvalidArgument, method(), ": ", data.source, " has no targets y");
  train_x_ = data.x.to(at::kDouble).contiguous();
  const at::Tensor k = kernel(train_x_, train_x_);
  const at::Tensor y = data.y.to(at::kDouble);
  if (time_ > 0) {
    dual_coef_ = LinearisedDynamics(k, y, learning_rate_).dual_coefficients(time_);
    report_ = {{"kernel", use_nngp_ ? "nngp" : "ntk"}, {"time", time_}, {"learning_rate", learning_rate_}};
  } else {
    const KrrSolution solution = krr_solve(k, y, ridge_);
    dual_coef_ = solution.alpha;
    report_ = {{"kernel", use_nngp_ ? "nngp" : "ntk"},
               {"lambda", ridge_},
               {"jitter", solution.jitter},
               {"log_evidence", solution.log_evidence}};
  }
  report_["train_mse"] = (at::matmul(k, dual_coef_) - y).pow(2).mean().item<double>();
}

at::Tensor NeuralKernelRegression::predict_impl(const at::Tensor& x) const {
  return at::matmul(kernel(x, train_x_), dual_coef_);
}

std::vector<NamedTensor> NeuralKernelRegression::state() const {
  return {{"train_x", train_x_}, {"dual_coef", dual_coef_.contiguous()}};
}

void NeuralKernelRegression::restore(const SafetensorsFile& file) {
  train_x_ = expect_state(file, "train_x");
  dual_coef_ = expect_state(file, "dual_coef");
  LR_CHECK(train_x_.dim() == 2 && train_x_.size(1) == input_dim() && dual_coef_.dim() >= 1 &&
               dual_coef_.size(0) == train_x_.size(0),
           Corruption, file.path().string(), ": train_x ", train_x_.sizes(), " and dual_coef ",
           dual_coef_.sizes(), " do not match input_dim ", input_dim());
}

at::Tensor NeuralKernelRegression::kernel(const at::Tensor& x, const at::Tensor& y) const {
  const NeuralKernels k = kernels_(x, y);
  return use_nngp_ ? k.nngp : k.ntk;
}

// The option help shared by `ntk` and `cnn_kernel` (the regression part).
std::vector<std::pair<std::string, std::string>> neural_kernel_regression_options() {
  return {{"kernel", "\"ntk\" (the neural tangent kernel, default) or \"nngp\" (the NNGP kernel)"},
          {"lambda", "ridge λ >= 0 of kernel regression (default 0: interpolation, jitter reported)"},
          {"time", "training time t > 0 of linearised gradient descent (absent: t = ∞, kernel regression)"},
          {"learning_rate", "learning rate η > 0 of linearised gradient descent (default 1)"},
          {"weight_variance", "σ_w² > 0 (default 2)"},
          {"bias_variance", "σ_b² >= 0 (default 0)"},
          {"activation", "\"relu\" (default) or \"erf\""}};
}

void register_ntk(Registry<EstimatorMethod>& registry) {
  auto options = neural_kernel_regression_options();
  options.push_back({"depth", "number of hidden layers L >= 0 (default 2)"});
  registry.add(
      {kName, "Infinite-width NTK / NNGP of a fully connected network: kernel regression or linearised GD",
       "Jacot, Gabriel & Hongler, 2018, arXiv:1806.07572; Lee et al., 2019, arXiv:1902.06720", options},
      {[](const Json& options, uint64_t seed) {
        const FullyConnectedArchitecture arch = fully_connected_from_options(options, kName);
        return std::make_unique<NeuralKernelRegression>(
            kName, options, seed,
            [arch](const at::Tensor& x, const at::Tensor& y) { return infinite_width_kernels(arch, x, y); });
      }});
}

}  // namespace lowrank::kernel_methods
