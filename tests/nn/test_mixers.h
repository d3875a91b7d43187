// Test-only token mixers (nn/token_mixer.h), registered into nn::mixer_registry() by
// register_test_mixers(), for the tests of the seam (tests/nn) and of the decode paths built on it
// (tests/nn, tests/serve):
//   test_mean           y_t = W · mean(x_s : s <= t, s real) + b, causal, with a decode state
//                       (the running sum and count of each row's real positions);
//   test_stateless      the same forward without a decode state (generate must refuse it);
//   test_bidirectional  y_t = W · mean(x_s : all real s) + b, bidirectional (an LM must refuse it).
// W is the slot `<prefix>.proj`, b the tensor `<prefix>.offset` (not a slot), initialised to
// linspace(-v, v) with v = option "offset_init". Padding positions (context.valid false) are left out
// of every mean, as attention leaves them out of its keys.
#pragma once

#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include <ATen/ATen.h>

#include "lowrank/nn/config.h"
#include "lowrank/nn/linear_slot.h"
#include "lowrank/nn/token_mixer.h"
#include "tests/nn/reference.h"

namespace lowrank::nn::testing_mixers {

class MeanOfPastMixer : public TokenMixer {
 public:
  explicit MeanOfPastMixer(const MixerSpec& spec)
      : proj_(spec.prefix + ".proj", spec.projection(spec.prefix + ".proj", spec.config.hidden_size,
                                                     spec.config.hidden_size, false)),
        offset_name_(spec.prefix + ".offset") {
    const double v = spec.options.value("offset_init", 0.5);
    const int64_t H = spec.config.hidden_size;
    offset_ = spec.tensor(offset_name_, {H}, ParamInit::kValue, at::linspace(-v, v, H, at::kDouble));
  }
  std::string name() const override { return "test_mean"; }
  at::Tensor forward(const at::Tensor& x, const MixerContext& context) const override {
    if (!context.valid.defined()) {
      const at::Tensor count = at::arange(1, x.size(1) + 1, x.options()).view({1, -1, 1});
      return proj_.forward(x.cumsum(1) / count, context.routing) + offset_;
    }
    const at::Tensor real = context.valid.to(x.scalar_type()).unsqueeze(-1);  // [B, T, 1]
    // A row's leading padding has no real position yet: its mean is taken as 0 (finite).
    return proj_.forward((x * real).cumsum(1) / real.cumsum(1).clamp_min(1), context.routing) + offset_;
  }
  bool causal() const override { return true; }

  // Per row: the sum and the count of its real positions so far; [B, 1, H] and [B, 1, 1], whatever
  // the number of positions seen.
  struct State : MixerState {
    at::Tensor sum;
    at::Tensor count;
  };
  bool has_decode_state() const override { return true; }
  std::unique_ptr<MixerState> new_state(int64_t batch) const override {
    auto s = std::make_unique<State>();
    s->sum = at::zeros({batch, 1, offset_.size(0)}, offset_.options());
    s->count = at::zeros({batch, 1, 1}, offset_.options());
    return s;
  }
  at::Tensor step(const at::Tensor& x, MixerState& state, const MixerContext& context) const override {
    auto& s = dynamic_cast<State&>(state);
    if (context.valid.defined()) {
      const at::Tensor real = context.valid.to(x.scalar_type()).view({-1, 1, 1});
      s.sum = s.sum + x * real;
      s.count = s.count + real;
    } else {
      s.sum = s.sum + x;
      s.count = s.count + 1;
    }
    return proj_.forward(s.sum / s.count.clamp_min(1), context.routing) + offset_;
  }
  std::vector<LinearSlot*> slots() override { return {&proj_}; }
  using TokenMixer::slots;
  NamedTensors tensors() const override { return {{offset_name_, offset_}}; }
  std::vector<ParamGroup> param_groups() const override { return {{offset_name_, std::nullopt, 0.0}}; }

 protected:
  LinearSlot proj_;
  std::string offset_name_;
  at::Tensor offset_;
};

class StatelessMeanMixer final : public MeanOfPastMixer {
 public:
  using MeanOfPastMixer::MeanOfPastMixer;
  std::string name() const override { return "test_stateless"; }
  bool has_decode_state() const override { return false; }
  std::unique_ptr<MixerState> new_state(int64_t batch) const override { return TokenMixer::new_state(batch); }
  at::Tensor step(const at::Tensor& x, MixerState& state, const MixerContext& context) const override {
    return TokenMixer::step(x, state, context);
  }
};

class BidirectionalMeanMixer final : public MeanOfPastMixer {
 public:
  using MeanOfPastMixer::MeanOfPastMixer;
  std::string name() const override { return "test_bidirectional"; }
  bool causal() const override { return false; }
  at::Tensor forward(const at::Tensor& x, const MixerContext& context) const override {
    const at::Tensor real = context.valid.defined() ? context.valid.to(x.scalar_type()).unsqueeze(-1)
                                                    : at::ones({x.size(0), x.size(1), 1}, x.options());
    const at::Tensor mean = (x * real).sum(1, true) / real.sum(1, true).clamp_min(1);
    return proj_.forward(mean.expand_as(x), context.routing) + offset_;
  }
  bool has_decode_state() const override { return false; }
  std::unique_ptr<MixerState> new_state(int64_t batch) const override { return TokenMixer::new_state(batch); }
  at::Tensor step(const at::Tensor& x, MixerState& state, const MixerContext& context) const override {
    return TokenMixer::step(x, state, context);
  }
};

// A tiny trunk shape (tests/nn/reference.h's TinySpec) with the given sizes; the other fields keep
// TinySpec's defaults (2 layers).
inline testing::TinySpec tiny_shape(int64_t vocab, int64_t hidden, int64_t intermediate, int64_t heads,
                                    int64_t kv_heads, int64_t head_dim) {
  testing::TinySpec s;
  s.vocab = vocab;
  s.hidden = hidden;
  s.intermediate = intermediate;
  s.heads = heads;
  s.kv_heads = kv_heads;
  s.head_dim = head_dim;
  return s;
}

// The shape of the tests' hybrid models: 2 layers, hidden 8, 4 heads of 2 over 2 KV heads.
inline testing::TinySpec tiny_spec() {
  return tiny_shape(23, 8, 12, 4, 2, 2);
}

// A LowrankMixerForCausalLM config of shape `s` with `layer_mixers`.
inline Json mixer_config(const testing::TinySpec& s, const Json& layer_mixers) {
  Json c = testing::tiny_config(s);
  c["architectures"] = {"LowrankMixerForCausalLM"};
  c["model_type"] = "lowrank_mixer";
  c["layer_mixers"] = layer_mixers;
  return c;
}

// A LowrankMixerForSequenceClassification config of shape `s` with `layer_mixers`, `labels` classes
// and `pooling`.
inline Json classifier_config(const testing::TinySpec& s, const Json& layer_mixers, int64_t labels,
                              const std::string& pooling = "mean") {
  Json c = mixer_config(s, layer_mixers);
  c["architectures"] = {"LowrankMixerForSequenceClassification"};
  c["num_labels"] = labels;
  c["pooling"] = pooling;
  return c;
}

inline void register_test_mixers() {
  static std::once_flag once;
  std::call_once(once, [] {
    const std::vector<std::pair<std::string, std::string>> options = {{"offset_init", "b's range"}};
    mixer_registry().add({"test_mean", "causal mean of the past (test only)", "", options},
                         [](const MixerSpec& spec) { return std::make_unique<MeanOfPastMixer>(spec); });
    mixer_registry().add({"test_stateless", "test_mean without a decode state (test only)", "", options},
                         [](const MixerSpec& spec) { return std::make_unique<StatelessMeanMixer>(spec); });
    mixer_registry().add(
        {"test_bidirectional", "mean of every position (test only)", "", options},
        [](const MixerSpec& spec) { return std::make_unique<BidirectionalMeanMixer>(spec); });
  });
}

}  // namespace lowrank::nn::testing_mixers
