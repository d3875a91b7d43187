// SGConv's multiscale global convolution; see sgconv.h.
#include "lowrank/mix/sgconv.h"

#include <algorithm>
#include <cmath>
#include <numbers>

#include "lowrank/core/error.h"
#include "lowrank/mix/long_conv.h"
#include "lowrank/mix/mixer_options.h"
#include "lowrank/nn/config.h"
#include "lowrank/ops/long_fft_conv.h"

namespace lowrank::mix {

namespace {

const OptionHelp& sgconv_option_help() {
  static const OptionHelp help = {
      {"l_max", "the length the scales cover (default max_position_embeddings)"},
      {"kernel_dim", "d, the length of every sub-kernel (default 64)"},
      {"init_scale", "the first scale's upsampling is 2^init_scale (default 0)"},
      {"num_scales",
       "S, the number of sub-kernels (default 1 + ceil(log2(l_max / kernel_dim)) − init_scale)"},
      {"mode", "cat (scales side by side, the paper's Eq. 1) or sum (every scale from tap 0) (default cat)"},
      {"init", "randn or cos (cos(linspace(0, 2πi, d)) for channel i, channels permuted) (default randn)"},
      {"upsample", "linear or nearest interpolation of the sub-kernels (default linear)"},
      {"decay_min",
       "α of the first hidden unit: each coarser scale weighs 1/α of the one before (default 2)"},
      {"decay_max", "α of the last hidden unit, linearly between (default 2)"},
      {"channels", "C, kernels per hidden unit; out_proj reads C·hidden (default 1)"},
      {"bidirectional", "a second kernel set for the future side; classifiers only (default false)"},
      {"glu", "GLU after the output projection (postact glu, the LRA configs) (default false)"},
      {"kernel_lr", "the sub-kernels' peak learning rate, no weight decay (default 0.001)"}};
  return help;
}

// F.interpolate(x [C, H, d], scale_factor = factor, mode): linear (align_corners false) or nearest.
at::Tensor upsample(const at::Tensor& x, int64_t factor, const std::string& mode) {
  if (factor == 1) return x;
  const std::vector<int64_t> size = {x.size(-1) * factor};
  const std::optional<double> scale = static_cast<double>(factor);
  if (mode == "nearest") return at::upsample_nearest1d(x, size, scale);
  return at::upsample_linear1d(x, size, false, scale);
}

struct SGConvState : nn::MixerState {
  at::Tensor inputs;  // [B, kernel length, H], newest last
};

}  // namespace

SGConvOptions sgconv_options(const nn::MixerSpec& spec) {
  const Json& o = spec.options;
  check_option_keys("sgconv", o, sgconv_option_help());
  const std::string what = "mixer sgconv";
  SGConvOptions out;
  out.l_max = json_get_or<int64_t>(o, "l_max", spec.config.max_position_embeddings, what);
  out.kernel_dim = json_get_or<int64_t>(o, "kernel_dim", 64, what);
  out.init_scale = json_get_or<int64_t>(o, "init_scale", 0, what);
  LR_CHECK(out.l_max >= 1, InvalidArgument, what, ": l_max must be >= 1, got ", out.l_max);
  LR_CHECK(out.kernel_dim >= 1, InvalidArgument, what, ": kernel_dim must be >= 1, got ", out.kernel_dim);
  LR_CHECK(out.init_scale >= 0 && out.init_scale <= 20, InvalidArgument, what,
           ": init_scale must be in [0, 20], got ", out.init_scale);
  const double ratio = static_cast<double>(out.l_max) / static_cast<double>(out.kernel_dim);
  const int64_t scales = 1 + static_cast<int64_t>(std::ceil(std::log2(ratio))) - out.init_scale;
  out.num_scales = json_get_or<int64_t>(o, "num_scales", scales, what);
  LR_CHECK(out.num_scales >= 1 && out.num_scales + out.init_scale <= 24, InvalidArgument, what,
           ": num_scales must be >= 1 (and num_scales + init_scale <= 24), got ", out.num_scales,
           o.contains("num_scales") ? ""
                                    : str(" (from l_max ", out.l_max, ", kernel_dim ", out.kernel_dim,
                                          ", init_scale ", out.init_scale, ")"));
  out.mode = json_get_or<std::string>(o, "mode", "cat", what);
  LR_CHECK(out.mode == "cat" || out.mode == "sum", InvalidArgument, what, ": mode must be cat or sum, got \"",
           out.mode, "\"");
  out.init = json_get_or<std::string>(o, "init", "randn", what);
  LR_CHECK(out.init == "randn" || out.init == "cos", InvalidArgument, what,
           ": init must be randn or cos, got \"", out.init, "\"");
  out.upsample = json_get_or<std::string>(o, "upsample", "linear", what);
  LR_CHECK(out.upsample == "linear" || out.upsample == "nearest", InvalidArgument, what,
           ": upsample must be linear or nearest, got \"", out.upsample, "\"");
  out.decay_min = json_get_or<double>(o, "decay_min", 2.0, what);
  out.decay_max = json_get_or<double>(o, "decay_max", 2.0, what);
  LR_CHECK(
      out.decay_min > 0 && out.decay_max > 0 && std::isfinite(out.decay_min) && std::isfinite(out.decay_max),
      InvalidArgument, what, ": decay_min and decay_max must be positive, got ", out.decay_min, " and ",
      out.decay_max);
  out.channels = json_get_or<int64_t>(o, "channels", 1, what);
  LR_CHECK(out.channels >= 1, InvalidArgument, what, ": channels must be >= 1, got ", out.channels);
  out.bidirectional = json_get_or<bool>(o, "bidirectional", false, what);
  out.glu = json_get_or<bool>(o, "glu", false, what);
  out.kernel_lr = json_get_or<double>(o, "kernel_lr", 1e-3, what);
  LR_CHECK(out.kernel_lr > 0 && std::isfinite(out.kernel_lr), InvalidArgument, what,
           ": kernel_lr must be positive, got ", out.kernel_lr);
  return out;
}

at::Tensor sgconv_kernel(const std::vector<at::Tensor>& sub_kernels, const SGConvOptions& options) {
  const int64_t S = static_cast<int64_t>(sub_kernels.size());
  LR_CHECK(S >= 1, InvalidArgument, "sgconv_kernel: no sub-kernels");
  const at::Tensor& first = sub_kernels.front();
  const int64_t H = first.size(1), d = first.size(2);
  const at::Tensor alpha =
      at::linspace(options.decay_min, options.decay_max, H, first.options()).view({1, -1, 1});
  std::vector<at::Tensor> pieces;
  const int64_t sum_length = d << (S - 1 + options.init_scale);
  for (int64_t i = 0; i < S; ++i) {
    const int64_t octave = options.mode == "cat" ? std::max<int64_t>(0, i - 1) : i;
    at::Tensor piece =
        upsample(sub_kernels[i], int64_t{1} << (octave + options.init_scale), options.upsample);
    if (options.mode == "sum") piece = at::constant_pad_nd(piece, {0, sum_length - piece.size(-1)});
    pieces.push_back(piece * at::pow(alpha, static_cast<double>(S - 1 - i)));
  }
  if (options.mode == "cat") return at::cat(pieces, -1);
  at::Tensor k = pieces.front();
  for (int64_t i = 1; i < S; ++i) k = k + pieces[i];
  return k;
}

SGConvMixer::SGConvMixer(const nn::MixerSpec& spec)
    : options_(sgconv_options(spec)),
      hidden_(spec.config.hidden_size),
      norm_name_(spec.prefix + ".kernel_norm"),
      skip_name_(spec.prefix + ".D"),
      out_proj_(spec.prefix + ".out_proj",
                spec.projection(spec.prefix + ".out_proj", (options_.glu ? 2 : 1) * hidden_,
                                options_.channels * hidden_, true)) {
  const int64_t C = options_.channels * (options_.bidirectional ? 2 : 1), H = hidden_,
                d = options_.kernel_dim;
  for (int64_t i = 0; i < options_.num_scales; ++i) {
    const std::string name = str(spec.prefix, ".kernel_", i);
    at::Tensor init;
    if (options_.init == "randn") {
      init = normal_by_name(name, {C, H, d});
    } else {
      // Row h is cos(linspace(0, 2πh, d)); the rows are then permuted (the same for every channel).
      const at::Tensor h = at::arange(H, at::kDouble).view({-1, 1});
      const at::Tensor t = at::linspace(0.0, 1.0, d, at::kDouble).view({1, -1});
      const at::Tensor rows = at::cos(2.0 * std::numbers::pi * h * t);
      const at::Tensor order = at::argsort(uniform_by_name(name + "#order", {H}, 1.0));
      init = rows.index_select(0, order).to(at::kFloat).unsqueeze(0).expand({C, H, d}).contiguous();
    }
    sub_names_.push_back(name);
    sub_kernels_.push_back(spec.tensor(name, {C, H, d}, nn::ParamInit::kValue, init));
  }
  const at::Tensor full = sgconv_kernel(sub_kernels_, options_);
  kernel_length_ = full.size(-1);
  kernel_norm_ = spec.tensor(norm_name_, {C, H, 1}, nn::ParamInit::kValue, full.detach().norm(2, {-1}, true));
  skip_ = spec.tensor(skip_name_, {options_.channels, H}, nn::ParamInit::kValue,
                      normal_by_name(skip_name_, {options_.channels, H}));
}

at::Tensor SGConvMixer::kernel(int64_t length) const {
  at::Tensor k = sgconv_kernel(sub_kernels_, options_);
  k = length <= kernel_length_ ? k.narrow(-1, 0, length)
                               : at::constant_pad_nd(k, {0, length - kernel_length_});
  return k / kernel_norm_.detach();
}

at::Tensor SGConvMixer::output(const at::Tensor& y, const nn::MixerContext& context) const {
  const at::Tensor z = out_proj_.forward(at::gelu(y), context.routing);
  return options_.glu ? at::glu(z, -1) : z;
}

at::Tensor SGConvMixer::forward(const at::Tensor& x, const nn::MixerContext& context) const {
  LR_CHECK(x.dim() == 3 && x.size(2) == hidden_, InvalidArgument, "mixer sgconv: input must be [B, T, ",
           hidden_, "], got ", x.sizes());
  const int64_t T = x.size(1), C = options_.channels;
  at::Tensor u = x.transpose(1, 2);  // [B, H, T]
  if (context.valid.defined()) u = u * context.valid.to(u.scalar_type()).unsqueeze(1);
  const at::Tensor k = kernel(T);
  const auto conv = [](const at::Tensor& input, const at::Tensor& taps) {
    return ops::fft_conv(input, taps);
  };
  const at::Tensor past = k.narrow(0, 0, C);
  const at::Tensor conv_out = options_.bidirectional
                                  ? two_sided_conv(u.unsqueeze(1), past, k.narrow(0, C, C), conv)
                                  : conv(u.unsqueeze(1), past);  // [B, C, H, T]
  const at::Tensor y = conv_out + u.unsqueeze(1) * skip_.unsqueeze(-1);
  return output(y.flatten(1, 2).transpose(1, 2), context);
}

std::unique_ptr<nn::MixerState> SGConvMixer::new_state(int64_t batch) const {
  LR_CHECK(has_decode_state(), Unsupported, "mixer sgconv: bidirectional, so no decode state");
  auto state = std::make_unique<SGConvState>();
  state->inputs = at::zeros({batch, kernel_length_, hidden_}, skip_.options());
  return state;
}

at::Tensor SGConvMixer::step(const at::Tensor& x, nn::MixerState& state,
                             const nn::MixerContext& context) const {
  auto& s = dynamic_cast<SGConvState&>(state);
  s.inputs = shift_in(s.inputs, x, context);
  const at::Tensor y = convolve_newest(kernel(kernel_length_), s.inputs) + x.squeeze(1).unsqueeze(1) * skip_;
  return output(y.flatten(1, 2).unsqueeze(1), context);
}

nn::NamedTensors SGConvMixer::tensors() const {
  nn::NamedTensors out;
  for (size_t i = 0; i < sub_kernels_.size(); ++i) out.emplace_back(sub_names_[i], sub_kernels_[i]);
  out.emplace_back(norm_name_, kernel_norm_);
  out.emplace_back(skip_name_, skip_);
  return out;
}

std::vector<nn::ParamGroup> SGConvMixer::param_groups() const {
  std::vector<nn::ParamGroup> out;
  for (const std::string& name : sub_names_) out.push_back({name, options_.kernel_lr, 0.0});
  return out;
}

void register_sgconv(nn::MixerRegistry& registry) {
  registry.add(
      {"sgconv",
       "SGConv: a global convolution kernel built from log(L) upsampled sub-kernels with decaying weights "
       "(cat or sum), normalised once, by FFT; D skip, GELU, output Linear (optional GLU); causal unless "
       "bidirectional",
       "Li et al., 2023, arXiv:2210.09298", sgconv_option_help()},
      [](const nn::MixerSpec& spec) -> std::unique_ptr<nn::TokenMixer> {
        return std::make_unique<SGConvMixer>(spec);
      });
}

}  // namespace lowrank::mix
