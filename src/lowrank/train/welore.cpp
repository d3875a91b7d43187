// WeLore's LRC fine-tuning target; see welore.h.
#include "lowrank/train/welore.h"

#include "lowrank/compress/format.h"
#include "lowrank/compress/operators.h"
#include "lowrank/core/error.h"

namespace lowrank::train {

namespace {

// A norm gain: a 1-D tensor outside every slot named "...norm.weight" (input_layernorm,
// post_attention_layernorm, model.norm).
bool is_norm_gain(const nn::Model& model, const std::string& name, const at::Tensor& t) {
  if (t.dim() != 1 || !name.ends_with("norm.weight")) return false;
  return model.find_slot(name.substr(0, name.rfind('.'))) == nullptr;
}

}  // namespace

OrderedJson WeLoreComponents::to_json() const {
  return {{"lrc_slots", lrc.size()},
          {"nlrc_slots", nlrc.size()},
          {"lrc_parameters", lrc_parameters},
          {"norm_parameters", norm_parameters},
          {"lrc", lrc},
          {"nlrc", nlrc}};
}

WeLoreComponents welore_components(const nn::Model& model) {
  WeLoreComponents c;
  for (const nn::LinearSlot* s : model.slots()) {
    const nn::BaseOperator& base = s->base();
    if (const auto* lr = dynamic_cast<const compress::LowRankOperator*>(&base)) {
      c.lrc.push_back(s->name());
      c.lrc_parameters += lr->u().numel() + lr->v().numel();
    } else {
      LR_CHECK(base.kind() == "dense", InvalidArgument,
               "--method welore trains the U, V factors of low-rank ",
               "slots and keeps dense ones frozen, but slot ", s->name(), " holds a \"", base.kind(),
               "\" operator (compress with --method welore and no --compensation)");
      c.nlrc.push_back(s->name());
    }
  }
  LR_CHECK(!c.lrc.empty(), InvalidArgument,
           "--method welore: the model has no low-rank slot to train (compress it with --method welore)");
  for (const auto& [name, t] : model.named_tensors())
    if (is_norm_gain(model, name, t)) c.norm_parameters += t.numel();
  return c;
}

Json check_welore_directory(const std::filesystem::path& dir) {
  LR_CHECK(compress::is_compressed_model(dir), InvalidArgument, "--method welore: --model ", dir.string(),
           " has no ", compress::kCompressedConfigFile,
           "; pass a directory written by `lowrank compress --method welore`");
  const Json config = read_json_file(dir / compress::kCompressedConfigFile);
  const std::string method = config.value("method", std::string());
  LR_CHECK(method == "welore", InvalidArgument, "--method welore: --model ", dir.string(),
           " was compressed with --method ", method.empty() ? "(none recorded)" : method,
           "; pass a directory written by `lowrank compress --method welore`");
  return config;
}

TrainTarget welore_target(const nn::Model& model, const WeLoreFinetuneOptions& options) {
  (void)welore_components(model);  // the checks
  TrainTarget target;
  target.weights_file = "welore_state.safetensors";
  for (const nn::LinearSlot* s : model.slots())
    if (const auto* lr = dynamic_cast<const compress::LowRankOperator*>(&s->base())) {
      // The operator's own tensors: the optimizer updates them in place, so the model computes with
      // the trained factors and save_compressed_model writes them.
      target.params.emplace_back(s->name() + ".lowrank_u", lr->u());
      target.params.emplace_back(s->name() + ".lowrank_v", lr->v());
    }
  if (options.train_norms)
    for (const auto& [name, t] : model.named_tensors())
      if (is_norm_gain(model, name, t)) target.params.emplace_back(name, t);
  return target;
}

}  // namespace lowrank::train
