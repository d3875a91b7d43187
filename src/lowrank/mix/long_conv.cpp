// Simple long convolutions and the gated (H3-shaped) long convolution; see long_conv.h.
#include "lowrank/mix/long_conv.h"

#include <algorithm>
#include <cmath>
#include <numbers>

#include "lowrank/core/error.h"
#include "lowrank/mix/mixer_options.h"
#include "lowrank/nn/config.h"

namespace lowrank::mix {

namespace {

const OptionHelp& kernel_option_help() {
  static const OptionHelp help = {
      {"l_max", "L', the kernel length (default max_position_embeddings); longer inputs see L' taps"},
      {"lam",
       "squash threshold: K <- sign(K)·ReLU(|K| − lam) (default 0 = off; the authors' LRA config 0.003)"},
      {"smooth", "AvgPool1d smoothing of the kernel before the squash (default false)"},
      {"smooth_window", "smoothing window, odd (default 7)"},
      {"kernel_dropout",
       "dropout on the kernel taps while training (default 0; the authors' LRA config 0.2)"},
      {"kernel_init",
       "random (randn·0.002) or double_exp (randn·0.02·exp(−(j/L')·(H/2)^(i/H))) (default random)"},
      {"kernel_lr", "the kernels' peak learning rate, no weight decay (default 0.001)"},
      {"impl",
       "fft (at::fft), monarch (the FFT as Monarch GEMMs, ops/monarch_fft) or learned_monarch (trainable "
       "Monarch factors initialised at the DFT; not causal) (default fft)"},
      {"dft_lr", "learned_monarch: the factors' peak learning rate, no weight decay (default 0.001)"}};
  return help;
}

const OptionHelp& long_conv_option_help() {
  static const OptionHelp help = [] {
    OptionHelp h = kernel_option_help();
    h.emplace_back("channels", "C, kernels per hidden unit; out_proj reads C·hidden (default 1)");
    h.emplace_back("bidirectional", "a second kernel for the future side; classifiers only (default false)");
    return h;
  }();
  return help;
}

}  // namespace

LongConvOptions long_conv_options(const nn::MixerSpec& spec, const std::string& mixer) {
  const Json& o = spec.options;
  const bool gated = mixer == "gated_long_conv";
  check_option_keys(mixer, o, gated ? kernel_option_help() : long_conv_option_help());
  const std::string what = "mixer " + mixer;
  LongConvOptions out;
  out.l_max = json_get_or<int64_t>(o, "l_max", spec.config.max_position_embeddings, what);
  LR_CHECK(out.l_max >= 1, InvalidArgument, what, ": l_max must be >= 1, got ", out.l_max,
           o.contains("l_max") ? "" : " (from max_position_embeddings)");
  out.lam = json_get_or<double>(o, "lam", 0.0, what);
  LR_CHECK(out.lam >= 0 && std::isfinite(out.lam), InvalidArgument, what, ": lam must be >= 0, got ",
           out.lam);
  out.smooth = json_get_or<bool>(o, "smooth", false, what);
  out.smooth_window = json_get_or<int64_t>(o, "smooth_window", 7, what);
  LR_CHECK(out.smooth_window >= 1 && out.smooth_window % 2 == 1, InvalidArgument, what,
           ": smooth_window must be odd and >= 1, got ", out.smooth_window);
  out.kernel_dropout = json_get_or<double>(o, "kernel_dropout", 0.0, what);
  LR_CHECK(out.kernel_dropout >= 0 && out.kernel_dropout < 1, InvalidArgument, what,
           ": kernel_dropout must be in [0, 1), got ", out.kernel_dropout);
  out.kernel_init = json_get_or<std::string>(o, "kernel_init", "random", what);
  LR_CHECK(out.kernel_init == "random" || out.kernel_init == "double_exp", InvalidArgument, what,
           ": kernel_init must be random or double_exp, got \"", out.kernel_init, "\"");
  out.kernel_lr = json_get_or<double>(o, "kernel_lr", 1e-3, what);
  LR_CHECK(out.kernel_lr > 0 && std::isfinite(out.kernel_lr), InvalidArgument, what,
           ": kernel_lr must be positive, got ", out.kernel_lr);
  out.dft_lr = json_get_or<double>(o, "dft_lr", 1e-3, what);
  LR_CHECK(out.dft_lr > 0 && std::isfinite(out.dft_lr), InvalidArgument, what,
           ": dft_lr must be positive, got ", out.dft_lr);
  const std::string impl = json_get_or<std::string>(o, "impl", "fft", what);
  if (impl == "fft")
    out.impl = LongConvImpl::kFft;
  else if (impl == "monarch")
    out.impl = LongConvImpl::kMonarch;
  else if (impl == "learned_monarch")
    out.impl = LongConvImpl::kLearnedMonarch;
  else
    throw InvalidArgument(str(what, ": impl must be fft, monarch or learned_monarch, got \"", impl, "\""));
  if (out.impl != LongConvImpl::kFft)  // the Monarch length must exist before any work starts
    (void)ops::fft_conv_size(out.l_max, out.l_max, ops::FftConvImpl::kMonarch);
  if (!gated) {
    out.channels = json_get_or<int64_t>(o, "channels", 1, what);
    LR_CHECK(out.channels >= 1, InvalidArgument, what, ": channels must be >= 1, got ", out.channels);
    out.bidirectional = json_get_or<bool>(o, "bidirectional", false, what);
  }
  return out;
}

at::Tensor normal_by_name(const std::string& name, at::IntArrayRef shape) {
  const at::Tensor radius = (uniform_by_name(name + "#radius", shape, 1.0) + 1.0) / 2.0;  // [0, 1)
  const at::Tensor angle = uniform_by_name(name + "#angle", shape, 1.0) * std::numbers::pi;
  return at::sqrt(-2.0 * at::log(1.0 - radius)) * at::cos(angle);
}

at::Tensor two_sided_conv(const at::Tensor& u, const at::Tensor& past, const at::Tensor& future,
                          const std::function<at::Tensor(const at::Tensor&, const at::Tensor&)>& conv) {
  const int64_t T = u.size(-1);
  const at::Tensor delayed =
      at::constant_pad_nd(future.narrow(-1, 0, std::min(T - 1, future.size(-1))), {1, 0});
  return conv(u, past) + conv(u.flip(-1), delayed).flip(-1);
}

at::Tensor shift_in(const at::Tensor& inputs, const at::Tensor& x, const nn::MixerContext& context) {
  const int64_t length = inputs.size(1);
  const at::Tensor shifted = at::cat({inputs.narrow(1, 1, length - 1), x}, 1);
  if (!context.valid.defined()) return shifted;
  return at::where(context.valid.view({-1, 1, 1}), shifted, inputs);
}

at::Tensor convolve_newest(const at::Tensor& kernel, const at::Tensor& inputs) {
  return at::einsum("chj,bjh->bch", {kernel.flip(-1), inputs});
}

at::Tensor smooth_kernel(const at::Tensor& kernel, int64_t window) {
  LR_CHECK(window >= 1 && window % 2 == 1, InvalidArgument, "smooth_kernel: window must be odd, got ",
           window);
  const int64_t length = kernel.size(-1);
  const at::Tensor rows = kernel.reshape({-1, 1, length});
  return at::avg_pool1d(rows, {window}, {1}, {window / 2}, false, true).reshape(kernel.sizes());
}

at::Tensor squash_kernel(const at::Tensor& kernel, double lam) {
  return at::relu(kernel.abs() - lam) * kernel.sign();
}

LongConvKernel::LongConvKernel(const nn::MixerSpec& spec, const LongConvOptions& options,
                               const std::string& name, int64_t channels)
    : options_(options), name_(name) {
  const int64_t H = spec.config.hidden_size, L = options.l_max;
  at::Tensor init = normal_by_name(name, {channels, H, L});
  if (options.kernel_init == "random") {
    init = init * 0.002;
  } else {
    // double_exp: row i decays as exp(−(j/L)·⌊H/2⌋^{i/H}), faster for later rows.
    const at::Tensor j = at::arange(L, at::kDouble).view({1, -1}) / static_cast<double>(L);
    const at::Tensor rate =
        at::pow(static_cast<double>(H / 2), at::arange(H, at::kDouble) / static_cast<double>(H))
            .view({-1, 1});
    init = init * 0.02 * at::exp(-j * rate).to(at::kFloat);
  }
  weight_ = spec.tensor(name, {channels, H, L}, nn::ParamInit::kValue, init);
  if (options.impl == LongConvImpl::kLearnedMonarch) {
    const int64_t n = ops::fft_conv_size(L, L, ops::FftConvImpl::kMonarch);
    const ops::MonarchFactors dft = ops::MonarchFactors::dft(n, at::kComplexDouble);
    const std::string parts[4] = {"_fft_u.f1", "_fft_u.f2", "_fft_k.f1", "_fft_k.f2"};
    for (int i = 0; i < 4; ++i) {
      const at::Tensor& f = i % 2 == 0 ? dft.f1 : dft.f2;
      factor_names_[i] = name + parts[i];
      factors_[i] = spec.tensor(factor_names_[i], {f.size(0), f.size(1), 2}, nn::ParamInit::kValue,
                                at::view_as_real(f).contiguous());
    }
  }
}

ops::MonarchFactors LongConvKernel::factors(int index) const {
  // The stored [n, n, 2] real pairs as complex matrices (a view: gradients reach the tensors).
  return {at::view_as_complex(factors_[index]), at::view_as_complex(factors_[index + 1])};
}

at::Tensor LongConvKernel::kernel() const {
  at::Tensor k = weight_;
  if (options_.smooth) k = smooth_kernel(k, options_.smooth_window);
  if (options_.lam > 0) k = squash_kernel(k, options_.lam);
  if (options_.kernel_dropout > 0 && at::GradMode::is_enabled() && weight_.requires_grad())
    k = at::dropout(k, options_.kernel_dropout, true);
  return k;
}

at::Tensor LongConvKernel::convolve(const at::Tensor& u) const {
  const int64_t T = u.size(-1);
  const at::Tensor k = kernel();
  const int64_t C = options_.bidirectional ? k.size(0) / 2 : k.size(0);
  auto conv = [&](const at::Tensor& input, const at::Tensor& taps) {
    if (options_.impl == LongConvImpl::kLearnedMonarch) {
      const int64_t n = factors_[0].size(0) * factors_[1].size(0);
      LR_CHECK(input.size(-1) + taps.size(-1) <= n, InvalidArgument, "mixer long_conv (", name_,
               "): impl learned_monarch has FFT length ", n, " (from l_max ", options_.l_max,
               "); the input of ", T, " positions needs ", input.size(-1) + taps.size(-1));
      return ops::monarch_conv(input, taps, factors(0), factors(2));
    }
    return ops::fft_conv(
        input, taps,
        options_.impl == LongConvImpl::kFft ? ops::FftConvImpl::kFft : ops::FftConvImpl::kMonarch);
  };
  const at::Tensor past = k.narrow(0, 0, C).narrow(-1, 0, std::min(T, options_.l_max));
  if (!options_.bidirectional) return conv(u.unsqueeze(1), past);  // [B, C, H, T]
  return two_sided_conv(u.unsqueeze(1), past, k.narrow(0, C, C), conv);
}

void LongConvKernel::append_tensors(nn::NamedTensors& out) const {
  out.emplace_back(name_, weight_);
  for (int i = 0; i < 4; ++i)
    if (factors_[i].defined()) out.emplace_back(factor_names_[i], factors_[i]);
}

void LongConvKernel::append_param_groups(std::vector<nn::ParamGroup>& out) const {
  out.push_back({name_, options_.kernel_lr, 0.0});
  for (int i = 0; i < 4; ++i)
    if (factors_[i].defined()) out.push_back({factor_names_[i], options_.dft_lr, 0.0});
}

// ---- long_conv ----

LongConvMixer::LongConvMixer(const nn::MixerSpec& spec)
    : options_(long_conv_options(spec, "long_conv")),
      hidden_(spec.config.hidden_size),
      kernel_(spec, options_, spec.prefix + ".kernel", options_.channels * (options_.bidirectional ? 2 : 1)),
      skip_name_(spec.prefix + ".D"),
      out_proj_(spec.prefix + ".out_proj",
                spec.projection(spec.prefix + ".out_proj", 2 * hidden_, options_.channels * hidden_, true)) {
  skip_ = spec.tensor(skip_name_, {options_.channels, hidden_}, nn::ParamInit::kValue,
                      normal_by_name(skip_name_, {options_.channels, hidden_}));
}

at::Tensor LongConvMixer::output(const at::Tensor& y, const nn::MixerContext& context) const {
  return at::glu(out_proj_.forward(at::gelu(y), context.routing), -1);
}

at::Tensor LongConvMixer::forward(const at::Tensor& x, const nn::MixerContext& context) const {
  LR_CHECK(x.dim() == 3 && x.size(2) == hidden_, InvalidArgument, "mixer long_conv: input must be [B, T, ",
           hidden_, "], got ", x.sizes());
  at::Tensor u = x.transpose(1, 2);  // [B, H, T]
  if (context.valid.defined()) u = u * context.valid.to(u.scalar_type()).unsqueeze(1);
  const at::Tensor y = kernel_.convolve(u) + u.unsqueeze(1) * skip_.unsqueeze(-1);  // [B, C, H, T]
  return output(y.flatten(1, 2).transpose(1, 2), context);
}

namespace {
struct LongConvState : nn::MixerState {
  at::Tensor inputs;  // [B, L′, H], newest last
};
struct GatedLongConvState : nn::MixerState {
  at::Tensor keys;      // [B, L′, H]: k, the shift convolution's input
  at::Tensor products;  // [B, L′, H]: k̄ ⊙ v, the long convolution's input
};
}  // namespace

std::unique_ptr<nn::MixerState> LongConvMixer::new_state(int64_t batch) const {
  LR_CHECK(has_decode_state(), Unsupported, "mixer long_conv: no decode state (",
           options_.bidirectional ? "bidirectional" : "impl learned_monarch", " is not causal)");
  auto state = std::make_unique<LongConvState>();
  state->inputs = at::zeros({batch, options_.l_max, hidden_}, skip_.options());
  return state;
}

at::Tensor LongConvMixer::step(const at::Tensor& x, nn::MixerState& state,
                               const nn::MixerContext& context) const {
  auto& s = dynamic_cast<LongConvState&>(state);
  s.inputs = shift_in(s.inputs, x, context);
  const at::Tensor y =
      convolve_newest(kernel_.kernel(), s.inputs) + x.squeeze(1).unsqueeze(1) * skip_;  // [B, C, H]
  return output(y.flatten(1, 2).unsqueeze(1), context);
}

nn::NamedTensors LongConvMixer::tensors() const {
  nn::NamedTensors out;
  kernel_.append_tensors(out);
  out.emplace_back(skip_name_, skip_);
  return out;
}

std::vector<nn::ParamGroup> LongConvMixer::param_groups() const {
  std::vector<nn::ParamGroup> out;
  kernel_.append_param_groups(out);
  return out;
}

// ---- gated_long_conv ----

GatedLongConvMixer::GatedLongConvMixer(const nn::MixerSpec& spec)
    : options_(long_conv_options(spec, "gated_long_conv")),
      hidden_(spec.config.hidden_size),
      q_proj_(spec.prefix + ".q_proj", spec.projection(spec.prefix + ".q_proj", hidden_, hidden_, true)),
      k_proj_(spec.prefix + ".k_proj", spec.projection(spec.prefix + ".k_proj", hidden_, hidden_, true)),
      v_proj_(spec.prefix + ".v_proj", spec.projection(spec.prefix + ".v_proj", hidden_, hidden_, true)),
      o_proj_(spec.prefix + ".o_proj", spec.projection(spec.prefix + ".o_proj", hidden_, hidden_, true)),
      shift_kernel_(spec, options_, spec.prefix + ".shift_kernel", 1),
      kernel_(spec, options_, spec.prefix + ".kernel", 1),
      shift_skip_name_(spec.prefix + ".shift_D"),
      skip_name_(spec.prefix + ".D") {
  shift_skip_ = spec.tensor(shift_skip_name_, {hidden_}, nn::ParamInit::kValue,
                            normal_by_name(shift_skip_name_, {hidden_}));
  skip_ = spec.tensor(skip_name_, {hidden_}, nn::ParamInit::kValue, normal_by_name(skip_name_, {hidden_}));
}

at::Tensor GatedLongConvMixer::forward(const at::Tensor& x, const nn::MixerContext& context) const {
  LR_CHECK(x.dim() == 3 && x.size(2) == hidden_, InvalidArgument,
           "mixer gated_long_conv: input must be [B, T, ", hidden_, "], got ", x.sizes());
  const nn::LinearSlot* qkv[] = {&q_proj_, &k_proj_, &v_proj_};
  const std::vector<at::Tensor> p = nn::LinearSlot::forward_shared_input(qkv, x, context.routing);
  const at::Tensor q = p[0].transpose(1, 2);  // [B, H, T]
  at::Tensor k = p[1].transpose(1, 2), v = p[2].transpose(1, 2);
  if (context.valid.defined()) {
    const at::Tensor keep = context.valid.to(x.scalar_type()).unsqueeze(1);
    k = k * keep;
    v = v * keep;
  }
  const at::Tensor shifted = shift_kernel_.convolve(k).squeeze(1) + shift_skip_.unsqueeze(-1) * k;
  const at::Tensor kv = shifted * v;
  const at::Tensor y = q * (kernel_.convolve(kv).squeeze(1) + skip_.unsqueeze(-1) * kv);
  return o_proj_.forward(y.transpose(1, 2), context.routing);
}

std::unique_ptr<nn::MixerState> GatedLongConvMixer::new_state(int64_t batch) const {
  LR_CHECK(has_decode_state(), Unsupported,
           "mixer gated_long_conv: no decode state (impl learned_monarch is not causal)");
  auto state = std::make_unique<GatedLongConvState>();
  state->keys = at::zeros({batch, options_.l_max, hidden_}, skip_.options());
  state->products = at::zeros_like(state->keys);
  return state;
}

at::Tensor GatedLongConvMixer::step(const at::Tensor& x, nn::MixerState& state,
                                    const nn::MixerContext& context) const {
  auto& s = dynamic_cast<GatedLongConvState&>(state);
  const nn::LinearSlot* qkv[] = {&q_proj_, &k_proj_, &v_proj_};
  const std::vector<at::Tensor> p =
      nn::LinearSlot::forward_shared_input(qkv, x, context.routing);  // [B, 1, H]
  s.keys = shift_in(s.keys, p[1], context);
  const at::Tensor shifted =
      convolve_newest(shift_kernel_.kernel(), s.keys).squeeze(1) + shift_skip_ * p[1].squeeze(1);
  const at::Tensor kv = (shifted * p[2].squeeze(1)).unsqueeze(1);  // [B, 1, H]
  s.products = shift_in(s.products, kv, context);
  const at::Tensor y = convolve_newest(kernel_.kernel(), s.products).squeeze(1) + skip_ * kv.squeeze(1);
  return o_proj_.forward((p[0].squeeze(1) * y).unsqueeze(1), context.routing);
}

nn::NamedTensors GatedLongConvMixer::tensors() const {
  nn::NamedTensors out;
  shift_kernel_.append_tensors(out);
  out.emplace_back(shift_skip_name_, shift_skip_);
  kernel_.append_tensors(out);
  out.emplace_back(skip_name_, skip_);
  return out;
}

std::vector<nn::ParamGroup> GatedLongConvMixer::param_groups() const {
  std::vector<nn::ParamGroup> out;
  shift_kernel_.append_param_groups(out);
  kernel_.append_param_groups(out);
  return out;
}

void register_long_conv(nn::MixerRegistry& registry) {
  registry.add(
      {"long_conv",
       "simple long convolution: a kernel per hidden unit as long as the sequence, smoothed and squashed, "
       "by FFT or the Monarch FFT (learned_monarch: FlashButterfly's learned factors), D skip, GELU, "
       "Linear + GLU; causal unless bidirectional or learned_monarch",
       "Fu et al., 2023, arXiv:2302.06646", long_conv_option_help()},
      [](const nn::MixerSpec& spec) -> std::unique_ptr<nn::TokenMixer> {
        return std::make_unique<LongConvMixer>(spec);
      });
  registry.add(
      {"gated_long_conv",
       "H3-shaped gated long convolution: q ⊙ (K ∗ (k̄ ⊙ v) + D ⊙ k̄ ⊙ v) with k̄ a shift long "
       "convolution of k; long-convolution kernels; causal (the paper's language-model layer)",
       "Fu et al., 2023, arXiv:2302.06646 (H3: Fu et al., 2023, arXiv:2212.14052)", kernel_option_help()},
      [](const nn::MixerSpec& spec) -> std::unique_ptr<nn::TokenMixer> {
        return std::make_unique<GatedLongConvMixer>(spec);
      });
}

}  // namespace lowrank::mix
