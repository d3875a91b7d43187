// The LowRankAdam configuration and its option parser; see low_rank_config.h.
#include "lowrank/optim/low_rank_config.h"

#include <initializer_list>
#include <set>
#include <utility>

#include "lowrank/core/error.h"
#include "lowrank/optim/projector.h"

namespace lowrank::optim {

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
  if (reset_on_refresh) j["reset_step"] = reset_step;
  if (state_bits == 8) j["eight_bit_plain"] = eight_bit_plain;
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
                                              "reset_step",
                                              "core",
                                              "eps_placement",
                                              "weight_decay_placement",
                                              "residual",
                                              "residual_lr_scale",
                                              "fira_gamma",
                                              "block_order",
                                              "state_bits",
                                              "min_8bit_size",
                                              "eight_bit_plain",
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
  c.reset_step = json_get_or<bool>(options, "reset_step", c.reset_step, what);
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
  c.eight_bit_plain = json_get_or<bool>(options, "eight_bit_plain", c.eight_bit_plain, what);
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

}  // namespace lowrank::optim
