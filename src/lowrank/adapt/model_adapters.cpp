// Whole-model adapter operations and PEFT directory I/O; see model_adapters.h.
#include "lowrank/adapt/model_adapters.h"

#include <cmath>
#include <map>
#include <set>

#include "lowrank/adapt/lora.h"
#include "lowrank/core/error.h"
#include "lowrank/core/log.h"
#include "lowrank/core/safetensors.h"
#include "lowrank/linalg/svd.h"

namespace fs = std::filesystem;

namespace lowrank::adapt {
namespace {

constexpr const char* kConfigFile = "adapter_config.json";
constexpr const char* kWeightsFile = "adapter_model.safetensors";

// The largest out/in features over the slots `config` targets (LayerSpec::largest_out/_in).
std::pair<int64_t, int64_t> largest_target_shape(const nn::Model& model, const AdapterConfig& config) {
  int64_t out = 0, in = 0;
  for (const nn::LinearSlot* slot : model.slots())
    if (config.targets(slot->name())) {
      out = std::max(out, slot->out_features());
      in = std::max(in, slot->in_features());
    }
  return {out, in};
}

LayerSpec layer_spec(const nn::Model& model, const AdapterConfig& config, const std::string& module,
                     uint64_t seed, std::pair<int64_t, int64_t> largest) {
  LayerSpec spec;
  spec.largest_out = largest.first;
  spec.largest_in = largest.second;
  spec.module = module;
  spec.r = config.rank_for(module);
  spec.alpha = config.alpha_for(module);
  spec.scaling = config.scaling_for(module);
  spec.config = &config;
  spec.seed = seed;
  spec.dtype = model.dtype();
  spec.device = model.device();
  return spec;
}

}  // namespace

void attach_adapter(nn::Model& model, AttachedAdapter& adapter) {
  for (const auto& [module, layer] : adapter.layers)
    LR_CHECK(model.slot(module).adapter(adapter.name) == nullptr, InvalidArgument, "adapter \"", adapter.name,
             "\" is already attached to ", module);
  for (const auto& [module, op] : adapter.saved_modules)
    adapter.original_bases.emplace_back(module, model.slot(module).replace_base(op));
  for (const auto& [module, layer] : adapter.layers) model.slot(module).add_adapter(adapter.name, layer);
}

namespace {

void check_targets_exist(const nn::Model& model, const AdapterConfig& config, std::string_view what) {
  bool any = false;
  for (const nn::LinearSlot* slot : model.slots()) any = any || config.targets(slot->name());
  if (any) return;
  std::string names;
  for (const std::string& t : config.target_modules) names += (names.empty() ? "" : ", ") + t;
  if (config.target_regex) names = *config.target_regex;
  throw InvalidArgument(str(what, ": target_modules [", names,
                            "] select no linear slot of this model (slots are named like ",
                            model.slots().front()->name(), ")"));
}

}  // namespace

nn::NamedTensors AttachedAdapter::parameters() const {
  nn::NamedTensors out;
  for (const auto& [module, layer] : layers)
    for (auto& [n, t] : layer->parameters()) out.emplace_back(str(kPeftPrefix, module, ".", n), t);
  for (const auto& [module, op] : saved_modules)
    for (auto& [n, t] : op->tensors()) out.emplace_back(str(kPeftPrefix, module, ".", n), t);
  return out;
}

int64_t AttachedAdapter::num_parameters() const {
  int64_t n = 0;
  for (const auto& [name, t] : parameters()) n += t.numel();
  return n;
}

void AttachedAdapter::set_training(bool training) {
  for (auto& [module, layer] : layers) layer->set_training(training);
}

void AttachedAdapter::set_weight(double weight) {
  for (auto& [module, layer] : layers) layer->set_weight(weight);
}

AttachedAdapter create_adapter(nn::Model& model, std::string name, AdapterConfig config, uint64_t seed,
                               const std::map<std::string, at::Tensor>& gradients) {
  const AdapterMethod& method = registry().factory(config.method);
  config.peft_type = method.peft_type;
  if (config.method == "dora") config.use_dora = true;
  if (config.method == "pissa" && !(config.init_lora_weights.is_string() &&
                                    config.init_lora_weights.get<std::string>().starts_with("pissa")))
    config.init_lora_weights = "pissa";
  LR_CHECK(config.modules_to_save.empty(), Unsupported,
           "modules_to_save: training whole modules beside an adapter is not supported yet");
  check_targets_exist(model, config, str("adapter \"", name, "\""));
  AttachedAdapter out{std::move(name), std::move(config), {}, {}, {}};
  const std::pair<int64_t, int64_t> largest = largest_target_shape(model, out.config);
  for (nn::LinearSlot* slot : model.slots()) {
    if (!out.config.targets(slot->name())) continue;
    LayerSpec spec = layer_spec(model, out.config, slot->name(), seed, largest);
    if (method.needs_gradient) {
      auto g = gradients.find(slot->name());
      LR_CHECK(g != gradients.end(), InvalidArgument, "adapter method ", out.config.method,
               " needs the gradient of ", slot->name(), " for its initialisation");
      spec.gradient = g->second;
    }
    std::shared_ptr<TrainableAdapter> layer = method.create(spec, slot->base());
    layer->set_dropout(out.config.lora_dropout);
    out.layers.emplace_back(slot->name(), std::move(layer));
  }
  attach_adapter(model, out);
  return out;
}

std::map<std::string, at::Tensor> slot_gradients(nn::Model& model, const AdapterConfig& config,
                                                 const std::function<at::Tensor(const nn::Model&)>& loss_fn,
                                                 int64_t batches) {
  // Each targeted dense base is swapped for one whose weight is a leaf that requires grad, then
  // swapped back: the model's own tensors never change their autograd state.
  std::vector<std::pair<nn::LinearSlot*, std::shared_ptr<const nn::BaseOperator>>> swapped;
  std::map<std::string, at::Tensor> leaves;
  for (nn::LinearSlot* slot : model.slots()) {
    if (!config.targets(slot->name())) continue;
    at::Tensor w = slot->base().dense_weight().detach().requires_grad_(true);
    leaves[slot->name()] = w;
    swapped.emplace_back(slot,
                         slot->replace_base(std::make_shared<nn::DenseOperator>(w, slot->base().bias())));
  }
  try {
    for (int64_t i = 0; i < batches; ++i) loss_fn(model).backward();
  } catch (...) {
    for (auto& [slot, base] : swapped) slot->replace_base(base);
    throw;
  }
  for (auto& [slot, base] : swapped) slot->replace_base(base);
  std::map<std::string, at::Tensor> out;
  for (auto& [name, w] : leaves) out[name] = w.grad().defined() ? w.grad().detach() : at::zeros_like(w);
  return out;
}

AttachedAdapter read_adapter(const nn::Model& model, const fs::path& dir, std::string name) {
  const fs::path config_path = dir / kConfigFile;
  LR_CHECK(fs::is_regular_file(config_path), NotFound, "adapter directory ", dir.string(), " has no ",
           kConfigFile);
  AdapterConfig config = AdapterConfig::from_json(read_json_file(config_path), config_path.string());
  config.method = method_for(config);
  const AdapterMethod& method = registry().factory(config.method);
  const fs::path weights_path = dir / kWeightsFile;
  if (!fs::exists(weights_path) && fs::exists(dir / "adapter_model.bin"))
    throw Unsupported(
        str(dir.string(), ": only adapter_model.safetensors is read, not the pickle adapter_model.bin"));
  const SafetensorsFile weights = SafetensorsFile::open(weights_path);
  const std::string what = weights_path.string();
  check_targets_exist(model, config, config_path.string());

  // Group the file's tensors by slot: the longest slot name that prefixes the module path.
  std::map<std::string, TensorMap> per_slot;
  std::map<std::string, TensorMap> saved_modules;
  std::vector<std::string> slot_names;
  for (const nn::LinearSlot* s : model.slots()) slot_names.push_back(s->name());
  TensorMap shared;  // "base_model.<name>": outside any module, given to every slot's factory
  for (const TensorInfo& info : weights.tensors()) {
    if (!info.name.starts_with(kPeftPrefix) && info.name.starts_with("base_model.")) {
      shared[info.name] = weights.load(info.name).to(model.device(), model.dtype()).contiguous();
      continue;
    }
    LR_CHECK(info.name.starts_with(kPeftPrefix), InvalidArgument, what, ": tensor \"", info.name,
             "\" does not start with \"", kPeftPrefix, "\" (not a PEFT adapter file?)");
    const std::string rest = info.name.substr(kPeftPrefix.size());
    const std::string* slot = nullptr;
    for (const std::string& s : slot_names)
      if (rest.starts_with(s + ".") && (slot == nullptr || s.size() > slot->size())) slot = &s;
    LR_CHECK(slot != nullptr, InvalidArgument, what, ": tensor \"", info.name,
             "\" belongs to no linear slot of this model (embedding and norm adapters are not supported)");
    const std::string rel = rest.substr(slot->size() + 1);
    if (module_listed(*slot, config.modules_to_save) && (rel == "weight" || rel == "bias")) {
      saved_modules[*slot][rel] = weights.load(info.name);
      continue;
    }
    LR_CHECK(config.targets(*slot), InvalidArgument, what, ": tensor \"", info.name, "\" is for module ",
             *slot, ", which the adapter's target_modules do not select");
    per_slot[*slot][rel] = weights.load(info.name);
  }

  if (name.empty())
    name = dir.filename().string().empty() ? dir.parent_path().filename().string() : dir.filename().string();
  AttachedAdapter out{std::move(name), std::move(config), {}, {}, {}};
  const std::pair<int64_t, int64_t> largest = largest_target_shape(model, out.config);
  for (const nn::LinearSlot* slot : model.slots()) {
    if (!out.config.targets(slot->name()) || module_listed(slot->name(), out.config.modules_to_save))
      continue;
    auto it = per_slot.find(slot->name());
    LR_CHECK(it != per_slot.end(), Corruption, what, ": no tensors for module ", slot->name(),
             ", which the adapter's target_modules select");
    const LayerSpec spec = layer_spec(model, out.config, slot->name(), 0, largest);
    LR_CHECK(spec.r <= std::min(slot->in_features(), slot->out_features()), InvalidArgument,
             config_path.string(), ": rank ", spec.r, " for module ", slot->name(),
             " exceeds min(in, out) = ", std::min(slot->in_features(), slot->out_features()));
    TensorMap tensors = it->second;
    tensors.insert(shared.begin(), shared.end());
    std::shared_ptr<TrainableAdapter> layer = method.load(spec, slot->base(), tensors, what);
    layer->set_dropout(out.config.lora_dropout);
    out.layers.emplace_back(slot->name(), std::move(layer));
  }
  for (auto& [module, tensors] : saved_modules) {
    const nn::LinearSlot* slot_ptr = nullptr;
    for (const nn::LinearSlot* s : model.slots())
      if (s->name() == module) slot_ptr = s;
    const nn::LinearSlot& slot = *slot_ptr;  // a key of saved_modules is one of slot_names
    auto w = tensors.find("weight");
    LR_CHECK(w != tensors.end(), InvalidArgument, what, ": modules_to_save module ", module,
             " has no weight");
    LR_CHECK(w->second.sizes() == slot.base().dense_weight().sizes(), InvalidArgument, what, ": ", module,
             ".weight has shape ", w->second.sizes(), ", the model's is ",
             slot.base().dense_weight().sizes());
    at::Tensor bias;
    if (auto b = tensors.find("bias"); b != tensors.end()) bias = b->second.to(model.device(), model.dtype());
    out.saved_modules.emplace_back(
        module, std::make_shared<nn::DenseOperator>(w->second.to(model.device(), model.dtype()), bias));
  }
  return out;
}

AttachedAdapter load_adapter(nn::Model& model, const fs::path& dir, std::string name) {
  AttachedAdapter out = read_adapter(model, dir, std::move(name));
  attach_adapter(model, out);
  return out;
}

std::vector<AttachedAdapter> load_adapters(nn::Model& model, const std::vector<std::string>& specs) {
  std::vector<AttachedAdapter> out;
  std::set<std::string> names;
  for (const std::string& spec : specs) {
    std::string path = spec;
    double weight = 1;
    if (const size_t colon = spec.rfind(':'); colon != std::string::npos && !fs::exists(spec)) {
      path = spec.substr(0, colon);
      const std::string w = spec.substr(colon + 1);
      try {
        size_t used = 0;
        weight = std::stod(w, &used);
        LR_CHECK(used == w.size(), InvalidArgument, "");
      } catch (const std::exception&) {
        throw InvalidArgument(
            str("--adapter ", spec, ": the weight after ':' must be a number, got \"", w, "\""));
      }
    }
    std::string name = fs::path(path).lexically_normal().filename().string();
    if (name.empty()) name = fs::path(path).lexically_normal().parent_path().filename().string();
    if (name.empty()) name = "adapter";
    for (int i = 2; names.count(name); ++i) name = str(fs::path(path).filename().string(), "-", i);
    names.insert(name);
    try {
      out.push_back(load_adapter(model, path, name));
    } catch (...) {
      for (const AttachedAdapter& a : out) detach_adapter(model, a);
      throw;
    }
    out.back().set_weight(weight);
  }
  return out;
}

AdapterConfig save_adapter(const AttachedAdapter& adapter, const fs::path& dir) {
  const AdapterMethod& method = registry().factory(adapter.config.method);
  AdapterConfig config = method.export_config ? method.export_config(adapter.config) : adapter.config;
  std::vector<NamedTensor> tensors;
  std::set<std::string> shared_names;  // shared_tensors() are written once
  for (const auto& [module, layer] : adapter.layers) {
    std::shared_ptr<const TrainableAdapter> saved = layer->finalize();
    if (!saved) saved = layer;
    // A layer whose final rank or scaling differs from the config's (SoRA after pruning) gets
    // its own rank_pattern / alpha_pattern entry, anchored to the whole module name.
    if (auto f = saved->low_rank_delta(); f && saved != layer) {
      const int64_t rank = f->a.size(0);
      const double scaling = f->scale / layer->weight();
      if (rank != config.rank_for(module) ||
          std::abs(scaling - config.scaling_for(module)) > 1e-12 * scaling) {
        config.rank_pattern.insert(config.rank_pattern.begin(), {"^" + module, rank});
        const double alpha = scaling * (config.use_rslora ? std::sqrt(static_cast<double>(rank)) : rank);
        config.alpha_pattern.insert(config.alpha_pattern.begin(), {"^" + module, alpha});
      }
    }
    for (const auto& [n, t] : saved->tensors())
      tensors.push_back({str(kPeftPrefix, module, ".", n), t.detach().to(at::kCPU).contiguous()});
    for (const auto& [n, t] : saved->shared_tensors())
      if (shared_names.insert(n).second) tensors.push_back({n, t.detach().to(at::kCPU).contiguous()});
  }
  for (const auto& [module, op] : adapter.saved_modules)
    for (const auto& [n, t] : op->tensors())
      tensors.push_back({str(kPeftPrefix, module, ".", n), t.detach().to(at::kCPU).contiguous()});
  fs::create_directories(dir);
  save_safetensors(dir / kWeightsFile, tensors, {{"format", "pt"}});
  write_json_file(dir / kConfigFile, config.to_json());
  return config;
}

void detach_adapter(nn::Model& model, const AttachedAdapter& adapter) {
  for (const auto& [module, layer] : adapter.layers) {
    nn::LinearSlot& slot = model.slot(module);
    if (slot.adapter(adapter.name) != nullptr) slot.remove_adapter(adapter.name);
  }
  for (const auto& [module, base] : adapter.original_bases) model.slot(module).replace_base(base);
}

void merge_adapters(nn::Model& model, std::vector<AttachedAdapter>& adapters) {
  at::NoGradGuard no_grad;
  for (AttachedAdapter& adapter : adapters) {
    for (const auto& [module, layer] : adapter.layers) {
      nn::LinearSlot& slot = model.slot(module);
      LR_CHECK(slot.base().kind() == "dense", Unsupported, "merge: slot ", module, " has a ",
               slot.base().kind(), " base; only dense bases can absorb an adapter");
      at::Tensor merged =
          layer->merged_weight(slot.base()).detach().to(slot.base().dense_weight().scalar_type());
      at::Tensor bias = slot.base().bias();
      slot.replace_base(std::make_shared<nn::DenseOperator>(merged.contiguous(), bias));
      slot.remove_adapter(adapter.name);
    }
    adapter.layers.clear();
    adapter.saved_modules.clear();  // the saved copies stay as the new bases
    adapter.original_bases.clear();
  }
}

std::vector<ExtractedSlot> extract_lora(const nn::Model& base, const nn::Model& tuned,
                                        const ExtractOptions& options, const fs::path& out_dir) {
  LR_CHECK(options.rank >= 1, InvalidArgument, "extract: --rank must be >= 1, got ", options.rank);
  at::NoGradGuard no_grad;
  std::vector<ExtractedSlot> report;
  AttachedAdapter adapter;
  adapter.name = "extracted";
  adapter.config.r = options.rank;
  adapter.config.lora_alpha = static_cast<double>(options.rank);
  adapter.config.init_lora_weights = true;
  for (const nn::LinearSlot* slot : base.slots()) {
    const nn::LinearSlot* other = tuned.find_slot(slot->name());
    LR_CHECK(other != nullptr, InvalidArgument, "extract: the tuned model has no module ", slot->name());
    const at::Tensor wb = slot->base().dense_weight().to(at::kFloat);
    const at::Tensor wt = other->base().dense_weight().to(at::kFloat);
    LR_CHECK(wb.sizes() == wt.sizes(), InvalidArgument, "extract: ", slot->name(), " is ", wb.sizes(),
             " in the base but ", wt.sizes(), " in the tuned model");
    const at::Tensor diff = wt - wb;
    const double diff_norm = at::linalg_vector_norm(diff, 2).item<double>();
    const double base_norm = at::linalg_vector_norm(wb, 2).item<double>();
    const double relative = diff_norm / std::max(base_norm, 1e-30);
    if (relative < options.min_relative_change) continue;
    const int64_t rank = std::min({options.rank, wb.size(0), wb.size(1)});
    const linalg::Svd svd = linalg::truncated_svd(diff, rank);
    const at::Tensor root = at::sqrt(svd.S);
    at::Tensor b = (svd.U * root.unsqueeze(0)).to(base.dtype()).contiguous();
    at::Tensor a = (root.unsqueeze(1) * svd.Vh).to(base.dtype()).contiguous();
    const double captured = at::sum(svd.S * svd.S).item<double>() / std::max(diff_norm * diff_norm, 1e-300);
    report.push_back({slot->name(), relative, captured});
    adapter.config.target_modules.push_back(slot->name());
    if (rank != options.rank) {
      adapter.config.rank_pattern.emplace_back("^" + slot->name(), rank);
      adapter.config.alpha_pattern.emplace_back("^" + slot->name(), static_cast<double>(rank));
    }
    adapter.layers.emplace_back(slot->name(), std::make_shared<LoraAdapter>(a, b, 1.0));
  }
  LR_CHECK(!adapter.layers.empty(), InvalidArgument,
           "extract: no linear slot differs between the two models; nothing to extract");
  save_adapter(adapter, out_dir);
  return report;
}

OrderedJson extract_report_json(const std::vector<ExtractedSlot>& slots, int64_t rank) {
  OrderedJson list = OrderedJson::array();
  double total = 0;
  for (const ExtractedSlot& s : slots) {
    list.push_back({{"module", s.module}, {"relative_change", s.relative_change}, {"energy", s.energy}});
    total += s.energy;
  }
  return {{"rank", rank},
          {"slots", list},
          {"mean_energy", slots.empty() ? 0.0 : total / static_cast<double>(slots.size())}};
}

}  // namespace lowrank::adapt
