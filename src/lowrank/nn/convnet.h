// LowrankConvNetForImageClassification: a small hierarchical ConvNet on feature maps [B, C, H, W],
// in the MetaNeXt layout of InceptionNeXt (Yu, Zhou, Yan & Wang, 2024, arXiv:2303.16900, §3.1;
// timm's `MetaNeXt`, huggingface/pytorch-image-models timm/models/inception_next.py), with three
// kinds of block and three depthwise token mixers, for the ConvNet rows of the mixer study.
//   stem:        h = BN(Conv_{p×p, stride p}(x) + b)                  (stem.conv, stem.norm)
//   stage s > 0: h = Conv_{2×2, stride 2}(BN(h)) + b                  (stages.<s>.downsample.{norm,conv})
//   blocks (stages.<s>.blocks.<j>, γ the layer scale, init 1e-6):
//     "metanext"    h + γ ⊙ MLP(BN(mixer(h)))                   (timm `MetaNeXtBlock`; MLP = fc2 GELU fc1,
//                                                                 ratio 4, the 1×1 convs as linear maps)
//     "convnext"    h + γ ⊙ MLP(LN(mixer(h)))                   (timm `ConvNeXtBlock`, timm/models/
//                                                                 convnext.py: LN over channels, eps 1e-6)
//     "unireplknet" h + γ ⊙ BN(W_2 · GRN(GELU(W_1 · SE(BN(mixer(h))) + b_1)))
//                                     (AILab-CVC/UniRepLKNet, unireplknet.py, `UniRepLKNetBlock`:
//                                      SE with C/4 hidden units and ReLU / sigmoid, GRN of ConvNeXt V2
//                                      (γ_g·N(x) + 1) ⊙ x + β_g with N(x) = ‖x‖_{H,W} / (mean_C ‖x‖_{H,W}
//                                      + 1e-6), W_2 without bias followed by a BN, as the authors'
//                                      training form)
//   mixers:      "inception_dw" (mix/inception_dw.h), "dwconv" (a K×K depthwise conv, K = 7 by
//                default: ConvNeXt's; with a bias except in the UniRepLKNet block, where a BN follows,
//                as the authors'), "dilated_reparam" (mix/dilated_reparam.h, K = 13 by default)
//   head:        logits = fc2(LN(GELU(fc1(mean_{H,W} h))))  (timm `MlpClassifierHead`, hidden 3·C,
//                LN eps 1e-6; tensors head.{fc1,norm,fc2})
// BatchNorm (batch_norm.h) uses batch statistics and updates its running statistics in training
// mode (forward(..., training = true)) and the running statistics otherwise.
// Deploy form (config "deploy": true, `deploy()`, `lowrank export --deploy`): every
// dilated_reparam mixer merged into one biased DW_K; in UniRepLKNet blocks also the block's BN
// folded into the mixer and W_2's BN, γ and GRN's β folded into W_2 and a new bias, as the
// authors' `UniRepLKNetBlock.reparameterize` (GRN keeps only γ_g). Other BNs stay (they are cheap
// and MetaNeXt's sits behind an identity branch).
// config.json: {"architectures": ["LowrankConvNetForImageClassification"],
//   "model_type": "lowrank_convnet", "image_size": n | [h, w], "num_channels", "patch_size",
//   "num_labels", "stages": [{"depth", "hidden_size", "block", "mixer", "kernel_size", "mlp_ratio",
//   "square_kernel_size", "band_kernel_size", "branch_ratio"}], "layer_scale_init" (1e-6),
//   "head_mlp_ratio" (3), "batch_norm_eps" (1e-5), "initializer_range" (0.02), "deploy" (false)}
//   (unknown top-level keys kept on save).
// Deviations: the UniRepLKNet net's stem, downsampling layers and head are MetaNeXt's (the
// authors' use 3×3 stride-2 convs with LayerNorm and an LN + linear head); only its blocks are
// the authors'. Fresh weights are N(0, initializer_range), not truncated (timm: trunc_normal_,
// std 0.02, which cuts at ±2, i.e. ±100σ: the same distribution to all practical purposes).
// No stochastic depth.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <ATen/ATen.h>

#include "lowrank/core/json.h"
#include "lowrank/mix/inception_dw.h"
#include "lowrank/nn/batch_norm.h"
#include "lowrank/nn/model.h"

namespace lowrank::nn {

struct ConvStage {
  int64_t depth = 0;
  int64_t hidden_size = 0;
  std::string block = "metanext";      // metanext | convnext | unireplknet
  std::string mixer = "inception_dw";  // inception_dw | dwconv | dilated_reparam
  int64_t kernel_size = 0;             // dwconv / dilated_reparam K (0: unused)
  double mlp_ratio = 4;
  mix::InceptionDWOptions inception;
  int64_t height = 0, width = 0;  // the stage's feature map (derived)
};

struct ConvNetConfig {
  int64_t image_height = 0, image_width = 0;
  int64_t num_channels = 1;
  int64_t patch_size = 0;
  int64_t num_labels = 0;
  double layer_scale_init = 1e-6;
  double head_mlp_ratio = 3;
  double batch_norm_eps = 1e-5;
  double initializer_range = 0.02;
  bool deploy = false;
  std::vector<ConvStage> stages;
  Json raw;

  // Throws InvalidArgument naming the key ("stages[1].kernel_size", ...) and value for a missing,
  // mistyped, unknown or inconsistent entry; a dilated_reparam kernel size outside the table lists
  // the supported ones.
  static ConvNetConfig from_json(const Json& json, std::string_view what);
  static ConvNetConfig load(const std::filesystem::path& dir);
  int64_t num_blocks() const;
};

// The block and mixer names a stage accepts.
const std::vector<std::string>& convnet_blocks();
const std::vector<std::string>& convnet_mixers();
bool is_convnet_config(const Json& config);

struct ConvBlock;

class ConvNet {
 public:
  static ConvNet load(const std::filesystem::path& dir, const LoadOptions& options = {});
  static ConvNet random(const ConvNetConfig& config, uint64_t seed, const LoadOptions& options = {});
  ConvNet(ConvNet&&) noexcept;
  ConvNet& operator=(ConvNet&&) noexcept;
  ~ConvNet();

  void save(const std::filesystem::path& dir, std::optional<at::ScalarType> dtype = std::nullopt) const;
  const ConvNetConfig& config() const { return config_; }

  // pixels [B, C, H, W] -> logits [B, num_labels]. `training`: BatchNorm on batch statistics, its
  // running statistics updated.
  at::Tensor forward(const at::Tensor& pixels, bool training = false) const;
  // The same up to the pooled features [B, C_last] (before the head).
  at::Tensor pooled(const at::Tensor& pixels, bool training = false) const;

  // Everything save writes (parameters and running statistics, module by module).
  NamedTensors named_tensors() const;
  // The trained tensors / the BatchNorms' running statistics.
  NamedTensors named_parameters() const;
  NamedTensors named_buffers() const;
  // Weight decay 0 for every tensor of at most one dimension (biases, norms, layer scales, GRN),
  // as timm's optimiser factory does for these nets (param_groups_weight_decay).
  std::vector<ParamGroup> param_groups() const;

  // The deploy form (see the file comment): a model of config "deploy": true whose eval-mode
  // forward equals this one's. A deployed model returns a copy of itself.
  ConvNet deploy() const;

 private:
  ConvNet();
  void build(const ConvNetConfig& config, const LoadOptions& options, const ConvTensorSource& source);
  NamedTensors collect(bool parameters, bool buffers) const;
  ConvNetConfig config_;
  at::ScalarType dtype_ = at::kFloat;
  at::Device device_ = at::kCPU;
  at::Tensor stem_weight_, stem_bias_;
  BatchNorm stem_norm_;
  struct Downsample {
    BatchNorm norm;
    at::Tensor weight, bias;
  };
  std::vector<Downsample> downsample_;  // [s − 1] before stage s ≥ 1
  std::vector<std::vector<std::unique_ptr<ConvBlock>>> blocks_;
  at::Tensor head_fc1_weight_, head_fc1_bias_, head_norm_weight_, head_norm_bias_, head_fc2_weight_,
      head_fc2_bias_;
};

}  // namespace lowrank::nn
