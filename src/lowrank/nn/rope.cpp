// Rotary position embeddings and their scaled variants; see rope.h for the references. Each
// init function mirrors the corresponding `_compute_*_parameters` of transformers'
// modeling_rope_utils.py op for op in float32, so that inv_freq matches bit for bit.
#include "lowrank/nn/rope.h"

#include <algorithm>
#include <cmath>
#include <numbers>

#include "lowrank/core/error.h"

namespace lowrank::nn {
namespace {

// torch.arange(0, dim, 2, dtype=torch.int64).float() / dim
at::Tensor exponents(int64_t dim, at::ScalarType dtype) {
  return at::arange(0, dim, 2, at::kLong).to(dtype).div(static_cast<double>(dim));
}

// 1.0 / (base ** exponents): Python's `1.0 / t` is t.reciprocal() * 1.0.
at::Tensor default_inv_freq(double base, int64_t dim, at::ScalarType dtype) {
  return at::reciprocal(at::pow(base, exponents(dim, dtype)));
}

// _compute_yarn_parameters.
RopeFrequencies yarn(const RopeConfig& rope, int64_t dim, at::ScalarType dtype) {
  const double base = rope.theta;
  const double factor = rope.factor;
  auto get_mscale = [](double scale, double mscale) {
    return scale <= 1 ? 1.0 : 0.1 * mscale * std::log(scale) + 1.0;
  };
  double attention_factor;
  if (rope.attention_factor) {
    attention_factor = *rope.attention_factor;
  } else if (rope.mscale != 0 && rope.mscale_all_dim != 0) {
    attention_factor = get_mscale(factor, rope.mscale) / get_mscale(factor, rope.mscale_all_dim);
  } else {
    attention_factor = get_mscale(factor, 1.0);
  }
  // Inverse dimension formula: the dimension at which a wavelength makes `rotations` turns over
  // the original context.
  const double original = static_cast<double>(rope.original_max_position_embeddings);
  auto correction_dim = [&](double rotations) {
    return (dim * std::log(original / (rotations * 2 * std::numbers::pi))) / (2 * std::log(base));
  };
  double low = correction_dim(rope.beta_fast);
  double high = correction_dim(rope.beta_slow);
  if (rope.truncate) {
    low = std::floor(low);
    high = std::ceil(high);
  }
  low = std::max(low, 0.0);
  high = std::min(high, static_cast<double>(dim - 1));
  if (low == high) high += 0.001;  // prevent a singular ramp

  const at::Tensor pos_freqs = at::pow(base, exponents(dim, dtype));
  const at::Tensor inv_freq_extrapolation = at::reciprocal(pos_freqs);
  const at::Tensor inv_freq_interpolation = at::reciprocal(pos_freqs.mul(factor));
  const at::Tensor ramp = at::arange(dim / 2, dtype).sub(low).div(high - low).clamp(0, 1);
  const at::Tensor extrapolation_factor = ramp.neg().add(1);  // 1 - ramp
  at::Tensor inv_freq = inv_freq_interpolation.mul(extrapolation_factor.neg().add(1))
                            .add(inv_freq_extrapolation.mul(extrapolation_factor));
  return {inv_freq, attention_factor};
}

// _compute_llama3_parameters.
at::Tensor llama3(const RopeConfig& rope, int64_t dim, at::ScalarType dtype) {
  const at::Tensor inv_freq = default_inv_freq(rope.theta, dim, dtype);
  const double factor = rope.factor;
  const double old_context_len = static_cast<double>(rope.original_max_position_embeddings);
  const double low_freq_wavelen = old_context_len / rope.low_freq_factor;
  const double high_freq_wavelen = old_context_len / rope.high_freq_factor;
  const at::Tensor wavelen = at::reciprocal(inv_freq).mul(2 * std::numbers::pi);  // 2π / inv_freq
  // Long wavelengths (low frequencies) are interpolated; short ones kept.
  at::Tensor inv_freq_llama = at::where(wavelen.gt(low_freq_wavelen), inv_freq.div(factor), inv_freq);
  const at::Tensor smooth_factor = at::reciprocal(wavelen)
                                       .mul(old_context_len)
                                       .sub(rope.low_freq_factor)
                                       .div(rope.high_freq_factor - rope.low_freq_factor);
  const at::Tensor smoothed =
      smooth_factor.neg().add(1).mul(inv_freq_llama).div(factor).add(smooth_factor.mul(inv_freq_llama));
  const at::Tensor is_medium =
      wavelen.lt(high_freq_wavelen).logical_not().logical_and(wavelen.gt(low_freq_wavelen).logical_not());
  return at::where(is_medium, smoothed, inv_freq_llama);
}

// _compute_dynamic_ntk_parameters with seq_len > max_position_embeddings. transformers passes
// seq_len as a tensor, so the new base is computed in float32 tensor arithmetic.
at::Tensor dynamic(const RopeConfig& rope, int64_t dim, int64_t max_pos, int64_t seq_len,
                   at::ScalarType dtype) {
  const double factor = rope.factor;
  // (A float64 model starts from a float64 length so that the whole computation is float64.)
  const at::Tensor len = at::scalar_tensor(seq_len, dtype == at::kDouble ? at::kDouble : at::kLong);
  const at::Tensor base = len.mul(factor)
                              .div(static_cast<double>(max_pos))
                              .sub(factor - 1)
                              .pow(static_cast<double>(dim) / static_cast<double>(dim - 2))
                              .mul(rope.theta);
  return at::reciprocal(at::pow(base, exponents(dim, dtype)));
}

}  // namespace

RopeFrequencies rope_frequencies(const RopeConfig& rope, int64_t head_dim, int64_t max_position_embeddings,
                                 int64_t seq_len, at::ScalarType dtype) {
  LR_CHECK(head_dim > 0 && head_dim % 2 == 0, InvalidArgument,
           "rotary embeddings need an even head_dim, got ", head_dim);
  LR_CHECK(dtype == at::kFloat || dtype == at::kDouble, InvalidArgument,
           "rotary frequencies are computed in float32 or float64, not ", c10::toString(dtype));
  if (rope.type == "default") return {default_inv_freq(rope.theta, head_dim, dtype), 1.0};
  if (rope.type == "linear") return {default_inv_freq(rope.theta, head_dim, dtype).div(rope.factor), 1.0};
  if (rope.type == "dynamic") {
    if (seq_len > max_position_embeddings)
      return {dynamic(rope, head_dim, max_position_embeddings, seq_len, dtype), 1.0};
    return {default_inv_freq(rope.theta, head_dim, dtype), 1.0};
  }
  if (rope.type == "yarn") return yarn(rope, head_dim, dtype);
  if (rope.type == "llama3") return {llama3(rope, head_dim, dtype), 1.0};
  throw Unsupported(
      str("rope_type \"", rope.type, "\" is not supported (default, linear, dynamic, yarn, llama3)"));
}

RotaryEmbedding::RotaryEmbedding(const ModelConfig& config, at::Device device, at::ScalarType dtype)
    : rope_(config.rope),
      head_dim_(config.head_dim),
      max_position_embeddings_(config.max_position_embeddings),
      precision_(dtype == at::kDouble ? at::kDouble : at::kFloat) {
  RopeFrequencies f = rope_frequencies(rope_, head_dim_, max_position_embeddings_, 0, precision_);
  inv_freq_ = f.inv_freq.to(device);
  attention_scaling_ = f.attention_scaling;
}

std::pair<at::Tensor, at::Tensor> RotaryEmbedding::cos_sin(const at::Tensor& position_ids,
                                                           at::ScalarType dtype) const {
  at::Tensor inv_freq = inv_freq_;
  if (rope_.type == "dynamic" && position_ids.numel() > 0) {
    const int64_t seq_len = position_ids.max().item<int64_t>() + 1;
    if (seq_len > max_position_embeddings_)
      inv_freq = rope_frequencies(rope_, head_dim_, max_position_embeddings_, seq_len, precision_)
                     .inv_freq.to(inv_freq_.device());
  }
  // freqs[b, t, i] = p[b, t] * inv_freq[i] (transformers' outer product, one rounding per entry).
  const at::Tensor freqs = position_ids.to(precision_).unsqueeze(-1).mul(inv_freq);
  const at::Tensor emb = at::cat({freqs, freqs}, -1);
  at::Tensor cos = emb.cos();
  at::Tensor sin = emb.sin();
  if (attention_scaling_ != 1.0) {
    cos = cos.mul(attention_scaling_);
    sin = sin.mul(attention_scaling_);
  }
  return {cos.to(dtype), sin.to(dtype)};
}

at::Tensor apply_rotary(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin) {
  const int64_t half = x.size(-1) / 2;
  const at::Tensor rotated = at::cat({x.narrow(-1, half, half).neg(), x.narrow(-1, 0, half)}, -1);
  return x.mul(cos.unsqueeze(1)).add(rotated.mul(sin.unsqueeze(1)));
}

}  // namespace lowrank::nn
