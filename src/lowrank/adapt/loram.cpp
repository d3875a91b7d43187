// LoRAM's pruning criteria, alignment and adapter recovery; see loram.h.
#include "lowrank/adapt/loram.h"

#include <cmath>
#include <regex>

#include <ATen/CPUGeneratorImpl.h>

#include "lowrank/adapt/lora.h"
#include "lowrank/adapt/methods.h"
#include "lowrank/core/error.h"
#include "lowrank/nn/observing_operator.h"

namespace lowrank::adapt {
namespace {

// The option keys of the loram method (stripped from the saved plain-LoRA configuration).
constexpr const char* kLoramKeys[] = {"criterion",   "keep",     "mlp_keep",
                                      "attn_keep",   "sparsity", "calibration_windows",
                                      "align_steps", "align_lr", "align_data"};

struct ProjSlot {
  int64_t layer = -1;  // -1: not a decoder projection
  std::string proj;    // "q_proj", ..., "down_proj"
};

// "model.layers.3.mlp.gate_proj" -> {3, "gate_proj"}.
ProjSlot proj_slot(const std::string& module) {
  static const std::regex re(R"(model\.layers\.(\d+)\.(?:mlp|self_attn)\.(\w+_proj))");
  std::smatch m;
  if (std::regex_match(module, m, re)) return {std::stoll(m[1].str()), m[2].str()};
  return {};
}

std::string layer_prefix(int64_t layer) {
  return "model.layers." + std::to_string(layer) + ".";
}

at::Tensor abs_salience(const nn::Model& model, const std::map<std::string, at::Tensor>& gradients,
                        const std::string& slot) {
  auto it = gradients.find(slot);
  const nn::LinearSlot* s = model.find_slot(slot);
  LR_CHECK(it != gradients.end() && s != nullptr, InvalidArgument, "loram: no slot or gradient for ", slot);
  return (s->base().dense_weight().to(at::kDouble) * it->second.to(at::kDouble)).abs();
}

// The k best-scored indices, sorted.
at::Tensor top_sorted(const at::Tensor& score, double keep) {
  const int64_t n = score.size(0);
  const int64_t k =
      std::clamp<int64_t>(static_cast<int64_t>(std::ceil(keep * static_cast<double>(n) - 1e-9)), 1, n);
  return std::get<0>(at::sort(std::get<1>(at::topk(score, k)))).to(at::kLong);
}

void check_keep(double keep, const char* option) {
  LR_CHECK(keep > 0 && keep <= 1, InvalidArgument, "loram: option ", option, " must be in (0, 1], got ",
           keep);
}

// A copy of `config` with the structure sizes changed in its config.json.
nn::ModelConfig resized(const nn::ModelConfig& config, int64_t intermediate, int64_t kv_heads) {
  Json raw = config.raw;
  raw["intermediate_size"] = intermediate;
  raw["num_key_value_heads"] = kv_heads;
  raw["num_attention_heads"] = kv_heads * config.num_key_value_groups();
  raw["head_dim"] = config.head_dim;  // no longer hidden_size / heads
  return nn::ModelConfig::from_json(raw, "loram pruned config");
}

// Records H = Σ x xᵀ (float64) of a slot's inputs while it is installed.
class GramRecorder final : public nn::ObservingOperator {
 public:
  GramRecorder(std::shared_ptr<const nn::BaseOperator> inner, at::Tensor* gram)
      : ObservingOperator(std::move(inner)), gram_(gram) {}

 private:
  void observe(const at::Tensor& x) const override {
    const at::Tensor x2 = x.reshape({-1, x.size(-1)}).to(at::kCPU, at::kDouble);
    *gram_ += at::matmul(x2.t(), x2);
  }

  at::Tensor* gram_;
};

nn::Model copy_model(const nn::Model& model, const nn::ModelConfig& config) {
  return nn::Model::random(config, 0, {model.dtype(), model.device()});
}

}  // namespace

LoramOptions LoramOptions::from_config(const AdapterConfig& c) {
  LR_CHECK(!c.options.contains("loram_keep"), InvalidArgument,
           "loram: option loram_keep was replaced by mlp_keep and attn_keep (or keep for both)");
  LoramOptions o;
  o.criterion = c.option<std::string>("criterion", o.criterion);
  LR_CHECK(o.criterion == "random" || o.criterion == "structured" || o.criterion == "semi" ||
               o.criterion == "unstructured",
           InvalidArgument,
           "loram: option criterion must be random, structured, semi or unstructured, got \"", o.criterion,
           "\"");
  const double keep = c.option<double>("keep", o.mlp_keep);
  o.mlp_keep = c.option<double>("mlp_keep", keep);
  o.attn_keep = c.option<double>("attn_keep", keep);
  check_keep(o.mlp_keep, "mlp_keep");
  check_keep(o.attn_keep, "attn_keep");
  o.sparsity = c.option<double>("sparsity", o.sparsity);
  LR_CHECK(o.sparsity > 0 && o.sparsity < 1, InvalidArgument,
           "loram: option sparsity must be in (0, 1), got ", o.sparsity);
  o.calibration_windows = c.option<int64_t>("calibration_windows", o.calibration_windows);
  LR_CHECK(o.calibration_windows >= 1, InvalidArgument,
           "loram: option calibration_windows must be >= 1, got ", o.calibration_windows);
  o.align_steps = c.option<int64_t>("align_steps", o.align_steps);
  LR_CHECK(o.align_steps >= 0, InvalidArgument, "loram: option align_steps must be >= 0, got ",
           o.align_steps);
  o.align_lr = c.option<double>("align_lr", o.align_lr);
  LR_CHECK(o.align_lr > 0 && std::isfinite(o.align_lr), InvalidArgument,
           "loram: option align_lr must be positive, got ", o.align_lr);
  o.align_data = c.option<std::string>("align_data", o.align_data);
  return o;
}

at::Tensor PrunedModel::kept_q_rows(int64_t layer) const {
  const int64_t span = full.num_key_value_groups() * full.head_dim;  // query rows per KV head
  const at::Tensor heads = kept_kv_heads[static_cast<size_t>(layer)];
  return (heads.unsqueeze(1) * span + at::arange(span, at::kLong).unsqueeze(0)).reshape({-1});
}

at::Tensor PrunedModel::kept_kv_rows(int64_t layer) const {
  const at::Tensor heads = kept_kv_heads[static_cast<size_t>(layer)];
  return (heads.unsqueeze(1) * full.head_dim + at::arange(full.head_dim, at::kLong).unsqueeze(0))
      .reshape({-1});
}

StructureScores taylor_importance(const nn::Model& model,
                                  const std::map<std::string, at::Tensor>& gradients) {
  at::NoGradGuard no_grad;
  const nn::ModelConfig& c = model.config();
  StructureScores s;
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    const std::string p = layer_prefix(l);
    auto sal = [&](const std::string& name) { return abs_salience(model, gradients, p + name); };
    s.channels.push_back(sal("mlp.gate_proj").sum(1) + sal("mlp.up_proj").sum(1) +
                         sal("mlp.down_proj").sum(0));
    const int64_t n_kv = c.num_key_value_heads;
    s.kv_groups.push_back(sal("self_attn.q_proj").sum(1).reshape({n_kv, -1}).sum(1) +
                          sal("self_attn.k_proj").sum(1).reshape({n_kv, -1}).sum(1) +
                          sal("self_attn.v_proj").sum(1).reshape({n_kv, -1}).sum(1) +
                          sal("self_attn.o_proj").sum(0).reshape({n_kv, -1}).sum(1));
  }
  return s;
}

PrunedModel prune_structures(const nn::Model& model, const StructureScores& scores, double mlp_keep,
                             double attn_keep, const std::string& criterion) {
  check_keep(mlp_keep, "mlp_keep");
  check_keep(attn_keep, "attn_keep");
  at::NoGradGuard no_grad;
  const nn::ModelConfig& config = model.config();
  std::vector<at::Tensor> channels, heads;
  for (int64_t l = 0; l < config.num_hidden_layers; ++l) {
    channels.push_back(top_sorted(scores.channels[static_cast<size_t>(l)], mlp_keep));
    heads.push_back(top_sorted(scores.kv_groups[static_cast<size_t>(l)], attn_keep));
  }
  PrunedModel out{copy_model(model, resized(config, channels[0].size(0), heads[0].size(0))), criterion,
                  std::move(channels), std::move(heads), config};
  // Copy every tensor; the pruned projections keep only their rows / columns.
  std::map<std::string, at::Tensor> source;
  for (const auto& [name, t] : model.named_tensors()) source[name] = t;
  for (const auto& [name, t] : out.model.named_tensors()) {
    const at::Tensor& s = source.at(name);
    const std::string module = name.substr(0, name.rfind('.'));
    const ProjSlot slot = proj_slot(module);
    if (slot.layer < 0) {
      t.copy_(s);
      continue;
    }
    const auto idx = [&](const at::Tensor& i) { return i.to(s.device()); };
    const at::Tensor& ch = out.kept_channels[static_cast<size_t>(slot.layer)];
    if (slot.proj == "gate_proj" || slot.proj == "up_proj")
      t.copy_(s.index_select(0, idx(ch)));
    else if (slot.proj == "down_proj")
      t.copy_(s.dim() == 2 ? s.index_select(1, idx(ch)) : s);
    else if (slot.proj == "q_proj")
      t.copy_(s.index_select(0, idx(out.kept_q_rows(slot.layer))));
    else if (slot.proj == "k_proj" || slot.proj == "v_proj")
      t.copy_(s.index_select(0, idx(out.kept_kv_rows(slot.layer))));
    else if (slot.proj == "o_proj")
      t.copy_(s.dim() == 2 ? s.index_select(1, idx(out.kept_q_rows(slot.layer))) : s);
    else
      t.copy_(s);
  }
  return out;
}

at::Tensor sparsegpt(const at::Tensor& weight, const at::Tensor& gram, double sparsity, int64_t prune_n,
                     int64_t prune_m, int64_t block_size, double damp) {
  using at::indexing::Slice;
  const int64_t cols = weight.size(1);
  LR_CHECK(prune_n > 0 || (sparsity > 0 && sparsity < 1), InvalidArgument,
           "sparsegpt: sparsity must be in (0, 1), got ", sparsity);
  LR_CHECK(prune_n == 0 || (prune_m > prune_n && cols % prune_m == 0 && block_size % prune_m == 0),
           InvalidArgument, "sparsegpt: ", prune_n, ":", prune_m, " needs in_features (", cols,
           ") divisible by ", prune_m);
  at::NoGradGuard no_grad;
  at::Tensor w = weight.detach().to(at::kCPU, at::kDouble).clone();
  at::Tensor h = gram.to(at::kCPU, at::kDouble).clone();
  // Inputs that never fire: their weights cannot matter, so they are pruned outright.
  const at::Tensor dead = h.diagonal() == 0;
  h.diagonal().masked_fill_(dead, 1.0);
  w.masked_fill_(dead.unsqueeze(0), 0.0);
  h.diagonal().add_(damp * h.diagonal().mean().item<double>());
  const at::Tensor hinv = at::linalg_cholesky(at::cholesky_inverse(at::linalg_cholesky(h)), /*upper=*/true);
  for (int64_t i1 = 0; i1 < cols; i1 += block_size) {
    const int64_t i2 = std::min(i1 + block_size, cols), count = i2 - i1;
    at::Tensor w1 = w.index({Slice(), Slice(i1, i2)}).clone();
    at::Tensor q1 = at::zeros_like(w1), err1 = at::zeros_like(w1);
    const at::Tensor hinv1 = hinv.index({Slice(i1, i2), Slice(i1, i2)});
    const at::Tensor d2 = hinv1.diagonal().pow(2).unsqueeze(0);
    at::Tensor mask1 = at::zeros_like(w1, at::kBool);
    if (prune_n == 0) {
      const at::Tensor tmp = w1.pow(2) / d2;
      const at::Tensor sorted = std::get<0>(at::sort(tmp.flatten()));
      const double thresh =
          sorted[static_cast<int64_t>(static_cast<double>(tmp.numel()) * sparsity)].item<double>();
      mask1 = tmp <= thresh;
    }
    for (int64_t i = 0; i < count; ++i) {
      const at::Tensor col = w1.index({Slice(), i});
      const double d = hinv1[i][i].item<double>();
      if (prune_n > 0 && i % prune_m == 0) {
        const at::Tensor tmp =
            w1.index({Slice(), Slice(i, i + prune_m)}).pow(2) / d2.index({Slice(), Slice(i, i + prune_m)});
        mask1.scatter_(1, std::get<1>(at::topk(tmp, prune_n, 1, /*largest=*/false)) + i, true);
      }
      const at::Tensor q = col.masked_fill(mask1.index({Slice(), i}), 0.0);
      q1.index_put_({Slice(), i}, q);
      const at::Tensor err = (col - q) / d;
      w1.index({Slice(), Slice(i, at::indexing::None)})
          .sub_(at::outer(err, hinv1.index({i, Slice(i, at::indexing::None)})));
      err1.index_put_({Slice(), i}, err);
    }
    w.index_put_({Slice(), Slice(i1, i2)}, q1);
    if (i2 < cols)
      w.index({Slice(), Slice(i2, at::indexing::None)})
          .sub_(at::matmul(err1, hinv.index({Slice(i1, i2), Slice(i2, at::indexing::None)})));
  }
  return w.to(weight.device(), weight.scalar_type());
}

PrunedModel prune_sparse(const nn::Model& model, const at::Tensor& calibration, const std::string& criterion,
                         double sparsity) {
  LR_CHECK(criterion == "semi" || criterion == "unstructured", InvalidArgument,
           "loram: prune_sparse takes semi or unstructured, got ", criterion);
  at::NoGradGuard no_grad;
  PrunedModel out{copy_model(model, model.config()), criterion, {}, {}, model.config()};
  std::map<std::string, at::Tensor> source;
  for (const auto& [name, t] : model.named_tensors()) source[name] = t;
  for (const auto& [name, t] : out.model.named_tensors()) t.copy_(source.at(name));
  const at::Tensor inputs = calibration.to(model.device());
  // Layer by layer, as SparseGPT: the inputs of layer l come from the already pruned layers < l.
  for (int64_t l = 0; l < model.config().num_hidden_layers; ++l) {
    std::vector<std::pair<nn::LinearSlot*, std::shared_ptr<const nn::BaseOperator>>> slots;
    std::vector<at::Tensor> grams;
    grams.reserve(7);
    for (nn::LinearSlot* s : out.model.slots())
      if (s->name().starts_with(layer_prefix(l))) {
        grams.push_back(at::zeros({s->in_features(), s->in_features()}, at::kDouble));
        slots.emplace_back(s, s->base_ptr());
      }
    for (size_t i = 0; i < slots.size(); ++i)
      slots[i].first->replace_base(std::make_shared<GramRecorder>(slots[i].second, &grams[i]));
    try {
      (void)out.model.forward(inputs);
    } catch (...) {
      for (auto& [slot, base] : slots) slot->replace_base(base);
      throw;
    }
    for (size_t i = 0; i < slots.size(); ++i) {
      const auto& [slot, base] = slots[i];
      const at::Tensor pruned = criterion == "semi"
                                    ? sparsegpt(base->dense_weight(), grams[i], 0, 2, 4)
                                    : sparsegpt(base->dense_weight(), grams[i], sparsity, 0, 0);
      slot->replace_base(std::make_shared<nn::DenseOperator>(pruned, base->bias()));
    }
  }
  return out;
}

PrunedModel prune_for_loram(nn::Model& model, const LoramOptions& options, const at::Tensor& calibration,
                            uint64_t seed) {
  if (options.criterion == "semi" || options.criterion == "unstructured")
    return prune_sparse(model, calibration.slice(1, 0, calibration.size(1) - 1), options.criterion,
                        options.sparsity);
  StructureScores scores;
  if (options.criterion == "random") {
    at::Generator gen = at::detail::createCPUGenerator(seed);
    for (int64_t l = 0; l < model.config().num_hidden_layers; ++l) {
      scores.channels.push_back(at::rand({model.config().intermediate_size}, gen, at::kDouble));
      scores.kv_groups.push_back(at::rand({model.config().num_key_value_heads}, gen, at::kDouble));
    }
  } else {
    AdapterConfig decoder;
    decoder.target_regex = "all-linear";
    const auto gradients = slot_gradients(
        model, decoder, [&](const nn::Model& m) { return train::lm_loss(m, calibration); }, 1);
    scores = taylor_importance(model, gradients);
  }
  return prune_structures(model, scores, options.mlp_keep, options.attn_keep, options.criterion);
}

train::TrainResult align_pruned_model(PrunedModel& pruned, const train::TokenStream& data,
                                      const train::TrainerConfig& trainer,
                                      const std::filesystem::path& run_dir, bool resume) {
  train::TrainTarget target;
  // The authors freeze lm_head and train everything else of the pruned model.
  for (const auto& [name, t] : pruned.model.named_tensors())
    if (!name.starts_with("lm_head") && t.is_floating_point()) target.params.emplace_back(name, t);
  target.weights_file = "pruned_model.safetensors";
  train::TrainResult r = train::train(pruned.model, target, data, trainer, run_dir, resume);
  for (auto& [name, t] : target.params) t.requires_grad_(false);
  return r;
}

AttachedAdapter recover_adapter(nn::Model& full, const AttachedAdapter& trained, const PrunedModel& pruned,
                                std::string name) {
  at::NoGradGuard no_grad;
  AttachedAdapter out{std::move(name), trained.config, {}, {}, {}};
  out.config.method = "lora";
  for (const char* key : kLoramKeys) out.config.options.erase(key);
  const bool structural = !pruned.kept_channels.empty();
  for (const auto& [module, layer] : trained.layers) {
    const auto* lora = dynamic_cast<const LoraAdapter*>(layer.get());
    LR_CHECK(lora != nullptr, InvalidArgument, "loram: ", module, " holds a ", layer->kind(),
             " adapter; only plain LoRA can be recovered");
    at::Tensor a = lora->a().detach().clone(), b = lora->b().detach().clone();
    const ProjSlot slot = proj_slot(module);
    if (structural && slot.layer >= 0) {
      const nn::LinearSlot& target = full.slot(module);
      // Rows of B (the slot's outputs) or columns of A (its inputs) that were kept.
      const auto scatter_rows = [&](const at::Tensor& idx) {
        b = at::zeros({target.out_features(), b.size(1)}, b.options()).index_copy(0, idx.to(b.device()), b);
      };
      const auto scatter_cols = [&](const at::Tensor& idx) {
        a = at::zeros({a.size(0), target.in_features()}, a.options()).index_copy(1, idx.to(a.device()), a);
      };
      const auto l = static_cast<size_t>(slot.layer);
      if (slot.proj == "gate_proj" || slot.proj == "up_proj") scatter_rows(pruned.kept_channels[l]);
      if (slot.proj == "down_proj") scatter_cols(pruned.kept_channels[l]);
      if (slot.proj == "q_proj") scatter_rows(pruned.kept_q_rows(slot.layer));
      if (slot.proj == "k_proj" || slot.proj == "v_proj") scatter_rows(pruned.kept_kv_rows(slot.layer));
      if (slot.proj == "o_proj") scatter_cols(pruned.kept_q_rows(slot.layer));
    }
    auto recovered = std::make_shared<LoraAdapter>(a, b, lora->scaling());
    recovered->set_weight(layer->weight());
    out.layers.emplace_back(module, std::move(recovered));
  }
  for (const auto& [module, layer] : out.layers) full.slot(module).add_adapter(out.name, layer);
  return out;
}

void register_loram(Registry<AdapterMethod>& registry) {
  // The adapter LoRAM trains and saves is a plain LoRA (lora's factories, registered before this
  // in register_builtin_methods); what makes it LoRAM is where finetune trains it (the pruned,
  // optionally aligned copy) and the recovery afterwards.
  AdapterMethod method = registry.factory("lora");
  method.export_config = [](const AdapterConfig& c) {
    AdapterConfig out = c;
    out.method = "lora";
    for (const char* key : kLoramKeys) out.options.erase(key);
    return out;
  };
  registry.add(
      {"loram",
       "LoRA trained on a pruned (optionally aligned) copy of the model, recovered to the full model "
       "(saved as a plain LoRA)",
       "Zhang et al., 2025, ICLR, arXiv:2502.13533",
       {{"r", "rank (8)"},
        {"lora_alpha", "alpha (8)"},
        {"criterion",
         "\"random\" (LoRAM-Rand), \"structured\" (LoRAM-Stru: LLM-Pruner Taylor importance of MLP channels "
         "and KV-head groups), \"semi\" (LoRAM-Semi: SparseGPT 2:4), \"unstructured\" (LoRAM-Unst: "
         "SparseGPT) (structured)"},
        {"keep", "random/structured: fraction of MLP channels and of KV-head groups kept per layer (0.5)"},
        {"mlp_keep", "fraction of MLP channels kept, overrides keep"},
        {"attn_keep", "fraction of KV-head groups (with their query heads) kept, overrides keep"},
        {"sparsity", "unstructured: fraction of each decoder weight zeroed (0.5)"},
        {"calibration_windows",
         "structured/semi/unstructured: training windows in the calibration batch (10)"},
        {"align_steps", "steps of continual pre-training of the pruned copy before LoRA (0: none)"},
        {"align_lr", "peak learning rate of the alignment (5e-5)"},
        {"align_data", "corpus of the alignment (named corpus or path; default: the fine-tuning corpus)"}}},
      std::move(method));
}

}  // namespace lowrank::adapt
