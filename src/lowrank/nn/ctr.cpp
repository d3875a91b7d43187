#include "lowrank/nn/ctr.h"

#include <cmath>
#include <map>
#include <memory>

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/core/grad_mode.h>

#include "lowrank/core/error.h"
#include "lowrank/core/file.h"
#include "lowrank/core/safetensors.h"

namespace lowrank::nn {

namespace fs = std::filesystem;

namespace {

constexpr const char* kArchitecture = "LowrankCtrModel";

bool known_model_type(const std::string& t) {
  return t == "dnn" || t == "deepfm" || t == "dcnv2";
}

}  // namespace

void CtrConfig::check() const {
  LR_CHECK(known_model_type(model_type), InvalidArgument, "CTR model: model_type \"", model_type,
           "\" (known: dnn, deepfm, dcnv2)");
  schema.check("CTR model");
  LR_CHECK(schema.sparse_count() >= 1, InvalidArgument, "CTR model: needs at least one sparse field");
  LR_CHECK(embedding_dim >= 1, InvalidArgument, "CTR model: embedding_dim ", embedding_dim, " must be >= 1");
  LR_CHECK(!hidden_units.empty(), InvalidArgument, "CTR model: hidden_units is empty");
  for (int64_t h : hidden_units)
    LR_CHECK(h >= 1, InvalidArgument, "CTR model: hidden_units holds ", h, " (units must be >= 1)");
  LR_CHECK(model_type != "dcnv2" || cross_layers >= 1, InvalidArgument,
           "CTR model: dcnv2 needs cross_layers >= 1, got ", cross_layers);
}

OrderedJson CtrConfig::to_json() const {
  OrderedJson j = OrderedJson::parse(raw.is_object() ? raw.dump() : "{}");
  j["architectures"] = {kArchitecture};
  j["model_type"] = model_type;
  j["embedding_dim"] = embedding_dim;
  j["hidden_units"] = hidden_units;
  j["cross_layers"] = model_type == "dcnv2" ? cross_layers : 0;
  const OrderedJson s = schema.to_json();
  j["sparse_fields"] = s["sparse_fields"];
  j["dense_fields"] = s["dense_fields"];
  return j;
}

CtrConfig CtrConfig::from_json(const Json& j, const std::string& what) {
  LR_CHECK(j.is_object(), InvalidArgument, what, ": not a JSON object");
  CtrConfig c;
  c.raw = j;
  c.model_type = json_get<std::string>(j, "model_type", what);
  c.schema = data::CtrSchema::from_json(j, what);
  c.embedding_dim = json_get_or<int64_t>(j, "embedding_dim", 16, what);
  c.hidden_units = json_get_or<std::vector<int64_t>>(j, "hidden_units", {400, 400, 400}, what);
  c.cross_layers = json_get_or<int64_t>(j, "cross_layers", c.model_type == "dcnv2" ? 2 : 0, what);
  try {
    c.check();
  } catch (const InvalidArgument& e) {
    throw InvalidArgument(str(what, ": ", e.what()));
  }
  return c;
}

int64_t CtrLinear::parameter_count() const {
  int64_t n = weight.numel() + (bias.defined() ? bias.numel() : 0);
  if (factored()) n += up_weight.numel() + (up_bias.defined() ? up_bias.numel() : 0);
  return n;
}

at::Tensor CtrLinear::forward(const at::Tensor& x) const {
  at::Tensor y = at::linear(x, weight, bias);
  if (!factored()) return y;
  if (relu) y = at::relu(y);
  return at::linear(y, up_weight, up_bias);
}

void CtrLinear::append(NamedTensors& out, const std::string& prefix, const std::string& up_prefix) const {
  out.emplace_back(prefix + ".weight", weight);
  out.emplace_back(prefix + ".bias", bias);
  if (factored()) {
    out.emplace_back(up_prefix + ".weight", up_weight);
    out.emplace_back(up_prefix + ".bias", up_bias);
  }
}

int64_t CtrEmbedding::parameter_count() const {
  return table.numel() + (factored() ? proj_weight.numel() + proj_bias.numel() : 0);
}

at::Tensor CtrEmbedding::forward(const at::Tensor& ids) const {
  const at::Tensor e = at::embedding(table, ids);
  return factored() ? at::linear(e, proj_weight, proj_bias) : e;
}

CtrModel CtrModel::random(const CtrConfig& config, uint64_t seed) {
  config.check();
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  auto normal = [&](std::vector<int64_t> shape, double std) {
    return at::randn(shape, gen, at::kFloat) * std;
  };
  auto uniform = [&](std::vector<int64_t> shape, double bound) {
    return (at::rand(shape, gen, at::kFloat) * 2 - 1) * bound;
  };
  CtrModel m;
  m.config_ = config;
  const int64_t d = config.embedding_dim;
  for (const data::CtrField& f : config.schema.sparse) {
    m.embeddings_.push_back({normal({f.vocab_size + 1, d}, 1e-4), {}, {}});
    m.linear_embeddings_.push_back(normal({f.vocab_size + 1, 1}, 1e-4));
  }
  m.linear_dense_ = normal({config.schema.dense_count(), 1}, 1e-4);
  int64_t in = config.dnn_input_dim();
  for (int64_t units : config.hidden_units) {
    const double bound = 1.0 / std::sqrt(static_cast<double>(in));
    m.dnn_.push_back({normal({units, in}, 1e-4), uniform({units}, bound), {}, {}, false});
    in = units;
  }
  const int64_t n = config.dnn_input_dim();
  int64_t head_in = config.hidden_units.back();
  if (config.model_type == "dcnv2") {
    for (int64_t l = 0; l < config.cross_layers; ++l)
      m.cross_.push_back(
          {normal({n, n}, std::sqrt(2.0 / static_cast<double>(2 * n))), at::zeros({n}), {}, {}, false});
    head_in += n;
  }
  m.out_weight_ = uniform({1, head_in}, 1.0 / std::sqrt(static_cast<double>(head_in)));
  m.out_bias_ = at::zeros({1});
  m.compression_ = nullptr;
  return m;
}

std::vector<std::string> CtrModel::layer_names() const {
  std::vector<std::string> names;
  for (const data::CtrField& f : config_.schema.sparse) names.push_back("embedding_dict." + f.name);
  for (size_t i = 0; i < dnn_.size(); ++i) names.push_back("dnn.linears." + std::to_string(i));
  for (size_t l = 0; l < cross_.size(); ++l) names.push_back("crossnet." + std::to_string(l));
  return names;
}

// The lookups of every field fused for inference (no gradients, no observer): one gather for the
// dense tables, one gather and one batched product for the factored ones (their tables padded to
// the widest rank), one gather for the linear part. Built from the per-field tensors and rebuilt
// when any of them changes (identity or version): a copy of the model shares it until then.
struct CtrModel::LookupCache {
  std::vector<std::pair<const void*, uint32_t>> key;
  std::vector<int64_t> dense_fields, factored_fields;
  at::Tensor dense_offsets, factored_offsets, linear_offsets;  // [F_group] int64
  at::Tensor dense_table;                                      // [Σ rows, d]
  at::Tensor factored_table;                                   // [Σ rows, k_max]
  at::Tensor proj_weight_t, proj_bias;                         // [F_f, k_max, d], [F_f, 1, d]
  at::Tensor linear_table;                                     // [Σ rows]
  at::Tensor order;  // field f's position in [dense…, factored…] (undefined: identity)
};

namespace {

std::vector<std::pair<const void*, uint32_t>> lookup_key(const std::vector<CtrEmbedding>& emb,
                                                         const std::vector<at::Tensor>& linear) {
  std::vector<std::pair<const void*, uint32_t>> key;
  auto add = [&](const at::Tensor& t) {
    key.emplace_back(t.defined() ? static_cast<const void*>(t.unsafeGetTensorImpl()) : nullptr,
                     t.defined() ? t._version() : 0);
  };
  for (const CtrEmbedding& e : emb) {
    add(e.table);
    add(e.proj_weight);
    add(e.proj_bias);
  }
  for (const at::Tensor& t : linear) add(t);
  return key;
}

at::Tensor offsets_of(const std::vector<int64_t>& rows) {
  std::vector<int64_t> off(rows.size());
  int64_t at = 0;
  for (size_t i = 0; i < rows.size(); ++i) {
    off[i] = at;
    at += rows[i];
  }
  return at::tensor(off, at::kLong);
}

}  // namespace

std::shared_ptr<const CtrModel::LookupCache> CtrModel::lookup_cache() const {
  std::shared_ptr<const LookupCache> cache = std::atomic_load(&lookup_);
  auto key = lookup_key(embeddings_, linear_embeddings_);
  if (cache && cache->key == key) return cache;
  auto c = std::make_shared<LookupCache>();
  c->key = std::move(key);
  std::vector<at::Tensor> dense_tables, factored_tables, weights, biases, linear;
  std::vector<int64_t> dense_rows, factored_rows, linear_rows;
  int64_t k_max = 0;
  for (const CtrEmbedding& e : embeddings_)
    if (e.factored()) k_max = std::max(k_max, e.rank());
  for (size_t f = 0; f < embeddings_.size(); ++f) {
    const CtrEmbedding& e = embeddings_[f];
    if (e.factored()) {
      c->factored_fields.push_back(static_cast<int64_t>(f));
      factored_tables.push_back(at::constant_pad_nd(e.table.detach(), {0, k_max - e.rank()}));
      weights.push_back(at::constant_pad_nd(e.proj_weight.detach(), {0, k_max - e.rank()}).t());
      biases.push_back(e.proj_bias.detach().unsqueeze(0));
      factored_rows.push_back(e.table.size(0));
    } else {
      c->dense_fields.push_back(static_cast<int64_t>(f));
      dense_tables.push_back(e.table.detach());
      dense_rows.push_back(e.table.size(0));
    }
    linear.push_back(linear_embeddings_[f].detach().reshape({-1}));
    linear_rows.push_back(linear_embeddings_[f].size(0));
  }
  if (!dense_tables.empty()) {
    c->dense_table = at::cat(dense_tables);
    c->dense_offsets = offsets_of(dense_rows);
  }
  if (!factored_tables.empty()) {
    c->factored_table = at::cat(factored_tables);
    c->factored_offsets = offsets_of(factored_rows);
    c->proj_weight_t = at::stack(weights);
    c->proj_bias = at::stack(biases);
  }
  c->linear_table = at::cat(linear);
  c->linear_offsets = offsets_of(linear_rows);
  if (!c->dense_fields.empty() && !c->factored_fields.empty()) {
    std::vector<int64_t> order(embeddings_.size());
    int64_t pos = 0;
    for (int64_t f : c->dense_fields) order[static_cast<size_t>(f)] = pos++;
    for (int64_t f : c->factored_fields) order[static_cast<size_t>(f)] = pos++;
    c->order = at::tensor(order, at::kLong);
  }
  std::atomic_store(&lookup_, std::shared_ptr<const LookupCache>(c));
  return c;
}

std::pair<at::Tensor, at::Tensor> CtrModel::embed(const data::CtrData& batch, const Observer& observe) const {
  const data::CtrSchema& s = config_.schema;
  const int64_t F = s.sparse_count(), B = batch.sparse.size(0);
  if (!observe && !at::GradMode::is_enabled()) {
    const std::shared_ptr<const LookupCache> c = lookup_cache();
    const at::Tensor ids = batch.sparse;
    const at::Tensor linear =
        c->linear_table.index_select(0, (ids + c->linear_offsets).reshape({-1})).view({B, F}).sum(1);
    std::vector<at::Tensor> groups;
    if (!c->dense_fields.empty()) {
      const at::Tensor sel =
          c->factored_fields.empty() ? ids : ids.index_select(1, at::tensor(c->dense_fields));
      groups.push_back(c->dense_table.index_select(0, (sel + c->dense_offsets).reshape({-1}))
                           .view({B, sel.size(1), config_.embedding_dim}));
    }
    if (!c->factored_fields.empty()) {
      const at::Tensor sel =
          c->dense_fields.empty() ? ids : ids.index_select(1, at::tensor(c->factored_fields));
      const int64_t Ff = sel.size(1);
      const at::Tensor small = c->factored_table.index_select(0, (sel + c->factored_offsets).reshape({-1}))
                                   .view({B, Ff, c->factored_table.size(1)});
      // e_f = P_f e'_f + p_f for every field at once: [F_f, B, k] x [F_f, k, d] + [F_f, 1, d].
      groups.push_back(at::baddbmm(c->proj_bias, small.transpose(0, 1), c->proj_weight_t).transpose(0, 1));
    }
    at::Tensor e = groups.size() == 1 ? groups[0] : at::cat(groups, 1);
    if (c->order.defined()) e = e.index_select(1, c->order);
    return {e, linear};
  }
  std::vector<at::Tensor> emb;
  at::Tensor linear = at::zeros({B}, batch.dense.options());
  for (int64_t f = 0; f < F; ++f) {
    const at::Tensor ids = batch.sparse.select(1, f);
    const auto fi = static_cast<size_t>(f);
    emb.push_back(embeddings_[fi].forward(ids));
    if (observe) observe("embedding_dict." + s.sparse[fi].name, emb.back());
    linear = linear + at::embedding(linear_embeddings_[fi], ids).squeeze(1);
  }
  return {at::stack(emb, 1), linear};
}

at::Tensor CtrModel::forward(const data::CtrData& batch, const Observer& observe) const {
  const data::CtrSchema& s = config_.schema;
  LR_CHECK(batch.sparse.dim() == 2 && batch.sparse.size(1) == s.sparse_count() && batch.dense.dim() == 2 &&
               batch.dense.size(1) == s.dense_count() && batch.dense.size(0) == batch.sparse.size(0),
           InvalidArgument, "CTR model: a batch of ", batch.sparse.sizes(), " sparse and ",
           batch.dense.sizes(), " dense fields for a model of ", s.sparse_count(), " and ", s.dense_count());
  const int64_t B = batch.sparse.size(0);
  const auto [e, linear] = embed(batch, observe);  // [B, F, d], [B]
  at::Tensor logit = at::addmv(linear, batch.dense, linear_dense_.squeeze(1));
  const at::Tensor x0 = at::cat({e.reshape({B, -1}), batch.dense}, 1);
  at::Tensor h = x0;
  for (size_t i = 0; i < dnn_.size(); ++i) {
    const at::Tensor y = dnn_[i].forward(h);
    if (observe) observe("dnn.linears." + std::to_string(i), y);
    h = at::relu(y);
  }
  const at::Tensor w_out = out_weight_.squeeze(0);
  if (config_.model_type == "dcnv2") {
    at::Tensor x = x0;
    for (size_t l = 0; l < cross_.size(); ++l) {
      const at::Tensor y = cross_[l].forward(x);
      if (observe) observe("crossnet." + std::to_string(l), y);
      x = at::addcmul(x, x0, y);  // x0 ⊙ y + x in one pass
    }
    // w_outᵀ [x; h] without building the concatenation.
    const int64_t n = x.size(1);
    logit = at::addmv(logit, x, w_out.slice(0, 0, n));
    return at::addmv(logit, h, w_out.slice(0, n)) + out_bias_;
  }
  if (config_.model_type == "deepfm") {
    const at::Tensor sum = e.sum(1);
    logit = logit + 0.5 * (sum * sum - (e * e).sum(1)).sum(1);
  }
  return at::addmv(logit, h, w_out) + out_bias_;
}

NamedTensors CtrModel::named_tensors() const {
  NamedTensors params = parameters();
  bool any_factored = false;
  for (const CtrLinear& c : cross_) any_factored = any_factored || c.factored();
  if (cross_.empty() || any_factored) return params;
  // An uncompressed cross network is stored as DeepCTR's stacked CrossNet tensors.
  NamedTensors out;
  std::vector<at::Tensor> kernels, biases;
  for (const CtrLinear& c : cross_) {
    kernels.push_back(c.weight.detach());
    biases.push_back(c.bias.detach().unsqueeze(1));
  }
  for (auto& [name, t] : params) {
    if (name.starts_with("crossnet.")) continue;
    if (name == "dnn_linear.weight") {
      out.emplace_back("crossnet.kernels", at::stack(kernels));
      out.emplace_back("crossnet.bias", at::stack(biases));
    }
    out.emplace_back(name, t);
  }
  return out;
}

int64_t CtrModel::parameter_count() const {
  int64_t n = 0;
  for (const CtrEmbedding& e : embeddings_) n += e.parameter_count();
  for (const at::Tensor& t : linear_embeddings_) n += t.numel();
  n += linear_dense_.numel();
  for (const CtrLinear& l : dnn_) n += l.parameter_count();
  for (const CtrLinear& l : cross_) n += l.parameter_count();
  return n + out_weight_.numel() + out_bias_.numel();
}

NamedTensors CtrModel::parameters() const {
  NamedTensors out;
  const data::CtrSchema& s = config_.schema;
  for (size_t f = 0; f < embeddings_.size(); ++f) {
    const std::string& name = s.sparse[f].name;
    out.emplace_back("embedding_dict." + name + ".weight", embeddings_[f].table);
    if (embeddings_[f].factored()) {
      out.emplace_back("embedding_proj." + name + ".weight", embeddings_[f].proj_weight);
      out.emplace_back("embedding_proj." + name + ".bias", embeddings_[f].proj_bias);
    }
    out.emplace_back("linear_model.embedding_dict." + name + ".weight", linear_embeddings_[f]);
  }
  out.emplace_back("linear_model.weight", linear_dense_);
  for (size_t i = 0; i < dnn_.size(); ++i)
    dnn_[i].append(out, "dnn.linears." + std::to_string(i), "dnn.after_linears." + std::to_string(i));
  for (size_t l = 0; l < cross_.size(); ++l) {
    const std::string p = "crossnet." + std::to_string(l);
    cross_[l].append(out, cross_[l].factored() ? p + ".down" : p, p + ".up");
  }
  out.emplace_back("dnn_linear.weight", out_weight_);
  out.emplace_back("out.bias", out_bias_);
  return out;
}

void CtrModel::requires_grad(bool on) {
  for (auto& [name, t] : parameters()) t.requires_grad_(on);
}

void CtrModel::save(const fs::path& dir) const {
  StagedDirectory staged(dir);
  std::vector<NamedTensor> tensors;
  for (const auto& [name, t] : named_tensors())
    tensors.push_back({name, t.detach().to(at::kFloat).contiguous()});
  save_safetensors(staged.path() / "model.safetensors", tensors, {{"format", "pt"}});
  write_json_file(staged.path() / "ctr_config.json", config_.to_json());
  if (!compression_.is_null()) write_json_file(staged.path() / "lowrank_config.json", compression_);
  staged.commit();
}

CtrModel CtrModel::load(const fs::path& dir) {
  const fs::path config_path = dir / "ctr_config.json";
  LR_CHECK(fs::exists(config_path), NotFound, dir.string(),
           " is not a CTR model directory (no ctr_config.json)");
  CtrModel m;
  m.config_ = CtrConfig::from_json(read_json_file(config_path), config_path.string());
  const fs::path compression_path = dir / "lowrank_config.json";
  m.compression_ = fs::exists(compression_path) ? read_json_file(compression_path) : Json(nullptr);
  const Json layers =
      m.compression_.is_object() ? m.compression_.value("layers", Json::object()) : Json::object();
  const fs::path weights_path = dir / "model.safetensors";
  const SafetensorsFile file = SafetensorsFile::open(weights_path);
  std::map<std::string, bool> used;
  auto load = [&](const std::string& name, std::vector<int64_t> shape) {
    LR_CHECK(file.contains(name), NotFound, weights_path.string(), ": no tensor ", name);
    at::Tensor t = file.load(name, at::kFloat);
    used[name] = true;
    if (!shape.empty()) {
      bool ok = t.dim() == static_cast<int64_t>(shape.size());
      for (size_t i = 0; ok && i < shape.size(); ++i)
        ok = shape[i] < 0 || t.size(static_cast<int64_t>(i)) == shape[i];
      LR_CHECK(ok, Corruption, weights_path.string(), ": tensor ", name, " has shape ", t.sizes(),
               ", expected ", at::IntArrayRef(shape), " (-1: any)");
    }
    return t;
  };
  auto layer_entry = [&](const std::string& layer) -> const Json* {
    auto it = layers.find(layer);
    return it == layers.end() ? nullptr : &*it;
  };
  auto load_linear = [&](const std::string& layer, const std::string& down, const std::string& up, int64_t in,
                         int64_t out_features) {
    CtrLinear l;
    if (const Json* e = layer_entry(layer)) {
      l.weight = load(down + ".weight", {-1, in});
      const int64_t k = l.weight.size(0);
      l.bias = load(down + ".bias", {k});
      l.up_weight = load(up + ".weight", {out_features, k});
      l.up_bias = load(up + ".bias", {out_features});
      l.relu = e->value("relu", false);
    } else {
      l.weight = load(down + ".weight", {out_features, in});
      l.bias = load(down + ".bias", {out_features});
    }
    return l;
  };
  const CtrConfig& c = m.config_;
  const int64_t d = c.embedding_dim;
  for (const data::CtrField& f : c.schema.sparse) {
    CtrEmbedding e;
    if (layer_entry("embedding_dict." + f.name) != nullptr) {
      e.table = load("embedding_dict." + f.name + ".weight", {f.vocab_size + 1, -1});
      e.proj_weight = load("embedding_proj." + f.name + ".weight", {d, e.table.size(1)});
      e.proj_bias = load("embedding_proj." + f.name + ".bias", {d});
    } else {
      e.table = load("embedding_dict." + f.name + ".weight", {f.vocab_size + 1, d});
    }
    m.embeddings_.push_back(std::move(e));
    m.linear_embeddings_.push_back(
        load("linear_model.embedding_dict." + f.name + ".weight", {f.vocab_size + 1, 1}));
  }
  m.linear_dense_ = load("linear_model.weight", {c.schema.dense_count(), 1});
  int64_t in = c.dnn_input_dim();
  for (size_t i = 0; i < c.hidden_units.size(); ++i) {
    const std::string k = std::to_string(i);
    m.dnn_.push_back(
        load_linear("dnn.linears." + k, "dnn.linears." + k, "dnn.after_linears." + k, in, c.hidden_units[i]));
    in = c.hidden_units[i];
  }
  const int64_t n = c.dnn_input_dim();
  int64_t head_in = c.hidden_units.back();
  if (c.model_type == "dcnv2") {
    if (file.contains("crossnet.kernels")) {
      const at::Tensor kernels = load("crossnet.kernels", {c.cross_layers, n, n});
      const at::Tensor biases = load("crossnet.bias", {c.cross_layers, n, 1});
      for (int64_t l = 0; l < c.cross_layers; ++l)
        m.cross_.push_back({kernels[l].clone(), biases[l].squeeze(1).clone(), {}, {}, false});
    } else {
      for (int64_t l = 0; l < c.cross_layers; ++l) {
        const std::string p = "crossnet." + std::to_string(l);
        const bool factored = layer_entry(p) != nullptr;
        m.cross_.push_back(load_linear(p, factored ? p + ".down" : p, p + ".up", n, n));
      }
    }
    head_in += n;
  }
  m.out_weight_ = load("dnn_linear.weight", {1, head_in});
  m.out_bias_ = load("out.bias", {1});
  for (const TensorInfo& info : file.tensors())
    LR_CHECK(used.count(info.name) > 0, Corruption, weights_path.string(), ": unexpected tensor ", info.name,
             " for a ", c.model_type, " model", layers.empty() ? "" : " with this lowrank_config.json");
  return m;
}

}  // namespace lowrank::nn
