// Slot names and shapes from a model config; see slot_shapes.h. The layout is model.cpp's
// (Builder::layer and Model::slots()); tests/nn/slot_shapes_test.cpp holds the two together.
#include "lowrank/nn/slot_shapes.h"

#include <memory>
#include <utility>

#include "lowrank/core/error.h"
#include "lowrank/nn/linear_slot.h"
#include "lowrank/nn/token_mixer.h"

namespace lowrank::nn {

namespace {

// The slots of a mixer other than attention, from its registered factory: a mixer names and sizes
// its own projections (Linformer's, Performer's q/k/v/o, ...). Its weights are built on the meta
// device, which has shapes and no storage, so that nothing of the model's size is allocated.
void append_mixer_slots(const ModelConfig& config, int64_t layer, const std::string& name,
                        std::vector<SlotShape>& out) {
  MixerSpec spec{config, layer, mixer_prefix(name, layer), config.mixer_options(name), nullptr, nullptr};
  const auto meta = at::TensorOptions().dtype(at::kFloat).device(at::kMeta);
  spec.projection = [&](const std::string&, int64_t rows, int64_t cols, bool bias) {
    return std::shared_ptr<const BaseOperator>(std::make_shared<DenseOperator>(
        at::empty({rows, cols}, meta), bias ? at::empty({rows}, meta) : at::Tensor()));
  };
  // A mixer may compute from an initial value it hands over (S4D's A), so that one stays real.
  spec.tensor = [&](const std::string&, std::vector<int64_t> shape, ParamInit init, const at::Tensor& value) {
    return init == ParamInit::kValue ? value.to(at::kFloat) : at::empty(shape, meta);
  };
  const std::unique_ptr<TokenMixer> mixer = mixer_registry().factory(name)(spec);
  for (const LinearSlot* s : std::as_const(*mixer).slots())
    out.push_back({s->name(), s->out_features(), s->in_features()});
}

}  // namespace

std::vector<SlotShape> slot_shapes(const ModelConfig& config) {
  const int64_t H = config.hidden_size, F = config.intermediate_size;
  std::vector<SlotShape> out;
  if (config.architecture == Architecture::kMamba) {
    // mix/mamba.h's slots with MambaConfig's sizes: inner E·H = intermediate_size.
    const Json& o = config.mixer_options("mamba");
    const int64_t N = o.value("state_size", int64_t{16});
    const int64_t R = o.contains("time_step_rank") && o.at("time_step_rank").is_number_integer()
                          ? o.at("time_step_rank").get<int64_t>()
                          : (H + 15) / 16;
    for (int64_t i = 0; i < config.num_hidden_layers; ++i) {
      const std::string m = str("backbone.layers.", i, ".mixer.");
      out.push_back({m + "in_proj", 2 * F, H});
      out.push_back({m + "x_proj", R + 2 * N, F});
      out.push_back({m + "dt_proj", F, R});
      out.push_back({m + "out_proj", H, F});
    }
    out.push_back({"lm_head", config.vocab_size, H});
    return out;
  }
  out.reserve(static_cast<size_t>(7 * config.num_hidden_layers + 1));
  for (int64_t i = 0; i < config.num_hidden_layers; ++i) {
    const auto at_layer = static_cast<size_t>(i);
    const std::string mixer =
        at_layer < config.layer_mixers.size() ? config.layer_mixers[at_layer] : "attention";
    if (mixer == "attention") {
      const std::string a = mixer_prefix(mixer, i) + ".";
      out.push_back({a + "q_proj", config.q_size(), H});
      out.push_back({a + "k_proj", config.kv_size(), H});
      out.push_back({a + "v_proj", config.kv_size(), H});
      out.push_back({a + "o_proj", H, config.q_size()});
    } else {
      append_mixer_slots(config, i, mixer, out);
    }
    const std::string m = str("model.layers.", i, ".mlp.");
    out.push_back({m + "gate_proj", F, H});
    out.push_back({m + "up_proj", F, H});
    out.push_back({m + "down_proj", H, F});
  }
  if (config.has_lm_head()) out.push_back({"lm_head", config.vocab_size, H});
  return out;
}

}  // namespace lowrank::nn
