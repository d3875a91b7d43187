#include "lowrank/kernel_methods/svm.h"

#include <cmath>
#include <limits>
#include <vector>

#include "lowrank/core/error.h"

namespace lowrank::kernel_methods {

SvmSolution svm_fit(const at::Tensor& k, const at::Tensor& labels, const SvmOptions& options) {
  LR_CHECK(k.dim() == 2 && k.size(0) == k.size(1), InvalidArgument,
           "svm: the Gram matrix must be square, got ", k.sizes());
  LR_CHECK(labels.dim() == 1 && labels.size(0) == k.size(0), InvalidArgument, "svm: ", labels.sizes(),
           " labels for a Gram matrix of size ", k.sizes());
  LR_CHECK(labels.eq(1).logical_or(labels.eq(-1)).all().item<bool>(), InvalidArgument,
           "svm: labels must be -1 or +1");
  LR_CHECK(std::isfinite(options.c) && options.c > 0, InvalidArgument, "svm: C must be > 0, got ", options.c);
  LR_CHECK(options.tolerance > 0, InvalidArgument, "svm: tolerance must be > 0, got ", options.tolerance);
  const int64_t n = k.size(0);
  const at::Tensor kc = k.to(at::kDouble).contiguous();
  const double* K = kc.data_ptr<double>();
  const at::Tensor yc = labels.to(at::kDouble).contiguous();
  const double* y = yc.data_ptr<double>();
  const double c = options.c;
  constexpr double tau = 1e-12;
  std::vector<double> alpha(n, 0.0), grad(n, -1.0);
  auto upper = [&](int64_t t) { return alpha[t] >= c; };
  auto lower = [&](int64_t t) { return alpha[t] <= 0; };
  SvmSolution out;
  for (int64_t iteration = 0; iteration < options.max_iterations; ++iteration) {
    // i: the maximal violator in I_up (−y_t G_t largest).
    double gmax = -std::numeric_limits<double>::infinity();
    int64_t i = -1;
    for (int64_t t = 0; t < n; ++t) {
      const bool in_up = y[t] > 0 ? !upper(t) : !lower(t);
      if (in_up && -y[t] * grad[t] >= gmax) {
        gmax = -y[t] * grad[t];
        i = t;
      }
    }
    // j: over I_low, the largest second-order decrease; gmax2 tracks max_{I_low} y_t G_t.
    double gmax2 = -std::numeric_limits<double>::infinity(), best = std::numeric_limits<double>::infinity();
    int64_t j = -1;
    for (int64_t t = 0; t < n; ++t) {
      const bool in_low = y[t] > 0 ? !lower(t) : !upper(t);
      if (!in_low) continue;
      gmax2 = std::max(gmax2, y[t] * grad[t]);
      const double b = gmax + y[t] * grad[t];
      if (i < 0 || b <= 0) continue;
      double a = K[i * n + i] + K[t * n + t] - 2 * K[i * n + t];
      if (a <= 0) a = tau;
      const double decrease = -(b * b) / a;
      if (decrease <= best) {
        best = decrease;
        j = t;
      }
    }
    out.iterations = iteration;
    if (i < 0 || j < 0 || gmax + gmax2 < options.tolerance) {
      out.converged = true;
      break;
    }
    // The two-variable subproblem, as LIBSVM's Solver::Solve (Q_ij = y_i y_j K_ij).
    const double old_i = alpha[i], old_j = alpha[j];
    const double qij = y[i] * y[j] * K[i * n + j];
    if (y[i] != y[j]) {
      double quad = K[i * n + i] + K[j * n + j] + 2 * qij;
      if (quad <= 0) quad = tau;
      const double delta = (-grad[i] - grad[j]) / quad;
      const double diff = alpha[i] - alpha[j];
      alpha[i] += delta;
      alpha[j] += delta;
      if (diff > 0) {
        if (alpha[j] < 0) {
          alpha[j] = 0;
          alpha[i] = diff;
        }
      } else if (alpha[i] < 0) {
        alpha[i] = 0;
        alpha[j] = -diff;
      }
      if (diff > 0) {
        if (alpha[i] > c) {
          alpha[i] = c;
          alpha[j] = c - diff;
        }
      } else if (alpha[j] > c) {
        alpha[j] = c;
        alpha[i] = c + diff;
      }
    } else {
      double quad = K[i * n + i] + K[j * n + j] - 2 * qij;
      if (quad <= 0) quad = tau;
      const double delta = (grad[i] - grad[j]) / quad;
      const double sum = alpha[i] + alpha[j];
      alpha[i] -= delta;
      alpha[j] += delta;
      if (sum > c) {
        if (alpha[i] > c) {
          alpha[i] = c;
          alpha[j] = sum - c;
        }
      } else if (alpha[j] < 0) {
        alpha[j] = 0;
        alpha[i] = sum;
      }
      if (sum > c) {
        if (alpha[j] > c) {
          alpha[j] = c;
          alpha[i] = sum - c;
        }
      } else if (alpha[i] < 0) {
        alpha[i] = 0;
        alpha[j] = sum;
      }
    }
    const double di = alpha[i] - old_i, dj = alpha[j] - old_j;
    for (int64_t t = 0; t < n; ++t) {
      grad[t] += y[t] * (y[i] * K[i * n + t] * di + y[j] * K[j * n + t] * dj);
    }
  }
  // ρ (LIBSVM's calculate_rho).
  double upper_bound = std::numeric_limits<double>::infinity(), lower_bound = -upper_bound, free_sum = 0;
  int64_t free_count = 0;
  for (int64_t t = 0; t < n; ++t) {
    const double yg = y[t] * grad[t];
    if (upper(t)) {
      if (y[t] < 0)
        upper_bound = std::min(upper_bound, yg);
      else
        lower_bound = std::max(lower_bound, yg);
    } else if (lower(t)) {
      if (y[t] > 0)
        upper_bound = std::min(upper_bound, yg);
      else
        lower_bound = std::max(lower_bound, yg);
    } else {
      ++free_count;
      free_sum += yg;
    }
  }
  out.rho = free_count > 0 ? free_sum / static_cast<double>(free_count) : (upper_bound + lower_bound) / 2;
  std::vector<double> coef(n);
  for (int64_t t = 0; t < n; ++t) coef[t] = alpha[t] * y[t];
  out.dual_coef = at::tensor(coef, at::kDouble);
  return out;
}

at::Tensor svm_decision(const SvmSolution& solution, const at::Tensor& cross) {
  LR_CHECK(cross.dim() == 2 && cross.size(1) == solution.dual_coef.size(0), InvalidArgument,
           "svm: the cross Gram must be [m, ", solution.dual_coef.size(0), "], got ", cross.sizes());
  return at::matmul(cross.to(at::kDouble), solution.dual_coef) - solution.rho;
}

}  // namespace lowrank::kernel_methods
