// Mamba's selective-SSM mixer; see mamba.h.
#include "lowrank/mix/mamba.h"

#include <cmath>

#include "lowrank/core/error.h"
#include "lowrank/mix/mixer_options.h"
#include "lowrank/nn/config.h"
#include "lowrank/ops/causal_conv1d.h"
#include "lowrank/ops/selective_scan.h"

namespace lowrank::mix {

namespace {

const OptionHelp& mamba_option_help() {
  static const OptionHelp help = {
      {"state_size", "N, the SSM state per channel (d_state; default 16)"},
      {"expand", "E: the inner width is E x hidden (default 2)"},
      {"conv_kernel", "K, the causal depthwise convolution's width (d_conv; default 4)"},
      {"time_step_rank", "R, the rank of the dt projection, or \"auto\" = ceil(hidden / 16) (default auto)"},
      {"use_bias", "biases on in_proj and out_proj (default false)"},
      {"use_conv_bias", "a bias on the convolution (default true)"},
      {"time_step_min", "the smallest initial dt (default 0.001)"},
      {"time_step_max", "the largest initial dt (default 0.1)"},
      {"time_step_floor", "initial dt clamped to at least this (default 1e-4)"},
      {"time_step_scale", "dt_proj weight bound: R^-1/2 x scale (default 1)"},
      {"time_step_init_scheme", "dt_proj weight: random (uniform) or constant (default random)"},
      {"scan_chunk", "positions between the scan's saved states in training (default 64)"}};
  return help;
}

struct MambaState final : nn::MixerState {
  at::Tensor conv;  // [B, inner, K − 1], the model's dtype
  at::Tensor ssm;   // [B, inner, N], float32 (float64 for a float64 model)
  int64_t batch = 0;
};

// Keeps `old` where `valid` [B, 1] (bool) is false, `fresh` elsewhere.
at::Tensor keep_where_padding(const at::Tensor& valid, const at::Tensor& fresh, const at::Tensor& old) {
  if (!valid.defined()) return fresh;
  return at::where(valid.reshape({-1, 1, 1}), fresh, old);
}

}  // namespace

MambaOptions mamba_options(const nn::MixerSpec& spec) {
  const Json& o = spec.options;
  check_option_keys("mamba", o, mamba_option_help());
  const std::string what = "mixer mamba";
  MambaOptions out;
  auto positive = [&](const char* key, int64_t fallback) {
    const int64_t v = json_get_or<int64_t>(o, key, fallback, what);
    LR_CHECK(v >= 1, InvalidArgument, what, ": ", key, " must be >= 1, got ", v);
    return v;
  };
  out.state_size = positive("state_size", out.state_size);
  out.expand = positive("expand", out.expand);
  out.conv_kernel = positive("conv_kernel", out.conv_kernel);
  out.scan_chunk = positive("scan_chunk", out.scan_chunk);
  const int64_t auto_rank = (spec.config.hidden_size + 15) / 16;
  if (auto it = o.find("time_step_rank"); it != o.end() && !it->is_null()) {
    if (it->is_string()) {
      LR_CHECK(it->get<std::string>() == "auto", InvalidArgument, what,
               ": time_step_rank must be a positive integer or \"auto\", got ", it->dump());
      out.time_step_rank = auto_rank;
    } else {
      out.time_step_rank = positive("time_step_rank", auto_rank);
    }
  } else {
    out.time_step_rank = auto_rank;
  }
  out.use_bias = json_get_or<bool>(o, "use_bias", out.use_bias, what);
  out.use_conv_bias = json_get_or<bool>(o, "use_conv_bias", out.use_conv_bias, what);
  out.time_step_min = json_get_or<double>(o, "time_step_min", out.time_step_min, what);
  out.time_step_max = json_get_or<double>(o, "time_step_max", out.time_step_max, what);
  out.time_step_floor = json_get_or<double>(o, "time_step_floor", out.time_step_floor, what);
  out.time_step_scale = json_get_or<double>(o, "time_step_scale", out.time_step_scale, what);
  LR_CHECK(out.time_step_min > 0 && out.time_step_max >= out.time_step_min, InvalidArgument, what,
           ": need 0 < time_step_min <= time_step_max, got ", out.time_step_min, " and ", out.time_step_max);
  LR_CHECK(out.time_step_floor >= 0, InvalidArgument, what, ": time_step_floor must be >= 0, got ",
           out.time_step_floor);
  out.time_step_init_scheme =
      json_get_or<std::string>(o, "time_step_init_scheme", out.time_step_init_scheme, what);
  LR_CHECK(out.time_step_init_scheme == "random" || out.time_step_init_scheme == "constant", InvalidArgument,
           what, ": time_step_init_scheme must be random or constant, got \"", out.time_step_init_scheme,
           "\"");
  return out;
}

struct Mamba::Scanned {
  at::Tensor out;         // [B, T, hidden]
  at::Tensor conv_state;  // [B, inner, K − 1]
  at::Tensor ssm_state;   // [B, inner, N]
};

namespace {

// dt_proj's initial weight and bias (mamba.h), by name so that a fresh model is reproducible.
at::Tensor dt_weight_init(const std::string& name, int64_t inner, int64_t rank, const MambaOptions& o) {
  const double bound = std::pow(static_cast<double>(rank), -0.5) * o.time_step_scale;
  if (o.time_step_init_scheme == "constant") return at::full({inner, rank}, bound, at::kFloat);
  return uniform_by_name(name, {inner, rank}, bound);
}

at::Tensor dt_bias_init(const std::string& name, int64_t inner, const MambaOptions& o) {
  const at::Tensor unit = (uniform_by_name(name, {inner}, 0.5) + 0.5).to(at::kDouble);  // U(0, 1)
  const double lo = std::log(o.time_step_min), hi = std::log(o.time_step_max);
  const at::Tensor dt = at::exp(unit * (hi - lo) + lo).clamp_min(o.time_step_floor);
  // softplus⁻¹(Δ) = Δ + log(1 − e^{−Δ}) = Δ + log(−expm1(−Δ)).
  return (dt + at::log(-at::expm1(-dt))).to(at::kFloat);
}

}  // namespace

Mamba::Mamba(const nn::MixerSpec& spec)
    : options_(mamba_options(spec)),
      prefix_(spec.prefix),
      inner_(options_.expand * spec.config.hidden_size),
      in_proj_(spec.prefix + ".in_proj", spec.projection(spec.prefix + ".in_proj", 2 * inner_,
                                                         spec.config.hidden_size, options_.use_bias)),
      x_proj_(spec.prefix + ".x_proj",
              spec.projection(spec.prefix + ".x_proj", options_.time_step_rank + 2 * options_.state_size,
                              inner_, false)),
      // dt_proj's initial weight and bias are Mamba's own (mamba.h), so it is built from tensors;
      // it is a slot like the others (adapters attach to it).
      dt_proj_(
          spec.prefix + ".dt_proj",
          std::make_shared<nn::DenseOperator>(
              spec.tensor(
                  spec.prefix + ".dt_proj.weight", {inner_, options_.time_step_rank}, nn::ParamInit::kValue,
                  dt_weight_init(spec.prefix + ".dt_proj.weight", inner_, options_.time_step_rank, options_)),
              spec.tensor(spec.prefix + ".dt_proj.bias", {inner_}, nn::ParamInit::kValue,
                          dt_bias_init(spec.prefix + ".dt_proj.bias", inner_, options_)))),
      out_proj_(spec.prefix + ".out_proj", spec.projection(spec.prefix + ".out_proj", spec.config.hidden_size,
                                                           inner_, options_.use_bias)) {
  const int64_t K = options_.conv_kernel, N = options_.state_size;
  const std::string conv = spec.prefix + ".conv1d";
  conv_weight_ = spec.tensor(conv + ".weight", {inner_, 1, K}, nn::ParamInit::kValue,
                             uniform_by_name(conv + ".weight", {inner_, 1, K}, 1.0 / std::sqrt(double(K))));
  if (options_.use_conv_bias) conv_bias_ = spec.tensor(conv + ".bias", {inner_}, nn::ParamInit::kZeros, {});
  const at::Tensor a_log =
      at::log(at::arange(1, N + 1, at::TensorOptions().dtype(at::kFloat))).unsqueeze(0).expand({inner_, N});
  A_log_ = spec.tensor(spec.prefix + ".A_log", {inner_, N}, nn::ParamInit::kValue, a_log.contiguous());
  D_ = spec.tensor(spec.prefix + ".D", {inner_}, nn::ParamInit::kOnes, {});
}

nn::NamedTensors Mamba::tensors() const {
  nn::NamedTensors out{{prefix_ + ".conv1d.weight", conv_weight_}};
  if (conv_bias_.defined()) out.emplace_back(prefix_ + ".conv1d.bias", conv_bias_);
  out.emplace_back(prefix_ + ".A_log", A_log_);
  out.emplace_back(prefix_ + ".D", D_);
  return out;
}

std::vector<nn::ParamGroup> Mamba::param_groups() const {
  return {{prefix_ + ".A_log", std::nullopt, 0.0}, {prefix_ + ".D", std::nullopt, 0.0}};
}

Mamba::Scanned Mamba::run(const at::Tensor& x, const nn::MixerContext& context, const at::Tensor& conv_state,
                          const at::Tensor& ssm_state) const {
  LR_CHECK(x.dim() == 3, InvalidArgument, "mixer mamba: input must be [B, T, hidden], got ", x.sizes());
  const int64_t R = options_.time_step_rank, N = options_.state_size;
  // Padding positions are zeroed before in_proj and after the convolution (transformers'
  // apply_mask_to_padding_states).
  const at::Tensor keep =
      context.valid.defined() ? context.valid.to(x.scalar_type()).unsqueeze(-1) : at::Tensor();
  const at::Tensor u = keep.defined() ? x * keep : x;
  const std::vector<at::Tensor> xz = in_proj_.forward(u, context.routing).chunk(2, -1);
  const ops::CausalConv1dResult conv =
      ops::causal_conv1d(xz[0], conv_weight_.squeeze(1), conv_bias_, conv_state, /*silu=*/true);
  const at::Tensor xs = keep.defined() ? conv.y * keep : conv.y;
  const std::vector<at::Tensor> dbc = x_proj_.forward(xs, context.routing).split({R, N, N}, -1);
  const at::Tensor dt = dt_proj_.forward(dbc[0], context.routing);  // Δ before the softplus, bias included
  ops::SelectiveScanOptions scan;
  scan.D = D_;
  scan.z = xz[1];
  scan.delta_softplus = true;
  scan.initial_state = ssm_state;
  scan.chunk = options_.scan_chunk;
  // A in the scan's precision (float32, float64 for a float64 model), as transformers' A_log.float().
  const at::Tensor A = -at::exp(A_log_.to(x.scalar_type() == at::kDouble ? at::kDouble : at::kFloat));
  const ops::SelectiveScanResult s = ops::selective_scan(xs, dt, A, dbc[1], dbc[2], scan);
  return {out_proj_.forward(s.y, context.routing), conv.state, s.last_state};
}

at::Tensor Mamba::forward(const at::Tensor& x, const nn::MixerContext& context) const {
  return run(x, context, {}, {}).out;
}

std::unique_ptr<nn::MixerState> Mamba::new_state(int64_t batch) const {
  LR_CHECK(batch >= 1, InvalidArgument, "mixer mamba: a decode state for ", batch, " rows");
  auto state = std::make_unique<MambaState>();
  state->batch = batch;  // the tensors take the dtype and device of the first input
  return state;
}

namespace {

MambaState& checked_state(nn::MixerState& state, const at::Tensor& x, int64_t inner, int64_t K, int64_t N) {
  auto& s = dynamic_cast<MambaState&>(state);
  LR_CHECK(x.dim() == 3 && x.size(0) == s.batch, InvalidArgument, "mixer mamba: input ", x.sizes(),
           " for a decode state of ", s.batch, " rows");
  if (!s.conv.defined()) {
    s.conv = at::zeros({s.batch, inner, K - 1}, x.options());
    const at::ScalarType scan = x.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
    s.ssm = at::zeros({s.batch, inner, N}, x.options().dtype(scan));
  }
  return s;
}

}  // namespace

at::Tensor Mamba::step(const at::Tensor& x, nn::MixerState& state, const nn::MixerContext& context) const {
  LR_CHECK(x.dim() == 3 && x.size(1) == 1, InvalidArgument, "mixer mamba: step takes one position, got ",
           x.sizes());
  MambaState& s = checked_state(state, x, inner_, options_.conv_kernel, options_.state_size);
  const Scanned r = run(x, context, s.conv, s.ssm);
  const at::Tensor valid = context.valid.defined() ? context.valid.to(at::kBool) : at::Tensor();
  s.conv = keep_where_padding(valid, r.conv_state, s.conv);
  s.ssm = keep_where_padding(valid, r.ssm_state, s.ssm);
  return r.out;
}

at::Tensor Mamba::prefill(const at::Tensor& x, nn::MixerState& state, const nn::MixerContext& context) const {
  // Padding must not enter the state; the parallel path zeroes it instead, which is the same only
  // for a fresh state and no in_proj bias, so a padded prompt goes position by position.
  if (context.valid.defined() && !context.valid.all().item<bool>())
    return TokenMixer::prefill(x, state, context);
  MambaState& s = checked_state(state, x, inner_, options_.conv_kernel, options_.state_size);
  const Scanned r = run(x, context, s.conv, s.ssm);
  s.conv = r.conv_state;
  s.ssm = r.ssm_state;
  return r.out;
}

void register_mamba(nn::MixerRegistry& registry) {
  registry.add(
      {"mamba",
       "Mamba: a selective state-space block (in_proj, causal depthwise conv, input-dependent dt, B, C, "
       "the selective scan, SiLU gate, out_proj); causal, constant-size decode state",
       "Gu & Dao, 2023, arXiv:2312.00752", mamba_option_help()},
      [](const nn::MixerSpec& spec) -> std::unique_ptr<nn::TokenMixer> {
        return std::make_unique<Mamba>(spec);
      });
}

}  // namespace lowrank::mix
