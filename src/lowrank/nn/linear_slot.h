// The linear slot: the seam every method of lowrank uses (docs/model.md, DESIGN.md "The central
// seam"). Each projection of the model (`model.layers.3.self_attn.q_proj`, `lm_head`, ...) is a
// slot named by its Hugging Face module name that owns
//   - a base operator y = base(x): dense W x + b now; low-rank U Vᵀ, sparse + low-rank, 4-bit +
//     low-rank later (compression and training replace it), and
//   - zero or more adapters, each a delta Δ(x) with its own parameters (LoRA s·B(Ax) and its
//     variants attach here),
// and computes forward(x) = base(x) + Σ_enabled adapters Δ(x). This is PEFT's target-module
// replacement (Mangrulkar et al., 2022, https://github.com/huggingface/peft) kept as one explicit
// interface: methods enumerate Model::slots() and replace the base or attach adapters; they never
// reach into the transformer's internals.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <ATen/ATen.h>

namespace lowrank::nn {

// A tensor and its name relative to the slot ("weight", "bias", "lora_A.weight", ...).
using NamedTensors = std::vector<std::pair<std::string, at::Tensor>>;

// y = base(x) for x [..., in_features] -> y [..., out_features]. Implementations are immutable
// after construction (thread-safe forward) and differentiable with respect to their tensors.
class BaseOperator {
 public:
  virtual ~BaseOperator() = default;
  // A short type name: "dense", "lowrank", ...
  virtual std::string_view kind() const = 0;
  virtual int64_t in_features() const = 0;
  virtual int64_t out_features() const = 0;
  // Returns a new tensor, never a view of the operator's own state: the slot adds adapter
  // products into it in place when no gradient is recorded.
  virtual at::Tensor forward(const at::Tensor& x) const = 0;
  // The tensors written when the model is saved, as `<slot name>.<name>` (dense: the HF names
  // "weight" and "bias"). They share storage with the operator.
  virtual NamedTensors tensors() const = 0;
  // The equivalent dense weight W [out, in] (materialised for factored operators) and bias
  // [out] (undefined when there is none): for merging, export and analysis.
  virtual at::Tensor dense_weight() const = 0;
  virtual at::Tensor bias() const { return {}; }
  // The fused single-token decode step (decode_step.h) computes y[o] = base(x)[o] for o in [begin,
  // end) of one float32 input row x [in_features] into float32 y [out_features] (only [begin, end)
  // written): raw buffers, no ATen call, from several threads at once for disjoint ranges. An
  // operator without this path answers false (then the whole step takes the ATen path); the
  // default row_product throws InternalError.
  virtual bool has_row_product() const { return false; }
  virtual void row_product(const float* x, int64_t begin, int64_t end, float* y) const;
};

// y = x Wᵀ + b (at::linear), W [out, in], b [out] or undefined.
class DenseOperator final : public BaseOperator {
 public:
  // Throws InvalidArgument for a weight that is not 2-D or a bias that is not [out].
  explicit DenseOperator(at::Tensor weight, at::Tensor bias = {});
  std::string_view kind() const override { return "dense"; }
  int64_t in_features() const override { return weight_.size(1); }
  int64_t out_features() const override { return weight_.size(0); }
  at::Tensor forward(const at::Tensor& x) const override { return at::linear(x, weight_, bias_); }
  NamedTensors tensors() const override;
  at::Tensor dense_weight() const override { return weight_; }
  at::Tensor bias() const override { return bias_; }
  // float32 or bfloat16 weights (and bias of the same dtype), contiguous, on the CPU.
  bool has_row_product() const override { return row_product_; }
  void row_product(const float* x, int64_t begin, int64_t end, float* y) const override;
  const at::Tensor& weight() const { return weight_; }

 private:
  at::Tensor weight_;
  at::Tensor bias_;
  bool row_product_ = false;
};

// Δ(x) = scale · B(Ax): the form of a plain LoRA delta. A slot holding several such adapters
// computes x·[A₁; A₂; …]ᵀ in one product and [s₁B₁, s₂B₂, …] in a second (the fused path).
struct LowRankDelta {
  at::Tensor a;  // [r, in]
  at::Tensor b;  // [out, r]
  double scale = 1;
};

// Δ(x) added to the base output. Implementations are immutable during forward (thread-safe).
class Adapter {
 public:
  virtual ~Adapter() = default;
  virtual std::string_view kind() const = 0;  // "lora", "dora", ...
  // Δ for input x [..., in] with the base output base_y = base(x) [..., out] at hand (variants
  // such as DoRA rescale it); must return [..., out].
  virtual at::Tensor delta(const at::Tensor& x, const at::Tensor& base_y, const BaseOperator& base) const = 0;
  // The adapter's own tensors, named relative to the slot (what an adapter file stores).
  virtual NamedTensors tensors() const { return {}; }
  // Set when delta(x, ...) is exactly scale·B(Ax) right now (no dropout, no input-dependent
  // terms), so that the slot may fuse it with the slot's other low-rank adapters.
  virtual std::optional<LowRankDelta> low_rank_delta() const { return std::nullopt; }
};

// Which adapter each row (batch element) of a forward pass uses, for batches that mix requests
// for different adapters (S-LoRA, Sheng et al., 2023; Punica's SGMV, Chen et al., 2023): row b
// uses adapters[row_adapter[b]], or only the base when row_adapter[b] < 0. Every slot then adds,
// per adapter, that adapter's Δ on the rows that use it (gathered into one contiguous segment, so
// each adapter costs one pair of products at its own rank; nothing is padded to a common rank).
// Adapters not named here are inactive for the pass. While a RoutedAdapterScope is open on the
// thread (routed_adapter_source.h), the named adapters are the scope source's instead of the slots'.
struct AdapterRouting {
  std::vector<std::string> adapters;
  std::vector<int64_t> row_adapter;  // one entry per batch row
};

// A named slot. Not thread-safe to mutate (replace_base, add/remove adapters) while another
// thread runs forward; forward itself is const and thread-safe.
class LinearSlot {
 public:
  // Throws InvalidArgument for an empty name or a null base.
  LinearSlot(std::string name, std::shared_ptr<const BaseOperator> base);

  const std::string& name() const { return name_; }
  int64_t in_features() const { return base_->in_features(); }
  int64_t out_features() const { return base_->out_features(); }

  // base(x) + Σ Δ_a(x) over the adapters (none when adapters are disabled). The adapters with a
  // low_rank_delta() are summed through one concatenated pair of products, the second
  // accumulated into the base output.
  at::Tensor forward(const at::Tensor& x) const;
  // The same with per-row adapters (x [B, ..., in], routing.row_adapter of size B). A null routing
  // is forward(x). Adapters this slot does not hold add nothing here (Model::forward checks that
  // every name is attached somewhere). Throws InvalidArgument for a row count mismatch.
  at::Tensor forward(const at::Tensor& x, const AdapterRouting* routing) const;
  // slots[i]->forward(x, routing) for slots that read the same input (q, k, v; gate, up): the
  // first products x·Aᵀ of their low-rank adapters are one GEMM over all of them, so x is read
  // once instead of once per slot. Throws as forward does.
  static std::vector<at::Tensor> forward_shared_input(std::span<const LinearSlot* const> slots,
                                                      const at::Tensor& x,
                                                      const AdapterRouting* routing = nullptr);

  const BaseOperator& base() const { return *base_; }
  const std::shared_ptr<const BaseOperator>& base_ptr() const { return base_; }
  // Replaces the base operator and returns the old one. Throws InvalidArgument (naming the slot)
  // when the new operator is null or changes in_features/out_features.
  std::shared_ptr<const BaseOperator> replace_base(std::shared_ptr<const BaseOperator> base);

  // Attaches an adapter under `adapter_name`. Throws InvalidArgument for an empty or taken name.
  void add_adapter(std::string adapter_name, std::shared_ptr<const Adapter> adapter);
  // Detaches and returns it. Throws NotFound naming the slot and the adapter.
  std::shared_ptr<const Adapter> remove_adapter(std::string_view adapter_name);
  // nullptr when absent.
  const Adapter* adapter(std::string_view adapter_name) const;
  std::vector<std::string> adapter_names() const;
  bool has_adapters() const { return !adapters_.empty(); }
  // Disabled adapters stay attached but forward() returns base(x) alone.
  void set_adapters_enabled(bool enabled) { adapters_enabled_ = enabled; }
  bool adapters_enabled() const { return adapters_enabled_; }

 private:
  std::string name_;
  std::shared_ptr<const BaseOperator> base_;
  std::vector<std::pair<std::string, std::shared_ptr<const Adapter>>> adapters_;
  bool adapters_enabled_ = true;
};

}  // namespace lowrank::nn
