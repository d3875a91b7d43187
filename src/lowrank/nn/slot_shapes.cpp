// Slot names and shapes from a model config; see slot_shapes.h. The layout is model.cpp's
// (Builder::layer and Model::slots()); tests/nn/slot_shapes_test.cpp holds the two together.
#include "lowrank/nn/slot_shapes.h"

#include "lowrank/core/error.h"

namespace lowrank::nn {

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
    const std::string a = str("model.layers.", i, ".self_attn."), m = str("model.layers.", i, ".mlp.");
    out.push_back({a + "q_proj", config.q_size(), H});
    out.push_back({a + "k_proj", config.kv_size(), H});
    out.push_back({a + "v_proj", config.kv_size(), H});
    out.push_back({a + "o_proj", H, config.q_size()});
    out.push_back({m + "gate_proj", F, H});
    out.push_back({m + "up_proj", F, H});
    out.push_back({m + "down_proj", H, F});
  }
  out.push_back({"lm_head", config.vocab_size, H});
  return out;
}

}  // namespace lowrank::nn
