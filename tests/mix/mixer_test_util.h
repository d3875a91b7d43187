// Test helpers for mix/'s mixers: a small float64 config, and a mixer built from a MixerSpec whose
// projections and tensors come from a map of given tensors (the rest random), so a test can copy a
// reference implementation's weights in.
#pragma once

#include <map>
#include <memory>
#include <string>

#include <ATen/ATen.h>

#include "lowrank/core/json.h"
#include "lowrank/mix/registry.h"
#include "lowrank/nn/config.h"
#include "lowrank/nn/token_mixer.h"

namespace lowrank::mix::testing {

// A lowrank_mixer config: hidden `hidden`, `heads` heads of hidden / heads, one layer of `mixer`.
inline nn::ModelConfig mixer_config(const std::string& mixer, int64_t hidden, int64_t heads,
                                    const Json& options, bool o_bias = false) {
  (void)registry();
  const Json c{{"architectures", {"LowrankMixerForCausalLM"}},
               {"model_type", "lowrank_mixer"},
               {"vocab_size", 16},
               {"hidden_size", hidden},
               {"intermediate_size", 2 * hidden},
               {"num_hidden_layers", 1},
               {"num_attention_heads", heads},
               {"num_key_value_heads", heads},
               {"max_position_embeddings", 64},
               {"attention_bias", o_bias},
               {"layer_mixers", mixer},
               {"mixer_config", {{mixer, options.is_null() ? Json::object() : options}}}};
  return nn::ModelConfig::from_json(c, "test config");
}

// The mixer `mixer` of layer `layer`; a projection or tensor named in `given` (`<slot>.weight`,
// `<slot>.bias`, or a tensor's file name) takes that value, anything else is random (seeded).
inline std::unique_ptr<nn::TokenMixer> build_mixer(const std::string& mixer, const nn::ModelConfig& config,
                                                   const std::map<std::string, at::Tensor>& given = {},
                                                   int64_t layer = 0, uint64_t seed = 7) {
  at::manual_seed(seed);
  nn::MixerSpec spec{config,  layer,  nn::mixer_prefix(mixer, layer), config.mixer_options(mixer),
                     nullptr, nullptr};
  auto value = [&given](const std::string& name) -> at::Tensor {
    auto it = given.find(name);
    return it == given.end() ? at::Tensor() : it->second.to(at::kDouble).clone();
  };
  spec.projection = [value](const std::string& slot, int64_t out, int64_t in, bool bias) {
    at::Tensor w = value(slot + ".weight");
    if (!w.defined()) w = at::randn({out, in}, at::kDouble) / std::sqrt(static_cast<double>(in));
    at::Tensor b;
    if (bias) {
      b = value(slot + ".bias");
      if (!b.defined()) b = at::randn({out}, at::kDouble) * 0.1;
    }
    return std::make_shared<const nn::DenseOperator>(w, b);
  };
  spec.tensor = [value](const std::string& name, std::vector<int64_t> shape, nn::ParamInit init,
                        const at::Tensor& initial) {
    at::Tensor t = value(name);
    if (t.defined()) return t;
    switch (init) {
      case nn::ParamInit::kValue:
        return initial.to(at::kDouble).clone();
      case nn::ParamInit::kOnes:
        return at::ones(shape, at::kDouble);
      case nn::ParamInit::kZeros:
        return at::zeros(shape, at::kDouble);
      default:
        return at::randn(shape, at::kDouble) * 0.3;
    }
  };
  return nn::mixer_registry().factory(mixer)(spec);
}

}  // namespace lowrank::mix::testing
