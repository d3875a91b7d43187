#include "lowrank/kernel_methods/state_space_gp.h"

#include <algorithm>
#include <cmath>
#include <tuple>
#include <vector>

#include "lowrank/core/error.h"

namespace lowrank::kernel_methods {
namespace {

// The chain's matrices are tiny (R·s ≤ a few dozen) and visited T times in sequence: plain loops
// on row-major doubles avoid the per-call overhead of ATen, which would dominate the O(T) cost.
struct Mat {
  int64_t rows = 0, cols = 0;
  std::vector<double> v;
  Mat() = default;
  Mat(int64_t r, int64_t c) : rows(r), cols(c), v(static_cast<size_t>(r * c), 0.0) {}
  double& operator()(int64_t i, int64_t j) { return v[static_cast<size_t>(i * cols + j)]; }
  double operator()(int64_t i, int64_t j) const { return v[static_cast<size_t>(i * cols + j)]; }
};

Mat identity(int64_t n) {
  Mat out(n, n);
  for (int64_t i = 0; i < n; ++i) out(i, i) = 1;
  return out;
}

Mat multiply(const Mat& a, const Mat& b) {
  Mat out(a.rows, b.cols);
  for (int64_t i = 0; i < a.rows; ++i)
    for (int64_t k = 0; k < a.cols; ++k) {
      const double aik = a(i, k);
      if (aik == 0) continue;
      for (int64_t j = 0; j < b.cols; ++j) out(i, j) += aik * b(k, j);
    }
  return out;
}

Mat transpose(const Mat& a) {
  Mat out(a.cols, a.rows);
  for (int64_t i = 0; i < a.rows; ++i)
    for (int64_t j = 0; j < a.cols; ++j) out(j, i) = a(i, j);
  return out;
}

Mat add(const Mat& a, const Mat& b, double scale = 1.0) {
  Mat out = a;
  for (size_t i = 0; i < out.v.size(); ++i) out.v[i] += scale * b.v[i];
  return out;
}

// a b aᵀ
Mat sandwich(const Mat& a, const Mat& b) {
  return multiply(multiply(a, b), transpose(a));
}

void symmetrize(Mat& a) {
  for (int64_t i = 0; i < a.rows; ++i)
    for (int64_t j = i + 1; j < a.cols; ++j) a(i, j) = a(j, i) = 0.5 * (a(i, j) + a(j, i));
}

// Solves a x = b by Gaussian elimination with partial pivoting (a square, nonsingular).
Mat solve(Mat a, Mat b) {
  const int64_t n = a.rows;
  for (int64_t col = 0; col < n; ++col) {
    int64_t pivot = col;
    for (int64_t i = col + 1; i < n; ++i)
      if (std::abs(a(i, col)) > std::abs(a(pivot, col))) pivot = i;
    LR_CHECK(a(pivot, col) != 0, InvalidArgument,
             "state_space_gp: a singular system in the Kalman recursion");
    if (pivot != col) {
      for (int64_t j = 0; j < n; ++j) std::swap(a(col, j), a(pivot, j));
      for (int64_t j = 0; j < b.cols; ++j) std::swap(b(col, j), b(pivot, j));
    }
    for (int64_t i = col + 1; i < n; ++i) {
      const double f = a(i, col) / a(col, col);
      if (f == 0) continue;
      for (int64_t j = col; j < n; ++j) a(i, j) -= f * a(col, j);
      for (int64_t j = 0; j < b.cols; ++j) b(i, j) -= f * b(col, j);
    }
  }
  for (int64_t i = n - 1; i >= 0; --i)
    for (int64_t j = 0; j < b.cols; ++j) {
      double s = b(i, j);
      for (int64_t k = i + 1; k < n; ++k) s -= a(i, k) * b(k, j);
      b(i, j) = s / a(i, i);
    }
  return b;
}

// x b⁻¹ for symmetric b: (b⁻¹ xᵀ)ᵀ.
Mat right_divide(const Mat& x, const Mat& b) {
  return transpose(solve(b, transpose(x)));
}

// A [rows, cols] block of a contiguous fp64 buffer.
Mat read(const double* data, int64_t rows, int64_t cols) {
  Mat out(rows, cols);
  std::copy(data, data + rows * cols, out.v.begin());
  return out;
}

at::Tensor to_tensor(const Mat& m) {
  return at::tensor(m.v, at::kDouble).reshape({m.rows, m.cols});
}

// kron(I_R, block): the R uncoupled GPs of one chain.
Mat block_diagonal(const Mat& block, int64_t outputs) {
  const int64_t s = block.rows;
  Mat out(outputs * s, outputs * s);
  for (int64_t r = 0; r < outputs; ++r)
    for (int64_t i = 0; i < s; ++i)
      for (int64_t j = 0; j < s; ++j) out(r * s + i, r * s + j) = block(i, j);
  return out;
}

double rate(const MaternPrior& prior) {
  return std::sqrt(2 * prior.nu) / prior.lengthscale;
}

Mat transition_block(const MaternPrior& prior, double delta) {
  const double lam = rate(prior), decay = std::exp(-lam * delta);
  if (state_order(prior) == 1) {
    Mat a(1, 1);
    a(0, 0) = decay;
    return a;
  }
  Mat a(2, 2);
  a(0, 0) = decay * (1 + lam * delta);
  a(0, 1) = decay * delta;
  a(1, 0) = -decay * lam * lam * delta;
  a(1, 1) = decay * (1 - lam * delta);
  return a;
}

Mat stationary_block(const MaternPrior& prior) {
  const int64_t s = state_order(prior);
  Mat p(s, s);
  p(0, 0) = prior.variance;
  if (s == 2) p(1, 1) = rate(prior) * rate(prior) * prior.variance;
  return p;
}

// The chain's transition and process noise over a gap Δ ≥ 0, for all R GPs.
struct Step {
  Mat a, q;
};
Step step(const MaternPrior& prior, int64_t outputs, double delta) {
  const Mat a = transition_block(prior, delta), p = stationary_block(prior);
  Mat q = add(p, sandwich(a, p), -1.0);
  symmetrize(q);
  return {block_diagonal(a, outputs), block_diagonal(q, outputs)};
}

// Rows of H (the function values u_r = x_{r·s}) picked out of a state mean / covariance.
std::vector<int64_t> value_rows(int64_t outputs, int64_t s) {
  std::vector<int64_t> rows;
  for (int64_t r = 0; r < outputs; ++r) rows.push_back(r * s);
  return rows;
}

// One RTS step: the smoothed state at a coordinate, given its one-step-ahead predictive (mean,
// cov) and the transition to the next coordinate whose smoothed state is known.
void rts_step(Mat& mean, Mat& cov, const Step& next, const Mat& next_smoothed_mean,
              const Mat& next_smoothed_cov) {
  Mat predicted_cov = add(sandwich(next.a, cov), next.q);
  symmetrize(predicted_cov);
  const Mat predicted_mean = multiply(next.a, mean);
  const Mat gain = right_divide(multiply(cov, transpose(next.a)), predicted_cov);
  mean = add(mean, multiply(gain, add(next_smoothed_mean, predicted_mean, -1.0)));
  cov = add(cov, sandwich(gain, add(next_smoothed_cov, predicted_cov, -1.0)));
  symmetrize(cov);
}

}  // namespace

void validate(const MaternPrior& prior, std::string_view what) {
  LR_CHECK(prior.nu == 0.5 || prior.nu == 1.5, InvalidArgument, what,
           ": option \"nu\" must be 0.5 or 1.5, got ", prior.nu);
  LR_CHECK(std::isfinite(prior.lengthscale) && prior.lengthscale > 0, InvalidArgument, what,
           ": option \"lengthscale\" must be > 0, got ", prior.lengthscale);
  LR_CHECK(std::isfinite(prior.variance) && prior.variance > 0, InvalidArgument, what,
           ": option \"variance\" must be > 0, got ", prior.variance);
}

int64_t state_order(const MaternPrior& prior) {
  return prior.nu == 0.5 ? 1 : 2;
}

at::Tensor matern_feedback(const MaternPrior& prior) {
  validate(prior, "matern_feedback");
  const double lam = rate(prior);
  if (state_order(prior) == 1) return at::full({1, 1}, -lam, at::kDouble);
  return at::tensor(std::vector<double>{0, 1, -lam * lam, -2 * lam}, at::kDouble).reshape({2, 2});
}

at::Tensor matern_stationary_covariance(const MaternPrior& prior) {
  validate(prior, "matern_stationary_covariance");
  return to_tensor(stationary_block(prior));
}

at::Tensor matern_transition(const MaternPrior& prior, double delta) {
  validate(prior, "matern_transition");
  LR_CHECK(std::isfinite(delta) && delta >= 0, InvalidArgument,
           "matern_transition: the gap must be >= 0, got ", delta);
  return to_tensor(transition_block(prior, delta));
}

at::Tensor matern_process_noise(const MaternPrior& prior, double delta) {
  validate(prior, "matern_process_noise");
  LR_CHECK(std::isfinite(delta) && delta >= 0, InvalidArgument,
           "matern_process_noise: the gap must be >= 0, got ", delta);
  return to_tensor(step(prior, 1, delta).q);
}

MarkovGpPosterior smooth_markov_gp(const MaternPrior& prior, const at::Tensor& coords,
                                   const at::Tensor& precision, const at::Tensor& shift) {
  validate(prior, "smooth_markov_gp");
  LR_CHECK(coords.dim() == 1 && coords.size(0) >= 1, InvalidArgument,
           "smooth_markov_gp: coordinates must be a non-empty [T] vector, got ", coords.sizes());
  const int64_t steps = coords.size(0);
  LR_CHECK(shift.dim() == 2 && shift.size(0) == steps, InvalidArgument, "smooth_markov_gp: shift must be [",
           steps, ", R], got ", shift.sizes());
  const int64_t outputs = shift.size(1);
  LR_CHECK(precision.dim() == 3 && precision.size(0) == steps && precision.size(1) == outputs &&
               precision.size(2) == outputs,
           InvalidArgument, "smooth_markov_gp: precision must be [", steps, ", ", outputs, ", ", outputs,
           "], got ", precision.sizes());
  const at::Tensor t = coords.to(at::kDouble).contiguous();
  const double* tp = t.data_ptr<double>();
  for (int64_t j = 0; j < steps; ++j) {
    LR_CHECK(std::isfinite(tp[j]), InvalidArgument, "smooth_markov_gp: coordinate ", j, " is not finite");
    LR_CHECK(j == 0 || tp[j] > tp[j - 1], InvalidArgument,
             "smooth_markov_gp: coordinates must be strictly increasing, got ", tp[j - 1], " then ", tp[j]);
  }
  const int64_t s = state_order(prior), d = outputs * s;
  const std::vector<int64_t> rows = value_rows(outputs, s);
  const at::Tensor lam_all = precision.to(at::kDouble).contiguous(),
                   eta_all = shift.to(at::kDouble).contiguous();

  std::vector<Mat> filtered_mean(steps), filtered_cov(steps);
  Mat mean(d, 1), cov = block_diagonal(stationary_block(prior), outputs);
  for (int64_t j = 0; j < steps; ++j) {
    if (j > 0) {
      const Step st = step(prior, outputs, tp[j] - tp[j - 1]);
      mean = multiply(st.a, mean);
      cov = add(sandwich(st.a, cov), st.q);
      symmetrize(cov);
    }
    // Information-form update on u = H x (see the header): S = Λ C + I, C = H P Hᵀ.
    const Mat lam = read(lam_all.data_ptr<double>() + j * outputs * outputs, outputs, outputs);
    const Mat eta = read(eta_all.data_ptr<double>() + j * outputs, outputs, 1);
    Mat hp(outputs, d), hm(outputs, 1);  // H P and H m
    for (int64_t r = 0; r < outputs; ++r) {
      hm(r, 0) = mean(rows[r], 0);
      for (int64_t k = 0; k < d; ++k) hp(r, k) = cov(rows[r], k);
    }
    Mat c(outputs, outputs);
    for (int64_t r = 0; r < outputs; ++r)
      for (int64_t q = 0; q < outputs; ++q) c(r, q) = hp(r, rows[q]);
    const Mat system = add(multiply(lam, c), identity(outputs));
    Mat rhs(outputs, 1 + d);
    const Mat innovation = add(eta, multiply(lam, hm), -1.0);
    const Mat lam_hp = multiply(lam, hp);
    for (int64_t r = 0; r < outputs; ++r) {
      rhs(r, 0) = innovation(r, 0);
      for (int64_t k = 0; k < d; ++k) rhs(r, 1 + k) = lam_hp(r, k);
    }
    const Mat x = solve(system, rhs);
    const Mat ph = transpose(hp);  // P Hᵀ [d, R]
    const Mat correction = multiply(ph, x);
    for (int64_t k = 0; k < d; ++k) {
      mean(k, 0) += correction(k, 0);
      for (int64_t l = 0; l < d; ++l) cov(k, l) -= correction(k, 1 + l);
    }
    symmetrize(cov);
    filtered_mean[j] = mean;
    filtered_cov[j] = cov;
  }

  std::vector<Mat> smoothed_mean(steps), smoothed_cov(steps);
  smoothed_mean[steps - 1] = filtered_mean[steps - 1];
  smoothed_cov[steps - 1] = filtered_cov[steps - 1];
  for (int64_t j = steps - 2; j >= 0; --j) {
    Mat m = filtered_mean[j], p = filtered_cov[j];
    rts_step(m, p, step(prior, outputs, tp[j + 1] - tp[j]), smoothed_mean[j + 1], smoothed_cov[j + 1]);
    smoothed_mean[j] = m;
    smoothed_cov[j] = p;
  }

  auto stack = [&](const std::vector<Mat>& ms, bool vector) {
    std::vector<at::Tensor> parts;
    parts.reserve(ms.size());
    for (const Mat& m : ms) parts.push_back(vector ? to_tensor(m).reshape({d}) : to_tensor(m));
    return at::stack(parts);
  };
  return {prior,
          outputs,
          t.clone(),
          stack(filtered_mean, true),
          stack(filtered_cov, false),
          stack(smoothed_mean, true),
          stack(smoothed_cov, false)};
}

std::pair<at::Tensor, at::Tensor> markov_gp_marginals(const MarkovGpPosterior& posterior,
                                                      const at::Tensor& queries) {
  LR_CHECK(queries.dim() == 1, InvalidArgument, "markov_gp_marginals: queries must be [m], got ",
           queries.sizes());
  const MaternPrior& prior = posterior.prior;
  const int64_t outputs = posterior.outputs, s = state_order(prior), d = outputs * s, m = queries.size(0);
  const int64_t steps = posterior.coords.size(0);
  const std::vector<int64_t> rows = value_rows(outputs, s);
  const at::Tensor q = queries.to(at::kDouble).contiguous();
  const double* qp = q.data_ptr<double>();
  const at::Tensor coords = posterior.coords.to(at::kDouble).contiguous();
  const double* tp = coords.data_ptr<double>();
  const Mat stationary = block_diagonal(stationary_block(prior), outputs);
  const at::Tensor fm_all = posterior.filtered_mean.contiguous(),
                   fc_all = posterior.filtered_covariance.contiguous();
  const at::Tensor sm_all = posterior.smoothed_mean.contiguous(),
                   sc_all = posterior.smoothed_covariance.contiguous();
  auto state = [&](const at::Tensor& means, const at::Tensor& covs, int64_t j) {
    return std::pair<Mat, Mat>{read(means.data_ptr<double>() + j * d, d, 1),
                               read(covs.data_ptr<double>() + j * d * d, d, d)};
  };
  at::Tensor out_mean = at::empty({m, outputs}, at::kDouble),
             out_cov = at::empty({m, outputs, outputs}, at::kDouble);
  double* om = out_mean.data_ptr<double>();
  double* oc = out_cov.data_ptr<double>();
  for (int64_t i = 0; i < m; ++i) {
    const double t = qp[i];
    LR_CHECK(std::isfinite(t), InvalidArgument, "markov_gp_marginals: query ", i, " is not finite");
    const int64_t next = std::lower_bound(tp, tp + steps, t) - tp;  // first coordinate ≥ t
    Mat mean, cov;
    if (next < steps && tp[next] == t) {
      std::tie(mean, cov) = state(sm_all, sc_all, next);
    } else if (next == steps) {
      // Past the last coordinate: a pure prediction from the last smoothed state.
      auto [sm, sp] = state(sm_all, sc_all, steps - 1);
      const Step st = step(prior, outputs, t - tp[steps - 1]);
      mean = multiply(st.a, sm);
      cov = add(sandwich(st.a, sp), st.q);
    } else {
      // Insert t into the chain: its predictive from the filtered state before it (or the
      // stationary prior before t_0), then one RTS step from the smoothed state after it.
      if (next == 0) {
        mean = Mat(d, 1);
        cov = stationary;
      } else {
        auto [fm, fp] = state(fm_all, fc_all, next - 1);
        const Step st = step(prior, outputs, t - tp[next - 1]);
        mean = multiply(st.a, fm);
        cov = add(sandwich(st.a, fp), st.q);
        symmetrize(cov);
      }
      auto [nm, np] = state(sm_all, sc_all, next);
      rts_step(mean, cov, step(prior, outputs, tp[next] - t), nm, np);
    }
    for (int64_t r = 0; r < outputs; ++r) {
      om[i * outputs + r] = mean(rows[r], 0);
      for (int64_t c = 0; c < outputs; ++c) oc[(i * outputs + r) * outputs + c] = cov(rows[r], rows[c]);
    }
  }
  return {out_mean, out_cov};
}

std::pair<at::Tensor, at::Tensor> smoothed_marginals(const MarkovGpPosterior& posterior) {
  const int64_t s = state_order(posterior.prior);
  const at::Tensor rows = at::arange(0, posterior.outputs * s, s, at::kLong);
  const at::Tensor mean = posterior.smoothed_mean.index_select(1, rows);
  const at::Tensor cov = posterior.smoothed_covariance.index_select(1, rows).index_select(2, rows);
  return {mean, cov};
}

}  // namespace lowrank::kernel_methods
