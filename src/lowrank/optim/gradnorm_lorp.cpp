// GradNormLoRP's optimizer preset, and the weight-normalised GaLore's weight-norm split, magnitude
// step and preset; the equations are in gradnorm_lorp.h, the projected steps in low_rank_adam.cpp.
#include "lowrank/optim/gradnorm_lorp.h"

#include <cmath>

#include "lowrank/core/error.h"
#include "lowrank/optim/galore.h"

namespace lowrank::optim {

WeightNormSplit weight_norm_split(const at::Tensor& w, const at::Tensor& g, bool orthogonal) {
  LR_CHECK(w.dim() == 2 && g.sizes() == w.sizes(), InvalidArgument,
           "gradnormlorp: needs a 2-D weight and a gradient of its shape (got ", w.sizes(), ", ", g.sizes(),
           ")");
  at::NoGradGuard no_grad;
  WeightNormSplit s;
  s.magnitude = at::linalg_vector_norm(w, 2, {1}, /*keepdim=*/true);  // g [m, 1]
  // v̂ = W/g, with zero rows left at 0 (no direction to normalise).
  const at::Tensor unit = w / at::where(s.magnitude > 0, s.magnitude, at::ones_like(s.magnitude));
  s.grad_magnitude = (g * unit).sum(1, /*keepdim=*/true);  // ∇g_i = ⟨G_i, v̂_i⟩
  s.grad_direction = orthogonal ? g - s.grad_magnitude * unit : g.clone();
  return s;
}

at::Tensor magnitude_step(const at::Tensor& magnitude, const at::Tensor& grad_magnitude, AdamState& state,
                          const LowRankConfig& config, double lr) {
  at::NoGradGuard no_grad;
  const AdamConfig& a = config.adam;
  const auto [bc1, bc2] = update_moments(state, grad_magnitude, a);
  if (config.eps_placement == EpsPlacement::kGaLore) {
    // N = M/(√V + ε), s = η·√bc2/bc1 (galore.h).
    return magnitude - state.exp_avg / (state.exp_avg_sq.sqrt() + a.eps) * (lr * std::sqrt(bc2) / bc1);
  }
  // N = M/(√V/√bc2 + ε), s = η/bc1 (AdamW).
  return magnitude - state.exp_avg / (state.exp_avg_sq.sqrt() / std::sqrt(bc2) + a.eps) * (lr / bc1);
}

at::Tensor weight_norm_compose(const at::Tensor& new_magnitude, const at::Tensor& direction,
                               const at::Tensor& old_magnitude) {
  at::NoGradGuard no_grad;
  const at::Tensor norm = at::linalg_vector_norm(direction, 2, {1}, /*keepdim=*/true);
  const at::Tensor safe = at::where(norm > 0, norm, at::ones_like(norm));
  return at::where(old_magnitude > 0, direction * (new_magnitude / safe), direction);
}

LowRankConfig gradnorm_lorp_defaults() {
  LowRankConfig c = galore_defaults();
  c.method = "gradnormlorp";
  return c;
}

LowRankConfig wn_galore_defaults() {
  LowRankConfig c = galore_defaults();
  c.method = "wngalore";
  c.weight_norm = true;
  c.orthogonal_grad = true;
  return c;
}

void register_gradnorm_lorp(Registry<OptimizerMethod>& registry) {
  registry.add(
      {"gradnormlorp",
       "GradNormLoRP: GaLore-projected Adam on the low-rank factors of W = m (W0 + s B A) / "
       "||W0 + s B A||_row, Adam on m (with --parameterization gradnormlorp, or finetune --method dora)",
       "Huang et al., 2024, AAAI 2025, arXiv:2412.19616",
       {{"rank", "r (128): projector rank of each factor's gradient (clipped to the factor's short side)"},
        {"update_gap", "T (200): recompute the projectors every T steps"},
        {"scale", "alpha (0.25): multiplies the projected factor updates"},
        {"projector", "svd (default), randomized_svd, random, gaussian, dct, columns, rows"},
        {"state_bits", "32 (default) or 8: block-wise 8-bit projected moments"},
        {"eps", "1e-6, added to sqrt(V)"},
        {"weight_decay", "lambda (0), after the update"}}},
      {gradnorm_lorp_defaults()});
  registry.add({"wngalore",
                "weight-normalised GaLore on dense weights: GaLore on the direction of each attn/MLP weight, "
                "Adam on its row norms (the code's optimizer-only variant; not the paper's weights)",
                "after Huang et al., 2024, arXiv:2412.19616 (LowRankWeightNormAdamW.py)",
                {{"rank", "r (128): projector rank of the direction's gradient"},
                 {"update_gap", "T (200): recompute the projector every T steps"},
                 {"scale", "alpha (0.25): multiplies the projected direction update (not the magnitude's)"},
                 {"orthogonal_grad",
                  "true (default): grad_V = (I - v v^T) G per row (weight normalisation); false: grad_V = G "
                  "(the code)"},
                 {"projector", "svd (default), randomized_svd, random, gaussian, dct, columns, rows"},
                 {"state_bits", "32 (default) or 8: block-wise 8-bit direction moments"},
                 {"eps", "1e-6, added to sqrt(V)"},
                 {"weight_decay", "lambda (0), after the update"}}},
               {wn_galore_defaults()});
}

}  // namespace lowrank::optim
