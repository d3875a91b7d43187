// The adapter interface every method of the LoRA family implements, and the registry that maps
// method names (and PEFT's peft_type) to factories. An adapter attaches to one linear slot
// (nn/linear_slot.h) and adds Δ(x) to the frozen base output:
//   y = base(x) + w · Δ(x)
// where w is the adapter's combination weight (1 unless several adapters are mixed). Every method
// here is additive on the unmodified base: methods whose papers rewrite the base (PiSSA's
// residual W − sBA, LoLDU, SVFit, SALT) express the same weight as W + Δ with Δ built from their
// frozen and trained factors, so loading or removing an adapter never touches the base weights.
// This costs one extra frozen low-rank product in forward for those methods and keeps merge,
// unmerge and multi-adapter mixing uniform.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>

#include <ATen/ATen.h>

#include "lowrank/adapt/config.h"
#include "lowrank/core/registry.h"
#include "lowrank/nn/linear_slot.h"

namespace lowrank::adapt {

using TensorMap = std::map<std::string, at::Tensor>;

// What a factory gets for one slot.
struct LayerSpec {
  std::string module;             // HF module name of the slot
  int64_t r = 8;                  // after rank_pattern
  double alpha = 8;               // after alpha_pattern
  double scaling = 1;             // alpha / r, or alpha / √r with rsLoRA
  const AdapterConfig* config{};  // the whole configuration (method options)
  uint64_t seed = 0;              // per-slot seed for random initialisation
  at::ScalarType dtype = at::kFloat;
  at::Device device = at::kCPU;
  // For methods with needs_gradient: the gradient of the loss with respect to this slot's dense
  // weight [out, in], summed over the initialisation batches (full fine-tuning's first step).
  at::Tensor gradient;
  // The largest out_features and in_features over all slots the configuration targets: methods
  // whose slots share one tensor size it by these (RandLoRA's random bases, PEFT _find_dim).
  int64_t largest_out = 0, largest_in = 0;
};

class TrainableAdapter : public nn::Adapter {
 public:
  // w · Δ(x), with dropout on x in training mode for methods that use it.
  at::Tensor delta(const at::Tensor& x, const at::Tensor& base_y, const nn::BaseOperator& base) const final;

  // Trainable tensors, named relative to the slot (a subset of tensors()).
  virtual nn::NamedTensors parameters() const = 0;
  // Δ as a dense [out, in] matrix in the adapter's dtype: what merging adds to W. Methods whose
  // Δ is not linear in x (DoRA) override merged_weight() instead.
  virtual at::Tensor delta_weight(const nn::BaseOperator& base) const = 0;
  // The dense weight of base + w·Δ (without the bias, which adapters here never change).
  virtual at::Tensor merged_weight(const nn::BaseOperator& base) const;

  // Training-time hooks (the trainer calls them around each optimizer step): DyLoRA samples its
  // rank, SoRA applies its proximal step. `step` is 0-based; `lr` the step's learning rate.
  // before_step(-1) puts the adapter in its evaluation form (DyLoRA: its full or chosen rank).
  virtual void before_step(int64_t /*step*/) {}
  virtual void after_step(int64_t /*step*/, double /*lr*/) {}
  // The form to save after training when it differs from this adapter (SoRA prunes its zeroed
  // ranks into a plain LoRA); nullptr: save this adapter as it is.
  virtual std::shared_ptr<TrainableAdapter> finalize() const { return nullptr; }
  // Frozen tensors every layer of the adapter shares, under their full file names outside any
  // module (PEFT's "base_model.<name>": RandLoRA's random bases); save_adapter writes each name
  // once. Not part of tensors().
  virtual nn::NamedTensors shared_tensors() const { return {}; }

  int64_t num_parameters() const;
  void set_training(bool training) { training_ = training; }
  bool training() const { return training_; }
  void set_weight(double weight) { weight_ = weight; }
  double weight() const { return weight_; }
  void set_dropout(double p) { dropout_ = p; }

 protected:
  // Δ(x) for the already dropped-out x.
  virtual at::Tensor compute_delta(const at::Tensor& x, const at::Tensor& base_y,
                                   const nn::BaseOperator& base) const = 0;
  // Whether delta() currently drops out its input.
  bool dropout_active() const { return training_ && dropout_ > 0; }

 private:
  bool training_ = false;
  double weight_ = 1;
  double dropout_ = 0;
};

struct AdapterMethod {
  std::string peft_type;  // written to adapter_config.json ("LORA", or "LOWRANK_<NAME>" for ours)
  // A freshly initialised adapter for one slot.
  std::function<std::shared_ptr<TrainableAdapter>(const LayerSpec&, const nn::BaseOperator& base)> create;
  // An adapter from the slot's saved tensors (names relative to the slot; tensors the file stores
  // outside any module, "base_model.<name>", are included under their full names, converted to
  // the model's dtype and device once for all slots). Throws InvalidArgument naming `what` and the
  // tensor for a missing tensor or a shape that does not fit the base.
  std::function<std::shared_ptr<TrainableAdapter>(const LayerSpec&, const nn::BaseOperator& base,
                                                  const TensorMap& tensors, std::string_view what)>
      load;
  // The configuration written next to finalize()d adapters when it differs (PiSSA saves as a
  // plain LoRA of rank 2r); empty: the configuration as it is.
  std::function<AdapterConfig(const AdapterConfig&)> export_config;
  // The initialisation needs the base weights' gradient on training data (LoRA-SB):
  // create_adapter is then given a gradient per targeted slot (finetune computes them).
  bool needs_gradient = false;
};

// The adapter methods (built-ins registered on first use).
const Registry<AdapterMethod>& registry();
// The method that reads a file of this configuration: LORA with use_dora -> "dora", with a
// "pissa..." init -> "pissa", else the method whose peft_type it is. Throws Unsupported listing
// the known peft_types.
std::string method_for(const AdapterConfig& config);

// Helpers for factories: a tensor from `tensors` with exactly `shape`, converted to dtype/device.
at::Tensor expect_tensor(const TensorMap& tensors, const std::string& name, at::IntArrayRef shape,
                         const LayerSpec& spec, std::string_view what);
// A seeded CPU generator for the slot's initialisation.
at::Generator slot_generator(const LayerSpec& spec);
// U(−1/√in, 1/√in): PyTorch's kaiming_uniform_(a = √5) for a [rows, in] weight.
at::Tensor kaiming_uniform(int64_t rows, int64_t in, const LayerSpec& spec, at::Generator& gen);

}  // namespace lowrank::adapt
