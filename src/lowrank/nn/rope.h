// Rotary position embeddings (RoPE) — Su et al., 2021, "RoFormer: Enhanced Transformer with Rotary
// Position Embedding", arXiv:2104.09864, in the "rotate half" layout of transformers' Llama:
//   x' = x * cos(p θ) + rotate_half(x) * sin(p θ),  rotate_half([x1, x2]) = [-x2, x1],
//   θ_i = inv_freq_i = 1 / base^(2i / d),  i < d/2, the frequencies repeated for both halves.
// Scaled variants, formulas exactly as transformers' modeling_rope_utils.py (op for op, float32):
// - linear (position interpolation, Chen et al., 2023, arXiv:2306.15595): θ / factor.
// - dynamic (NTK-aware, bloc97/emozilla 2023): for seq_len > max_position_embeddings the base
//   becomes base * (factor * seq_len / max_pos - (factor - 1))^(d / (d - 2)).
// - yarn (Peng et al., 2023, "YaRN", arXiv:2309.00071): a linear ramp between interpolated
//   (θ / factor) and extrapolated θ over the correction range [low, high] found from beta_fast and
//   beta_slow, and cos/sin scaled by the attention factor 0.1 ln(factor) + 1 (or mscale ratios).
//   `factor` is used as given, as transformers 5 does (some 4.x releases replaced it by
//   max_position_embeddings / original_max_position_embeddings when the latter was present).
// - llama3 (Llama 3.1, Dubey et al., 2024, arXiv:2407.21783): wavelengths above
//   original_max / low_freq_factor divided by factor, below original_max / high_freq_factor kept,
//   smooth interpolation in between.
// Deviations: a float64 model computes its frequencies and tables in float64 (transformers always
// uses float32; float64 serves verification and gradient checks). transformers' dynamic RoPE remembers the
// longest sequence it has seen across calls; here each forward uses max(position_ids) + 1 of that call, which
// is the same within one generation (positions only grow) and stateless across calls.
#pragma once

#include <cstdint>
#include <utility>

#include <ATen/ATen.h>

#include "lowrank/nn/config.h"

namespace lowrank::nn {

struct RopeFrequencies {
  at::Tensor inv_freq;             // [head_dim / 2] float32 (or float64), CPU
  double attention_scaling = 1.0;  // multiplies cos and sin (yarn)
};

// The frequencies for `rope`; `seq_len` (max position + 1) matters only for dynamic scaling.
// `dtype` is kFloat (transformers) or kDouble.
RopeFrequencies rope_frequencies(const RopeConfig& rope, int64_t head_dim, int64_t max_position_embeddings,
                                 int64_t seq_len = 0, at::ScalarType dtype = at::kFloat);

// Caches the frequencies of one model. Immutable after construction; thread-safe.
class RotaryEmbedding {
 public:
  RotaryEmbedding() = default;
  // `dtype` is the model's compute dtype: float64 models get float64 tables, all others float32.
  RotaryEmbedding(const ModelConfig& config, at::Device device, at::ScalarType dtype = at::kFloat);

  // cos, sin: [B, T, head_dim] in `dtype` for integer position_ids [B, T] (computed in float32,
  // then cast, as transformers does).
  std::pair<at::Tensor, at::Tensor> cos_sin(const at::Tensor& position_ids, at::ScalarType dtype) const;

  const at::Tensor& inv_freq() const { return inv_freq_; }
  double attention_scaling() const { return attention_scaling_; }

 private:
  RopeConfig rope_;
  int64_t head_dim_ = 0;
  int64_t max_position_embeddings_ = 0;
  at::ScalarType precision_ = at::kFloat;
  at::Tensor inv_freq_;  // in precision_, on the model's device
  double attention_scaling_ = 1.0;
};

// x * cos + rotate_half(x) * sin for x [B, H, T, D] and cos, sin [B, T, D]. Differentiable.
at::Tensor apply_rotary(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin);

}  // namespace lowrank::nn
