// Helpers shared by the adapter-method tests: a tiny model, configurations, random inputs, raw
// tensors of a layer, a short adapter training run with the runtime's trainer wired as finetune
// wires it (train::TrainTarget with the step hooks), and the checks every method repeats (a saved
// adapter reloads and merges to the same logits; a short run lowers the loss).
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <gtest/gtest.h>

#include "lowrank/adapt/finetune.h"
#include "lowrank/adapt/model_adapters.h"
#include "lowrank/train/trainer.h"
#include "tests/testing.h"

namespace lowrank::adapt::method_testing {

inline nn::Model tiny(uint64_t seed = 3) {
  return testing::tiny_llama({}, seed);
}

inline AdapterConfig config_for(const std::string& method, int64_t r = 4, double alpha = 8) {
  AdapterConfig c;
  c.method = method;
  c.r = r;
  c.lora_alpha = alpha;
  c.target_modules = {"q_proj", "v_proj", "down_proj"};
  return c;
}

// `c` targeting every linear slot of the model instead of its target_modules.
inline AdapterConfig all_linear(AdapterConfig c) {
  c.target_modules.clear();
  c.target_regex = "all-linear";
  return c;
}

inline at::Tensor input(int64_t in, uint64_t seed = 11) {
  at::Generator gen = at::detail::createCPUGenerator(seed);
  return at::randn({2, 5, in}, gen);
}

inline at::Tensor token_ids() {
  return at::arange(10, at::kLong).reshape({2, 5}) % 24;
}

inline at::Tensor logits_of(const nn::Model& model, const at::Tensor& ids) {
  c10::InferenceMode guard;
  return model.forward(ids).clone();
}

// The layer's tensor `name` (relative to the slot), sharing storage with the adapter.
inline at::Tensor tensor_of(const nn::Adapter& layer, const std::string& name) {
  for (auto& [n, t] : layer.tensors())
    if (n == name) return t;
  ADD_FAILURE() << "no tensor " << name;
  return {};
}

// Gives every trainable tensor random values.
inline void randomize(const AttachedAdapter& a, uint64_t seed, double scale = 0.3) {
  at::Generator gen = at::detail::createCPUGenerator(seed);
  at::NoGradGuard g;
  for (auto& [name, t] : a.parameters()) t.copy_(at::randn(t.sizes(), gen) * scale);
}

// A learnable stream: a repeated pseudo-random pattern over the tiny model's 24 symbols.
inline train::TokenStream pattern_stream(int64_t size = 4096) {
  at::Tensor t = at::empty({size}, at::kLong);
  for (int64_t i = 0; i < size; ++i) t[i] = (i * 7 + (i / 5) % 3) % 24;
  return train::TokenStream::from_tensor(t);
}

inline train::TrainerConfig short_run(int64_t steps, double lr) {
  train::TrainerConfig c;
  c.steps = steps;
  c.batch_size = 4;
  c.seq_len = 16;
  c.lr = lr;
  c.min_lr = lr / 10;
  c.warmup_steps = 0;
  c.adam.weight_decay = 0;
  return c;
}

// The trainer's target for an adapter, with the hooks finetune installs.
inline train::TrainTarget target_of(AttachedAdapter& adapter) {
  return training_target(adapter);
}

// Mean next-token loss of the model on fixed windows of the pattern stream (its own sampler).
inline double eval_loss(const nn::Model& model) {
  const train::TokenStream stream = pattern_stream();
  train::WindowSampler sampler(12345, stream.size, 17);
  const at::Tensor windows = train::sample_windows(stream, sampler, 16, 16);
  at::NoGradGuard g;
  return train::lm_loss(model, windows).item<double>();
}

struct TrainOutcome {
  double before = 0, after = 0;
  train::TrainResult result;
};

// Trains the adapter's tensors for `config.steps` steps and measures eval_loss before
// and after, with every layer in its evaluation form (before_step(-1)).
inline TrainOutcome train_adapter(nn::Model& model, AttachedAdapter& adapter,
                                  const train::TrainerConfig& config, const std::filesystem::path& run_dir) {
  TrainOutcome out;
  for (auto& [module, layer] : adapter.layers) layer->before_step(-1);
  out.before = eval_loss(model);
  train::TrainTarget target = target_of(adapter);
  adapter.set_training(true);
  out.result = train::train(model, target, pattern_stream(), config, run_dir, false);
  adapter.set_training(false);
  for (auto& [module, layer] : adapter.layers) layer->before_step(-1);
  out.after = eval_loss(model);
  return out;
}

// Expects every slot of `adapter` to compute x·Wᵀ in its forward, for W = weight_of(slot, layer)
// (the test's float64 oracle of the adapted weight, taken before merging), and merging to leave
// that W as the slot's base weight, both to within `tolerance`.
template <typename WeightOf>
void expect_forward_and_merge_match(nn::Model& model, const AttachedAdapter& adapter, WeightOf&& weight_of,
                                    double tolerance) {
  std::map<std::string, at::Tensor> expected;
  for (const auto& [module, layer] : adapter.layers) {
    const nn::LinearSlot& slot = model.slot(module);
    expected[module] = weight_of(slot, *layer);
    const at::Tensor x = input(slot.in_features());
    EXPECT_LE(testing::max_abs_diff(slot.forward(x), at::matmul(x.to(at::kDouble), expected[module].t())),
              tolerance)
        << module;
  }
  std::vector<AttachedAdapter> all{adapter};
  merge_adapters(model, all);
  for (const auto& [module, w] : expected)
    EXPECT_LE(testing::max_abs_diff(model.slot(module).base().dense_weight(), w), tolerance) << module;
}

// Trains the adapter as train_adapter does and expects the run to finish with the loss lowered
// by more than `margin`.
inline void expect_training_lowers_loss(nn::Model& model, AttachedAdapter& adapter,
                                        const train::TrainerConfig& config,
                                        const std::filesystem::path& run_dir, double margin) {
  const TrainOutcome out = train_adapter(model, adapter, config, run_dir);
  EXPECT_TRUE(out.result.finished);
  EXPECT_LT(out.after, out.before - margin) << "before " << out.before << ", after " << out.after;
}

// Loads the adapter saved in `dir` into a fresh tiny() and expects its `method`, the logits
// `adapted` on `ids` bit for bit (a reload must rebuild exactly the adapter that was saved), and
// the same logits to within `merge_tolerance` once merged into the base (merging changes only the
// rounding).
inline void expect_reload_and_merge(const std::filesystem::path& dir, const at::Tensor& ids,
                                    const at::Tensor& adapted, const std::string& method,
                                    double merge_tolerance) {
  nn::Model fresh = tiny();
  std::vector<AttachedAdapter> loaded{load_adapter(fresh, dir)};
  EXPECT_EQ(loaded[0].config.method, method);
  EXPECT_TRUE(logits_of(fresh, ids).equal(adapted));
  merge_adapters(fresh, loaded);
  EXPECT_LE(testing::max_abs_diff(logits_of(fresh, ids), adapted), merge_tolerance);
}

}  // namespace lowrank::adapt::method_testing
