#include "lowrank/compress/gguf_export.h"

#include <cmath>
#include <map>
#include <numbers>
#include <optional>
#include <regex>
#include <sstream>

#include "lowrank/compress/format.h"
#include "lowrank/compress/pipeline.h"
#include "lowrank/core/error.h"
#include "lowrank/core/file.h"
#include "lowrank/core/safetensors.h"
#include "lowrank/data/tokenizer.h"
#include "lowrank/nn/config.h"
#include "lowrank/nn/model.h"

namespace lowrank::compress {
namespace {

namespace fs = std::filesystem;
using gguf::Metadata;
using gguf::TensorType;
using gguf::Value;

// llama.cpp's pre-tokenizer regexes (src/llama-vocab.cpp) in the two spellings a tokenizer.json may
// use: Hugging Face's `(?i:...)` contractions and llama.cpp's expanded `(?:'[sS]|...)` form.
constexpr std::string_view kContractionsHf = "(?i:'s|'t|'re|'ve|'m|'ll|'d)";
constexpr std::string_view kContractionsExpanded =
    "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])";
constexpr std::string_view kLlama3Tail =
    "|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| "
    "?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
constexpr std::string_view kQwen2Tail =
    "|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

// The Llama converter's ignore_merges per pre-tokenizer (llama-vocab.cpp: true for llama-bpe only).
bool llama_cpp_ignores_merges(std::string_view pre) {
  return pre == "llama-bpe";
}

std::string describe(const Json& j) {
  std::string s = j.dump();
  return s.size() > 300 ? s.substr(0, 300) + "..." : s;
}

bool is_byte_level(const Json& p, bool use_regex) {
  return p.is_object() && p.value("type", "") == "ByteLevel" && !p.value("add_prefix_space", false) &&
         p.value("use_regex", true) == use_regex;
}

// ---- model metadata ----

struct Arch {
  std::string name;  // "llama" | "qwen2"
  bool permute_qk = false;
};

Arch check_architecture(const nn::ModelConfig& c, const fs::path& dir) {
  const std::string what = (dir / "config.json").string();
  for (size_t i = 0; i < c.layer_mixers.size(); ++i)
    LR_CHECK(c.layer_mixers[i] == "attention", Unsupported, what, ": layer ", i, " uses the token mixer \"",
             c.layer_mixers[i],
             "\", which llama.cpp does not have (GGUF export needs softmax attention in every layer)");
  LR_CHECK(c.hidden_act == "silu", Unsupported, what, ": hidden_act \"", c.hidden_act,
           "\" (llama.cpp's llama and qwen2 use silu)");
  for (size_t i = 0; i < c.sliding_window.size(); ++i)
    LR_CHECK(c.sliding_window[i] == 0, Unsupported, what, ": layer ", i, " has a sliding window of ",
             c.sliding_window[i], " tokens, which llama.cpp's llama and qwen2 do not apply");
  LR_CHECK(c.num_key_value_heads > 0 && c.num_attention_heads % c.num_key_value_heads == 0, Unsupported, what,
           ": num_attention_heads ", c.num_attention_heads, " is not a multiple of num_key_value_heads ",
           c.num_key_value_heads);
  Arch arch;
  switch (c.architecture) {
    case nn::Architecture::kQwen2:
      LR_CHECK(c.qkv_bias && !c.o_bias && !c.mlp_bias, Unsupported, what,
               ": qwen2 in llama.cpp has q/k/v biases and no other");
      return {"qwen2", false};
    case nn::Architecture::kLlama:
    case nn::Architecture::kMistral:
    case nn::Architecture::kLowrankMixer:
      // The permutation pairs rows (i, i + head_dim/2) of each head: a head needs an even size.
      LR_CHECK(c.head_dim % 2 == 0, Unsupported, what, ": head_dim ", c.head_dim,
               " is odd; llama.cpp's RoPE rotates pairs of rows of each head");
      return {"llama", true};
  }
  throw InternalError("gguf export: unknown architecture");
}

// LlamaModel.permute: rows (n_head, 2, d/2) -> (n_head, d/2, 2), from transformers' rotate-half
// RoPE layout to llama.cpp's adjacent pairs. `heads` is n_head for q, n_head_kv for k.
at::Tensor permute_rows(const at::Tensor& w, int64_t heads) {
  std::vector<int64_t> shape{heads, 2, w.size(0) / heads / 2};
  for (int64_t d = 1; d < w.dim(); ++d) shape.push_back(w.size(d));
  return w.reshape(shape).transpose(1, 2).reshape(w.sizes()).contiguous();
}

// HF module path (without ".weight"/".bias") -> GGUF base name, or "" when it is not one.
std::string gguf_base_name(const std::string& hf) {
  static const std::regex layer(R"(model\.layers\.(\d+)\.(.+))");
  static const std::map<std::string, std::string> per_layer = {
      {"input_layernorm", "attn_norm"}, {"post_attention_layernorm", "ffn_norm"},
      {"self_attn.q_proj", "attn_q"},   {"self_attn.k_proj", "attn_k"},
      {"self_attn.v_proj", "attn_v"},   {"self_attn.o_proj", "attn_output"},
      {"mlp.gate_proj", "ffn_gate"},    {"mlp.up_proj", "ffn_up"},
      {"mlp.down_proj", "ffn_down"}};
  if (hf == "model.embed_tokens") return "token_embd";
  if (hf == "model.norm") return "output_norm";
  if (hf == "lm_head") return "output";
  std::smatch m;
  if (!std::regex_match(hf, m, layer)) return "";
  const auto it = per_layer.find(m[2].str());
  return it == per_layer.end() ? "" : str("blk.", m[1].str(), ".", it->second);
}

struct PlannedTensor {
  gguf::TensorInfo info;
  at::Tensor value;  // float32, contiguous, PyTorch layout
};

// A tensor under its GGUF name, in the converter's type: 1-D tensors, norms and anything but a
// `.weight` (biases) in F32, the rest in `type`.
PlannedTensor plan(std::string name, const at::Tensor& t, TensorType type) {
  PlannedTensor p;
  p.value = t.detach().to(at::kCPU, at::kFloat).contiguous();
  const bool keep_f32 =
      t.dim() <= 1 || name.ends_with("_norm.weight") ||
      !(name.ends_with(".weight") || name.ends_with(".lora_a") || name.ends_with(".lora_b"));
  p.info.type = keep_f32 ? TensorType::kF32 : type;
  for (int64_t d = t.dim() - 1; d >= 0; --d) p.info.dims.push_back(static_cast<uint64_t>(t.size(d)));
  p.info.name = std::move(name);
  return p;
}

void check_blocks(const std::vector<PlannedTensor>& tensors) {
  for (const PlannedTensor& p : tensors) {
    const uint64_t qk = gguf::block_size(p.info.type);
    LR_CHECK(p.info.dims[0] % qk == 0, Unsupported, "--type ", gguf::tensor_type_name(p.info.type),
             ": tensor \"", p.info.name, "\" has rows of ", p.info.dims[0],
             " elements, not a multiple of the ", gguf::tensor_type_name(p.info.type), " block of ", qk);
  }
}

// The file: header, then each tensor encoded in its type.
void write_planned(const fs::path& out, const Metadata& md, const std::vector<PlannedTensor>& tensors) {
  std::vector<gguf::TensorInfo> infos;
  for (const PlannedTensor& p : tensors) infos.push_back(p.info);
  gguf::write_file(out, md, std::move(infos), [&](std::size_t i) {
    const PlannedTensor& p = tensors[i];
    std::span<const float> values(p.value.data_ptr<float>(), static_cast<size_t>(p.value.numel()));
    return gguf::encode(values, p.info.dims[0], p.info.type, p.info.name);
  });
}

uint32_t file_type(TensorType type) {  // llama.cpp's LlamaFileType
  switch (type) {
    case TensorType::kF32:
      return 0;
    case TensorType::kF16:
      return 1;
    case TensorType::kQ4_0:
      return 2;
    case TensorType::kQ8_0:
      return 7;
    case TensorType::kBF16:
      return 32;
  }
  return 0;
}

void add_hparams(Metadata& md, const nn::ModelConfig& c, const Arch& arch, TensorType type,
                 const fs::path& dir) {
  const std::string a = arch.name;
  auto key = [&](std::string_view k) { return str(a, ".", k); };
  md.emplace_back(key("block_count"), Value::u32(static_cast<uint32_t>(c.num_hidden_layers)));
  md.emplace_back(key("context_length"), Value::u32(static_cast<uint32_t>(c.max_position_embeddings)));
  md.emplace_back(key("embedding_length"), Value::u32(static_cast<uint32_t>(c.hidden_size)));
  md.emplace_back(key("feed_forward_length"), Value::u32(static_cast<uint32_t>(c.intermediate_size)));
  md.emplace_back(key("attention.head_count"), Value::u32(static_cast<uint32_t>(c.num_attention_heads)));
  md.emplace_back(key("attention.head_count_kv"), Value::u32(static_cast<uint32_t>(c.num_key_value_heads)));
  const nn::RopeConfig& r = c.rope;
  const std::string what = (dir / "config.json").string();
  if (r.type == "linear") {
    md.emplace_back(key("rope.scaling.type"), Value::string("linear"));
    md.emplace_back(key("rope.scaling.factor"), Value::f32(static_cast<float>(r.factor)));
  } else if (r.type == "yarn") {
    LR_CHECK(r.mscale == 0 && r.mscale_all_dim == 0 && r.truncate, Unsupported, what,
             ": yarn RoPE with mscale / mscale_all_dim / truncate=false, which llama.cpp's converter does "
             "not carry");
    md.emplace_back(key("rope.scaling.type"), Value::string("yarn"));
    md.emplace_back(key("rope.scaling.factor"), Value::f32(static_cast<float>(r.factor)));
    md.emplace_back(key("rope.scaling.original_context_length"),
                    Value::u32(static_cast<uint32_t>(r.original_max_position_embeddings)));
    if (r.attention_factor)
      md.emplace_back(key("rope.scaling.yarn_attn_factor"),
                      Value::f32(static_cast<float>(*r.attention_factor)));
    md.emplace_back(key("rope.scaling.yarn_beta_fast"), Value::f32(static_cast<float>(r.beta_fast)));
    md.emplace_back(key("rope.scaling.yarn_beta_slow"), Value::f32(static_cast<float>(r.beta_slow)));
  } else {
    // default; llama3 is carried by the rope_freqs.weight tensor (LlamaModel.generate_extra_tensors).
    LR_CHECK(r.type == "default" || (r.type == "llama3" && arch.name == "llama"), Unsupported, what,
             ": RoPE type \"", r.type, "\" for ", arch.name,
             " (llama.cpp's converter writes default, linear, yarn, "
             "and llama3 for llama)");
  }
  md.emplace_back(key("rope.freq_base"), Value::f32(static_cast<float>(r.theta)));
  md.emplace_back(key("attention.layer_norm_rms_epsilon"), Value::f32(static_cast<float>(c.rms_norm_eps)));
  if (c.raw.contains("head_dim")) {
    md.emplace_back(key("attention.key_length"), Value::u32(static_cast<uint32_t>(c.head_dim)));
    md.emplace_back(key("attention.value_length"), Value::u32(static_cast<uint32_t>(c.head_dim)));
  }
  md.emplace_back("general.file_type", Value::u32(file_type(type)));
  if (arch.name == "llama") {  // LlamaModel.set_gguf_parameters adds these two
    md.emplace_back(key("vocab_size"), Value::u32(static_cast<uint32_t>(c.vocab_size)));
    md.emplace_back(key("rope.dimension_count"), Value::u32(static_cast<uint32_t>(c.head_dim)));
  }
}

// LlamaModel.generate_extra_tensors: the per-frequency llama3 factors.
at::Tensor llama3_rope_factors(const nn::ModelConfig& c) {
  const nn::RopeConfig& r = c.rope;
  const double old_ctx = static_cast<double>(r.original_max_position_embeddings);
  const double low_wavelen = old_ctx / r.low_freq_factor, high_wavelen = old_ctx / r.high_freq_factor;
  std::vector<float> factors;
  for (int64_t i = 0; i < c.head_dim; i += 2) {
    // float32 frequencies as the converter computes them with torch
    const float freq =
        1.0f / std::pow(static_cast<float>(r.theta), static_cast<float>(i) / static_cast<float>(c.head_dim));
    const double wavelen = 2 * std::numbers::pi / freq;
    if (wavelen < high_wavelen) {
      factors.push_back(1.0f);
    } else if (wavelen > low_wavelen) {
      factors.push_back(static_cast<float>(r.factor));
    } else {
      const double smooth =
          (old_ctx / wavelen - r.low_freq_factor) / (r.high_freq_factor - r.low_freq_factor);
      factors.push_back(static_cast<float>(1 / ((1 - smooth) / r.factor + smooth)));
    }
  }
  return at::tensor(factors);
}

// ---- tokenizer metadata ----

void add_tokenizer(Metadata& md, const nn::ModelConfig& c, const fs::path& dir, std::string& pre_out) {
  const fs::path file = dir / "tokenizer.json";
  LR_CHECK(fs::is_regular_file(file), NotFound, file.string(),
           ": GGUF export needs the model's tokenizer.json (llama.cpp tokenizes by itself)");
  const std::string what = file.string();
  const Json spec = read_json_file(file);
  const data::Tokenizer tokenizer = data::Tokenizer::load(file);  // validates the whole file

  const Json& model = spec.at("model");
  LR_CHECK(model.value("type", "") == "BPE" && !model.value("byte_fallback", false), Unsupported, what,
           ": model ", describe(model.value("type", Json("?"))),
           " is not byte-level BPE (llama.cpp's gpt2 tokenizer model needs one)");
  const Json decoder = spec.value("decoder", Json());
  LR_CHECK(decoder.is_object() && decoder.value("type", "") == "ByteLevel", Unsupported, what, ": decoder ",
           describe(decoder), " is not ByteLevel, so this is not a byte-level BPE tokenizer");
  const std::string pre = gguf_pre_tokenizer(spec, what);
  const Json normalizer = spec.value("normalizer", Json());
  LR_CHECK(normalizer.is_null() || (pre == "qwen2" && normalizer.value("type", "") == "NFC"), Unsupported,
           what, ": normalizer ", describe(normalizer), " (llama.cpp's ", pre, " tokenizer applies none)");
  const bool ignore_merges = model.value("ignore_merges", false);
  LR_CHECK(ignore_merges == llama_cpp_ignores_merges(pre), Unsupported, what,
           ": ignore_merges = ", ignore_merges, ", but llama.cpp's ", pre, " tokenizer uses ",
           llama_cpp_ignores_merges(pre));
  pre_out = pre;

  // get_vocab_base: every id below vocab_size; ids no token has become "[PAD<i>]", UNUSED.
  enum TokenType : int32_t { kNormal = 1, kControl = 3, kUserDefined = 4, kUnused = 5 };
  const int64_t n = c.vocab_size;
  LR_CHECK(tokenizer.vocab_size() <= n, Unsupported, what, ": the tokenizer has ids up to ",
           tokenizer.vocab_size() - 1, ", past the model's vocab_size ", n);
  std::vector<std::string> tokens(static_cast<size_t>(n));
  std::vector<int32_t> types(static_cast<size_t>(n), kUnused);
  for (int64_t i = 0; i < n; ++i) tokens[i] = str("[PAD", i, "]");
  for (const auto& [token, id] : model.at("vocab").items()) {
    const int64_t i = id.get<int64_t>();
    tokens[i] = token;
    types[i] = kNormal;
  }
  for (const Json& added : spec.value("added_tokens", Json::array())) {
    const int64_t i = added.at("id").get<int64_t>();
    const std::string content = added.at("content").get<std::string>();
    // does_token_look_special: some files leave control tokens unflagged.
    const bool looks_special =
        content == "<pad>" || content == "<mask>" || (content.starts_with("<|") && content.ends_with("|>"));
    tokens[i] = content;
    types[i] = added.value("special", false) || looks_special ? kControl : kUserDefined;
  }
  std::vector<std::string> merges;
  for (const Json& m : model.at("merges"))
    merges.push_back(m.is_string() ? m.get<std::string>()
                                   : m.at(0).get<std::string>() + " " + m.at(1).get<std::string>());

  md.emplace_back("tokenizer.ggml.model", Value::string("gpt2"));
  md.emplace_back("tokenizer.ggml.pre", Value::string(pre));
  md.emplace_back("tokenizer.ggml.tokens", Value::strings(tokens));
  md.emplace_back("tokenizer.ggml.token_type", Value::i32s(types));
  md.emplace_back("tokenizer.ggml.merges", Value::strings(merges));
  // SpecialVocab: tokenizer_config.json first (our Tokenizer reads it), config.json for the rest.
  const bool has_tokenizer_config = fs::is_regular_file(dir / "tokenizer_config.json");
  std::optional<int64_t> bos = has_tokenizer_config ? tokenizer.bos_id() : std::nullopt;
  std::optional<int64_t> eos = has_tokenizer_config ? tokenizer.eos_id() : std::nullopt;
  if (!bos) bos = c.bos_token_id;
  if (!eos && !c.eos_token_ids.empty()) eos = c.eos_token_ids.front();
  if (!bos) bos = tokenizer.bos_id();
  if (!eos) eos = tokenizer.eos_id();
  std::optional<int64_t> unk;
  if (model.contains("unk_token") && model.at("unk_token").is_string())
    if (auto id = tokenizer.token_to_id(model.at("unk_token").get<std::string>())) unk = *id;
  auto add_id = [&](const char* k, std::optional<int64_t> id) {
    if (id) md.emplace_back(k, Value::u32(static_cast<uint32_t>(*id)));
  };
  add_id("tokenizer.ggml.bos_token_id", bos);
  add_id("tokenizer.ggml.eos_token_id", eos);
  add_id("tokenizer.ggml.unknown_token_id", unk);
  add_id("tokenizer.ggml.padding_token_id", c.pad_token_id);
  // What the post-processor really adds around a text.
  const std::vector<int32_t> plain = tokenizer.encode("a"), special = tokenizer.encode("a", true);
  const bool add_bos = bos && special.size() > plain.size() && special.front() == bos.value_or(-1);
  const bool add_eos = eos && special.size() > plain.size() && special.back() == eos.value_or(-1);
  md.emplace_back("tokenizer.ggml.add_bos_token", Value::boolean(add_bos));
  md.emplace_back("tokenizer.ggml.add_eos_token", Value::boolean(add_eos));
}

// ---- model and adapter ----

GgufExportResult export_model(const GgufExportOptions& o) {
  GgufExportResult result;
  result.kind = "model";
  const nn::ModelConfig config = nn::ModelConfig::load(o.model);
  const Arch arch = check_architecture(config, o.model);
  result.architecture = arch.name;

  Metadata md;
  md.emplace_back("general.architecture", Value::string(arch.name));
  md.emplace_back("general.type", Value::string("model"));
  md.emplace_back("general.name",
                  Value::string(fs::absolute(o.model).lexically_normal().filename().string()));
  add_hparams(md, config, arch, o.type, o.model);
  add_tokenizer(md, config, o.model, result.pre_tokenizer);
  md.emplace_back("general.quantization_version", Value::u32(2));  // GGML_QNT_VERSION

  nn::Model model = load_model(o.model);
  result.densified_slots = materialise_stored_slots(model);
  if (is_compressed_model(o.model))
    result.compression = json_get_or<std::string>(read_json_file(o.model / kCompressedConfigFile), "method",
                                                  "", kCompressedConfigFile);

  std::vector<PlannedTensor> tensors;
  for (const auto& [hf, t] : model.named_tensors()) {
    const bool bias = hf.ends_with(".bias");
    LR_CHECK(bias || hf.ends_with(".weight"), Unsupported, o.model.string(), ": tensor \"", hf,
             "\" has no GGUF counterpart");
    const std::string module = hf.substr(0, hf.size() - (bias ? 5 : 7));
    const std::string base = gguf_base_name(module);
    LR_CHECK(!base.empty(), Unsupported, o.model.string(), ": tensor \"", hf, "\" has no llama.cpp ",
             arch.name, " counterpart");
    at::Tensor value = t;
    if (arch.permute_qk && module.ends_with("self_attn.q_proj"))
      value = permute_rows(t, config.num_attention_heads);
    if (arch.permute_qk && module.ends_with("self_attn.k_proj"))
      value = permute_rows(t, config.num_key_value_heads);
    tensors.push_back(plan(base + (bias ? ".bias" : ".weight"), value, o.type));
  }
  if (config.rope.type == "llama3")
    tensors.push_back(plan("rope_freqs.weight", llama3_rope_factors(config), o.type));
  check_blocks(tensors);
  result.tensors = static_cast<int64_t>(tensors.size());

  write_planned(o.out, md, tensors);
  return result;
}

GgufExportResult export_adapter(const GgufExportOptions& o) {
  GgufExportResult result;
  result.kind = "adapter";
  const nn::ModelConfig config = nn::ModelConfig::load(o.model);
  const Arch arch = check_architecture(config, o.model);
  result.architecture = arch.name;

  const fs::path config_file = o.adapter / "adapter_config.json";
  const std::string what = config_file.string();
  const Json ac = read_json_file(config_file);
  const std::string peft_type = json_get<std::string>(ac, "peft_type", what);
  LR_CHECK(peft_type == "LORA", Unsupported, what, ": peft_type \"", peft_type,
           "\" (a GGUF adapter holds plain LoRA: adapter.type = lora)");
  LR_CHECK(!json_get_or<bool>(ac, "use_dora", false, what), Unsupported, what,
           ": use_dora (llama.cpp's LoRA has no magnitude vector)");
  LR_CHECK(!json_get_or<bool>(ac, "use_rslora", false, what), Unsupported, what,
           ": use_rslora (llama.cpp scales by alpha / rank)");
  LR_CHECK(json_get_or<Json>(ac, "alpha_pattern", Json::object(), what).empty(), Unsupported, what,
           ": alpha_pattern (a GGUF LoRA has one adapter.lora.alpha)");
  const std::string bias = json_get_or<std::string>(ac, "bias", "none", what);
  LR_CHECK(bias == "none", Unsupported, what, ": bias \"", bias, "\" (a GGUF LoRA holds no biases)");
  LR_CHECK(json_get_or<Json>(ac, "modules_to_save", Json(), what).empty(), Unsupported, what,
           ": modules_to_save (a GGUF LoRA holds only lora_a / lora_b pairs)");
  const double alpha = json_get<double>(ac, "lora_alpha", what);

  const SafetensorsFile weights = SafetensorsFile::open(o.adapter / "adapter_model.safetensors");
  static const std::regex peft_name(R"(base_model\.model\.(.+)\.lora_([AB])\.weight)");
  std::map<std::string, std::pair<at::Tensor, at::Tensor>> pairs;  // module -> (A, B), sorted
  for (const TensorInfo& info : weights.tensors()) {
    std::smatch m;
    LR_CHECK(std::regex_match(info.name, m, peft_name), Unsupported, weights.path().string(), ": tensor \"",
             info.name, "\" is not a LoRA lora_A / lora_B weight");
    auto& [a, b] = pairs[m[1].str()];
    (m[2].str() == "A" ? a : b) = weights.load(info.name, at::kFloat);
  }
  std::vector<PlannedTensor> tensors;
  for (auto& [module, ab] : pairs) {
    auto& [a, b] = ab;
    LR_CHECK(a.defined() && b.defined() && a.dim() == 2 && b.dim() == 2 && a.size(0) == b.size(1), Corruption,
             weights.path().string(), ": ", module, " needs lora_A [r, in] and lora_B [out, r]");
    const std::string base = gguf_base_name(module);
    LR_CHECK(!base.empty() && base != "token_embd" && !base.ends_with("_norm"), Unsupported,
             weights.path().string(), ": a LoRA on \"", module, "\", which has no llama.cpp ", arch.name,
             " projection");
    LR_CHECK(!(base == "output" && config.tie_word_embeddings), Unsupported, weights.path().string(),
             ": a LoRA on lm_head, tied to the embedding in the base model (llama.cpp ignores it)");
    if (arch.permute_qk && module.ends_with("self_attn.q_proj"))
      b = permute_rows(b, config.num_attention_heads);
    if (arch.permute_qk && module.ends_with("self_attn.k_proj"))
      b = permute_rows(b, config.num_key_value_heads);
    tensors.push_back(plan(base + ".weight.lora_a", a, o.type));
    tensors.push_back(plan(base + ".weight.lora_b", b, o.type));
  }
  LR_CHECK(!tensors.empty(), Corruption, weights.path().string(), ": no LoRA tensors");
  check_blocks(tensors);
  result.tensors = static_cast<int64_t>(tensors.size());

  Metadata md;
  md.emplace_back("general.architecture", Value::string(arch.name));
  md.emplace_back("general.type", Value::string("adapter"));
  md.emplace_back("general.name",
                  Value::string(fs::absolute(o.adapter).lexically_normal().filename().string()));
  md.emplace_back("adapter.type", Value::string("lora"));
  md.emplace_back("adapter.lora.alpha", Value::f32(static_cast<float>(alpha)));
  md.emplace_back("general.quantization_version", Value::u32(2));
  write_planned(o.out, md, tensors);
  return result;
}

}  // namespace

std::string gguf_pre_tokenizer(const Json& tokenizer, std::string_view what) {
  const Json pre = tokenizer.value("pre_tokenizer", Json());
  if (is_byte_level(pre, /*use_regex=*/true)) return "gpt-2";
  if (pre.is_object() && pre.value("type", "") == "Sequence") {
    const Json& steps = pre.value("pretokenizers", Json::array());
    if (steps.size() == 2 && is_byte_level(steps[1], /*use_regex=*/false) &&
        steps[0].value("type", "") == "Split" && steps[0].value("behavior", "") == "Isolated" &&
        !steps[0].value("invert", false) && steps[0].contains("pattern") &&
        steps[0]["pattern"].contains("Regex")) {
      const std::string regex = steps[0]["pattern"]["Regex"].get<std::string>();
      for (std::string_view head : {kContractionsHf, kContractionsExpanded}) {
        if (regex == str(head, kLlama3Tail)) return "llama-bpe";
        if (regex == str(head, kQwen2Tail)) return "qwen2";
      }
    }
  }
  throw Unsupported(
      str(what, ": pre-tokenizer ", describe(pre),
          " is none of llama.cpp's gpt-2, llama-bpe or qwen2 (byte-level BPE with their regexes)"));
}

OrderedJson GgufExportResult::to_json() const {
  OrderedJson j{{"out", out.string()},
                {"kind", kind},
                {"architecture", architecture},
                {"type", type},
                {"tensors", tensors}};
  if (kind == "model") {
    j["pre_tokenizer"] = pre_tokenizer;
    j["densified_slots"] = densified_slots;
    j["compression"] = compression.empty() ? OrderedJson() : OrderedJson(compression);
  }
  return j;
}

namespace {

OrderedJson value_json(const Value& v) {
  switch (v.type) {
    case gguf::ValueType::kU8:
    case gguf::ValueType::kU16:
    case gguf::ValueType::kU32:
    case gguf::ValueType::kU64:
      return v.uint;
    case gguf::ValueType::kI8:
    case gguf::ValueType::kI16:
    case gguf::ValueType::kI32:
    case gguf::ValueType::kI64:
      return v.sint;
    case gguf::ValueType::kF32:
    case gguf::ValueType::kF64:
      return v.real;
    case gguf::ValueType::kBool:
      return v.uint != 0;
    case gguf::ValueType::kString:
      return v.text;
    case gguf::ValueType::kArray: {
      OrderedJson a = OrderedJson::array();
      for (const Value& item : v.items) a.push_back(value_json(item));
      return a;
    }
  }
  return nullptr;
}

std::string thousands(int64_t n) {
  std::string s = std::to_string(n);
  for (int i = static_cast<int>(s.size()) - 3; i > 0; i -= 3) s.insert(static_cast<size_t>(i), ",");
  return s;
}

}  // namespace

OrderedJson inspect_gguf(const fs::path& path) {
  const MappedFile file = MappedFile::open(path);
  const gguf::Header h = gguf::parse(file.bytes(), path.string());
  OrderedJson metadata = OrderedJson::object();
  for (const auto& [k, v] : h.metadata) metadata[k] = value_json(v);
  OrderedJson tensors = OrderedJson::array(), dtypes = OrderedJson::object();
  int64_t params = 0, bytes = 0;
  for (const gguf::TensorInfo& t : h.tensors) {
    const std::string type(gguf::tensor_type_name(t.type));
    const auto n = static_cast<int64_t>(t.element_count()), b = static_cast<int64_t>(t.byte_count());
    tensors.push_back({{"name", t.name},
                       {"dtype", type},
                       {"shape", std::vector<uint64_t>(t.dims.rbegin(), t.dims.rend())},
                       {"params", n},
                       {"bytes", b},
                       {"offset", t.offset}});
    params += n;
    bytes += b;
    if (!dtypes.contains(type)) dtypes[type] = {{"tensors", 0}, {"params", 0}, {"bytes", 0}};
    dtypes[type]["tensors"] = dtypes[type]["tensors"].get<int64_t>() + 1;
    dtypes[type]["params"] = dtypes[type]["params"].get<int64_t>() + n;
    dtypes[type]["bytes"] = dtypes[type]["bytes"].get<int64_t>() + b;
  }
  return {{"path", path.string()},
          {"format", "gguf"},
          {"version", h.version},
          {"alignment", h.alignment},
          {"metadata", metadata},
          {"totals", {{"tensors", tensors.size()}, {"params", params}, {"bytes", bytes}}},
          {"dtypes", dtypes},
          {"tensors", tensors}};
}

std::string format_gguf_inspect(const OrderedJson& r) {
  std::ostringstream out;
  const auto& totals = r["totals"];
  out << r["path"].get<std::string>() << ": GGUF v" << r["version"].get<int>() << ", "
      << thousands(totals["tensors"].get<int64_t>()) << " tensors, "
      << thousands(totals["params"].get<int64_t>()) << " parameters, "
      << thousands(totals["bytes"].get<int64_t>()) << " bytes\n\nmetadata\n";
  for (const auto& [k, v] : r["metadata"].items()) {
    std::string text;
    if (v.is_array() && v.size() > 8) {
      text = str("[", v[0].dump(), ", ", v[1].dump(), ", ", v[2].dump(), ", ... (", v.size(), " items)]");
    } else {
      text = v.dump();
    }
    out << "  " << k << ": " << text << "\n";
  }
  size_t width = 4;
  for (const auto& t : r["tensors"]) width = std::max(width, t["name"].get<std::string>().size());
  char line[512];
  std::snprintf(line, sizeof line, "\n%-*s  %-5s  %-16s  %14s\n", static_cast<int>(width), "name", "dtype",
                "shape", "bytes");
  out << line;
  for (const auto& t : r["tensors"]) {
    std::string shape;
    for (const auto& d : t["shape"]) shape += (shape.empty() ? "" : "x") + std::to_string(d.get<uint64_t>());
    std::snprintf(line, sizeof line, "%-*s  %-5s  %-16s  %14s\n", static_cast<int>(width),
                  t["name"].get<std::string>().c_str(), t["dtype"].get<std::string>().c_str(), shape.c_str(),
                  thousands(t["bytes"].get<int64_t>()).c_str());
    out << line;
  }
  return out.str();
}

GgufExportResult export_gguf(const GgufExportOptions& options) {
  LR_CHECK(!options.out.empty(), InvalidArgument, "--out: missing");
  const fs::path parent = fs::absolute(options.out).parent_path();
  LR_CHECK(fs::is_directory(parent), NotFound, "--out ", options.out.string(), ": directory ",
           parent.string(), " does not exist");
  LR_CHECK(!fs::is_directory(options.out), InvalidArgument, "--out ", options.out.string(),
           ": is a directory (give the .gguf file to write)");
  GgufExportResult result = options.adapter.empty() ? export_model(options) : export_adapter(options);
  result.out = options.out;
  result.type = std::string(gguf::tensor_type_name(options.type));
  return result;
}

}  // namespace lowrank::compress
