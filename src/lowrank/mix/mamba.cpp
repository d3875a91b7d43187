// Mamba's selective-SSM mixer; see mamba.h.
#include "lowrank/mix/mamba.h"

#include <cmath>
#include <vector>

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
  // The raw step's A = −exp(A_log), float32 [inner, N]: computed at its first step and kept while
  // the state lives (one generation, with fixed weights), not recomputed for every token.
  at::Tensor A;
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

// A_log, D and dt_proj's bias stay in float32 in a bfloat16 or float16 model, as mamba_ssm's
// Mamba.__init__ keeps them ("Keep A_log in fp32", "Keep in fp32") and adds the bias in float32
// (selective_scan_fn's delta_bias = dt_proj.bias.float()); nn::Model puts back their stored or
// initial float32 values (model.cpp, Builder::float32_source).
at::Tensor at_least_float32(const at::Tensor& t) {
  return t.scalar_type() == at::kBFloat16 || t.scalar_type() == at::kHalf ? t.to(at::kFloat) : t;
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
      // dt_proj's initial weight is Mamba's own (mamba.h), so it is built from a tensor; it is a
      // slot like the others (adapters attach to it). Its bias is held apart, in float32 (below).
      dt_proj_(
          spec.prefix + ".dt_proj",
          std::make_shared<nn::DenseOperator>(
              spec.tensor(
                  spec.prefix + ".dt_proj.weight", {inner_, options_.time_step_rank}, nn::ParamInit::kValue,
                  dt_weight_init(spec.prefix + ".dt_proj.weight", inner_, options_.time_step_rank, options_)),
              at::Tensor())),
      out_proj_(spec.prefix + ".out_proj", spec.projection(spec.prefix + ".out_proj", spec.config.hidden_size,
                                                           inner_, options_.use_bias)) {
  const int64_t K = options_.conv_kernel, N = options_.state_size;
  const std::string conv = spec.prefix + ".conv1d";
  conv_weight_ = spec.tensor(conv + ".weight", {inner_, 1, K}, nn::ParamInit::kValue,
                             uniform_by_name(conv + ".weight", {inner_, 1, K}, 1.0 / std::sqrt(double(K))));
  if (options_.use_conv_bias) conv_bias_ = spec.tensor(conv + ".bias", {inner_}, nn::ParamInit::kZeros, {});
  const at::Tensor a_log =
      at::log(at::arange(1, N + 1, at::TensorOptions().dtype(at::kFloat))).unsqueeze(0).expand({inner_, N});
  A_log_ = at_least_float32(
      spec.tensor(spec.prefix + ".A_log", {inner_, N}, nn::ParamInit::kValue, a_log.contiguous()));
  D_ = at_least_float32(spec.tensor(spec.prefix + ".D", {inner_}, nn::ParamInit::kOnes, {}));
  dt_bias_ = at_least_float32(spec.tensor(spec.prefix + ".dt_proj.bias", {inner_}, nn::ParamInit::kValue,
                                          dt_bias_init(spec.prefix + ".dt_proj.bias", inner_, options_)));
}

nn::NamedTensors Mamba::tensors() const {
  nn::NamedTensors out{{prefix_ + ".conv1d.weight", conv_weight_}};
  if (conv_bias_.defined()) out.emplace_back(prefix_ + ".conv1d.bias", conv_bias_);
  out.emplace_back(prefix_ + ".A_log", A_log_);
  out.emplace_back(prefix_ + ".D", D_);
  out.emplace_back(prefix_ + ".dt_proj.bias", dt_bias_);
  return out;
}

std::vector<nn::ParamGroup> Mamba::param_groups() const {
  return {{prefix_ + ".A_log", std::nullopt, 0.0}, {prefix_ + ".D", std::nullopt, 0.0}};
}

MambaScanInputs Mamba::scan_inputs(const at::Tensor& x, const nn::MixerContext& context,
                                   const at::Tensor& conv_state) const {
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
  // A and Δ's bias in the scan's precision (float32, float64 for a float64 model), as the reference's
  // A_log.float() and delta_bias = dt_proj.bias.float().
  const at::ScalarType scan = x.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  const at::Tensor A = -at::exp(A_log_.to(scan));
  const at::Tensor dt = dt_proj_.forward(dbc[0], context.routing).to(scan) + dt_bias_.to(scan);
  return {xs, xz[1], dt, dbc[1], dbc[2], A, conv.state};
}

Mamba::Scanned Mamba::run(const at::Tensor& x, const nn::MixerContext& context, const at::Tensor& conv_state,
                          const at::Tensor& ssm_state) const {
  const MambaScanInputs in = scan_inputs(x, context, conv_state);
  ops::SelectiveScanOptions scan;
  scan.D = D_;
  scan.z = in.z;
  scan.delta_softplus = true;
  scan.initial_state = ssm_state;
  scan.chunk = options_.scan_chunk;
  const ops::SelectiveScanResult s = ops::selective_scan(in.u, in.dt, in.A, in.B, in.C, scan);
  return {out_proj_.forward(s.y, context.routing), in.conv_state, s.last_state};
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

// A slot the raw step can run: its base has a row product and no adapter is active.
bool raw_slot(const nn::LinearSlot& slot) {
  return slot.base().has_row_product() && !(slot.has_adapters() && slot.adapters_enabled());
}

bool raw_tensor(const at::Tensor& t) {
  return !t.defined() || (t.device().is_cpu() && t.scalar_type() == at::kFloat && t.is_contiguous());
}

double softplus(double v) {
  return v > 20 ? v : std::log1p(std::exp(v));  // at::softplus's threshold
}

float silu(float v) {
  return v / (1.0f + std::exp(-v));
}

}  // namespace

bool Mamba::raw_step_applies(const at::Tensor& x, const nn::MixerContext& context) const {
  return x.size(0) == 1 && raw_tensor(x) && !at::GradMode::is_enabled() && context.routing == nullptr &&
         (!context.valid.defined() || context.valid.all().item<bool>()) && raw_slot(in_proj_) &&
         raw_slot(x_proj_) && raw_slot(dt_proj_) && raw_slot(out_proj_) && raw_tensor(conv_weight_) &&
         raw_tensor(conv_bias_) && raw_tensor(A_log_) && raw_tensor(D_) && raw_tensor(dt_bias_);
}

at::Tensor Mamba::raw_step(const at::Tensor& x_in, at::Tensor& conv_state, at::Tensor& ssm_state,
                           const at::Tensor& A_state) const {
  const int64_t H = x_in.size(-1), E = inner_, K = options_.conv_kernel, N = options_.state_size,
                R = options_.time_step_rank;
  const at::Tensor x = x_in.contiguous();
  std::vector<float> xz(static_cast<size_t>(2 * E)), xs(static_cast<size_t>(E)),
      dbc(static_cast<size_t>(R + 2 * N)), delta(static_cast<size_t>(E)), y(static_cast<size_t>(E));
  in_proj_.base().row_product(x.const_data_ptr<float>(), 0, 2 * E, xz.data());
  // The causal convolution's window is the carried K − 1 inputs and this one; the window then
  // shifts by one (ops/causal_conv1d.h's state layout, oldest first).
  const float* w = conv_weight_.const_data_ptr<float>();  // [E, 1, K]
  const float* bias = conv_bias_.defined() ? conv_bias_.const_data_ptr<float>() : nullptr;
  float* window = conv_state.data_ptr<float>();  // [1, E, K − 1]
  for (int64_t d = 0; d < E; ++d) {
    float* wd = window + d * (K - 1);
    float acc = bias ? bias[d] : 0.0f;
    for (int64_t k = 0; k + 1 < K; ++k) acc += w[d * K + k] * wd[k];
    acc += w[d * K + K - 1] * xz[static_cast<size_t>(d)];
    for (int64_t k = 0; k + 2 < K; ++k) wd[k] = wd[k + 1];
    if (K > 1) wd[K - 2] = xz[static_cast<size_t>(d)];
    xs[static_cast<size_t>(d)] = silu(acc);
  }
  x_proj_.base().row_product(xs.data(), 0, R + 2 * N, dbc.data());
  dt_proj_.base().row_product(dbc.data(), 0, E, delta.data());  // W_Δ δ
  const float* dt_bias = dt_bias_.const_data_ptr<float>();
  for (int64_t d = 0; d < E; ++d)
    delta[static_cast<size_t>(d)] = static_cast<float>(softplus(delta[static_cast<size_t>(d)] + dt_bias[d]));
  const float* A = A_state.const_data_ptr<float>();
  const float* B = dbc.data() + R;
  const float* C = B + N;
  float* h = ssm_state.data_ptr<float>();  // [1, E, N]
  ops::selective_scan_step(E, N, delta.data(), xs.data(), A, B, C, h, y.data());
  const float* D = D_.const_data_ptr<float>();
  for (int64_t d = 0; d < E; ++d) {
    const size_t i = static_cast<size_t>(d);
    y[i] = (y[i] + D[d] * xs[i]) * silu(xz[static_cast<size_t>(E + d)]);
  }
  at::Tensor out = at::empty({1, 1, H}, x.options());
  out_proj_.base().row_product(y.data(), 0, H, out.data_ptr<float>());
  return out;
}

at::Tensor Mamba::step(const at::Tensor& x, nn::MixerState& state, const nn::MixerContext& context) const {
  LR_CHECK(x.dim() == 3 && x.size(1) == 1, InvalidArgument, "mixer mamba: step takes one position, got ",
           x.sizes());
  MambaState& s = checked_state(state, x, inner_, options_.conv_kernel, options_.state_size);
  if (raw_step_applies(x, context) && s.ssm.scalar_type() == at::kFloat) {
    // The raw step updates the states in place; after a prefill they may be views.
    s.conv = s.conv.contiguous();
    s.ssm = s.ssm.contiguous();
    if (!s.A.defined()) s.A = (-at::exp(A_log_)).contiguous();
    return raw_step(x, s.conv, s.ssm, s.A);
  }
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
