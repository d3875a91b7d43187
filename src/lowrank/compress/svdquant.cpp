#include "lowrank/compress/svdquant.h"

#include <cmath>
#include <limits>
#include <string_view>
#include <utility>
#include <vector>

#include "lowrank/core/error.h"
#include "lowrank/linalg/svd.h"
#include "lowrank/ops/w4a4_gemm.h"

namespace lowrank::compress {
namespace {

at::Tensor checked_float64(const at::Tensor& t, std::string_view what, std::vector<int64_t> shape) {
  LR_CHECK(t.defined(), InvalidArgument, what, " is an undefined tensor");
  LR_CHECK(at::isFloatingType(t.scalar_type()), InvalidArgument, what, " has dtype ", t.scalar_type(),
           "; a floating dtype is required");
  LR_CHECK(t.sizes() == at::IntArrayRef(shape), InvalidArgument, what, " has shape ", t.sizes(),
           ", expected ", at::IntArrayRef(shape));
  auto d = t.to(at::kCPU, at::kDouble).contiguous();
  LR_CHECK(at::isfinite(d).all().item<bool>(), InvalidArgument, what, " has non-finite entries");
  return d;
}

// tr(D H Dᵀ) = sum((D H) ∘ D), float64.
double gram_energy(const at::Tensor& D, const at::Tensor& H) {
  return (at::matmul(D, H) * D).sum().item<double>();
}

double relative(double error, double reference) {
  if (reference > 0) return error / reference;
  return error == 0 ? 0.0 : std::numeric_limits<double>::infinity();
}

// λ_j = xspan_j^α / wspan_j^β; zeros -> 1; any NaN/Inf -> all ones. Returned as float32 (stored form).
at::Tensor smoothing_factor(const at::Tensor& xspan, const at::Tensor& wspan, double alpha, double beta) {
  auto lambda = xspan.pow(alpha) / wspan.pow(beta);
  lambda = at::where(lambda == 0, at::ones_like(lambda), lambda);
  if (!at::isfinite(lambda).all().item<bool>()) lambda = at::ones_like(lambda);
  return lambda.to(at::kFloat);
}

// One low-rank + quantised-residual candidate for a fixed λ.
struct Candidate {
  at::Tensor smooth, lora_up, lora_down;  // float32
  ops::GroupQuantized residual;
  at::Tensor W_eff;                                        // float64
  double error = std::numeric_limits<double>::infinity();  // tr(ΔW H ΔWᵀ)
};

// The objective: tr(ΔW H ΔWᵀ) (act_bits 16) or, with 4-bit activations, the squared output error
// on the calibration tokens, E = ||X Wᵀ − Q(X̂) Q(R)ᵀ − X̂ (L1 L2)ᵀ||², X̂ = X diag(λ)⁻¹.
class Objective {
 public:
  Objective(const at::Tensor& W, const at::Tensor& H, const at::Tensor& X, const SvdQuantOptions& o)
      : W_(W), H_(H), X_(X), o_(o) {
    if (o.act_bits == 4) Y_ = at::matmul(X_, W_.t());
  }
  double error(const at::Tensor& smooth, const at::Tensor& low_rank, const at::Tensor& residual,
               const at::Tensor& W_eff) const {
    if (o_.act_bits != 4) return gram_energy(W_ - W_eff, H_);
    const at::Tensor xs = (X_ / smooth.to(at::kDouble).unsqueeze(0)).to(at::kFloat);
    const at::Tensor xq = ops::fake_quantize_activations_int4(xs, o_.group_size).to(at::kDouble);
    const at::Tensor y = at::matmul(xq, residual.t()) + at::matmul(xs.to(at::kDouble), low_rank.t());
    return (Y_ - y).pow(2).sum().item<double>();
  }
  double reference() const { return o_.act_bits == 4 ? Y_.pow(2).sum().item<double>() : gram_energy(W_, H_); }

 private:
  const at::Tensor& W_;
  const at::Tensor& H_;
  const at::Tensor& X_;
  at::Tensor Y_;  // X Wᵀ, float64 (act_bits 4)
  const SvdQuantOptions& o_;
};

class Decomposer {
 public:
  Decomposer(const at::Tensor& W, const Objective& objective, const SvdQuantOptions& o)
      : W_(W), objective_(objective), o_(o) {}

  // L = SVD_r(target) as float32 factors; R = Q(Ŵ − L); scored. `strict`: a residual whose scale
  // overflows float16 throws (from ops::quantize_groups); otherwise the candidate is infeasible.
  Candidate make(const at::Tensor& smooth, const at::Tensor& W_hat, const at::Tensor& target,
                 bool strict) const {
    Candidate c;
    c.smooth = smooth;
    const int64_t out = W_.size(0), in = W_.size(1);
    if (o_.rank > 0) {
      const linalg::Svd svd = linalg::truncated_svd(target, o_.rank);
      c.lora_up = (svd.U * svd.S.unsqueeze(0)).to(at::kFloat);
      c.lora_down = svd.Vh.to(at::kFloat);
    } else {
      c.lora_up = at::zeros({out, 0}, W_.options().dtype(at::kFloat));
      c.lora_down = at::zeros({0, in}, W_.options().dtype(at::kFloat));
    }
    const auto low_rank = o_.rank > 0 ? at::matmul(c.lora_up.to(at::kDouble), c.lora_down.to(at::kDouble))
                                      : at::zeros_like(W_hat);
    const auto rest = (W_hat - low_rank).to(at::kFloat);
    const double qmax = o_.bits == 4 ? 7.0 : 127.0;
    if (!strict && rest.abs().max().item<double>() / qmax > 65504.0) return c;  // scale overflows fp16
    c.residual = ops::quantize_groups(rest, o_.bits, o_.group_size);
    const auto residual = c.residual.dequantize(at::kDouble);
    c.W_eff = (low_rank + residual) / smooth.to(at::kDouble).unsqueeze(0);
    c.error = objective_.error(smooth, low_rank, residual, c.W_eff);
    return c;
  }

 private:
  const at::Tensor& W_;
  const Objective& objective_;
  const SvdQuantOptions& o_;
};

}  // namespace

at::Tensor SvdQuantResult::effective_weight(at::ScalarType dtype) const {
  const auto low_rank = at::matmul(lora_up.to(at::kDouble), lora_down.to(at::kDouble));
  return ((low_rank + residual.dequantize(at::kDouble)) / smooth.to(at::kDouble).unsqueeze(0)).to(dtype);
}

double relative_output_error(const at::Tensor& W_in, const at::Tensor& W_eff_in, const at::Tensor& H_in) {
  LR_CHECK(W_in.defined() && W_in.dim() == 2, InvalidArgument, "relative_output_error: W must be 2-D, got ",
           W_in.defined() ? W_in.sizes() : at::IntArrayRef{});
  const int64_t out = W_in.size(0), in = W_in.size(1);
  const auto W = checked_float64(W_in, "relative_output_error: W", {out, in});
  const auto W_eff = checked_float64(W_eff_in, "relative_output_error: W_eff", {out, in});
  const auto H = checked_float64(H_in, "relative_output_error: H", {in, in});
  return relative(gram_energy(W - W_eff, H), gram_energy(W, H));
}

SvdQuantResult svdquant(const at::Tensor& W_in, const at::Tensor& H_in, const at::Tensor& x_absmax_in,
                        const SvdQuantOptions& options, const at::Tensor& inputs_in) {
  LR_CHECK(W_in.defined() && W_in.dim() == 2, InvalidArgument,
           "svdquant: W must be 2-D [out, in], got shape ",
           W_in.defined() ? W_in.sizes() : at::IntArrayRef{});
  const int64_t out = W_in.size(0), in = W_in.size(1);
  const auto W = checked_float64(W_in, "svdquant: W", {out, in});
  const auto H = checked_float64(H_in, "svdquant: H", {in, in});
  const auto xspan = checked_float64(x_absmax_in, "svdquant: x_absmax", {in});
  LR_CHECK((xspan >= 0).all().item<bool>(), InvalidArgument, "svdquant: x_absmax has negative entries");
  LR_CHECK(options.rank >= 0 && options.rank <= std::min(out, in), InvalidArgument,
           "svdquant: rank = ", options.rank, " is not in [0, min(out, in)] = [0, ", std::min(out, in),
           "] for a ", out, "x", in, " weight");
  LR_CHECK(options.bits == 4 || options.bits == 8, InvalidArgument, "svdquant: bits = ", options.bits,
           " is not 4 or 8");
  LR_CHECK(options.group_size > 0 && options.group_size % 2 == 0 && in % options.group_size == 0,
           InvalidArgument, "svdquant: group_size = ", options.group_size,
           " must be even and divide in_features = ", in);
  LR_CHECK(options.grid >= 1, InvalidArgument, "svdquant: grid = ", options.grid, " must be >= 1");
  LR_CHECK(options.max_iters >= 0, InvalidArgument, "svdquant: max_iters = ", options.max_iters,
           " must be >= 0");

  LR_CHECK(options.act_bits == 16 || (options.act_bits == 4 && options.bits == 4), InvalidArgument,
           "svdquant: act_bits = ", options.act_bits, " with bits = ", options.bits,
           "; use 16, or 4 with 4-bit weights (W4A4)");
  at::Tensor X;
  if (options.act_bits == 4) {
    LR_CHECK(inputs_in.defined() && inputs_in.dim() == 2 && inputs_in.size(0) > 0, InvalidArgument,
             "svdquant: act_bits = 4 needs calibration tokens [N, in] to score 4-bit activations");
    X = checked_float64(inputs_in, "svdquant: inputs", {inputs_in.size(0), in});
  }

  const Objective objective(W, H, X, options);
  const Decomposer decompose(W, objective, options);
  const auto wspan = W.abs().amax(0);

  // Smoothing grid (deepcompressor, beta = -2): (0, 0), then (a, 0) and (a, 1 - a).
  std::vector<std::pair<double, double>> grid = {{0.0, 0.0}};
  for (int i = 1; i < options.grid; ++i) grid.emplace_back(static_cast<double>(i) / options.grid, 0.0);
  for (int i = 1; i < options.grid; ++i) {
    const double a = static_cast<double>(i) / options.grid;
    grid.emplace_back(a, 1.0 - a);
  }
  Candidate best;
  std::pair<double, double> best_ab = grid.front();
  for (size_t i = 0; i < grid.size(); ++i) {
    const auto [a, b] = grid[i];
    const auto smooth = smoothing_factor(xspan, wspan, a, b);
    const auto W_hat = W * smooth.to(at::kDouble).unsqueeze(0);
    Candidate c = decompose.make(smooth, W_hat, W_hat, /*strict=*/i == 0);
    if (c.error < best.error) {
      best = std::move(c);
      best_ab = grid[i];
    }
  }

  // Alternating refit with the chosen λ: L_k = SVD_r(Ŵ − Q(R_{k-1})), R_k = Q(Ŵ − L_k).
  const auto W_hat = W * best.smooth.to(at::kDouble).unsqueeze(0);
  int iterations = 0;
  for (int k = 1; k <= options.max_iters; ++k) {
    Candidate c = decompose.make(best.smooth, W_hat, W_hat - best.residual.dequantize(at::kDouble), false);
    if (!(c.error < best.error)) break;
    best = std::move(c);
    iterations = k;
  }

  SvdQuantResult r;
  r.smooth = best.smooth;
  r.lora_up = best.lora_up;
  r.lora_down = best.lora_down;
  r.residual = best.residual;
  r.alpha = best_ab.first;
  r.beta = best_ab.second;
  r.output_error = relative(best.error, objective.reference());
  r.iterations = iterations;
  return r;
}

}  // namespace lowrank::compress
