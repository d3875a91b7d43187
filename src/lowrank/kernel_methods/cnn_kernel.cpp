#include "lowrank/kernel_methods/cnn_kernel.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "lowrank/core/error.h"
#include "lowrank/kernel_methods/methods.h"

namespace lowrank::kernel_methods {
namespace {

constexpr const char* kName = "cnn_kernel";

}  // namespace

void validate(const TreeCnnArchitecture& arch, std::string_view what) {
  LR_CHECK(arch.filter >= 2, InvalidArgument, what, ": option \"filter\" must be >= 2, got ", arch.filter);
  LR_CHECK(arch.depth >= 1, InvalidArgument, what, ": option \"depth\" must be >= 1, got ", arch.depth);
  LR_CHECK(std::pow(static_cast<double>(arch.filter), static_cast<double>(arch.depth)) <= 1e8,
           InvalidArgument, what, ": filter^depth = ", arch.filter, "^", arch.depth,
           " is too large (at most 1e8 inputs)");
  validate_layer(arch.weight_variance, arch.bias_variance, arch.activation, what);
}

TreeCnnArchitecture tree_cnn_from_options(const Json& options, std::string_view what) {
  TreeCnnArchitecture arch;
  arch.filter = json_get_or<int64_t>(options, "filter", arch.filter, what);
  arch.depth = json_get_or<int64_t>(options, "depth", arch.depth, what);
  read_layer_options(options, what, arch);
  validate(arch, what);
  return arch;
}

int64_t tree_input_dim(const TreeCnnArchitecture& arch) {
  int64_t d = 1;
  for (int64_t l = 0; l < arch.depth; ++l) d *= arch.filter;
  return d;
}

NeuralKernels tree_cnn_kernels(const TreeCnnArchitecture& arch, const at::Tensor& x_in,
                               const at::Tensor& y_in) {
  validate(arch, kName);
  const int64_t d = tree_input_dim(arch), s = arch.filter;
  LR_CHECK(x_in.dim() == 2 && y_in.dim() == 2 && x_in.size(1) == d && y_in.size(1) == d, InvalidArgument,
           kName, ": inputs must be [n, ", d, "] and [m, ", d, "] (d = filter^depth = ", s, "^", arch.depth,
           "), got ", x_in.sizes(), " and ", y_in.sizes());
  const bool same = x_in.is_same(y_in);
  const int64_t n = x_in.size(0), m = y_in.size(0);
  const double w2 = arch.weight_variance, b2 = arch.bias_variance;
  int64_t nodes = d / s;
  const at::Tensor xp = x_in.to(at::kDouble).reshape({n, nodes, s});
  const at::Tensor yp = y_in.to(at::kDouble).reshape({m, nodes, s});
  // Level 1: the first convolution's pre-activations per patch, [n, m, P] and diagonals [n, P], [m, P].
  at::Tensor sigma = w2 * at::einsum("ips,jps->ijp", {xp, yp}) / static_cast<double>(s) + b2;
  at::Tensor sigma_xx = w2 * (xp * xp).sum(2) / static_cast<double>(s) + b2;
  at::Tensor sigma_yy = w2 * (yp * yp).sum(2) / static_cast<double>(s) + b2;
  at::Tensor theta = sigma.clone();
  for (int64_t level = 1; level <= arch.depth; ++level) {
    // The next layer averages over its window: s children, or, after the last convolution, the one
    // remaining location that the dense readout sees.
    const int64_t window = level < arch.depth ? s : 1;
    nodes /= window;
    const DualActivation dual = dual_activation(arch.activation, sigma, sigma_xx, sigma_yy);
    const DualActivation on_diagonal = dual_activation_diagonal(arch.activation, sigma_xx);
    if (same) {  // the exact x = x' duals on every node's diagonal ([P, n] views)
      at::diagonal(dual.value, 0, 0, 1).copy_(on_diagonal.value.t());
      at::diagonal(dual.derivative, 0, 0, 1).copy_(on_diagonal.derivative.t());
    }
    sigma = w2 * dual.value.reshape({n, m, nodes, window}).mean(3) + b2;
    theta = w2 * (dual.derivative * theta).reshape({n, m, nodes, window}).mean(3) + sigma;
    sigma_xx = w2 * on_diagonal.value.reshape({n, nodes, window}).mean(2) + b2;
    sigma_yy =
        w2 * dual_activation_diagonal(arch.activation, sigma_yy).value.reshape({m, nodes, window}).mean(2) +
        b2;
  }
  return {sigma.squeeze(2), theta.squeeze(2)};
}

bool is_neural_gram(const std::string& method) {
  return method == "ntk" || method == "nngp" || method == "cnn";
}

NeuralGram::NeuralGram(const std::string& method, const Json& options) : method_(method) {
  LR_CHECK(is_neural_gram(method), InvalidArgument, "neural Gram: --method must be ntk, nngp or cnn, got \"",
           method, "\"");
  LR_CHECK(options.is_object(), InvalidArgument, "--options must be a JSON object, got ", options.dump());
  std::vector<std::string> known = {"depth", "weight_variance", "bias_variance", "activation"};
  if (method == "cnn") known.insert(known.end(), {"kernel", "filter"});
  for (const auto& [key, _] : options.items()) {
    if (std::find(known.begin(), known.end(), key) != known.end()) continue;
    std::string names;
    for (const auto& k : known) names += (names.empty() ? "" : ", ") + k;
    throw InvalidArgument(
        str("--options: unknown key \"", key, "\" for --method ", method, " (known: ", names, ")"));
  }
  if (method == "cnn") {
    const std::string kernel = json_get_or<std::string>(options, "kernel", "ntk", "--options");
    LR_CHECK(kernel == "ntk" || kernel == "nngp", InvalidArgument,
             "--options: \"kernel\" must be \"ntk\" or \"nngp\", got \"", kernel, "\"");
    nngp_ = kernel == "nngp";
    tree_ = tree_cnn_from_options(options, "--options");
  } else {
    nngp_ = method == "nngp";
    fully_connected_ = fully_connected_from_options(options, "--options");
  }
}

at::Tensor NeuralGram::gram(const at::Tensor& x) const {
  const NeuralKernels k =
      method_ == "cnn" ? tree_cnn_kernels(tree_, x, x) : infinite_width_kernels(fully_connected_, x, x);
  return nngp_ ? k.nngp : k.ntk;
}

void register_cnn_kernel(Registry<EstimatorMethod>& registry) {
  auto options = neural_kernel_regression_options();
  options.push_back({"filter", "filter size = stride s >= 2 (default 3)"});
  options.push_back({"depth", "number of convolutional layers L >= 1 (default 2); inputs must have d = s^L"});
  registry.add({kName, "Infinite-width NTK / NNGP of a tree CNN (non-overlapping patches): kernel regression",
                "Cagnetta, Favero & Wyart, 2023, arXiv:2208.01003", options},
               {[](const Json& options, uint64_t seed) {
                 const TreeCnnArchitecture arch = tree_cnn_from_options(options, kName);
                 return std::make_unique<NeuralKernelRegression>(
                     kName, options, seed, [arch](const at::Tensor& x, const at::Tensor& y) {
                       return tree_cnn_kernels(arch, x, y);
                     });
               }});
}

}  // namespace lowrank::kernel_methods
