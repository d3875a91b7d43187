// LowRankAdam: the one Adam core over projected gradients; the equations are in low_rank_adam.h.
#include "lowrank/optim/low_rank_adam.h"

#include <algorithm>
#include <cmath>
#include <set>

#include "lowrank/core/error.h"
#include "lowrank/optim/fira.h"
#include "lowrank/optim/frugal.h"
#include "lowrank/optim/gradnorm_lorp.h"
#include "lowrank/optim/quantized_state.h"

namespace lowrank::optim {

struct LowRankAdam::Slot {
  std::string name;
  at::Tensor param;
  bool projected = false;
  bool decay = true;                     // plain AdamW parameters: 1-D tensors are not decayed
  std::unique_ptr<Projector> projector;  // projected weights with rank > 0 (not blocks)
  ProjectorOptions projector_options;
  bool active = true;                  // runs the Adam core (false: ρ = 0 or an inactive block)
  AdamState adam;                      // moments of R (projected) or of the parameter (AdamW)
  std::optional<double> fira_norm;     // Fira's ‖S_{t−1}‖_F
  QuantizedMoments moments8;           // 8-bit moments (state_bits = 8); adam.exp_avg is then transient
  AdamState magnitude;                 // GradNormLoRP: moments [m, 1] of the row norms' gradient
  double lr_scale = 1.0;               // set_overrides
  std::optional<double> weight_decay;  // set_overrides; nullopt: the run's rule

  // Zeroes the moments, and t unless `keep_step` (a reset on refresh, or a freed block).
  void clear_moments(bool keep_step = false) {
    const int64_t t = adam.step;
    adam = {};
    moments8 = {};
    if (keep_step) adam.step = t;
  }
};

LowRankAdam::~LowRankAdam() = default;
LowRankAdam::LowRankAdam(LowRankAdam&&) noexcept = default;
LowRankAdam& LowRankAdam::operator=(LowRankAdam&&) noexcept = default;

bool is_projectable(const std::string& name, const at::Tensor& param,
                    const std::vector<std::string>& targets) {
  if (param.dim() != 2) return false;
  return std::any_of(targets.begin(), targets.end(),
                     [&](const std::string& t) { return name.find(t) != std::string::npos; });
}

// --- the optimizer ---------------------------------------------------------------------------

LowRankAdam::LowRankAdam(NamedTensors params, LowRankConfig config)
    : params_(std::move(params)), config_(std::move(config)) {
  config_.validate();
  for (const auto& [name, p] : params_) {
    Slot s;
    s.name = name;
    s.param = p;
    s.decay = p.dim() >= 2;
    s.projected = is_projectable(name, p, config_.target_modules);
    if (s.projected && config_.selection == Selection::kProjector) {
      const int64_t m = p.size(0), n = p.size(1);
      ProjectorOptions& o = s.projector_options;
      o.kind = parse_projector_kind(config_.projector, m, n);
      o.seed = config_.seed;
      o.oversample = config_.oversample;
      o.power_iters = config_.power_iters;
      o.rank = config_.rank;
      if (config_.density) {
        // FRUGAL: round(ρ·d) for dense projectors, int(ρ·axis) for coordinates.
        const double rho = *config_.density;
        switch (o.kind) {
          case ProjectorKind::kColumns:
            o.rank = static_cast<int64_t>(rho * static_cast<double>(n));
            break;
          case ProjectorKind::kRows:
            o.rank = static_cast<int64_t>(rho * static_cast<double>(m));
            break;
          case ProjectorKind::kRandK:
            o.rank = static_cast<int64_t>(rho * static_cast<double>(m * n));
            break;
          default:
            o.rank = std::llround(rho * static_cast<double>(std::min(m, n)));
        }
      }
      if (o.rank > 0) {
        s.projector = make_projector(o, m, n);
      } else {
        s.active = false;  // ρ = 0: only the state-free rule
      }
    }
    slots_.push_back(std::move(s));
  }
}

bool LowRankAdam::is_projected(const std::string& name) const {
  for (const Slot& s : slots_)
    if (s.name == name) return s.projected;
  throw NotFound(str("optimizer: no parameter \"", name, "\""));
}

const Projector* LowRankAdam::projector(const std::string& name) const {
  for (const Slot& s : slots_)
    if (s.name == name) return s.projector.get();
  throw NotFound(str("optimizer: no parameter \"", name, "\""));
}

bool LowRankAdam::is_active(const std::string& name) const {
  for (const Slot& s : slots_)
    if (s.name == name) return s.active;
  throw NotFound(str("optimizer: no parameter \"", name, "\""));
}

std::optional<double> LowRankAdam::fira_norm(const std::string& name) const {
  for (const Slot& s : slots_)
    if (s.name == name) return s.fira_norm;
  throw NotFound(str("optimizer: no parameter \"", name, "\""));
}

void LowRankAdam::select_blocks() {
  std::vector<Slot*> blocks;
  for (Slot& s : slots_)
    if (s.projected) blocks.push_back(&s);
  const std::vector<bool> active =
      frugal_block_selection(static_cast<int64_t>(blocks.size()), *config_.density, config_.block_order,
                             steps_ / config_.update_gap, config_.seed);
  for (size_t i = 0; i < blocks.size(); ++i) {
    Slot& s = *blocks[i];
    // Inactive weights free their state and t (BAdam); active ones keep it unless
    // reset_statistics.
    if (!active[i]) {
      s.clear_moments();
    } else if (config_.reset_on_refresh) {
      s.clear_moments(/*keep_step=*/!config_.reset_step);
    }
    s.active = active[i];
  }
}

void LowRankAdam::set_overrides(const std::vector<ParamOverride>& overrides) {
  std::vector<std::string> names;
  for (const Slot& s : slots_) names.push_back(s.name);
  const std::vector<size_t> index = override_indices(names, overrides, "low-rank optimizer");
  for (Slot& s : slots_) {
    s.lr_scale = 1.0;
    s.weight_decay.reset();
  }
  for (size_t k = 0; k < overrides.size(); ++k) {
    slots_[index[k]].lr_scale = overrides[k].lr_scale;
    slots_[index[k]].weight_decay = overrides[k].weight_decay;
  }
}

void LowRankAdam::step(double lr) {
  begin_step(lr);
  for (size_t i = 0; i < slots_.size(); ++i)
    if (slots_[i].param.grad().defined()) step_parameter(i, slots_[i].param.grad());
  end_step();
}

void LowRankAdam::begin_step(double lr) {
  lr_ = lr;
  refresh_now_ = refreshes_next_step();
  if (config_.selection == Selection::kBlock && refresh_now_) select_blocks();
}

void LowRankAdam::step_parameter(size_t index, const at::Tensor& grad) {
  LR_CHECK(index < slots_.size(), InvalidArgument, "low-rank optimizer: no parameter ", index);
  Slot& s = slots_[index];
  if (!s.projected) {
    AdamConfig c = config_.adam;
    if (!s.decay) c.weight_decay = 0;
    if (s.weight_decay) c.weight_decay = *s.weight_decay;
    // bitsandbytes' rule: every state of at least min_8bit_size elements is 8-bit.
    const bool eight_bit =
        config_.state_bits == 8 && config_.eight_bit_plain && s.param.numel() >= config_.min_8bit_size;
    if (eight_bit) s.moments8.restore(s.adam.exp_avg, s.adam.exp_avg_sq, s.param.scalar_type());
    adam_update(s.param, grad, s.adam, c, lr_ * s.lr_scale);
    if (eight_bit) {
      s.moments8.keep(s.adam.exp_avg, s.adam.exp_avg_sq);
      s.adam.exp_avg.reset();
      s.adam.exp_avg_sq.reset();
    }
    return;
  }
  projected_step(s, grad, lr_ * s.lr_scale, refresh_now_);
}

void LowRankAdam::projected_step(Slot& s, const at::Tensor& grad, double lr, bool refresh_now) {
  at::NoGradGuard no_grad;
  at::Tensor& W = s.param;
  const LowRankConfig& c = config_;
  const double wd = s.weight_decay.value_or(c.adam.weight_decay);
  const double alpha = c.scale;
  if (wd != 0 && c.decay == DecayPlacement::kBeforeUpdate) W.mul_(1 - lr * wd);
  // GradNormLoRP: everything below runs on the direction's gradient ∇V (gradnorm_lorp.h).
  std::optional<WeightNormSplit> wn;
  if (c.weight_norm) wn = weight_norm_split(W, grad.detach(), c.orthogonal_grad);
  const at::Tensor G = wn ? wn->grad_direction : grad.detach();

  Projector* P = s.projector.get();
  if (P && (refresh_now || !P->ready())) {
    P->refresh(G, steps_);
    if (c.reset_on_refresh) s.clear_moments(/*keep_step=*/!c.reset_step);
  }
  auto down = [&](const at::Tensor& x) { return P ? P->down(x) : x; };
  auto up = [&](const at::Tensor& x) { return P ? P->up(x) : x; };

  at::Tensor delta;  // added to W
  at::Tensor R;
  if (s.active) {
    R = down(G);
    at::Tensor N;           // the normalised low-rank direction
    double step_size = lr;  // the bias-corrected step size s_t (Fira's residual uses it)
    if (c.core == MomentCore::kSgd) {
      N = R;
      step_size = lr;
      delta = up(N) * (-step_size * alpha);  // out of place: without a projector N is G itself
    } else {
      AdamState& a = s.adam;
      const bool eight_bit = c.state_bits == 8 && R.numel() >= c.min_8bit_size;
      if (eight_bit) s.moments8.restore(a.exp_avg, a.exp_avg_sq, R.scalar_type());
      const auto [bc1, bc2] = update_moments(a, R, c.adam);
      if (eight_bit) {
        // Kept between steps as 8-bit (signed map for M, unsigned for V); this step uses the
        // float32 values, as bitsandbytes' kernel does.
        s.moments8.keep(a.exp_avg, a.exp_avg_sq);
      }
      if (c.eps_placement == EpsPlacement::kGaLore) {
        // GaLore: N = M / (√V + ε), step = η·√bc2/bc1.
        N = a.exp_avg / (a.exp_avg_sq.sqrt().add_(c.adam.eps));
        step_size = lr * std::sqrt(bc2) / bc1;
        if (P && !wn && c.residual == ResidualRule::kNone && N.scalar_type() == W.scalar_type()) {
          P->add_up(W, N, -step_size * alpha);  // W += −s·α·up(N) in one GEMM, no [m, n] temporary
        } else {
          delta = up(N) * (-step_size * alpha);
        }
      } else {
        // AdamW: the same kernel as adam_update (addcdiv with −η·α/bc1 on
        // denom = √V/√bc2 + ε), written into zeros and scattered back, so that a full-rank
        // coordinate projector reproduces AdamW bit for bit.
        const at::Tensor denom = (a.exp_avg_sq.sqrt() / std::sqrt(bc2)).add_(c.adam.eps);
        step_size = lr / bc1;
        delta = up(at::zeros_like(a.exp_avg).addcdiv_(a.exp_avg, denom, -(lr * alpha) / bc1));
        if (c.residual == ResidualRule::kFira) N = a.exp_avg / denom;
      }
      if (eight_bit) {
        a.exp_avg.reset();
        a.exp_avg_sq.reset();
      }
    }
    if (c.residual == ResidualRule::kFira) {
      const FiraResidual f = fira_residual(G, R, N, up(R) * alpha, s.fira_norm, c.fira_gamma);
      delta.add_(f.s, -step_size);
      s.fira_norm = f.norm;
    }
  }
  if (c.residual == ResidualRule::kSignSgd || c.residual == ResidualRule::kSgd) {
    // FRUGAL's state-free part: what the subspace does not hold.
    const at::Tensor g_free = s.active ? G - up(R) : G;
    const at::Tensor r = c.residual == ResidualRule::kSignSgd ? g_free.sign() : g_free;
    const double coef = -lr * alpha * c.residual_lr_scale;
    if (delta.defined()) {
      delta.add_(r, coef);
    } else {
      delta = r * coef;
    }
  }
  if (wn) {
    // W ← g'·V'/‖V'‖_row with V' = W + Δ and g' from the magnitude's own Adam step.
    const at::Tensor direction = delta.defined() ? W + delta.to(W.scalar_type()) : W;
    const at::Tensor magnitude = magnitude_step(wn->magnitude, wn->grad_magnitude, s.magnitude, c, lr);
    W.copy_(weight_norm_compose(magnitude, direction, wn->magnitude));
  } else if (delta.defined()) {
    W.add_(delta.to(W.scalar_type()));
  }
  if (wd != 0 && c.decay == DecayPlacement::kAfterUpdate) W.add_(W, -lr * wd);
}

void LowRankAdam::prune_state(const std::string& name, double ratio, bool reset_step) {
  for (Slot& s : slots_) {
    if (s.name != name) continue;
    AdamState& a = s.adam;
    LR_CHECK(a.exp_avg.defined() || s.moments8.defined(), NotFound,
             "optimizer: no Adam moments for parameter ", name, " to reset");
    if (ratio >= 1) {
      s.clear_moments(/*keep_step=*/!reset_step);
      return;
    }
    const bool eight_bit = s.moments8.defined();
    if (eight_bit) s.moments8.restore(a.exp_avg, a.exp_avg_sq, s.param.scalar_type());
    magnitude_prune_(a.exp_avg, ratio);
    magnitude_prune_(a.exp_avg_sq, ratio);
    if (eight_bit) {
      s.moments8.keep(a.exp_avg, a.exp_avg_sq);
      a.exp_avg.reset();
      a.exp_avg_sq.reset();
    }
    if (reset_step) a.step = 0;
    return;
  }
  throw NotFound(str("optimizer: no parameter \"", name, "\" to reset"));
}

void LowRankAdam::release_state(size_t index) {
  LR_CHECK(index < slots_.size(), InvalidArgument, "LowRankAdam: no parameter ", index);
  slots_[index].clear_moments(/*keep_step=*/true);
  slots_[index].magnitude = {};
}

void LowRankAdam::zero_grad() {
  for (auto& [name, p] : params_) {
    if (p.grad().defined()) p.mutable_grad().reset();
  }
}

// --- checkpoints and accounting ---------------------------------------------------------------

NamedTensors LowRankAdam::state_tensors() const {
  NamedTensors out;
  for (const Slot& s : slots_) {
    if (s.adam.exp_avg.defined()) {
      out.emplace_back(s.name + ".exp_avg", s.adam.exp_avg.detach().to(at::kCPU).contiguous());
      out.emplace_back(s.name + ".exp_avg_sq", s.adam.exp_avg_sq.detach().to(at::kCPU).contiguous());
    }
    s.moments8.append_state(out, s.name);
    out.emplace_back(s.name + ".step", at::scalar_tensor(s.adam.step, at::kLong));
    if (s.projector)
      for (auto& [key, t] : s.projector->state_tensors()) out.emplace_back(s.name + ".projector." + key, t);
    if (s.fira_norm) out.emplace_back(s.name + ".fira_norm", at::scalar_tensor(*s.fira_norm, at::kDouble));
    if (s.projected) out.emplace_back(s.name + ".active", at::scalar_tensor(s.active ? 1 : 0, at::kLong));
    if (s.magnitude.exp_avg.defined()) {
      out.emplace_back(s.name + ".magnitude.exp_avg", s.magnitude.exp_avg.detach().to(at::kCPU).contiguous());
      out.emplace_back(s.name + ".magnitude.exp_avg_sq",
                       s.magnitude.exp_avg_sq.detach().to(at::kCPU).contiguous());
      out.emplace_back(s.name + ".magnitude.step", at::scalar_tensor(s.magnitude.step, at::kLong));
    }
  }
  return out;
}

void LowRankAdam::load_state(const NamedTensors& tensors, int64_t steps) {
  auto find = [&](const std::string& name) -> const at::Tensor* {
    for (const auto& [n, t] : tensors)
      if (n == name) return &t;
    return nullptr;
  };
  for (Slot& s : slots_) {
    const at::Tensor& p = s.param;
    const at::Tensor* m = find(s.name + ".exp_avg");
    const at::Tensor* v = find(s.name + ".exp_avg_sq");
    s.adam = {};
    if (m || v) {
      LR_CHECK(m && v && m->sizes() == v->sizes(), Corruption, "optimizer state for ", s.name,
               ": exp_avg and exp_avg_sq must both be present with one shape");
      LR_CHECK(s.projected || m->sizes() == p.sizes(), Corruption, "optimizer state for ", s.name, ": shape ",
               m->sizes(), " differs from the parameter's ", p.sizes());
      s.adam.exp_avg = m->to(p.device(), p.scalar_type()).clone();
      s.adam.exp_avg_sq = v->to(p.device(), p.scalar_type()).clone();
    }
    s.moments8.read_state(tensors, s.name, p.device());
    if (const at::Tensor* t = find(s.name + ".step")) s.adam.step = t->item<int64_t>();
    if (s.projector) {
      const std::string prefix = s.name + ".projector.";
      NamedTensors sub;
      for (const auto& [n, t] : tensors)
        if (n.rfind(prefix, 0) == 0) sub.emplace_back(n.substr(prefix.size()), t);
      s.projector = make_projector(s.projector_options, p.size(0), p.size(1));
      if (!sub.empty()) s.projector->load_state(sub, p.device());
    }
    const at::Tensor* f = find(s.name + ".fira_norm");
    s.fira_norm = f ? std::optional<double>(f->item<double>()) : std::nullopt;
    if (const at::Tensor* a = find(s.name + ".active")) s.active = a->item<int64_t>() != 0;
    s.magnitude = {};
    const at::Tensor* gm = find(s.name + ".magnitude.exp_avg");
    const at::Tensor* gv = find(s.name + ".magnitude.exp_avg_sq");
    if (gm || gv) {
      const std::vector<int64_t> shape{p.size(0), 1};
      LR_CHECK(config_.weight_norm && s.projected, Corruption, "optimizer state for ", s.name,
               ": magnitude moments, but optimizer ", config_.method, " keeps none for it");
      LR_CHECK(gm && gv && gm->sizes() == at::IntArrayRef(shape) && gv->sizes() == at::IntArrayRef(shape),
               Corruption, "optimizer state for ", s.name, ": magnitude moments must both have shape [",
               p.size(0), ", 1]");
      s.magnitude.exp_avg = gm->to(p.device(), p.scalar_type()).clone();
      s.magnitude.exp_avg_sq = gv->to(p.device(), p.scalar_type()).clone();
      if (const at::Tensor* t = find(s.name + ".magnitude.step")) s.magnitude.step = t->item<int64_t>();
    }
  }
  steps_ = steps;
}

OrderedJson LowRankAdam::memory() const {
  const OptimizerBytes b = bytes();
  return memory_json(b.weights, b.grads, b.optimizer_states, b.projectors);
}

OptimizerBytes LowRankAdam::bytes() const {
  auto nbytes = [](const at::Tensor& t) {
    return t.defined() ? static_cast<int64_t>(t.nbytes()) : int64_t{0};
  };
  OptimizerBytes b;
  std::set<const void*> bases;
  for (const Slot& s : slots_) {
    b.weights += nbytes(s.param);
    b.grads += nbytes(s.param.grad());
    b.optimizer_states += nbytes(s.adam.exp_avg) + nbytes(s.adam.exp_avg_sq) + s.moments8.bytes();
    b.optimizer_states += nbytes(s.magnitude.exp_avg) + nbytes(s.magnitude.exp_avg_sq);
    if (s.fira_norm) b.optimizer_states += static_cast<int64_t>(sizeof(double));
    if (s.projector) {
      b.projectors += s.projector->state_bytes();
      const at::Tensor basis = s.projector->shared_basis();
      if (basis.defined() && bases.insert(basis.data_ptr()).second) b.projectors += nbytes(basis);
    }
  }
  return b;
}

}  // namespace lowrank::optim
