// The Llama-family decoder-only transformer (Touvron et al., 2023, "LLaMA: Open and Efficient
// Foundation Language Models", arXiv:2302.13971), as transformers' LlamaForCausalLM,
// MistralForCausalLM and Qwen2ForCausalLM compute it:
//   h_0 = E[ids]
//   h' = h + Attn(RMSNorm(h))               (attention.h; pre-norm residual)
//   h  = h' + W_down (act(W_gate h'') ⊙ W_up h''),  h'' = RMSNorm(h')   (SwiGLU, Shazeer 2020)
//   logits = W_lm RMSNorm(h_L)              (W_lm = E when tie_word_embeddings)
// RMSNorm (Zhang & Sennrich, 2019): w ⊙ x / sqrt(mean(x²) + eps), computed in float32 for
// half-precision inputs and cast back before the weight, as transformers does.
// Loaded from and saved to the Hugging Face layout (config.json, model.safetensors or shards +
// index, HF tensor names). Every projection is a LinearSlot (linear_slot.h) reachable by its HF
// module name through slots().
// LowrankMixerForCausalLM (config.h) is the same model with another token mixer in place of Attn in
// some or all layers (token_mixer.h): its slots are model.layers.N.mixer.<projection> and its other
// tensors model.layers.N.mixer.<name>; attention layers keep self_attn.*.
// Deviations: RMSNorm of a float64 model stays in float64 (transformers would drop to float32);
// position ids default to the count of real tokens before each token (transformers' generate()
// convention) whenever an attention mask or a cache is given.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <ATen/ATen.h>

#include "lowrank/nn/config.h"
#include "lowrank/nn/kv_cache.h"
#include "lowrank/nn/linear_slot.h"
#include "lowrank/nn/rope.h"
#include "lowrank/nn/token_mixer.h"

namespace lowrank::nn {

// Reads the stored tensor `name` (full HF name) in its stored dtype, on the CPU, and marks it as
// used. Throws NotFound naming the tensor and the checkpoint's files.
using StoredTensorReader = std::function<at::Tensor(const std::string& name)>;
// Builds the base operator of slot `slot` ([out, in], with a bias when `bias`) from stored tensors
// other than the dense weight (compressed models, compress/format.h), or returns null to load the
// dense `<slot>.weight` as usual. The operator must compute in `dtype` on `device`.
using OperatorLoader = std::function<std::shared_ptr<BaseOperator>(
    const std::string& slot, int64_t out, int64_t in, bool bias, const StoredTensorReader& read)>;

struct LoadOptions {
  at::ScalarType dtype = at::kFloat;  // compute dtype: stored f32/bf16/f16 weights convert to it
  at::Device device = at::kCPU;
  OperatorLoader operator_loader = nullptr;  // consulted for every slot (a tied lm_head too)
};

// Whether Model::forward may take the fused single-token decode step (decode_step.h).
enum class FusedDecode {
  kAuto,     // when the step qualifies (decode_step.h lists the conditions), else the ATen path
  kOff,      // always the ATen path (the reference the fused step is tested against)
  kRequire,  // the fused step, or InvalidArgument saying why it does not apply
};

struct ForwardOptions {
  // [B, T] for the new tokens: 1/true = token, 0/false = padding (left padding for batches of
  // different lengths). Undefined: all tokens. With a cache, earlier steps' masks are remembered.
  at::Tensor attention_mask;
  // [B, T] int64. Undefined: without a cache and mask 0..T-1; otherwise the number of real tokens
  // before each token (padding gets 1, as transformers' generate()).
  at::Tensor position_ids;
  // When given, the T new positions are appended to it and attend to everything it holds.
  KVStore* cache = nullptr;
  // Logits for the last position only ([B, 1, V]): what generation needs.
  bool last_position_only = false;
  // Per-row adapters for a batch mixing adapters (linear_slot.h); null: every attached adapter
  // applies to every row. Every name must be an adapter attached to the model, checked once by
  // the caller, so forward does not look names up in every slot at every step; or, while a
  // RoutedAdapterScope is open (routed_adapter_source.h: the serving engine, whose adapters live
  // in its memory pool), an adapter of the scope's source.
  const AdapterRouting* routing = nullptr;
  FusedDecode fused_decode = FusedDecode::kAuto;
  // When given, each decoder layer's output hidden state [B, T, hidden] (before the final norm) is
  // appended, in layer order: the per-layer features of feature distillation (compress/pela.h).
  std::vector<at::Tensor>* layer_outputs = nullptr;
};

struct DecoderLayer;
class TokenMixer;
class Attention;

class Model {
 public:
  // Loads `dir` (config.json + model.safetensors, or shards + model.safetensors.index.json).
  // Throws NotFound for a missing file or tensor, InvalidArgument for a bad config key or a
  // tensor of the wrong shape or dtype (naming the tensor and its file), Unsupported for another
  // architecture. Tensors the model does not use are ignored with a warning.
  static Model load(const std::filesystem::path& dir, const LoadOptions& options = {});
  // A freshly initialised model as transformers' _init_weights: linear and embedding weights
  // N(0, initializer_range = 0.02 unless the config says otherwise), biases 0, norms 1.
  static Model random(const ModelConfig& config, uint64_t seed, const LoadOptions& options = {});

  Model(Model&&) noexcept;
  Model& operator=(Model&&) noexcept;
  ~Model();

  // Writes config.json and model.safetensors (HF tensor names, atomically each) into `dir`,
  // created if needed; floating tensors converted to `dtype` (default: the compute dtype), integer
  // ones (packed quantised weights, indices) stored as they are. A tied lm_head
  // is not written (as transformers). Only dense base operators are HF-loadable; other operators
  // write their own tensor names. Throws IoError.
  void save(const std::filesystem::path& dir, std::optional<at::ScalarType> dtype = std::nullopt) const;

  const ModelConfig& config() const { return config_; }
  at::ScalarType dtype() const { return dtype_; }
  at::Device device() const { return device_; }

  // A LowrankMixerForSequenceClassification directory loads here as its trunk alone (no lm_head,
  // forward() refused; hidden_states() works): classifier.h adds the pooling and the head.
  // input_ids [B, T] int64 -> logits [B, T, vocab] (or [B, 1, vocab]) in the compute dtype.
  // Differentiable with respect to every tensor of the model (run under at::NoGradGuard or
  // c10::InferenceMode for inference). Thread-safe (const) as long as no slot is being changed;
  // each thread needs its own cache. Throws InvalidArgument for ids out of range or mismatched
  // shapes.
  at::Tensor forward(const at::Tensor& input_ids, const ForwardOptions& options = {}) const;
  // Why the fused decode step (decode_step.h) cannot serve a step of this model as it stands (its
  // dtype, device, an operator or adapter without a raw row product), or empty when it can; `routing`
  // as in ForwardOptions.
  std::string fused_decode_obstacle(const AdapterRouting* routing = nullptr) const;
  // The final-norm hidden states [B, T, hidden] (forward without the lm_head).
  at::Tensor hidden_states(const at::Tensor& input_ids, const ForwardOptions& options = {}) const;
  // A cache for `batch` sequences with room for `capacity` positions (it grows if exceeded): keys
  // and values for the attention layers, and each other layer's mixer decode state (token_mixer.h).
  // Throws Unsupported naming the layer and the mixer when a mixer keeps neither.
  KVCache new_cache(int64_t batch, int64_t capacity) const;
  // The token mixer of layer `layer` (token_mixer.h). Throws InvalidArgument for a layer out of range.
  const TokenMixer& mixer(int64_t layer) const;

  // Every linear slot in module order: per layer the mixer's (attention: q, k, v, o), gate, up,
  // down; then lm_head (absent from a classifier's trunk: config().has_lm_head()).
  std::vector<LinearSlot*> slots();
  std::vector<const LinearSlot*> slots() const;
  // Throws NotFound naming the slot.
  LinearSlot& slot(std::string_view name);
  // The slot called `name`, or null.
  const LinearSlot* find_slot(std::string_view name) const;
  // Layer `layer`'s mixer when it is attention, else null (throws InvalidArgument for no such layer).
  Attention* attention(int64_t layer);
  // The model's tensors under their HF names (embedding, norms, every slot's base tensors, the
  // mixers' other tensors;
  // lm_head.weight omitted when tied): what save() writes. They share storage with the model.
  NamedTensors named_tensors() const;
  // The token mixers' per-tensor optimizer overrides (TokenMixer::param_groups), layer by layer.
  std::vector<ParamGroup> param_groups() const;

 private:
  Model();
  void build(const ModelConfig& config, const LoadOptions& options);
  // The fused single-token step (defined in decode_step.cpp), or nullopt when `options` or the model
  // do not qualify (InvalidArgument instead under FusedDecode::kRequire).
  std::optional<at::Tensor> decode_step(const at::Tensor& input_ids, const ForwardOptions& options) const;

  ModelConfig config_;
  at::ScalarType dtype_ = at::kFloat;
  at::Device device_ = at::kCPU;
  at::Tensor embed_tokens_;  // [vocab, hidden]
  std::vector<std::unique_ptr<DecoderLayer>> layers_;
  at::Tensor norm_;  // [hidden]
  std::unique_ptr<LinearSlot> lm_head_;
  RotaryEmbedding rope_;
};

// Copies the files a user of a model directory expects beside the weights (tokenizer.json,
// tokenizer_config.json, generation_config.json, special_tokens_map.json) from `source_dir` into
// `dir` where they exist. Throws IoError naming the file.
void copy_model_side_files(const std::filesystem::path& source_dir, const std::filesystem::path& dir);

// Writes `config` as config.json (its "dtype", and "torch_dtype" when present, set to `dtype`) and
// `tensors` as model.safetensors (floating ones converted to `dtype`, integer ones as they are),
// atomically each, into `dir` (created if needed): Model::save, and the classifiers beside their
// heads. Throws IoError.
void save_model_directory(const std::filesystem::path& dir, Json config, const NamedTensors& tensors,
                          at::ScalarType dtype);

// w ⊙ x / sqrt(mean(x², -1) + eps); see the file comment for the dtype rule.
at::Tensor rms_norm(const at::Tensor& x, const at::Tensor& weight, double eps);

}  // namespace lowrank::nn
