// LowrankMixerForSequenceClassification: the trunk of LowrankMixerForCausalLM (model.h: token
// embedding, decoder layers of token mixer + SwiGLU, final RMSNorm) without its language-model
// head, followed by a pooling over positions and a linear head, as transformers'
// LlamaForSequenceClassification (`self.model = LlamaModel(config); self.score = nn.Linear(hidden,
// num_labels, bias=False)`):
//   h = RMSNorm(h_L) ∈ ℝ^{T×H}                     (Model::hidden_states)
//   pooled = Σ_{t valid} h_t / |valid|              ("mean")
//          | h_{t*}, t* = the last valid position   ("last": transformers' rule, which picks the
//                                                    rightmost non-padding token)
//   logits = W_score · pooled,  W_score ∈ ℝ^{num_labels×H}   (tensor "score.weight")
// Unlike the language model, bidirectional mixers are allowed (each layer's mixer is a per-layer
// choice, token_mixer.h). Attention is causal, as in transformers' classifier, unless its option
// `causal` is false (attention.h): then it attends to every real token, as the encoders of LRA and
// ViT do (what `lowrank task train` sets by default, with_bidirectional_attention).
// Padding may sit on either side: the pooling reads the mask, and the trunk gets the mask (its
// positions count the real tokens before each token). The trainer (train/classify.h) pads on the
// right, so that a causal mixer's outputs at real tokens never depend on padding.
// Deviation from transformers: the pooling "mean" (its default here) is not one of transformers'
// (which pools the last token only); a bidirectional mixer has no reason to prefer the last token.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <ATen/ATen.h>

#include "lowrank/nn/config.h"
#include "lowrank/nn/linear_slot.h"
#include "lowrank/nn/model.h"
#include "lowrank/nn/token_mixer.h"

namespace lowrank::nn {

// Pools hidden states h [B, T, H] over the positions where `valid` [B, T] (bool; undefined: all) is
// true, by `pooling` ("mean" or "last") -> [B, H]. Throws InvalidArgument for an unknown pooling,
// mismatched shapes, or a row with no valid position.
at::Tensor pool_hidden_states(const at::Tensor& h, const at::Tensor& valid, const std::string& pooling);

// config.json of a LowrankMixerForSequenceClassification of these sizes (Llama's defaults for the
// rest: RMSNorm eps 1e-5, RoPE θ 10000, SiLU, initializer_range 0.02, untied, float32) with
// `mixer_keys` {"layer_mixers", "mixer_config"}, `num_labels` and `pooling`; callers add their keys.
Json sequence_classifier_config(int64_t vocab_size, int64_t hidden_size, int64_t intermediate_size,
                                int64_t num_layers, int64_t num_heads, int64_t max_positions,
                                const Json& mixer_keys, int64_t num_labels, const std::string& pooling);

class SequenceClassifier {
 public:
  // Loads a LowrankMixerForSequenceClassification directory (config.json + safetensors). Throws as
  // Model::load: NotFound for a missing file or tensor, InvalidArgument for a tensor of the wrong
  // shape (naming the tensor and its file) or another architecture.
  static SequenceClassifier load(const std::filesystem::path& dir, const LoadOptions& options = {});
  // A fresh classifier: the trunk as Model::random, the head N(0, initializer_range).
  static SequenceClassifier random(const ModelConfig& config, uint64_t seed, const LoadOptions& options = {});

  SequenceClassifier(SequenceClassifier&&) noexcept;
  SequenceClassifier& operator=(SequenceClassifier&&) noexcept;
  ~SequenceClassifier();

  // config.json (unknown keys kept) and model.safetensors: the trunk's tensors and score.weight.
  void save(const std::filesystem::path& dir, std::optional<at::ScalarType> dtype = std::nullopt) const;

  const ModelConfig& config() const { return trunk_.config(); }
  const Model& trunk() const { return trunk_; }
  Model& trunk() { return trunk_; }

  // input_ids [B, T] int64, attention_mask [B, T] (1 = token, 0 = padding, on either side;
  // undefined: all tokens) -> pooled hidden states [B, hidden] / logits [B, num_labels], in the
  // compute dtype; differentiable in every tensor.
  at::Tensor pooled(const at::Tensor& input_ids, const at::Tensor& attention_mask = {}) const;
  at::Tensor forward(const at::Tensor& input_ids, const at::Tensor& attention_mask = {}) const;
  // The head applied at every position instead of to a pooled state: [B, T, num_labels] (the
  // per-token projection of a multi-vector encoder, multivector.h).
  at::Tensor token_outputs(const at::Tensor& input_ids, const at::Tensor& attention_mask = {}) const;

  // The trunk's slots, then "score".
  std::vector<LinearSlot*> slots();
  // The trunk's tensors, then score.weight (what save writes; shared storage).
  NamedTensors named_tensors() const;
  // The trunk's mixers' per-tensor optimizer overrides.
  std::vector<ParamGroup> param_groups() const { return trunk_.param_groups(); }

 private:
  SequenceClassifier(Model trunk, std::unique_ptr<LinearSlot> score);

  Model trunk_;
  std::unique_ptr<LinearSlot> score_;
};

}  // namespace lowrank::nn
