// One decoder layer of nn::Model (internal: model.cpp builds and runs it, decode_step.cpp runs its
// fused single-token twin). The equations are in model.h; the token mixer's contract in
// token_mixer.h.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <ATen/ATen.h>

#include "lowrank/nn/attention.h"
#include "lowrank/nn/config.h"
#include "lowrank/nn/linear_slot.h"
#include "lowrank/nn/token_mixer.h"

namespace lowrank::nn {

struct DecoderLayer {
  at::Tensor input_layernorm;           // [hidden]
  at::Tensor post_attention_layernorm;  // [hidden]
  std::unique_ptr<TokenMixer> mixer;
  // `mixer` when it is attention (what the fused decode step runs), else null.
  const Attention* attention = nullptr;
  LinearSlot gate_proj, up_proj, down_proj;
  int64_t window = 0;  // sliding window (0: full causal)
  // false: a MambaBlock, h' = h + Mixer(RMSNorm(h)) alone (input_layernorm is its `norm`;
  // post_attention_layernorm and the MLP slots are empty and never listed).
  bool has_mlp = true;
};

// The pieces of nn::Model's trunk that other trunks reuse (image_classifier.h builds its stages from
// them). `source` gives tensor `name` of `shape` (loaded, or fresh by `init`, as model.cpp's).
using LayerTensorSource = std::function<at::Tensor(const std::string& name, std::vector<int64_t> shape,
                                                   ParamInit init, const at::Tensor& value)>;
// Layer `layer` of `config` (its hidden and intermediate sizes, mixer, window), named
// model.layers.<layer>.*.
std::unique_ptr<DecoderLayer> build_decoder_layer(const ModelConfig& config, int64_t layer,
                                                  const LayerTensorSource& source);
// h + Mixer(RMSNorm(h)), then the SwiGLU half (decoder_layer_mlp); a plain forward (no decode state).
at::Tensor decoder_layer_forward(const DecoderLayer& layer, const ModelConfig& config, const at::Tensor& h,
                                 const MixerContext& context);
// h + W_down (act(W_gate x) ⊙ W_up x), x = RMSNorm(h): the layer's MLP half.
at::Tensor decoder_layer_mlp(const DecoderLayer& layer, const ModelConfig& config, const at::Tensor& h,
                             const AdapterRouting* routing);
// The layer's tensors under their file names (as Model::named_tensors lists them).
NamedTensors decoder_layer_tensors(const DecoderLayer& layer, int64_t index);

}  // namespace lowrank::nn
