#include "lowrank/linalg/sinkhorn.h"

#include "lowrank/core/error.h"

namespace lowrank::linalg {

SinkhornResult sinkhorn_log(const at::Tensor& cost, const at::Tensor& a, const at::Tensor& b,
                            const SinkhornOptions& options) {
  LR_CHECK(cost.dim() == 2, InvalidArgument, "sinkhorn: the cost must be 2-D, got ", cost.sizes());
  LR_CHECK(options.epsilon > 0, InvalidArgument, "sinkhorn: epsilon must be > 0, got ", options.epsilon);
  LR_CHECK(options.max_iterations >= 1, InvalidArgument, "sinkhorn: max_iterations must be >= 1, got ",
           options.max_iterations);
  LR_CHECK(a.dim() == 1 && a.size(0) == cost.size(0), InvalidArgument, "sinkhorn: a must be [", cost.size(0),
           "], got ", a.sizes());
  LR_CHECK(b.dim() == 1 && b.size(0) == cost.size(1), InvalidArgument, "sinkhorn: b must be [", cost.size(1),
           "], got ", b.sizes());
  LR_CHECK(a.gt(0).all().item<bool>() && b.gt(0).all().item<bool>(), InvalidArgument,
           "sinkhorn: the marginals a and b must be positive");
  const double eta = options.epsilon;
  const at::Tensor log_a = at::log(a), log_b = at::log(b);
  at::Tensor f = at::zeros_like(a), g = at::zeros_like(b);
  SinkhornResult result;
  for (int64_t it = 1; it <= options.max_iterations; ++it) {
    f = eta * log_a - eta * at::logsumexp((g.unsqueeze(0) - cost) / eta, 1);
    g = eta * log_b - eta * at::logsumexp((f.unsqueeze(1) - cost) / eta, 0);
    result.iterations = it;
    // After the g step the columns sum to b; the rows' error says how far from converged.
    const at::Tensor rows = at::exp((f.unsqueeze(1) + g.unsqueeze(0) - cost) / eta).sum(1);
    result.marginal_error = (rows - a).abs().sum().item<double>();
    if (result.marginal_error < options.tolerance) break;
  }
  result.plan = at::exp((f.unsqueeze(1) + g.unsqueeze(0) - cost) / eta);
  result.f = f;
  result.g = g;
  return result;
}

}  // namespace lowrank::linalg
