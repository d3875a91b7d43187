// The image classifier of the equivariance study (Mironenco & Forré, ICLR'24, arXiv:2310.11366,
// §5; authors' code github.com/mirceamironenco/rgenn): a lifting layer onto ℝ² ⋊ G, a Monte-Carlo
// group convolution, a pool over the group and the plane, and a linear head (nn/lie_group.h has
// the layers and their equations). G is GL⁺(2) or SL(2); "none" builds the equal-size plain CNN of
// the same layout that the study compares against.
//
//   group:  h₁ = GELU(N₁(L x (·, g)))            g = g_1 … g_N ~ Haar(G) truncated (t ≤ t_max,
//           h₁ ← MaxPool₂(h₁)  (per element)      |log scale| ≤ log_scale_max for GL⁺(2))
//           h₂ = GELU(N₂(K h₁ (·, g)))            the same elements in and out
//           z  = max_{p, n} h₂(p, g_n)             ∈ ℝ^C, invariant up to the Monte-Carlo error
//           logits = W z + b
//   none:   h₁ = GELU(N₁(conv_k x)), MaxPool₂, h₂ = GELU(N₂(conv_k h₁)), z = max_p h₂,
//           logits = W z + b
// N normalises each sample over all its features (channels, elements, positions: GroupNorm with
// one group, eps 1e-6) with a per-channel weight and bias; the convolutions have no bias, as the
// authors' before a norm. Deviation: their "layernorm3d" normalises the channels at each position
// and element, which with a one-channel image and few channels makes every position's vector
// nearly the same direction (the model stayed at chance); a whole-sample norm keeps the
// equivariance (it commutes with permuting elements and rotating the plane).
// As the authors' GResNet (rgenn/models.py) with its spatial GMaxPool2D and GlobalMaxProjection
// (amax over the group and the plane), reduced to one lifting and one group convolution, without
// its residual blocks and MLP head, so that it trains in minutes on two cores.
//
// Group elements: with "resample" (the authors' SamplingWrapper default), a training forward draws
// N = train_samples fresh Haar elements from (sample_seed, counter) and advances the counter; the
// counter is training state (checkpointed, so a resumed run draws the same elements). Without it
// (their deterministic=True: "sample group elements once and reuse"), training uses the evaluation
// elements too. An evaluation forward uses eval_samples elements drawn once from sample_seed, so
// evaluation is deterministic. With a set of elements closed under the 90° rotation u (g and u·g both
// present), the logits are exactly invariant under rot90 of the image (tested).
//
// Files: config.json ({"architectures": ["LieGroupClassifier"], "model_type":
// "lie_group_classifier", "group", "channels", "kernel_size", "kernel_hidden", "train_samples",
// "eval_samples", "t_max", "log_scale_max", "sample_seed", "resample", "rotations",
// "image_size": [H, W], "num_channels",
// "num_labels", "id2label"; unknown keys kept) and model.safetensors:
//   group: lifting.kernel.{w1,b1,w2,b2}, norm1.{weight,bias}, group_conv.kernel.{w1,b1,w2,b2},
//          norm2.{weight,bias}, classifier.{weight,bias}, group_sample_counter (int64 [1])
//   none:  conv1.weight, norm1.{weight,bias}, conv2.weight, norm2.{weight,bias}, classifier.{weight,bias}
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>

#include <ATen/ATen.h>

#include "lowrank/core/json.h"
#include "lowrank/nn/lie_group.h"
#include "lowrank/nn/linear_slot.h"
#include "lowrank/nn/token_mixer.h"

namespace lowrank::nn {

struct LieGroupClassifierConfig {
  std::string group = "gl2";  // gl2 | sl2 | none
  int64_t image_height = 16, image_width = 16, num_channels = 1, num_labels = 10;
  int64_t channels = 8;        // C
  int64_t kernel_size = 5;     // k, odd
  int64_t kernel_hidden = 16;  // the kernel MLPs' hidden width
  int64_t train_samples = 8, eval_samples = 16;
  double t_max = 0.5, log_scale_max = 0.25;
  uint64_t sample_seed = 0;
  bool resample = true;
  // K: each element set is K rotated copies R(2πj/K)·g_i of train_samples/K (eval_samples/K) Haar
  // draws, closed under the rotation by 2π/K (a stratified Monte-Carlo sample). K divides both
  // counts and is odd, 2 or 4: the chart ξ⁻¹ has its cut at the rotation angle θ = π, and with
  // another even K the relative elements R_j⁻¹R_k include that angle in inexact arithmetic, where
  // rounding decides between θ = π and −π and breaks the set's exact invariance.
  int64_t rotations = 1;
  Json raw = Json::object();

  // InvalidArgument naming the key at fault.
  void check() const;
  Json to_json() const;
  static LieGroupClassifierConfig from_json(const Json& j, const std::string& what);
};

// config.json says model_type "lie_group_classifier".
bool is_lie_group_classifier_config(const Json& config);

// The channel count of a plain CNN ("none") with the same layout whose parameter count is the
// nearest to the GL⁺(2) model of `config`'s keys (below on a tie; at least 1).
int64_t matched_cnn_channels(const LieGroupClassifierConfig& config);

class LieGroupClassifier {
 public:
  static LieGroupClassifier random(const LieGroupClassifierConfig& config, uint64_t seed);
  // NotFound for a missing config.json or tensor; InvalidArgument for a tensor of another shape.
  static LieGroupClassifier load(const std::filesystem::path& dir);
  void save(const std::filesystem::path& dir, at::ScalarType dtype = at::kFloat) const;

  // pixels [B, num_channels, H, W] → logits [B, num_labels]. `training`: fresh elements (and the
  // counter advances); otherwise the fixed evaluation elements.
  at::Tensor forward(const at::Tensor& pixels, bool training) const;
  // The same on the given elements g [N, 2, 2] (group models only).
  at::Tensor forward_on(const at::Tensor& pixels, const at::Tensor& g) const;
  // The elements a forward uses: training draws advance the counter.
  at::Tensor group_elements(bool training) const;

  const LieGroupClassifierConfig& config() const { return config_; }
  // The trained tensors, and the state saved beside them (the sample counter).
  NamedTensors named_parameters() const;
  NamedTensors named_buffers() const;
  int64_t parameter_count() const;
  // Weight decay 0 for the tensors of at most one dimension (biases), as the ConvNets.
  std::vector<ParamGroup> param_groups() const;

 private:
  LieGroupClassifierConfig config_;
  LiftingConv2d lifting_;
  GroupConv2d group_conv_;
  at::Tensor norm1_weight_, norm1_bias_, norm2_weight_, norm2_bias_;
  at::Tensor conv1_weight_, conv2_weight_;  // "none"
  at::Tensor classifier_weight_, classifier_bias_;
  at::Tensor counter_;  // int64 [1]
  at::Tensor eval_elements_;
};

}  // namespace lowrank::nn
