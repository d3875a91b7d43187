// S4D, the diagonal state space layer; see s4d.h.
#include "lowrank/mix/s4d.h"

#include <ATen/CPUGeneratorImpl.h>

#include <cmath>
#include <numbers>

#include "lowrank/core/error.h"
#include "lowrank/core/random.h"
#include "lowrank/mix/mixer_options.h"
#include "lowrank/nn/config.h"
#include "lowrank/ops/long_fft_conv.h"
#include "lowrank/ops/vandermonde.h"

namespace lowrank::mix {

namespace {

const OptionHelp& s4d_option_help() {
  static const OptionHelp help = [] {
    OptionHelp h = ssm_option_help("log_dt, log_A_real and A_imag");
    h.insert(h.begin() + 1,
             {"init",
              "initialisation of A: lin (S4D-Lin, -1/2 + i pi n), inv (S4D-Inv) or real (S4D-Real, -(n+1)) "
              "(default lin)"});
    h.insert(h.begin() + 4, {"disc", "discretisation: zoh or bilinear (default zoh)"});
    return h;
  }();
  return help;
}

struct S4DState final : nn::MixerState {
  int64_t batch = 0;
  at::Tensor h;  // [B, H, N/2] complex; undefined until the first step (it takes that step's dtype)
};

}  // namespace

at::Generator ssm_generator(const std::string& name) {
  uint64_t h = 1469598103934665603ull;  // FNV-1a, the same on every platform (mixer_options.cpp's)
  for (const unsigned char c : name) h = (h ^ c) * 1099511628211ull;
  return at::detail::createCPUGenerator(splitmix64(h ^ 0x5334ull));
}

at::Tensor ssm_log_dt(const std::string& name, int64_t H, double dt_min, double dt_max) {
  at::Tensor t = at::empty({H}, at::kDouble);
  t.uniform_(std::log(dt_min), std::log(dt_max), ssm_generator(name));
  return t;
}

at::Tensor ssm_complex_normal(const std::string& name, std::vector<int64_t> shape) {
  shape.push_back(2);
  return at::normal(0.0, std::sqrt(0.5), shape, ssm_generator(name), at::TensorOptions().dtype(at::kDouble));
}

at::ScalarType ssm_real_type(at::ScalarType dtype) {
  return dtype == at::kDouble ? at::kDouble : at::kFloat;
}

namespace {

// Up to this length the convolution is direct: as cheap as the FFT there, and exactly causal (the
// FFT's roundoff, ~1e-17, reaches earlier outputs from later inputs).
constexpr int64_t kDirectConvolutionMaxLength = 64;

// Σ_{s ≤ t} k[h, t − s] u[b, h, s] for u [B, H, L], k [H, L].
at::Tensor causal_convolve(const at::Tensor& u, const at::Tensor& k) {
  const int64_t L = u.size(2);
  return L > kDirectConvolutionMaxLength ? ops::fft_conv(u, k) : ops::direct_causal_conv(u, k);
}

}  // namespace

at::Tensor ssm_convolve(const at::Tensor& u, const at::Tensor& k) {
  const int64_t L = u.size(2);
  const at::Tensor forward = causal_convolve(u, k[0].narrow(-1, 0, L));
  if (k.size(0) == 1) return forward;
  // Σ_{s>t} k₁[s−t−1] u_s: in reversed time a causal convolution with k₁ delayed by one position.
  const at::Tensor delayed = at::constant_pad_nd(k[1], {1, 0}).narrow(-1, 0, L);
  return forward + causal_convolve(u.flip(-1), delayed).flip(-1);
}

std::vector<std::pair<std::string, std::string>> ssm_option_help(const std::string& lr_tensors) {
  return {
      {"d_state", "N, the state size per channel: N/2 complex modes and their conjugates; even (default 64)"},
      {"dt_min", "smallest initial step size Delta, log-uniform (default 0.001)"},
      {"dt_max", "largest initial step size Delta (default 0.1)"},
      {"bidirectional", "two-sided kernel (a second C), for classifiers only (default false)"},
      {"ssm_lr", "learning rate of " + lr_tensors + ", trained without weight decay (default 0.001)"}};
}

SsmOptions ssm_options(const nn::MixerSpec& spec, const std::string& mixer) {
  const Json& o = spec.options;
  const std::string what = "mixer " + mixer;
  SsmOptions out;
  out.d_state = json_get_or<int64_t>(o, "d_state", out.d_state, what);
  LR_CHECK(out.d_state >= 2 && out.d_state % 2 == 0, InvalidArgument, what,
           ": d_state must be even and >= 2 (",
           "conjugate symmetry keeps d_state/2 complex modes and their conjugates), got ", out.d_state);
  out.dt_min = json_get_or<double>(o, "dt_min", out.dt_min, what);
  out.dt_max = json_get_or<double>(o, "dt_max", out.dt_max, what);
  LR_CHECK(out.dt_min > 0 && out.dt_max >= out.dt_min, InvalidArgument, what,
           ": need 0 < dt_min <= dt_max, got dt_min ", out.dt_min, ", dt_max ", out.dt_max);
  out.bidirectional = json_get_or<bool>(o, "bidirectional", false, what);
  LR_CHECK(!(out.bidirectional && spec.config.has_lm_head()), InvalidArgument, what,
           ": bidirectional = true sees future positions, which a causal language model (",
           nn::architecture_name(spec.config.architecture), ") cannot; use it in a classifier or set false");
  out.ssm_lr = json_get_or<double>(o, "ssm_lr", out.ssm_lr, what);
  LR_CHECK(out.ssm_lr > 0 && std::isfinite(out.ssm_lr), InvalidArgument, what,
           ": ssm_lr must be positive, got ", out.ssm_lr);
  return out;
}

SsmConvLayer::SsmConvLayer(const nn::MixerSpec& spec, const SsmOptions& common)
    : common_(common),
      prefix_(spec.prefix),
      hidden_(spec.config.hidden_size),
      output_linear_(spec.prefix + ".output_linear",
                     spec.projection(spec.prefix + ".output_linear", 2 * hidden_, hidden_, true)) {
  D_ = make_tensor(
      spec, "D",
      at::normal(0.0, 1.0, {hidden_}, ssm_generator(prefix_ + ".D"), at::TensorOptions().dtype(at::kDouble)));
}

at::Tensor SsmConvLayer::make_tensor(const nn::MixerSpec& spec, const std::string& leaf,
                                     const at::Tensor& value) const {
  return spec.tensor(prefix_ + "." + leaf, value.sizes().vec(), nn::ParamInit::kValue, value.contiguous());
}

at::Tensor SsmConvLayer::forward(const at::Tensor& x, const nn::MixerContext& context) const {
  LR_CHECK(x.dim() == 3 && x.size(2) == hidden_, InvalidArgument, "mixer ", name(), ": input must be [B, T, ",
           hidden_, "], got ", x.sizes());
  // Padding positions enter the convolution as zeros.
  const at::Tensor u = context.valid.defined() ? x * context.valid.to(x.scalar_type()).unsqueeze(-1) : x;
  const at::Tensor k = kernel(x.size(1));
  const at::Tensor y = ssm_convolve(u.transpose(1, 2).to(k.scalar_type()), k).transpose(1, 2);
  return output(y, u, context.routing);
}

void SsmConvLayer::check_decodes() const {
  LR_CHECK(has_decode_state(), Unsupported, "mixer ", name(), ": bidirectional = true has no decode state");
}

void SsmConvLayer::check_step(const at::Tensor& x, int64_t batch) const {
  check_decodes();
  LR_CHECK(x.dim() == 3 && x.size(1) == 1 && x.size(0) == batch && x.size(2) == hidden_, InvalidArgument,
           "mixer ", name(), ": step takes [", batch, ", 1, ", hidden_, "], got ", x.sizes());
}

at::Tensor SsmConvLayer::output(const at::Tensor& y, const at::Tensor& u,
                                const nn::AdapterRouting* routing) const {
  const at::Tensor z = at::gelu(y.to(u.scalar_type()) + u * D_.to(u.scalar_type()));
  return at::glu(output_linear_.forward(z, routing), -1);
}

std::vector<nn::ParamGroup> SsmConvLayer::ssm_groups(std::initializer_list<const char*> leaves) const {
  std::vector<nn::ParamGroup> out;
  for (const char* leaf : leaves) out.push_back({prefix_ + "." + leaf, common_.ssm_lr, 0.0});
  return out;
}

S4DOptions s4d_options(const nn::MixerSpec& spec) {
  const Json& o = spec.options;
  check_option_keys("s4d", o, s4d_option_help());
  const std::string what = "mixer s4d";
  S4DOptions out;
  out.common = ssm_options(spec, "s4d");
  const std::string init = json_get_or<std::string>(o, "init", "lin", what);
  if (init == "lin")
    out.init = S4DInit::kLin;
  else if (init == "inv")
    out.init = S4DInit::kInv;
  else if (init == "real")
    out.init = S4DInit::kReal;
  else
    throw InvalidArgument(str(what, ": init must be lin, inv or real, got \"", init, "\""));
  const std::string disc = json_get_or<std::string>(o, "disc", "zoh", what);
  LR_CHECK(disc == "zoh" || disc == "bilinear", InvalidArgument, what,
           ": disc must be zoh or bilinear, got \"", disc, "\"");
  out.disc = disc == "zoh" ? SsmDiscretization::kZoh : SsmDiscretization::kBilinear;
  return out;
}

S4D::S4D(const nn::MixerSpec& spec) : S4D(spec, s4d_options(spec)) {}

S4D::S4D(const nn::MixerSpec& spec, const S4DOptions& options)
    : SsmConvLayer(spec, options.common), options_(options) {
  const int64_t H = hidden_, M = common_.d_state / 2, channels = common_.bidirectional ? 2 : 1;
  const double N = static_cast<double>(common_.d_state);
  const at::Tensor n = at::arange(M, at::kDouble).unsqueeze(0).expand({H, M});
  at::Tensor log_a_real = at::full({H, M}, std::log(0.5), at::kDouble), a_imag;
  switch (options_.init) {
    case S4DInit::kLin:
      a_imag = std::numbers::pi * n;
      break;
    case S4DInit::kInv:
      a_imag = (N / std::numbers::pi) * (N / (2 * n + 1) - 1);
      break;
    case S4DInit::kReal:
      log_a_real = at::log(n + 1);
      a_imag = at::zeros({H, M}, at::kDouble);
      break;
  }
  log_dt_ = make_tensor(spec, "log_dt", ssm_log_dt(prefix_ + ".log_dt", H, common_.dt_min, common_.dt_max));
  log_A_real_ = make_tensor(spec, "log_A_real", log_a_real);
  A_imag_ = make_tensor(spec, "A_imag", a_imag);
  C_ = make_tensor(spec, "C", ssm_complex_normal(prefix_ + ".C", {channels, H, M}));
}

nn::NamedTensors S4D::tensors() const {
  return {{prefix_ + ".log_dt", log_dt_},
          {prefix_ + ".log_A_real", log_A_real_},
          {prefix_ + ".A_imag", A_imag_},
          {prefix_ + ".C", C_},
          {prefix_ + ".D", D_}};
}

std::vector<nn::ParamGroup> S4D::param_groups() const {
  return ssm_groups({"log_dt", "log_A_real", "A_imag"});
}

namespace {

// A = −exp(log_A_real) + i·A_imag, Δ = exp(log_dt), in `real`'s complex type.
struct S4DParams {
  at::Tensor A, dt, dtA;  // [H, M] complex, [H, 1] real, [H, M] complex
};

S4DParams s4d_params(const at::Tensor& log_dt, const at::Tensor& log_A_real, const at::Tensor& A_imag,
                     at::ScalarType real) {
  S4DParams p;
  p.A = at::complex(-at::exp(log_A_real.to(real)), A_imag.to(real));
  p.dt = at::exp(log_dt.to(real)).unsqueeze(-1);
  p.dtA = p.A * p.dt;
  return p;
}

}  // namespace

std::pair<at::Tensor, at::Tensor> S4D::discretized() const {
  const S4DParams p = s4d_params(log_dt_, log_A_real_, A_imag_, ssm_real_type(C_.scalar_type()));
  if (options_.disc == SsmDiscretization::kZoh) {
    const at::Tensor dA = at::exp(p.dtA);
    return {dA, (dA - 1) / p.A};
  }
  const at::Tensor denominator = 1 - p.dtA / 2;
  return {(1 + p.dtA / 2) / denominator, p.dt / denominator};
}

at::Tensor S4D::kernel(int64_t L) const {
  const at::ScalarType real = ssm_real_type(C_.scalar_type());
  const int64_t H = hidden_, M = common_.d_state / 2, channels = C_.size(0);
  const at::Tensor C = at::view_as_complex(C_.to(real).contiguous());  // [c, H, M]
  // log Ā and C·B̄ (B = 1): the Vandermonde product's bases and coefficients.
  const auto [dA, dB] = discretized();
  const at::Tensor log_base = options_.disc == SsmDiscretization::kZoh
                                  ? s4d_params(log_dt_, log_A_real_, A_imag_, real).dtA
                                  : at::log(dA);
  const at::Tensor coeff = (C * dB).reshape({channels * H, M});
  const at::Tensor base = log_base.unsqueeze(0).expand({channels, H, M}).reshape({channels * H, M});
  return ops::log_vandermonde(coeff, base, L).view({channels, H, L});
}

std::unique_ptr<nn::MixerState> S4D::new_state(int64_t batch) const {
  check_decodes();
  auto state = std::make_unique<S4DState>();
  state->batch = batch;
  return state;
}

at::Tensor S4D::step(const at::Tensor& x, nn::MixerState& state, const nn::MixerContext& context) const {
  auto& s = dynamic_cast<S4DState&>(state);
  check_step(x, s.batch);
  const auto [dA, dB] = discretized();  // [H, M] complex
  const at::Tensor C = at::view_as_complex(C_.to(ssm_real_type(C_.scalar_type())).contiguous())[0];
  if (!s.h.defined()) s.h = at::zeros({s.batch, hidden_, common_.d_state / 2}, dA.options());
  const at::Tensor u = x.select(1, 0);  // [B, H]
  at::Tensor h = dA * s.h + dB * u.to(dA.scalar_type()).unsqueeze(-1);
  if (context.valid.defined()) {
    // A padding row keeps its state as it was.
    const at::Tensor keep = context.valid.select(1, 0).to(at::kBool).view({s.batch, 1, 1});
    h = at::where(keep, h, s.h);
  }
  s.h = h;
  const at::Tensor y = at::real(h * C).sum(-1) * 2;  // [B, H]
  return output(y.unsqueeze(1), x, context.routing);
}

void register_s4d(nn::MixerRegistry& registry) {
  registry.add({"s4d",
                "S4D: diagonal state space layer, ZOH/bilinear kernel by a chunked Vandermonde product, FFT "
                "convolution, D skip, GELU, GLU output; recurrent decode; causal unless bidirectional",
                "Gu et al., 2022, arXiv:2206.11893", s4d_option_help()},
               [](const nn::MixerSpec& spec) -> std::unique_ptr<nn::TokenMixer> {
                 return std::make_unique<S4D>(spec);
               });
}

}  // namespace lowrank::mix
