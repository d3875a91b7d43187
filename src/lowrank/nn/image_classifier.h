// LowrankMixerForImageClassification: a hierarchical vision backbone whose blocks are nn::Model's
// decoder layers (model.h: RMSNorm, a token mixer chosen per stage, SwiGLU), in the layout of the
// hierarchical ViTs and MetaFormers (Yu et al., 2022, "MetaFormer Is Actually What You Need for
// Vision", arXiv:2111.11418, PoolFormer; Liu et al., 2022, "A ConvNet for the 2020s",
// arXiv:2201.03545, ConvNeXt's stem and downsampling layers):
//   x ∈ ℝ^{C×H×W}
//   h_0 = Conv_{p×p, stride p}(x) + b ∈ ℝ^{D_0×(H/p)×(W/p)}          ("patch stem"; tensor
//          model.patch_embed.{weight,bias}), flattened row-major to T_0 = (H/p)(W/p) tokens
//   stage s (depth L_s, width D_s, mixer M_s): L_s decoder layers,
//          h' = h + M_s(RMSNorm(h); grid (H_s, W_s)),  h = h' + SwiGLU(RMSNorm(h'))     ("prenorm")
//   between stages s−1 → s: h = Conv_{2×2, stride 2}(RMSNorm(h)) + b, D_{s−1} → D_s, the grid
//          halved (ConvNeXt's "LayerNorm + 2×2 stride-2 conv" downsampling layer, with RMSNorm as
//          everywhere else here; tensors model.downsample.<s>.{norm.weight,weight,bias})
//   pooled = mean_t RMSNorm(h_t)   (model.norm.weight; the final norm, then global average
//          pooling, as PoolFormer's and ConvNeXt's heads)
//   logits = W_score · pooled, W_score ∈ ℝ^{num_labels×D_last}   (tensor "score.weight", the
//          sequence classifier's head name, classifier.h)
// Every mixer gets the stage's grid in MixerContext::grid and positions 0..T_s−1 (row-major) with
// their RoPE (attention rotates by the flattened index, as the sequence trunk would). Layers are
// numbered globally across stages (model.layers.0 ... model.layers.<ΣL_s − 1>), so that adapters,
// compression and the optimizers find them under the trunk's names.
// config.json:
//   "architectures": ["LowrankMixerForImageClassification"], "model_type": "lowrank_mixer",
//   "image_size": n | [h, w], "num_channels": c, "patch_size": p, "num_labels": k,
//   "stages": [{"depth": L, "hidden_size": D, "mixer": "attention", "block": "prenorm",
//               "intermediate_size": (default 4·D), "num_attention_heads": (default max(1, D/32)),
//               "mixer_options": {...} (this stage's options, over mixer_config's for its mixer)}],
//   "mixer_config": {...}, "rms_norm_eps", "hidden_act", "rope_theta", "initializer_range"
//   (unknown keys kept on save).
// Attention is causal over the flattened patches unless its options say "causal": false (the
// vit-tiny preset writes that: train/classify.cpp). Block "metanext" (InceptionNeXt's MetaNeXt,
// arXiv:2303.16900) is refused here: its BatchNorm blocks are LowrankConvNetForImageClassification's
// (nn/convnet.h).
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <ATen/ATen.h>

#include "lowrank/core/json.h"
#include "lowrank/nn/config.h"
#include "lowrank/nn/linear_slot.h"
#include "lowrank/nn/model.h"
#include "lowrank/nn/token_mixer.h"

namespace lowrank::nn {

struct DecoderLayer;

struct ImageStage {
  int64_t depth = 0;
  int64_t hidden_size = 0;
  int64_t intermediate_size = 0;
  int64_t num_attention_heads = 0;
  std::string mixer = "attention";
  std::string block = "prenorm";
  Grid2d grid;  // the stage's token grid (derived)
};

struct ImageClassifierConfig {
  int64_t image_height = 0, image_width = 0;
  int64_t num_channels = 1;
  int64_t patch_size = 0;
  int64_t num_labels = 0;
  double rms_norm_eps = 1e-6;
  std::vector<ImageStage> stages;
  // Per stage: the trunk configuration its layers are built from (hidden size, heads, mixers for
  // every layer of the model, so that layer indices are global).
  std::vector<ModelConfig> stage_configs;
  Json raw;  // config.json as read (unknown keys kept)

  // Throws InvalidArgument naming the key ("stages[1].depth", "image_size", ...) for a missing,
  // mistyped or inconsistent value (a grid that the patch size or a downsampling does not divide).
  static ImageClassifierConfig from_json(const Json& json, std::string_view what);
  static ImageClassifierConfig load(const std::filesystem::path& dir);
  int64_t num_layers() const;
};

// Whether `config` (a config.json object) names LowrankMixerForImageClassification.
bool is_image_classifier_config(const Json& config);

class ImageClassifier {
 public:
  static ImageClassifier load(const std::filesystem::path& dir, const LoadOptions& options = {});
  static ImageClassifier random(const ImageClassifierConfig& config, uint64_t seed,
                                const LoadOptions& options = {});
  ImageClassifier(ImageClassifier&&) noexcept;
  ImageClassifier& operator=(ImageClassifier&&) noexcept;
  ~ImageClassifier();

  void save(const std::filesystem::path& dir, std::optional<at::ScalarType> dtype = std::nullopt) const;
  const ImageClassifierConfig& config() const { return config_; }

  // pixels [B, C, H, W] (any floating dtype; converted to the compute dtype) -> the final-norm hidden
  // states of the last stage [B, T_last, D_last] / pooled [B, D_last] / logits [B, num_labels].
  at::Tensor hidden_states(const at::Tensor& pixels) const;
  at::Tensor pooled(const at::Tensor& pixels) const;
  at::Tensor forward(const at::Tensor& pixels) const;

  // Every layer's slots in order, then "score".
  std::vector<LinearSlot*> slots();
  // Stem, layers and downsampling layers in order, final norm, score.weight (what save writes).
  NamedTensors named_tensors() const;
  std::vector<ParamGroup> param_groups() const;

 private:
  ImageClassifier();
  // Sets the config and builds every tensor from `source` (name, shape, init, value: loaded or
  // fresh, decoder_layer.h's LayerTensorSource).
  void build(const ImageClassifierConfig& config, const LoadOptions& options,
             const std::function<at::Tensor(const std::string&, std::vector<int64_t>, ParamInit,
                                            const at::Tensor&)>& source);
  struct Downsample {
    at::Tensor norm, weight, bias;
  };
  ImageClassifierConfig config_;
  at::ScalarType dtype_ = at::kFloat;
  at::Device device_ = at::kCPU;
  at::Tensor patch_weight_, patch_bias_;
  std::vector<std::vector<std::unique_ptr<DecoderLayer>>> stage_layers_;
  std::vector<Downsample> downsample_;  // [s - 1] sits before stage s >= 1
  std::vector<RotaryEmbedding> rope_;   // per stage (head dims differ)
  at::Tensor norm_;
  std::unique_ptr<LinearSlot> score_;
};

}  // namespace lowrank::nn
