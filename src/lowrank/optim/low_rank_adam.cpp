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
  bool active = true;               // runs the Adam core (false: ρ = 0 or an inactive block)
  AdamState adam;                   // moments of R (projected) or of the parameter (AdamW)
  std::optional<double> fira_norm;  // Fira's ‖S_{t−1}‖_F
  QuantizedMoments moments8;        // 8-bit moments (state_bits = 8); adam.exp_avg is then transient
  AdamState magnitude;              // GradNormLoRP: moments [m, 1] of the row norms' gradient

  // Zeroes the moments and t (a reset on refresh, or a freed block).
  void clear_moments() {
    adam = {};
    moments8 = {};
  }
};

LowRankAdam::~LowRankAdam() = default;
LowRankAdam::LowRankAdam(LowRankAdam&&) noexcept = default;
LowRankAdam& LowRankAdam::operator=(LowRankAdam&&) noexcept = default;

// --- configuration ---------------------------------------------------------------------------

namespace {

template <typename E>
E parse_enum(std::string_view value, std::initializer_list<std::pair<std::string_view, E>> names,
             std::string_view what, std::string_view key) {
  std::string known;
  for (const auto& [n, e] : names) {
    if (n == value) return e;
    known += (known.empty() ? "" : ", ") + std::string(n);
  }
  throw InvalidArgument(str(what, ": option ", key, " must be one of ", known, ", got \"", value, "\""));
}

template <typename E>
std::string_view enum_name(E value, std::initializer_list<std::pair<std::string_view, E>> names) {
  for (const auto& [n, e] : names)
    if (e == value) return n;
  return "?";
}

const std::initializer_list<std::pair<std::string_view, MomentCore>> kCores = {{"adam", MomentCore::kAdam},
                                                                               {"sgd", MomentCore::kSgd}};
const std::initializer_list<std::pair<std::string_view, EpsPlacement>> kEps = {
    {"galore", EpsPlacement::kGaLore}, {"adamw", EpsPlacement::kAdamW}};
const std::initializer_list<std::pair<std::string_view, DecayPlacement>> kDecay = {
    {"before", DecayPlacement::kBeforeUpdate}, {"after", DecayPlacement::kAfterUpdate}};
const std::initializer_list<std::pair<std::string_view, ResidualRule>> kResidual = {
    {"none", ResidualRule::kNone},
    {"fira", ResidualRule::kFira},
    {"sign_sgd", ResidualRule::kSignSgd},
    {"sgd", ResidualRule::kSgd}};
const std::initializer_list<std::pair<std::string_view, BlockOrder>> kOrder = {
    {"random", BlockOrder::kRandom},
    {"ascending", BlockOrder::kAscending},
    {"descending", BlockOrder::kDescending}};

}  // namespace

void LowRankConfig::validate() const {
  const std::string what = "optimizer " + method;
  LR_CHECK(update_gap >= 1, InvalidArgument, what, ": update_gap must be >= 1, got ", update_gap);
  LR_CHECK(density || rank >= 1, InvalidArgument, what, ": rank must be >= 1, got ", rank);
  LR_CHECK(!density || (*density >= 0 && *density <= 1), InvalidArgument, what,
           ": density must be in [0, 1], got ", *density);
  LR_CHECK(selection != Selection::kBlock || density, InvalidArgument, what,
           ": block selection needs a density (the fraction of weights that run Adam)");
  LR_CHECK(scale >= 0, InvalidArgument, what, ": scale must be >= 0, got ", scale);
  LR_CHECK(residual_lr_scale >= 0, InvalidArgument, what, ": residual_lr_scale must be >= 0, got ",
           residual_lr_scale);
  LR_CHECK(fira_gamma >= 1, InvalidArgument, what, ": fira_gamma must be >= 1, got ", fira_gamma);
  LR_CHECK(state_bits == 8 || state_bits == 32, InvalidArgument, what, ": state_bits must be 8 or 32, got ",
           state_bits);
  LR_CHECK(min_8bit_size >= 0, InvalidArgument, what, ": min_8bit_size must be >= 0, got ", min_8bit_size);
  LR_CHECK(oversample >= 0 && power_iters >= 0, InvalidArgument, what,
           ": oversample and power_iters must be >= 0");
  LR_CHECK(adam.beta1 >= 0 && adam.beta1 < 1 && adam.beta2 >= 0 && adam.beta2 < 1, InvalidArgument, what,
           ": betas must be in [0, 1), got ", adam.beta1, ", ", adam.beta2);
  LR_CHECK(adam.eps > 0, InvalidArgument, what, ": eps must be > 0, got ", adam.eps);
  LR_CHECK(adam.weight_decay >= 0, InvalidArgument, what, ": weight_decay must be >= 0, got ",
           adam.weight_decay);
  if (selection == Selection::kProjector) {
    const ProjectorKind kind = parse_projector_kind(projector, 2, 1);  // throws for unknown names
    LR_CHECK(residual != ResidualRule::kFira || kind != ProjectorKind::kRandK, InvalidArgument, what,
             ": the Fira residual needs a 2-D projection (projector randk gives a vector)");
  }
  LR_CHECK(selection != Selection::kBlock || residual != ResidualRule::kFira, InvalidArgument, what,
           ": the Fira residual needs a projector, not block selection");
  LR_CHECK(!weight_norm || (selection == Selection::kProjector && residual == ResidualRule::kNone),
           InvalidArgument, what, ": weight_norm (GradNormLoRP) needs a projector and residual none");
}

OrderedJson LowRankConfig::to_json() const {
  OrderedJson j{{"method", method},
                {"projector", selection == Selection::kBlock ? std::string("block") : projector},
                {"rank", rank},
                {"density", density ? OrderedJson(*density) : OrderedJson(nullptr)},
                {"seed", seed},
                {"oversample", oversample},
                {"power_iters", power_iters},
                {"update_gap", update_gap},
                {"scale", scale},
                {"reset_on_refresh", reset_on_refresh},
                {"core", std::string(enum_name(core, kCores))},
                {"eps_placement", std::string(enum_name(eps_placement, kEps))},
                {"weight_decay_placement", std::string(enum_name(decay, kDecay))},
                {"residual", std::string(enum_name(residual, kResidual))},
                {"residual_lr_scale", residual_lr_scale},
                {"fira_gamma", fira_gamma},
                {"block_order", std::string(enum_name(block_order, kOrder))},
                {"state_bits", state_bits},
                {"min_8bit_size", min_8bit_size},
                {"beta1", adam.beta1},
                {"beta2", adam.beta2},
                {"eps", adam.eps},
                {"weight_decay", adam.weight_decay},
                {"target_modules", target_modules}};
  // Only when set, so that the other methods' records stay as before.
  if (weight_norm) {
    j["weight_norm"] = weight_norm;
    j["orthogonal_grad"] = orthogonal_grad;
  }
  return j;
}

LowRankConfig apply_options(LowRankConfig c, const Json& options, std::string_view what) {
  if (options.is_null()) return c;
  LR_CHECK(options.is_object(), InvalidArgument, what, ": options must be a JSON object");
  static const std::set<std::string> known = {"rank",
                                              "density",
                                              "projector",
                                              "seed",
                                              "oversample",
                                              "power_iters",
                                              "update_gap",
                                              "scale",
                                              "reset_on_refresh",
                                              "core",
                                              "eps_placement",
                                              "weight_decay_placement",
                                              "residual",
                                              "residual_lr_scale",
                                              "fira_gamma",
                                              "block_order",
                                              "state_bits",
                                              "min_8bit_size",
                                              "weight_norm",
                                              "orthogonal_grad",
                                              "beta1",
                                              "beta2",
                                              "eps",
                                              "weight_decay",
                                              "target_modules"};
  for (const auto& [key, value] : options.items()) {
    if (!known.count(key)) {
      std::string names;
      for (const auto& k : known) names += (names.empty() ? "" : ", ") + k;
      throw InvalidArgument(str(what, ": unknown option \"", key, "\" (known: ", names, ")"));
    }
  }
  c.rank = json_get_or<int64_t>(options, "rank", c.rank, what);
  if (options.contains("density") && !options["density"].is_null())
    c.density = json_get<double>(options, "density", what);
  if (options.contains("projector") && !options["projector"].is_null()) {
    const std::string p = json_get<std::string>(options, "projector", what);
    if (p == "block") {
      c.selection = Selection::kBlock;
    } else {
      c.selection = Selection::kProjector;
      c.projector = p;
    }
  }
  c.seed = json_get_or<uint64_t>(options, "seed", c.seed, what);
  c.oversample = json_get_or<int64_t>(options, "oversample", c.oversample, what);
  c.power_iters = json_get_or<int64_t>(options, "power_iters", c.power_iters, what);
  c.update_gap = json_get_or<int64_t>(options, "update_gap", c.update_gap, what);
  c.scale = json_get_or<double>(options, "scale", c.scale, what);
  c.reset_on_refresh = json_get_or<bool>(options, "reset_on_refresh", c.reset_on_refresh, what);
  auto text = [&](const char* key) { return json_get_or<std::string>(options, key, "", what); };
  if (auto v = text("core"); !v.empty()) c.core = parse_enum(v, kCores, what, "core");
  if (auto v = text("eps_placement"); !v.empty())
    c.eps_placement = parse_enum(v, kEps, what, "eps_placement");
  if (auto v = text("weight_decay_placement"); !v.empty())
    c.decay = parse_enum(v, kDecay, what, "weight_decay_placement");
  if (auto v = text("residual"); !v.empty()) c.residual = parse_enum(v, kResidual, what, "residual");
  if (auto v = text("block_order"); !v.empty()) c.block_order = parse_enum(v, kOrder, what, "block_order");
  c.residual_lr_scale = json_get_or<double>(options, "residual_lr_scale", c.residual_lr_scale, what);
  c.fira_gamma = json_get_or<double>(options, "fira_gamma", c.fira_gamma, what);
  c.state_bits = json_get_or<int64_t>(options, "state_bits", c.state_bits, what);
  c.min_8bit_size = json_get_or<int64_t>(options, "min_8bit_size", c.min_8bit_size, what);
  c.weight_norm = json_get_or<bool>(options, "weight_norm", c.weight_norm, what);
  c.orthogonal_grad = json_get_or<bool>(options, "orthogonal_grad", c.orthogonal_grad, what);
  c.adam.beta1 = json_get_or<double>(options, "beta1", c.adam.beta1, what);
  c.adam.beta2 = json_get_or<double>(options, "beta2", c.adam.beta2, what);
  c.adam.eps = json_get_or<double>(options, "eps", c.adam.eps, what);
  c.adam.weight_decay = json_get_or<double>(options, "weight_decay", c.adam.weight_decay, what);
  c.target_modules = json_get_or<std::vector<std::string>>(options, "target_modules", c.target_modules, what);
  c.validate();
  return c;
}

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
    // Inactive weights free their state (BAdam); active ones keep it unless reset_statistics.
    if (!active[i] || config_.reset_on_refresh) s.clear_moments();
    s.active = active[i];
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
  refresh_now_ = steps_ % config_.update_gap == 0;
  if (config_.selection == Selection::kBlock && refresh_now_) select_blocks();
}

void LowRankAdam::step_parameter(size_t index, const at::Tensor& grad) {
  LR_CHECK(index < slots_.size(), InvalidArgument, "low-rank optimizer: no parameter ", index);
  Slot& s = slots_[index];
  if (!s.projected) {
    AdamConfig c = config_.adam;
    if (!s.decay) c.weight_decay = 0;
    adam_update(s.param, grad, s.adam, c, lr_);
    return;
  }
  projected_step(s, grad, lr_, refresh_now_);
}

void LowRankAdam::projected_step(Slot& s, const at::Tensor& grad, double lr, bool refresh_now) {
  at::NoGradGuard no_grad;
  at::Tensor& W = s.param;
  const LowRankConfig& c = config_;
  const double wd = c.adam.weight_decay;
  const double alpha = c.scale;
  if (wd != 0 && c.decay == DecayPlacement::kBeforeUpdate) W.mul_(1 - lr * wd);
  // GradNormLoRP: everything below runs on the direction's gradient ∇V (gradnorm_lorp.h).
  std::optional<WeightNormSplit> wn;
  if (c.weight_norm) wn = weight_norm_split(W, grad.detach(), c.orthogonal_grad);
  const at::Tensor G = wn ? wn->grad_direction : grad.detach();

  Projector* P = s.projector.get();
  if (P && (refresh_now || !P->ready())) {
    P->refresh(G, steps_);
    if (c.reset_on_refresh) s.clear_moments();
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
