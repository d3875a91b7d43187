// Parsing of Hugging Face `config.json` for the Llama family; see config.h for the reference
// classes (transformers' LlamaConfig, MistralConfig, Qwen2Config, RotaryEmbeddingConfigMixin).
#include "lowrank/nn/config.h"

#include <algorithm>
#include <cmath>
#include <set>

#include "lowrank/core/error.h"
#include "lowrank/nn/token_mixer.h"

namespace lowrank::nn {
namespace {

namespace fs = std::filesystem;

constexpr Architecture kArchitectures[] = {Architecture::kLlama,
                                           Architecture::kMistral,
                                           Architecture::kQwen2,
                                           Architecture::kLowrankMixer,
                                           Architecture::kLowrankMixerSequenceClassification,
                                           Architecture::kMamba};
constexpr std::string_view kImageClassifier = "LowrankMixerForImageClassification";
constexpr std::string_view kRopeTypes = "default, linear, dynamic, yarn, llama3";

// Strictly typed readers: a JSON number where an integer is wanted must be integral, a bool is
// never a number, null counts as absent. Messages name the source and the key.
const Json* find(const Json& obj, std::string_view key) {
  auto it = obj.find(key);
  if (it == obj.end() || it->is_null()) return nullptr;
  return &*it;
}

[[noreturn]] void wrong_type(std::string_view what, std::string_view key, const Json& value,
                             std::string_view expected) {
  throw InvalidArgument(str(what, ": key \"", key, "\" must be ", expected, ", got ", value.dump(), " (",
                            value.type_name(), ")"));
}

int64_t as_int(const Json& value, std::string_view what, std::string_view key) {
  if (value.is_number_integer()) return value.get<int64_t>();
  if (value.is_number_float()) {
    double d = value.get<double>();
    if (std::isfinite(d) && d == std::floor(d) && std::abs(d) < 9e15) return static_cast<int64_t>(d);
  }
  wrong_type(what, key, value, "an integer");
}

double as_double(const Json& value, std::string_view what, std::string_view key) {
  if (value.is_number()) return value.get<double>();
  wrong_type(what, key, value, "a number");
}

std::optional<int64_t> opt_int(const Json& obj, std::string_view key, std::string_view what) {
  const Json* v = find(obj, key);
  if (!v) return std::nullopt;
  return as_int(*v, what, key);
}

int64_t req_int(const Json& obj, std::string_view key, std::string_view what) {
  auto v = opt_int(obj, key, what);
  LR_CHECK(v.has_value(), InvalidArgument, what, ": missing key \"", key, "\"");
  return *v;
}

std::optional<double> opt_double(const Json& obj, std::string_view key, std::string_view what) {
  const Json* v = find(obj, key);
  if (!v) return std::nullopt;
  return as_double(*v, what, key);
}

bool get_bool(const Json& obj, std::string_view key, bool fallback, std::string_view what) {
  const Json* v = find(obj, key);
  if (!v) return fallback;
  if (!v->is_boolean()) wrong_type(what, key, *v, "true or false");
  return v->get<bool>();
}

std::optional<std::string> opt_string(const Json& obj, std::string_view key, std::string_view what) {
  const Json* v = find(obj, key);
  if (!v) return std::nullopt;
  if (!v->is_string()) wrong_type(what, key, *v, "a string");
  return v->get<std::string>();
}

int64_t positive(int64_t value, std::string_view what, std::string_view key) {
  LR_CHECK(value > 0, InvalidArgument, what, ": key \"", key, "\" must be positive, got ", value);
  return value;
}

Architecture parse_architecture(const Json& j, std::string_view what) {
  if (const Json* archs = find(j, "architectures")) {
    if (!archs->is_array()) wrong_type(what, "architectures", *archs, "a list of strings");
    for (const Json& a : *archs) {
      if (!a.is_string()) wrong_type(what, "architectures", *archs, "a list of strings");
      for (Architecture arch : kArchitectures)
        if (a.get<std::string>() == architecture_name(arch)) return arch;
      // lowrank's own image model has no token embedding: name it rather than call it unknown.
      LR_CHECK(a.get<std::string>() != kImageClassifier, Unsupported, what, ": ", kImageClassifier,
               " is an image classifier (nn/image_classifier.h: patches of pixels, not tokens); a verb that "
               "reads token models cannot load it (image classifiers: lowrank task train, lowrank eval "
               "--task, lowrank inspect)");
    }
    if (!archs->empty())
      throw Unsupported(str(what, ": architecture ", archs->dump(),
                            " is not supported (supported: ", supported_architectures(), ")"));
  }
  // No "architectures": fall back to model_type, as AutoModelForCausalLM does.
  auto model_type = opt_string(j, "model_type", what);
  LR_CHECK(model_type.has_value(), InvalidArgument, what,
           ": missing keys \"architectures\" and \"model_type\"");
  if (*model_type == "llama") return Architecture::kLlama;
  if (*model_type == "mistral") return Architecture::kMistral;
  if (*model_type == "qwen2") return Architecture::kQwen2;
  if (*model_type == "lowrank_mixer") return Architecture::kLowrankMixer;
  if (*model_type == "mamba") return Architecture::kMamba;
  throw Unsupported(str(what, ": model_type \"", *model_type,
                        "\" is not supported (supported: ", supported_architectures(), ")"));
}

// transformers' convert_rope_params_to_dict + standardize_rope_params, then the per-type keys the
// init functions of modeling_rope_utils.py read.
RopeConfig parse_rope(const Json& j, int64_t max_position_embeddings, std::string_view what) {
  RopeConfig rope;
  Json params = Json::object();
  std::string key = "rope_parameters";
  if (const Json* scaling = find(j, "rope_scaling"); scaling && !(scaling->is_object() && scaling->empty())) {
    params = *scaling;
    key = "rope_scaling";
  } else if (const Json* p = find(j, "rope_parameters")) {
    params = *p;
  }
  if (!params.is_object()) wrong_type(what, key, params, "an object");
  const std::string where = str(what, ": \"", key, "\"");
  for (const char* nested : {"full_attention", "sliding_attention"})
    LR_CHECK(!params.contains(nested), Unsupported, where,
             " is nested per layer type; lowrank supports one RoPE for all layers");

  std::optional<double> theta = opt_double(params, "rope_theta", where);
  if (!theta) theta = opt_double(j, "rope_theta", what);
  rope.theta = theta.value_or(10000.0);
  LR_CHECK(rope.theta > 0, InvalidArgument, what, ": rope_theta must be positive, got ", rope.theta);

  auto type = opt_string(params, "rope_type", where);
  if (!type) type = opt_string(params, "type", where);
  rope.type = type.value_or("default");

  std::optional<double> partial = opt_double(params, "partial_rotary_factor", where);
  if (!partial) partial = opt_double(j, "partial_rotary_factor", what);
  LR_CHECK(!partial || *partial == 1.0, Unsupported, what, ": partial_rotary_factor ", partial.value_or(1.0),
           " is not supported (Llama-family models rotate the whole head)");

  auto factor = [&] {
    auto f = opt_double(params, "factor", where);
    LR_CHECK(f.has_value(), InvalidArgument, where, ": rope_type \"", rope.type, "\" needs key \"factor\"");
    LR_CHECK(*f > 0, InvalidArgument, where, ": \"factor\" must be positive, got ", *f);
    return *f;
  };
  auto original_max = [&] {
    // A top-level key wins (Phi3-style configs), else the dict's, else max_position_embeddings.
    std::optional<int64_t> v = opt_int(j, "original_max_position_embeddings", what);
    if (!v) v = opt_int(params, "original_max_position_embeddings", where);
    return positive(v.value_or(max_position_embeddings), what, "original_max_position_embeddings");
  };

  if (rope.type == "default") {
  } else if (rope.type == "linear" || rope.type == "dynamic") {
    rope.factor = factor();
  } else if (rope.type == "llama3") {
    rope.factor = factor();
    auto low = opt_double(params, "low_freq_factor", where);
    auto high = opt_double(params, "high_freq_factor", where);
    LR_CHECK(low && high, InvalidArgument, where,
             ": rope_type \"llama3\" needs keys \"low_freq_factor\" and ", "\"high_freq_factor\"");
    LR_CHECK(*high > *low, InvalidArgument, where, ": high_freq_factor (", *high,
             ") must exceed low_freq_factor (", *low, ")");
    rope.low_freq_factor = *low;
    rope.high_freq_factor = *high;
    rope.original_max_position_embeddings = original_max();
  } else if (rope.type == "yarn") {
    rope.factor = factor();
    rope.original_max_position_embeddings = original_max();
    rope.attention_factor = opt_double(params, "attention_factor", where);
    // `get("beta_fast") or 32`: absent, null and 0 all mean the default.
    rope.beta_fast = opt_double(params, "beta_fast", where).value_or(0.0);
    if (rope.beta_fast == 0.0) rope.beta_fast = 32.0;
    rope.beta_slow = opt_double(params, "beta_slow", where).value_or(0.0);
    if (rope.beta_slow == 0.0) rope.beta_slow = 1.0;
    rope.mscale = opt_double(params, "mscale", where).value_or(0.0);
    rope.mscale_all_dim = opt_double(params, "mscale_all_dim", where).value_or(0.0);
    rope.truncate = get_bool(params, "truncate", true, where);
  } else {
    throw Unsupported(
        str(where, ": rope_type \"", rope.type, "\" is not supported (supported: ", kRopeTypes, ")"));
  }
  return rope;
}

std::vector<int64_t> parse_sliding_window(const Json& j, Architecture arch, int64_t layers,
                                          std::string_view what) {
  std::vector<int64_t> window(layers, 0);
  if (arch == Architecture::kLlama || arch == Architecture::kLowrankMixer) return window;
  auto size_of = [&](int64_t fallback) -> int64_t {
    const Json* v = find(j, "sliding_window");
    if (j.contains("sliding_window") && !v) return 0;  // explicit null: no window
    return v ? positive(as_int(*v, what, "sliding_window"), what, "sliding_window") : fallback;
  };
  if (arch == Architecture::kMistral) {
    // MistralConfig: sliding_window defaults to 4096 and applies to every layer.
    std::fill(window.begin(), window.end(), size_of(4096));
    return window;
  }
  // Qwen2Config: the window exists only with use_sliding_window; which layers use it comes from
  // `layer_types` when present, else from max_window_layers.
  if (!get_bool(j, "use_sliding_window", false, what)) return window;
  const int64_t size = size_of(4096);
  if (const Json* types = find(j, "layer_types")) {
    LR_CHECK(types->is_array() && static_cast<int64_t>(types->size()) == layers, InvalidArgument, what,
             ": key \"layer_types\" must be a list of ", layers, " strings");
    for (int64_t i = 0; i < layers; ++i) {
      const Json& t = (*types)[i];
      LR_CHECK(t == "full_attention" || t == "sliding_attention", InvalidArgument, what, ": layer_types[", i,
               "] is ", t.dump(), " (expected \"full_attention\" or \"sliding_attention\")");
      if (t == "sliding_attention") window[i] = size;
    }
    return window;
  }
  const int64_t max_window_layers = opt_int(j, "max_window_layers", what).value_or(28);
  for (int64_t i = std::max<int64_t>(max_window_layers, 0); i < layers; ++i) window[i] = size;
  return window;
}

// `layer_mixers` and `mixer_config` of a LowrankMixerForCausalLM; checked against the mixer registry
// here, before any tensor is read or built.
void parse_mixers(const Json& j, ModelConfig& c, std::string_view what) {
  c.layer_mixers.assign(static_cast<size_t>(c.num_hidden_layers), "attention");
  if (c.architecture != Architecture::kLowrankMixer &&
      c.architecture != Architecture::kLowrankMixerSequenceClassification)
    return;
  if (const Json* list = find(j, "layer_mixers")) {
    if (list->is_string()) {
      std::fill(c.layer_mixers.begin(), c.layer_mixers.end(), list->get<std::string>());
    } else if (list->is_array()) {
      LR_CHECK(static_cast<int64_t>(list->size()) == c.num_hidden_layers, InvalidArgument, what,
               ": key \"layer_mixers\" lists ", list->size(), " mixers for num_hidden_layers ",
               c.num_hidden_layers, " (give one name for every layer, or one per layer)");
      for (size_t i = 0; i < list->size(); ++i) {
        if (!(*list)[i].is_string())
          wrong_type(what, str("layer_mixers[", i, "]"), (*list)[i], "a mixer name");
        c.layer_mixers[i] = (*list)[i].get<std::string>();
      }
    } else {
      wrong_type(what, "layer_mixers", *list, "a mixer name or a list of one per layer");
    }
  }
  const MixerRegistry& registry = mixer_registry();
  for (size_t i = 0; i < c.layer_mixers.size(); ++i)
    LR_CHECK(registry.contains(c.layer_mixers[i]), InvalidArgument, what, ": layer_mixers[", i, "] is \"",
             c.layer_mixers[i], "\", which is not a known mixer (known: ", registry.known(), ")");
  if (const Json* options = find(j, "mixer_config")) {
    if (!options->is_object())
      wrong_type(what, "mixer_config", *options, "an object of {\"<mixer>\": {...}}");
    for (const auto& [name, value] : options->items())
      if (!value.is_object()) wrong_type(what, str("mixer_config.", name), value, "an object");
    c.mixer_config = *options;
  }
}

// `num_labels` (or the size of `id2label`, as transformers' PretrainedConfig) and `pooling` of a
// LowrankMixerForSequenceClassification.
void parse_classification(const Json& j, ModelConfig& c, std::string_view what) {
  if (c.architecture != Architecture::kLowrankMixerSequenceClassification) return;
  std::optional<int64_t> labels = opt_int(j, "num_labels", what);
  if (!labels)
    if (const Json* id2label = find(j, "id2label")) {
      if (!id2label->is_object()) wrong_type(what, "id2label", *id2label, "an object");
      labels = static_cast<int64_t>(id2label->size());
    }
  LR_CHECK(labels.has_value(), InvalidArgument, what, ": ", architecture_name(c.architecture),
           " needs key \"num_labels\" (or \"id2label\")");
  LR_CHECK(*labels >= 2, InvalidArgument, what, ": key \"num_labels\" must be at least 2, got ", *labels);
  c.num_labels = *labels;
  c.pooling = opt_string(j, "pooling", what).value_or("mean");
  LR_CHECK(c.pooling == "mean" || c.pooling == "last", InvalidArgument, what, ": key \"pooling\" is \"",
           c.pooling, "\" (expected \"mean\" or \"last\")");
}

// MambaForCausalLM: transformers' MambaConfig keys and defaults. The mixer's keys are type-checked
// here and handed to the "mamba" mixer as mixer_config.mamba (mix/mamba.h reads the same names).
void parse_mamba(const Json& j, ModelConfig& c, std::string_view what) {
  c.model_type = "mamba";
  c.vocab_size = positive(req_int(j, "vocab_size", what), what, "vocab_size");
  c.hidden_size = positive(req_int(j, "hidden_size", what), what, "hidden_size");
  c.num_hidden_layers = positive(req_int(j, "num_hidden_layers", what), what, "num_hidden_layers");
  c.rms_norm_eps = opt_double(j, "layer_norm_epsilon", what).value_or(1e-5);
  LR_CHECK(c.rms_norm_eps >= 0, InvalidArgument, what, ": layer_norm_epsilon must be >= 0, got ",
           c.rms_norm_eps);
  c.hidden_act = opt_string(j, "hidden_act", what).value_or("silu");
  LR_CHECK(c.hidden_act == "silu", Unsupported, what, ": hidden_act \"", c.hidden_act,
           "\" is not supported for MambaForCausalLM (silu only)");
  const int64_t expand = positive(opt_int(j, "expand", what).value_or(2), what, "expand");
  c.intermediate_size = expand * c.hidden_size;
  // No attention anywhere: one nominal head (the rotary table is built but never read), and no
  // position limit of the architecture's own.
  c.num_attention_heads = c.num_key_value_heads = 1;
  c.head_dim = 2;
  c.max_position_embeddings = int64_t{1} << 30;
  c.tie_word_embeddings = get_bool(j, "tie_word_embeddings", true, what);
  (void)get_bool(j, "residual_in_fp32", true, what);
  c.sliding_window.assign(static_cast<size_t>(c.num_hidden_layers), 0);
  c.layer_mixers.assign(static_cast<size_t>(c.num_hidden_layers), "mamba");
  Json options = {{"expand", expand}};
  for (const char* key : {"state_size", "conv_kernel"})
    if (auto v = opt_int(j, key, what)) options[key] = positive(*v, what, key);
  if (const Json* rank = find(j, "time_step_rank")) {
    if (rank->is_string()) {
      LR_CHECK(rank->get<std::string>() == "auto", InvalidArgument, what,
               ": key \"time_step_rank\" must be a positive integer or \"auto\", got ", rank->dump());
      options["time_step_rank"] = "auto";
    } else {
      options["time_step_rank"] = positive(as_int(*rank, what, "time_step_rank"), what, "time_step_rank");
    }
  }
  for (const char* key : {"use_bias", "use_conv_bias"})
    if (find(j, key)) options[key] = get_bool(j, key, false, what);
  for (const char* key : {"time_step_min", "time_step_max", "time_step_floor", "time_step_scale"})
    if (auto v = opt_double(j, key, what)) options[key] = *v;
  if (auto scheme = opt_string(j, "time_step_init_scheme", what)) options["time_step_init_scheme"] = *scheme;
  c.mixer_config = {{"mamba", options}};
}

void parse_token_ids(const Json& j, ModelConfig& c, std::string_view what) {
  c.bos_token_id = opt_int(j, "bos_token_id", what);
  c.pad_token_id = opt_int(j, "pad_token_id", what);
  if (const Json* eos = find(j, "eos_token_id")) {
    if (eos->is_array()) {
      for (const Json& e : *eos) c.eos_token_ids.push_back(as_int(e, what, "eos_token_id"));
    } else {
      c.eos_token_ids.push_back(as_int(*eos, what, "eos_token_id"));
    }
  }
}

}  // namespace

std::string_view architecture_name(Architecture arch) {
  switch (arch) {
    case Architecture::kLlama:
      return "LlamaForCausalLM";
    case Architecture::kMistral:
      return "MistralForCausalLM";
    case Architecture::kQwen2:
      return "Qwen2ForCausalLM";
    case Architecture::kLowrankMixer:
      return "LowrankMixerForCausalLM";
    case Architecture::kLowrankMixerSequenceClassification:
      return "LowrankMixerForSequenceClassification";
    case Architecture::kMamba:
      return "MambaForCausalLM";
  }
  return "?";
}

std::string supported_architectures() {
  std::string out;
  for (Architecture arch : kArchitectures) out += str(out.empty() ? "" : ", ", architecture_name(arch));
  return out;
}

ModelConfig ModelConfig::from_json(const Json& j, std::string_view what) {
  LR_CHECK(j.is_object(), InvalidArgument, what, ": expected a JSON object, got ", j.type_name());
  ModelConfig c;
  c.raw = j;
  c.architecture = parse_architecture(j, what);
  if (c.architecture == Architecture::kMamba) {
    parse_mamba(j, c, what);
    parse_token_ids(j, c, what);
    return c;
  }
  // LowrankMixerForCausalLM and the sequence classifier have the Llama layout and defaults.
  const bool mixer = c.architecture == Architecture::kLowrankMixer ||
                     c.architecture == Architecture::kLowrankMixerSequenceClassification;
  const bool llama = c.architecture == Architecture::kLlama || mixer;
  const bool mistral = c.architecture == Architecture::kMistral;
  const bool qwen2 = c.architecture == Architecture::kQwen2;
  c.model_type = opt_string(j, "model_type", what)
                     .value_or(mixer     ? "lowrank_mixer"
                               : llama   ? "llama"
                               : mistral ? "mistral"
                                         : "qwen2");

  c.vocab_size = positive(req_int(j, "vocab_size", what), what, "vocab_size");
  c.hidden_size = positive(req_int(j, "hidden_size", what), what, "hidden_size");
  c.intermediate_size = positive(req_int(j, "intermediate_size", what), what, "intermediate_size");
  c.num_hidden_layers = positive(req_int(j, "num_hidden_layers", what), what, "num_hidden_layers");
  c.num_attention_heads = positive(req_int(j, "num_attention_heads", what), what, "num_attention_heads");
  // Class defaults when absent: Llama uses num_attention_heads, Mistral 8, Qwen2 32.
  c.num_key_value_heads = positive(opt_int(j, "num_key_value_heads", what)
                                       .value_or(llama     ? c.num_attention_heads
                                                 : mistral ? 8
                                                           : 32),
                                   what, "num_key_value_heads");
  LR_CHECK(c.num_attention_heads % c.num_key_value_heads == 0, InvalidArgument, what,
           ": num_attention_heads (", c.num_attention_heads, ") must be a multiple of num_key_value_heads (",
           c.num_key_value_heads, ")");
  if (auto head_dim = opt_int(j, "head_dim", what)) {
    c.head_dim = positive(*head_dim, what, "head_dim");
  } else {
    LR_CHECK(c.hidden_size % c.num_attention_heads == 0, InvalidArgument, what, ": hidden_size (",
             c.hidden_size, ") is not a multiple of num_attention_heads (", c.num_attention_heads,
             ") and \"head_dim\" is absent");
    c.head_dim = c.hidden_size / c.num_attention_heads;
  }
  LR_CHECK(c.head_dim % 2 == 0, InvalidArgument, what, ": head_dim must be even for rotary embeddings, got ",
           c.head_dim);
  c.max_position_embeddings = positive(opt_int(j, "max_position_embeddings", what)
                                           .value_or(llama     ? 2048
                                                     : mistral ? 4096 * 32
                                                               : 32768),
                                       what, "max_position_embeddings");
  c.rms_norm_eps = opt_double(j, "rms_norm_eps", what).value_or(1e-6);
  LR_CHECK(c.rms_norm_eps >= 0, InvalidArgument, what, ": rms_norm_eps must be >= 0, got ", c.rms_norm_eps);
  c.hidden_act = opt_string(j, "hidden_act", what).value_or("silu");
  static const std::set<std::string> kActs = {"silu", "swish", "gelu", "gelu_pytorch_tanh"};
  LR_CHECK(kActs.contains(c.hidden_act), Unsupported, what, ": hidden_act \"", c.hidden_act,
           "\" is not supported (silu, swish, gelu, gelu_pytorch_tanh)");

  const bool attention_bias = get_bool(j, "attention_bias", false, what);
  c.qkv_bias = qwen2 || (llama && attention_bias);
  c.o_bias = llama && attention_bias;
  c.mlp_bias = llama && get_bool(j, "mlp_bias", false, what);
  c.tie_word_embeddings = get_bool(j, "tie_word_embeddings", false, what);
  c.rope = parse_rope(j, c.max_position_embeddings, what);
  c.sliding_window = parse_sliding_window(j, c.architecture, c.num_hidden_layers, what);
  parse_mixers(j, c, what);
  parse_classification(j, c, what);
  parse_token_ids(j, c, what);
  return c;
}

Json ModelConfig::mixer_options(const std::string& name) const {
  auto it = mixer_config.find(name);
  return it == mixer_config.end() ? Json::object() : *it;
}

bool ModelConfig::all_attention() const {
  return std::all_of(layer_mixers.begin(), layer_mixers.end(),
                     [](const std::string& m) { return m == "attention"; });
}

ModelConfig ModelConfig::load(const fs::path& path) {
  std::error_code ec;
  if (fs::is_directory(path, ec)) {
    const fs::path file = path / "config.json";
    LR_CHECK(fs::is_regular_file(file, ec), NotFound, path.string(), ": no config.json in this directory");
    return from_json(read_json_file(file), file.string());
  }
  LR_CHECK(fs::is_regular_file(path, ec), NotFound, path.string(),
           ": no such model directory (expected a directory with config.json)");
  return from_json(read_json_file(path), path.string());
}

}  // namespace lowrank::nn
