// The configuration of a Llama-family decoder, read from a Hugging Face `config.json`.
//
// Supported: LlamaForCausalLM (Touvron et al., 2023, "LLaMA: Open and Efficient Foundation Language
// Models", arXiv:2302.13971), MistralForCausalLM (Jiang et al., 2023, arXiv:2310.06825) and
// Qwen2ForCausalLM (Yang et al., 2024, arXiv:2407.10671), and lowrank's own
// LowrankMixerForCausalLM (model_type "lowrank_mixer"): the Llama layout with a token mixer chosen
// per layer (token_mixer.h; docs/mixers.md) by two more keys,
//   "layer_mixers": "name" | ["name", ...]   (one for every layer, or one per layer; default
//                                             "attention")
//   "mixer_config": {"name": {...}, ...}     (each mixer's options; absent: {})
// and LowrankMixerForSequenceClassification (model_type "lowrank_mixer" as well; classifier.h): the
// same trunk without the language-model head, bidirectional mixers allowed, and
//   "num_labels": n                          (or as many labels as "id2label" holds; n >= 2)
//   "pooling": "mean" | "last"               (default "mean")
// and MambaForCausalLM (Gu & Dao, 2023, arXiv:2312.00752; model_type "mamba", transformers'
// MambaConfig): a stack of residual blocks h' = h + Mamba(RMSNorm(h)) with no MLP half, every layer
// the "mamba" mixer (mix/mamba.h), whose options (state_size, expand, conv_kernel, time_step_rank,
// use_bias, use_conv_bias, time_step_*) are read from the top level of config.json into
// mixer_config.mamba; layer_norm_epsilon is the norms' eps, tie_word_embeddings defaults to true,
// hidden_act must be silu; residual_in_fp32 is read but changes nothing at float32.
// Keys and defaults follow transformers'
// LlamaConfig / MistralConfig / Qwen2Config and RotaryEmbeddingConfigMixin (transformers 5.x):
// RoPE parameters are read from `rope_parameters` (new) or `rope_scaling` + `rope_theta` (old).
// Deviations: the five size keys (vocab_size, hidden_size, intermediate_size, num_hidden_layers,
// num_attention_heads) are required instead of defaulting to a 7B shape; unknown RoPE types,
// partial rotary factors and per-layer-type RoPE dictionaries are rejected (Unsupported).
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "lowrank/core/json.h"

namespace lowrank::nn {

enum class Architecture {
  kLlama,
  kMistral,
  kQwen2,
  kLowrankMixer,
  kLowrankMixerSequenceClassification,
  kMamba
};

// "LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM", "LowrankMixerForCausalLM",
// "LowrankMixerForSequenceClassification", "MambaForCausalLM".
std::string_view architecture_name(Architecture arch);
// The list above as one comma-separated string (for error messages and docs).
std::string supported_architectures();

// Rotary position embedding parameters (transformers' `rope_parameters` after standardisation).
struct RopeConfig {
  std::string type = "default";  // default | linear | dynamic | yarn | llama3
  double theta = 10000.0;        // rope_theta
  double factor = 1.0;           // linear, dynamic, yarn, llama3
  // llama3 (Llama 3.1): the smooth interpolation band between low and high frequencies.
  double low_freq_factor = 1.0;
  double high_freq_factor = 4.0;
  // llama3 and yarn: the pre-extension context length (defaults to max_position_embeddings; a
  // top-level `original_max_position_embeddings` key wins, as in transformers).
  int64_t original_max_position_embeddings = 0;
  // yarn (Peng et al., 2023, arXiv:2309.00071).
  std::optional<double> attention_factor;  // explicit mscale applied to cos/sin
  double beta_fast = 32.0;
  double beta_slow = 1.0;
  double mscale = 0.0;          // 0: absent (transformers tests `if mscale and mscale_all_dim`)
  double mscale_all_dim = 0.0;  // 0: absent
  bool truncate = true;         // floor/ceil the correction range
};

struct ModelConfig {
  Architecture architecture = Architecture::kLlama;
  std::string model_type;  // "llama", "mistral", "qwen2", "lowrank_mixer", "mamba"
  int64_t vocab_size = 0;
  int64_t hidden_size = 0;
  int64_t intermediate_size = 0;
  int64_t num_hidden_layers = 0;
  int64_t num_attention_heads = 0;
  int64_t num_key_value_heads = 0;
  int64_t head_dim = 0;  // `head_dim` key, else hidden_size / num_attention_heads
  int64_t max_position_embeddings = 0;
  double rms_norm_eps = 1e-6;
  std::string hidden_act = "silu";  // silu (swish), gelu, gelu_pytorch_tanh
  bool qkv_bias = false;            // Llama: attention_bias; Qwen2: always; Mistral: never
  bool o_bias = false;              // Llama: attention_bias; others: never
  bool mlp_bias = false;            // Llama: mlp_bias; others: never
  bool tie_word_embeddings = false;
  RopeConfig rope;
  // Sliding-window attention per layer: 0 = full causal attention, W > 0 = each query sees
  // itself and the W - 1 tokens before it (Mistral: every layer; Qwen2: layers >= max_window_layers
  // when use_sliding_window, or as `layer_types` says).
  std::vector<int64_t> sliding_window;
  // The token mixer of each layer, a name of mixer_registry() (token_mixer.h): "attention" for
  // every layer of the Hugging Face architectures.
  std::vector<std::string> layer_mixers;
  // `mixer_config` as read (an object of objects), {} when absent.
  Json mixer_config = Json::object();
  // LowrankMixerForSequenceClassification only: the number of classes and how the trunk's
  // hidden states are pooled into one vector per sequence ("mean" or "last"; classifier.h).
  int64_t num_labels = 0;
  std::string pooling;
  std::optional<int64_t> bos_token_id;
  std::optional<int64_t> pad_token_id;
  std::vector<int64_t> eos_token_ids;  // `eos_token_id` (an int or a list)
  Json raw;                            // config.json as read; save() writes it back (unknown keys kept)

  // Parses and validates a config object. `what` names the source ("DIR/config.json") in
  // errors: InvalidArgument for a missing or mistyped key or an inconsistent value, Unsupported
  // for another architecture or a RoPE variant lowrank does not implement.
  static ModelConfig from_json(const Json& json, std::string_view what);
  // Reads `path/config.json` (or `path` itself when it is a file).
  static ModelConfig load(const std::filesystem::path& path);

  // The options of mixer `name`: mixer_config[name], or an empty object.
  Json mixer_options(const std::string& name) const;
  // Whether every layer's mixer is attention (what the fused decode step and the KV cache serve).
  bool all_attention() const;
  // Whether the model ends in a language-model head (every architecture but the classifiers, which
  // also allow bidirectional mixers).
  bool has_lm_head() const { return architecture != Architecture::kLowrankMixerSequenceClassification; }

  int64_t num_key_value_groups() const { return num_attention_heads / num_key_value_heads; }
  int64_t q_size() const { return num_attention_heads * head_dim; }
  int64_t kv_size() const { return num_key_value_heads * head_dim; }
};

}  // namespace lowrank::nn
