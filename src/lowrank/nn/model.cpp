// The Llama-family decoder: construction (from a checkpoint or random), forward, slots, save.
// See model.h for the equations and references.
#include "lowrank/nn/model.h"

#include <ATen/core/grad_mode.h>

#include <functional>
#include <map>
#include <set>
#include <utility>

#include "lowrank/core/error.h"
#include "lowrank/core/json.h"
#include "lowrank/core/log.h"
#include "lowrank/core/safetensors.h"
#include "lowrank/nn/attention.h"
#include "lowrank/nn/decoder_layer.h"
#include "lowrank/nn/run.h"
#include "lowrank/nn/token_mixer.h"

namespace lowrank::nn {

namespace fs = std::filesystem;

namespace {

using Init = ParamInit;
// Produces the tensor `name` of shape `shape` in the compute dtype and device (a fresh one from
// `init`, and `value` for Init::kValue; a loaded one ignores both).
using TensorSource = std::function<at::Tensor(const std::string& name, std::vector<int64_t> shape, Init init,
                                              const at::Tensor& value)>;

std::string shape_str(at::IntArrayRef shape) {
  return ::lowrank::str(shape);
}

void check_compute_dtype(at::ScalarType t) {
  (void)dtype_name(t);  // run.h: Unsupported names the type
}

bool is_half(at::ScalarType t) {
  return t == at::kBFloat16 || t == at::kHalf;
}

// The file of a checkpoint that holds `name` (for messages only; opens shards).
std::string file_of(const Checkpoint& ckpt, const std::string& name) {
  const auto files = ckpt.files();
  if (files.size() == 1) return files.front().string();
  for (const fs::path& f : files) {
    try {
      if (SafetensorsFile::open(f).contains(name)) return f.string();
    } catch (const Error&) {
    }
  }
  return files.empty() ? std::string("the checkpoint") : files.front().parent_path().string();
}

at::Tensor activation(const at::Tensor& x, const std::string& act) {
  if (act == "silu" || act == "swish") return at::silu(x);
  if (act == "gelu") return at::gelu(x);
  return at::gelu(x, "tanh");  // gelu_pytorch_tanh (checked by the config)
}

// The HF names of the trunk's own tensors: transformers' MambaModel calls them backbone.*, the
// Llama family model.*.
bool is_mamba(const ModelConfig& c) {
  return c.architecture == Architecture::kMamba;
}
std::string embedding_name(const ModelConfig& c) {
  return is_mamba(c) ? "backbone.embeddings.weight" : "model.embed_tokens.weight";
}
std::string final_norm_name(const ModelConfig& c) {
  return is_mamba(c) ? "backbone.norm_f.weight" : "model.norm.weight";
}
std::string layer_prefix(const ModelConfig& c, int64_t layer) {
  return str(is_mamba(c) ? "backbone.layers." : "model.layers.", layer);
}

}  // namespace

at::Tensor rms_norm(const at::Tensor& x, const at::Tensor& weight, double eps) {
  const at::ScalarType in = x.scalar_type();
  const at::Tensor h = in == at::kDouble ? x : x.to(at::kFloat);
  const at::Tensor normed = h.mul(at::rsqrt(h.pow(2).mean(-1, /*keepdim=*/true).add(eps)));
  return weight.mul(normed.to(in));
}

Model::Model() = default;
Model::Model(Model&&) noexcept = default;
Model& Model::operator=(Model&&) noexcept = default;
Model::~Model() = default;

namespace {

// Builds the layers of `config` from `source`; shared by load() and random().
struct Builder {
  const ModelConfig& c;
  const TensorSource& source;
  const OperatorLoader* loader = nullptr;
  const StoredTensorReader* read = nullptr;
  // The mixers' non-slot tensors built so far, by file name.
  std::map<std::string, at::Tensor> shared_tensors;
  // The value of a mixer tensor in float32: stored (load) or initial (random; undefined for a random
  // draw). A mixer may keep a tensor in float32 in a half-precision model (Mamba's A_log, D and dt
  // bias, as mamba_ssm keeps them); `source` gave it in the half type, so its float32 value is put
  // back from here once the mixer is built. Null: the model is not half precision.
  TensorSource float32_source;
  struct Request {
    std::vector<int64_t> shape;
    Init init;
    at::Tensor value;
  };
  std::map<std::string, Request> requests;  // what each mixer tensor was asked for with

  std::shared_ptr<BaseOperator> dense(const std::string& name, int64_t out, int64_t in, bool bias) {
    if (loader && *loader)
      if (auto op = (*loader)(name, out, in, bias, *read)) {
        LR_CHECK(op->out_features() == out && op->in_features() == in, InvalidArgument, "slot ", name,
                 ": the stored operator (", op->kind(), ") is [", op->out_features(), ", ", op->in_features(),
                 "], config.json expects [", out, ", ", in, "]");
        return op;
      }
    at::Tensor w = source(name + ".weight", {out, in}, Init::kNormal, {});
    at::Tensor b = bias ? source(name + ".bias", {out}, Init::kZeros, {}) : at::Tensor();
    return std::make_shared<DenseOperator>(std::move(w), std::move(b));
  }

  // The token mixer of layer `i` from its registered factory (token_mixer.h).
  std::unique_ptr<TokenMixer> mixer(int64_t i) {
    const auto at_layer = static_cast<size_t>(i);
    const std::string name = at_layer < c.layer_mixers.size() ? c.layer_mixers[at_layer] : "attention";
    MixerSpec spec{c,
                   i,
                   is_mamba(c) ? layer_prefix(c, i) + ".mixer" : mixer_prefix(name, i),
                   c.mixer_options(name),
                   nullptr,
                   nullptr};
    spec.projection = [this](const std::string& slot, int64_t out, int64_t in, bool bias) {
      return std::shared_ptr<const BaseOperator>(dense(slot, out, in, bias));
    };
    // One name is one tensor: mixers of several layers that ask for the same name (Linformer's
    // layerwise E) share its storage, so they load, save and train as one parameter.
    spec.tensor = [this](const std::string& tensor, std::vector<int64_t> shape, Init init,
                         const at::Tensor& value) {
      if (auto it = shared_tensors.find(tensor); it != shared_tensors.end()) {
        LR_CHECK(it->second.sizes() == at::IntArrayRef(shape), InvalidArgument, "tensor ", tensor,
                 " is asked for as ", at::IntArrayRef(shape), " after ", it->second.sizes());
        return it->second;
      }
      requests.insert_or_assign(tensor, Request{shape, init, value});
      at::Tensor t = source(tensor, std::move(shape), init, value);
      shared_tensors.emplace(tensor, t);
      return t;
    };
    std::unique_ptr<TokenMixer> built = mixer_registry().factory(name)(spec);
    if (float32_source) {
      at::NoGradGuard no_grad;
      for (auto& [tensor, t] : std::as_const(*built).tensors()) {
        const auto it = requests.find(tensor);
        if (t.scalar_type() != at::kFloat || it == requests.end()) continue;
        const at::Tensor full = float32_source(tensor, it->second.shape, it->second.init, it->second.value);
        if (full.defined()) t.copy_(full);
      }
    }
    LR_CHECK(built != nullptr && built->name() == name, InternalError, "the factory of mixer \"", name,
             "\" built ", built ? str("\"", built->name(), "\"") : std::string("nothing"));
    // A classifier pools over the whole sequence, so its mixers may look both ways.
    LR_CHECK(built->causal() || !c.has_lm_head(), InvalidArgument, "layer ", i, ": ", name,
             " is bidirectional; use it in a classification model (", architecture_name(c.architecture),
             " needs causal mixers)");
    for (const LinearSlot* s : std::as_const(*built).slots())
      LR_CHECK(s->name().starts_with(spec.prefix + "."), InternalError, "mixer \"", name,
               "\" named its slot \"", s->name(), "\" outside its module ", spec.prefix);
    return built;
  }

  std::unique_ptr<DecoderLayer> layer(int64_t i) {
    const std::string p = layer_prefix(c, i);
    const int64_t H = c.hidden_size;
    if (is_mamba(c)) {
      // A MambaBlock: norm and mixer, no MLP half (its slots stay empty and unlisted).
      at::Tensor norm = source(p + ".norm.weight", {H}, Init::kOnes, {});
      std::unique_ptr<TokenMixer> token_mixer = mixer(i);
      auto none = std::make_shared<DenseOperator>(at::empty({0, 0}));
      const std::string unused = p + ".no_mlp";
      auto block = std::unique_ptr<DecoderLayer>(
          new DecoderLayer{std::move(norm), at::Tensor(), std::move(token_mixer), nullptr,
                           LinearSlot(unused, none), LinearSlot(unused, none), LinearSlot(unused, none), 0});
      block->has_mlp = false;
      return block;
    }
    at::Tensor in_norm = source(p + ".input_layernorm.weight", {H}, Init::kOnes, {});
    std::unique_ptr<TokenMixer> token_mixer = mixer(i);
    at::Tensor post_norm = source(p + ".post_attention_layernorm.weight", {H}, Init::kOnes, {});
    const std::string m = p + ".mlp";
    auto gate = dense(m + ".gate_proj", c.intermediate_size, H, c.mlp_bias);
    auto up = dense(m + ".up_proj", c.intermediate_size, H, c.mlp_bias);
    auto down = dense(m + ".down_proj", H, c.intermediate_size, c.mlp_bias);
    const auto* attention = dynamic_cast<const Attention*>(token_mixer.get());
    return std::unique_ptr<DecoderLayer>(
        new DecoderLayer{std::move(in_norm), std::move(post_norm), std::move(token_mixer), attention,
                         LinearSlot(m + ".gate_proj", gate), LinearSlot(m + ".up_proj", up),
                         LinearSlot(m + ".down_proj", down), c.sliding_window.at(static_cast<size_t>(i))});
  }
};

}  // namespace

std::unique_ptr<DecoderLayer> build_decoder_layer(const ModelConfig& config, int64_t layer,
                                                  const LayerTensorSource& source) {
  Builder builder{config, source};
  return builder.layer(layer);
}

at::Tensor decoder_layer_forward(const DecoderLayer& l, const ModelConfig& config, const at::Tensor& h,
                                 const MixerContext& context) {
  const at::Tensor a = l.mixer->forward(rms_norm(h, l.input_layernorm, config.rms_norm_eps), context);
  return decoder_layer_mlp(l, config, h + a, context.routing);
}

at::Tensor decoder_layer_mlp(const DecoderLayer& l, const ModelConfig& config, const at::Tensor& h,
                             const AdapterRouting* routing) {
  if (!l.has_mlp) return h;
  const at::Tensor x = rms_norm(h, l.post_attention_layernorm, config.rms_norm_eps);
  const LinearSlot* gate_up[] = {&l.gate_proj, &l.up_proj};
  const std::vector<at::Tensor> g = LinearSlot::forward_shared_input(gate_up, x, routing);
  return h + l.down_proj.forward(activation(g[0], config.hidden_act) * g[1], routing);
}

NamedTensors decoder_layer_tensors(const DecoderLayer& l, int64_t layer) {
  NamedTensors out;
  auto add_slot = [&](const LinearSlot& s) {
    for (auto& [n, t] : s.base().tensors()) out.emplace_back(s.name() + "." + n, t);
  };
  if (!l.has_mlp) {  // a MambaBlock (model.cpp's Builder::layer)
    out.emplace_back(str("backbone.layers.", layer, ".norm.weight"), l.input_layernorm);
    for (const LinearSlot* s : std::as_const(*l.mixer).slots()) add_slot(*s);
    for (auto& [n, t] : l.mixer->tensors()) out.emplace_back(n, t);
    return out;
  }
  const std::string p = str("model.layers.", layer);
  out.emplace_back(p + ".input_layernorm.weight", l.input_layernorm);
  for (const LinearSlot* s : std::as_const(*l.mixer).slots()) add_slot(*s);
  for (auto& [n, t] : l.mixer->tensors()) out.emplace_back(n, t);
  out.emplace_back(p + ".post_attention_layernorm.weight", l.post_attention_layernorm);
  for (const LinearSlot* s : {&l.gate_proj, &l.up_proj, &l.down_proj}) add_slot(*s);
  return out;
}

void Model::build(const ModelConfig& config, const LoadOptions& options) {
  config_ = config;
  dtype_ = options.dtype;
  device_ = options.device;
  rope_ = RotaryEmbedding(config_, device_, dtype_);
}

Model Model::load(const fs::path& dir, const LoadOptions& options) {
  check_compute_dtype(options.dtype);
  const ModelConfig config = ModelConfig::load(dir);
  const Checkpoint ckpt = Checkpoint::open(dir);
  std::set<std::string> used;
  auto require = [&](const std::string& name) {
    if (ckpt.contains(name)) return;
    std::string files;
    for (const auto& f : ckpt.files()) files += str(files.empty() ? "" : ", ", f.string());
    throw NotFound(str("tensor \"", name, "\" is missing from the checkpoint (", files, ")"));
  };
  TensorSource source = [&](const std::string& name, std::vector<int64_t> shape, Init, const at::Tensor&) {
    require(name);
    const TensorInfo& info = ckpt.info(name);
    LR_CHECK(info.dtype == Dtype::kF32 || info.dtype == Dtype::kBF16 || info.dtype == Dtype::kF16 ||
                 info.dtype == Dtype::kF64,
             InvalidArgument, "tensor \"", name, "\" in ", file_of(ckpt, name), " has dtype ",
             dtype_name(info.dtype), "; model weights must be F32, BF16, F16 or F64");
    LR_CHECK(info.shape == shape, InvalidArgument, "tensor \"", name, "\" in ", file_of(ckpt, name),
             " has shape ", shape_str(info.shape), ", expected ", shape_str(shape), " from config.json");
    used.insert(name);
    at::Tensor t = ckpt.load(name, options.dtype);  // converted in one pass
    return options.device.is_cpu() ? t : t.to(options.device);
  };

  StoredTensorReader read = [&](const std::string& name) {
    require(name);
    used.insert(name);
    return ckpt.load(name);
  };

  Model model;
  model.build(config, options);
  Builder builder{model.config_, source, &options.operator_loader, &read};
  if (is_half(options.dtype))
    builder.float32_source = [&](const std::string& name, std::vector<int64_t>, Init, const at::Tensor&) {
      return ckpt.load(name, at::kFloat).to(options.device);
    };
  model.embed_tokens_ =
      source(embedding_name(config), {config.vocab_size, config.hidden_size}, Init::kNormal, {});
  for (int64_t i = 0; i < config.num_hidden_layers; ++i) model.layers_.push_back(builder.layer(i));
  model.norm_ = source(final_norm_name(config), {config.hidden_size}, Init::kOnes, {});
  if (!config.has_lm_head()) {
    // A classifier's head is read by its owner (classifier.h), not by the trunk.
    for (const std::string& name : ckpt.names())
      if (name.starts_with("score.")) used.insert(name);
  } else if (config.tie_word_embeddings) {
    used.insert("lm_head.weight");  // transformers ties it to the embedding even when stored
    // A compressed head (e.g. `lowrank compress --method rtn --targets ... lm_head`) replaces the
    // tied one; the embedding stays as stored.
    std::shared_ptr<BaseOperator> head;
    if (options.operator_loader) {
      head = options.operator_loader("lm_head", config.vocab_size, config.hidden_size, false, read);
      if (head)
        LR_CHECK(head->out_features() == config.vocab_size && head->in_features() == config.hidden_size,
                 InvalidArgument, "slot lm_head: the stored operator (", head->kind(), ") is [",
                 head->out_features(), ", ", head->in_features(), "], config.json expects [",
                 config.vocab_size, ", ", config.hidden_size, "]");
    }
    if (!head) head = std::make_shared<DenseOperator>(model.embed_tokens_);
    model.lm_head_ = std::make_unique<LinearSlot>("lm_head", std::move(head));
  } else {
    model.lm_head_ = std::make_unique<LinearSlot>(
        "lm_head", builder.dense("lm_head", config.vocab_size, config.hidden_size, false));
  }

  std::vector<std::string> unused;
  for (const std::string& name : ckpt.names())
    if (!used.contains(name) && name.find("rotary_emb.inv_freq") == std::string::npos) unused.push_back(name);
  if (!unused.empty()) {
    std::string list;
    for (size_t i = 0; i < std::min<size_t>(unused.size(), 5); ++i) list += str(i ? ", " : "", unused[i]);
    log::warn(dir.string(), ": ", unused.size(), " tensor(s) not used by ",
              architecture_name(config.architecture), " were ignored: ", list,
              unused.size() > 5 ? ", ..." : "");
  }
  return model;
}

Model Model::random(const ModelConfig& config, uint64_t seed, const LoadOptions& options) {
  check_compute_dtype(options.dtype);
  double std_dev = 0.02;
  if (auto it = config.raw.find("initializer_range"); it != config.raw.end() && it->is_number())
    std_dev = it->get<double>();
  at::Generator gen = at::detail::createCPUGenerator(seed);
  TensorSource source = [&](const std::string& name, std::vector<int64_t> shape, Init init,
                            const at::Tensor& value) {
    at::Tensor t;
    if (init == Init::kValue) {
      LR_CHECK(value.defined() && value.sizes() == at::IntArrayRef(shape), InternalError,
               "initial value of \"", name, "\" has shape ",
               value.defined() ? shape_str(value.sizes()) : "none", ", expected ", shape_str(shape));
      t = value.detach().to(options.dtype).clone();
    } else if (init == Init::kNormal) {
      t = at::empty(shape, at::TensorOptions().dtype(at::kFloat));
      t.normal_(0.0, std_dev, gen);
      t = t.to(options.dtype);
    } else {
      t = init == Init::kOnes ? at::ones(shape, options.dtype) : at::zeros(shape, options.dtype);
    }
    return t.to(options.device);
  };
  Model model;
  model.build(config, options);
  Builder builder{model.config_, source};
  if (is_half(options.dtype))
    builder.float32_source = [&](const std::string&, std::vector<int64_t> shape, Init init,
                                 const at::Tensor& value) {
      if (init == Init::kNormal) return at::Tensor();  // a draw: its rounded value is as good a draw
      const at::Tensor t = init == Init::kValue ? value.detach().to(at::kFloat)
                                                : (init == Init::kOnes ? at::ones(shape, at::kFloat)
                                                                       : at::zeros(shape, at::kFloat));
      return t.to(options.device);
    };
  model.embed_tokens_ = source("", {config.vocab_size, config.hidden_size}, Init::kNormal, {});
  for (int64_t i = 0; i < config.num_hidden_layers; ++i) model.layers_.push_back(builder.layer(i));
  model.norm_ = source("", {config.hidden_size}, Init::kOnes, {});
  if (config.has_lm_head())
    model.lm_head_ = std::make_unique<LinearSlot>(
        "lm_head", config.tie_word_embeddings
                       ? std::make_shared<DenseOperator>(model.embed_tokens_)
                       : builder.dense("lm_head", config.vocab_size, config.hidden_size, false));
  return model;
}

NamedTensors Model::named_tensors() const {
  NamedTensors out;
  std::set<std::string> listed;
  out.emplace_back(embedding_name(config_), embed_tokens_);
  auto add_slot = [&](const LinearSlot& s) {
    for (auto& [n, t] : s.base().tensors()) out.emplace_back(s.name() + "." + n, t);
  };
  for (size_t i = 0; i < layers_.size(); ++i)
    for (auto& named : decoder_layer_tensors(*layers_[i], static_cast<int64_t>(i)))
      if (listed.insert(named.first).second) out.push_back(std::move(named));  // shared tensors once
  out.emplace_back(final_norm_name(config_), norm_);
  if (!lm_head_) return out;  // a classifier's trunk
  // A tied head (the dense base still sharing the embedding) is not stored, as transformers.
  const auto* dense = dynamic_cast<const DenseOperator*>(&lm_head_->base());
  const bool tied = config_.tie_word_embeddings && dense && dense->weight().is_same(embed_tokens_);
  if (!tied) add_slot(*lm_head_);
  return out;
}

void Model::save(const fs::path& dir, std::optional<at::ScalarType> dtype) const {
  save_model_directory(dir, config_.raw, named_tensors(), dtype.value_or(dtype_));
}

void save_model_directory(const fs::path& dir, Json config, const NamedTensors& named, at::ScalarType dtype) {
  const std::string torch_dtype = dtype_name(dtype);
  std::error_code ec;
  fs::create_directories(dir, ec);
  LR_CHECK(!ec, IoError, dir.string(), ": cannot create directory: ", ec.message());

  std::vector<NamedTensor> tensors;
  {
    at::NoGradGuard no_grad;
    for (auto& [name, t] : named) {
      at::Tensor c = t.detach().to(at::kCPU);
      tensors.push_back({name, (c.is_floating_point() ? c.to(dtype) : c).contiguous()});
    }
  }
  save_safetensors(dir / "model.safetensors", tensors, {{"format", "pt"}});

  config["dtype"] = torch_dtype;
  if (config.contains("torch_dtype")) config["torch_dtype"] = torch_dtype;
  write_json_file(dir / "config.json", config);
}

void copy_model_side_files(const fs::path& source_dir, const fs::path& dir) {
  for (const char* name :
       {"tokenizer.json", "tokenizer_config.json", "generation_config.json", "special_tokens_map.json"}) {
    const fs::path src = source_dir / name;
    std::error_code ec;
    if (fs::is_regular_file(src)) fs::copy_file(src, dir / name, fs::copy_options::overwrite_existing, ec);
    LR_CHECK(!ec, IoError, "cannot copy ", src.string(), " to ", dir.string(), ": ", ec.message());
  }
}

KVCache Model::new_cache(int64_t batch, int64_t capacity) const {
  const auto options = at::TensorOptions().dtype(dtype_).device(device_);
  if (config_.all_attention()) return KVCache(config_, batch, capacity, options);
  // A hybrid: attention layers keep keys and values, every other layer its mixer's decode state.
  std::vector<std::unique_ptr<MixerState>> states;
  for (size_t i = 0; i < layers_.size(); ++i) {
    const TokenMixer& mixer = *layers_[i]->mixer;
    if (mixer.uses_kv_store()) {
      states.emplace_back();
      continue;
    }
    LR_CHECK(mixer.has_decode_state(), Unsupported, "layer ", i, "'s mixer \"", mixer.name(),
             "\" keeps neither a KV store nor a decode state (TokenMixer::new_state/step), so this model "
             "cannot decode token by token (generate); score whole sequences with forward instead");
    states.push_back(mixer.new_state(batch));
    LR_CHECK(states.back() != nullptr, InternalError, "mixer \"", mixer.name(), "\" made no decode state");
  }
  return KVCache(config_, batch, capacity, options, std::move(states));
}

const TokenMixer& Model::mixer(int64_t layer) const {
  LR_CHECK(layer >= 0 && layer < static_cast<int64_t>(layers_.size()), InvalidArgument, "layer ", layer,
           " is outside the model's ", layers_.size(), " layers");
  return *layers_[static_cast<size_t>(layer)]->mixer;
}

at::Tensor Model::hidden_states(const at::Tensor& input_ids, const ForwardOptions& options) const {
  LR_CHECK(input_ids.dim() == 2 && input_ids.scalar_type() == at::kLong, InvalidArgument,
           "input_ids must be int64 [batch, seq], got ", c10::toString(input_ids.scalar_type()), " ",
           input_ids.sizes());
  const int64_t B = input_ids.size(0);
  const int64_t T = input_ids.size(1);
  LR_CHECK(B > 0 && T > 0, InvalidArgument, "input_ids must not be empty, got ", input_ids.sizes());
  const at::Tensor ids = input_ids.to(device_);
  const int64_t lo = ids.min().item<int64_t>();
  const int64_t hi = ids.max().item<int64_t>();
  LR_CHECK(lo >= 0 && hi < config_.vocab_size, InvalidArgument, "input_ids hold token ", lo < 0 ? lo : hi,
           ", outside the vocabulary [0, ", config_.vocab_size, ")");

  at::Tensor valid;  // [B, T] bool for the new tokens, undefined when all are real
  if (options.attention_mask.defined()) {
    LR_CHECK(options.attention_mask.sizes() == input_ids.sizes(), InvalidArgument, "attention_mask of shape ",
             options.attention_mask.sizes(), " for input_ids of shape ", input_ids.sizes());
    valid = options.attention_mask.to(device_).to(at::kBool);
  }
  KVStore* cache = options.cache;
  // With a cache, each layer that is not attention advances its decode state (token_mixer.h), which
  // the cache must hold: checked for every layer before anything is written.
  std::vector<MixerState*> states(layers_.size(), nullptr);
  if (cache)
    for (size_t i = 0; i < layers_.size(); ++i) {
      const TokenMixer& mixer = *layers_[i]->mixer;
      if (mixer.uses_kv_store()) continue;
      states[i] = cache->mixer_state(static_cast<int64_t>(i));
      LR_CHECK(states[i] != nullptr, Unsupported, "layer ", i, "'s mixer \"", mixer.name(), "\" ",
               mixer.has_decode_state()
                   ? "keeps a decode state, which this KV store does not hold (make the "
                     "cache with Model::new_cache)"
                   : "keeps neither a KV store nor a decode state (TokenMixer::new_state/"
                     "step), so this model cannot decode with a cache");
    }
  int64_t past = 0;
  at::Tensor key_valid = valid;
  bool padded = valid.defined() && !valid.all().item<bool>();
  if (cache) {
    LR_CHECK(cache->batch() == B, InvalidArgument, "KV cache for ", cache->batch(), " sequences used with ",
             B);
    LR_CHECK(cache->num_layers() == config_.num_hidden_layers, InvalidArgument, "KV cache of another model (",
             cache->num_layers(), " layers)");
    past = cache->length();
    padded = padded || cache->has_padding();
    key_valid = cache->begin(T, valid);
  }

  at::Tensor positions;
  if (options.position_ids.defined()) {
    LR_CHECK(options.position_ids.sizes() == input_ids.sizes(), InvalidArgument, "position_ids of shape ",
             options.position_ids.sizes(), " for input_ids of shape ", input_ids.sizes());
    positions = options.position_ids.to(device_).to(at::kLong);
  } else if (cache || valid.defined()) {
    // transformers' generate(): position = (real tokens before this one); padding gets 1.
    const auto long_opts = at::TensorOptions().dtype(at::kLong).device(device_);
    const at::Tensor v = valid.defined() ? valid.to(at::kLong) : at::ones({B, T}, long_opts);
    const at::Tensor before = cache ? cache->valid_count().unsqueeze(1) : at::zeros({B, 1}, long_opts);
    positions = before.add(v.cumsum(1)).sub(1).masked_fill(v.eq(0), 1);
  } else {
    positions =
        at::arange(T, at::TensorOptions().dtype(at::kLong).device(device_)).unsqueeze(0).expand({B, T});
  }
  const auto [cos, sin] = rope_.cos_sin(positions, dtype_);

  std::map<int64_t, AttentionMask> masks;  // one per distinct window size
  for (const auto& layer : layers_)
    if (!masks.contains(layer->window))
      masks[layer->window] = make_attention_mask(key_valid, padded, past, T, layer->window, device_);

  MixerContext context;
  context.valid = valid;
  context.positions = positions;
  context.cos = cos;
  context.sin = sin;
  context.cache = cache;
  context.past = past;
  context.routing = options.routing;
  // The context of a layer that advances a decode state: no KV store, no attention mask.
  MixerContext state_context = context;
  state_context.cache = nullptr;
  at::Tensor h = at::embedding(embed_tokens_, ids);
  for (size_t i = 0; i < layers_.size(); ++i) {
    const DecoderLayer& l = *layers_[i];
    context.mask = &masks.at(l.window);
    const at::Tensor normed = rms_norm(h, l.input_layernorm, config_.rms_norm_eps);
    at::Tensor a;
    if (MixerState* state = states[i])
      a = T == 1 ? l.mixer->step(normed, *state, state_context)
                 : l.mixer->prefill(normed, *state, state_context);
    else
      a = l.mixer->forward(normed, context);
    h = decoder_layer_mlp(l, config_, h + a, options.routing);
    if (options.layer_outputs != nullptr) options.layer_outputs->push_back(h);
  }
  if (cache) cache->commit();
  return rms_norm(h, norm_, config_.rms_norm_eps);
}

at::Tensor Model::forward(const at::Tensor& input_ids, const ForwardOptions& options) const {
  LR_CHECK(lm_head_ != nullptr, InvalidArgument, architecture_name(config_.architecture),
           " has no language-model head (no logits over the vocabulary); load it as a classifier");
  if (options.fused_decode != FusedDecode::kOff)
    if (std::optional<at::Tensor> logits = decode_step(input_ids, options)) return *std::move(logits);
  at::Tensor h = hidden_states(input_ids, options);
  if (options.last_position_only) h = h.narrow(1, h.size(1) - 1, 1);
  return lm_head_->forward(h, options.routing);
}

std::vector<ParamGroup> Model::param_groups() const {
  std::vector<ParamGroup> out;
  for (const auto& l : layers_)
    for (ParamGroup& g : l->mixer->param_groups()) out.push_back(std::move(g));
  return out;
}

std::vector<LinearSlot*> Model::slots() {
  std::vector<LinearSlot*> out;
  for (auto& l : layers_) {
    for (LinearSlot* s : l->mixer->slots()) out.push_back(s);
    if (l->has_mlp)
      for (LinearSlot* s : {&l->gate_proj, &l->up_proj, &l->down_proj}) out.push_back(s);
  }
  if (lm_head_) out.push_back(lm_head_.get());
  return out;
}

std::vector<const LinearSlot*> Model::slots() const {
  std::vector<const LinearSlot*> out;
  for (LinearSlot* s : const_cast<Model*>(this)->slots()) out.push_back(s);
  return out;
}

const LinearSlot* Model::find_slot(std::string_view name) const {
  for (const LinearSlot* s : slots())
    if (s->name() == name) return s;
  return nullptr;
}

Attention* Model::attention(int64_t layer) {
  LR_CHECK(layer >= 0 && layer < static_cast<int64_t>(layers_.size()), InvalidArgument,
           "the model has no layer ", layer, " (", layers_.size(), " layers)");
  return dynamic_cast<Attention*>(layers_[static_cast<size_t>(layer)]->mixer.get());
}

LinearSlot& Model::slot(std::string_view name) {
  // The model owns its slots; constness here is only that of the lookup.
  if (const LinearSlot* s = find_slot(name)) return const_cast<LinearSlot&>(*s);
  throw NotFound(str("no linear slot \"", name, "\" in this ", architecture_name(config_.architecture),
                     " (slots are named like model.layers.0.self_attn.q_proj, model.layers.0.mlp.down_proj, "
                     "lm_head; other mixers' like model.layers.0.mixer.<projection>)"));
}

}  // namespace lowrank::nn
