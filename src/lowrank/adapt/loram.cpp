// LoRAM's pruning and adapter recovery; see loram.h.
#include "lowrank/adapt/loram.h"

#include <cmath>
#include <regex>

#include "lowrank/adapt/lora.h"
#include "lowrank/adapt/methods.h"
#include "lowrank/core/error.h"

namespace lowrank::adapt {
namespace {

// "model.layers.3.mlp.gate_proj" -> {3, "gate_proj"}; layer -1 for other modules.
std::pair<int64_t, std::string> mlp_slot(const std::string& module) {
  static const std::regex re(R"(model\.layers\.(\d+)\.mlp\.(gate_proj|up_proj|down_proj))");
  std::smatch m;
  if (std::regex_match(module, m, re)) return {std::stoll(m[1].str()), m[2].str()};
  return {-1, ""};
}

}  // namespace

double loram_keep(const AdapterConfig& config) {
  const double keep = config.option<double>("loram_keep", config.method == "loram" ? kLoramDefaultKeep : 1.0);
  LR_CHECK(keep >= 1 || config.method == "lora" || config.method == "loram", InvalidArgument,
           "loram_keep: LoRAM recovers plain LoRA adapters only, not ", config.method);
  return keep;
}

void register_loram(Registry<AdapterMethod>& registry) {
  // The adapter LoRAM trains and saves is a plain LoRA (lora's factories, registered before this
  // in register_builtin_methods); what makes it LoRAM is where finetune trains it (a pruned copy,
  // loram_keep) and the recovery afterwards.
  AdapterMethod method = registry.factory("lora");
  method.export_config = [](const AdapterConfig& c) {
    AdapterConfig out = c;
    out.method = "lora";
    return out;
  };
  registry.add(
      {"loram",
       "LoRA trained on a copy with pruned MLP channels, recovered to the full model "
       "(saved as a plain LoRA)",
       "Zhang et al., 2025, ICLR, arXiv:2502.13533",
       {{"r", "rank (8)"},
        {"lora_alpha", "alpha (8)"},
        {"loram_keep", "fraction of MLP channels kept while training (0.5); lora reads it too (1)"}}},
      std::move(method));
}

PrunedModel prune_mlp_channels(const nn::Model& model, double keep) {
  LR_CHECK(keep > 0 && keep <= 1, InvalidArgument, "loram: keep ratio must be in (0, 1], got ", keep);
  at::NoGradGuard no_grad;
  const nn::ModelConfig& config = model.config();
  const int64_t full = config.intermediate_size;
  const int64_t k = std::max<int64_t>(1, static_cast<int64_t>(std::ceil(keep * static_cast<double>(full))));
  std::vector<at::Tensor> kept;
  for (int64_t l = 0; l < config.num_hidden_layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".mlp.";
    const nn::LinearSlot* gate = nullptr;
    const nn::LinearSlot* up = nullptr;
    const nn::LinearSlot* down = nullptr;
    for (const nn::LinearSlot* s : model.slots()) {
      if (s->name() == p + "gate_proj") gate = s;
      if (s->name() == p + "up_proj") up = s;
      if (s->name() == p + "down_proj") down = s;
    }
    LR_CHECK(gate && up && down, InvalidArgument, "loram: layer ", l, " has no gate/up/down MLP slots");
    const at::Tensor score = at::linalg_vector_norm(gate->base().dense_weight().to(at::kFloat), 2, {1}) *
                             at::linalg_vector_norm(up->base().dense_weight().to(at::kFloat), 2, {1}) *
                             at::linalg_vector_norm(down->base().dense_weight().to(at::kFloat), 2, {0});
    kept.push_back(std::get<0>(at::sort(std::get<1>(at::topk(score, k)))).to(at::kLong));
  }
  Json raw = config.raw;
  raw["intermediate_size"] = k;
  PrunedModel out{nn::Model::random(nn::ModelConfig::from_json(raw, "loram pruned config"), 0,
                                    {model.dtype(), model.device()}),
                  std::move(kept), full};
  // Copy every tensor; MLP weights keep only their channels (gate/up rows, down columns).
  std::map<std::string, at::Tensor> source;
  for (const auto& [name, t] : model.named_tensors()) source[name] = t;
  for (const auto& [name, t] : out.model.named_tensors()) {
    const at::Tensor& s = source.at(name);
    const std::string module = name.substr(0, name.rfind('.'));
    const auto [layer, kind] = mlp_slot(module);
    if (layer < 0) {
      t.copy_(s);
      continue;
    }
    const at::Tensor idx = out.kept[static_cast<size_t>(layer)].to(s.device());
    t.copy_(kind == "down_proj" ? s.index_select(1, idx) : s.index_select(0, idx));
  }
  return out;
}

AttachedAdapter recover_adapter(nn::Model& full, const AttachedAdapter& trained, const PrunedModel& pruned,
                                std::string name) {
  at::NoGradGuard no_grad;
  AttachedAdapter out{std::move(name), trained.config, {}, {}, {}};
  out.config.method = "lora";
  for (const auto& [module, layer] : trained.layers) {
    const auto* lora = dynamic_cast<const LoraAdapter*>(layer.get());
    LR_CHECK(lora != nullptr, InvalidArgument, "loram: ", module, " holds a ", layer->kind(),
             " adapter; only plain LoRA can be recovered");
    at::Tensor a = lora->a().detach().clone(), b = lora->b().detach().clone();
    const auto [l, kind] = mlp_slot(module);
    if (l >= 0) {
      const at::Tensor idx = pruned.kept[static_cast<size_t>(l)].to(a.device());
      if (kind == "down_proj") {
        at::Tensor a_full = at::zeros({a.size(0), pruned.full_intermediate}, a.options());
        a = a_full.index_copy(1, idx, a);
      } else {
        at::Tensor b_full = at::zeros({pruned.full_intermediate, b.size(1)}, b.options());
        b = b_full.index_copy(0, idx, b);
      }
    }
    auto recovered = std::make_shared<LoraAdapter>(a, b, lora->scaling());
    recovered->set_weight(layer->weight());
    out.layers.emplace_back(module, std::move(recovered));
  }
  for (const auto& [module, layer] : out.layers) full.slot(module).add_adapter(out.name, layer);
  return out;
}

}  // namespace lowrank::adapt
