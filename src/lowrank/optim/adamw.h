// AdamW — Loshchilov & Hutter, 2019, "Decoupled Weight Decay Regularization", ICLR,
// arXiv:1711.05101, Algorithm 2; Adam moments from Kingma & Ba, 2015, arXiv:1412.6980, Alg. 1.
// One Adam core (adam_update) with explicit choices, shared by AdamW here and by the low-rank
// optimizers (GaLore etc. run it on projected gradients):
//   θ ← θ·(1 − η·λ)                         (decoupled decay; λ = weight_decay, η = lr)
//   m ← β1·m + (1 − β1)·g;  v ← β2·v + (1 − β2)·g²
//   θ ← θ − η/(1 − β1^t) · m / (sqrt(v)/sqrt(1 − β2^t) + ε)
// The order of floating-point operations is that of libtorch's torch::optim::AdamW (the test
// checks identical updates); the bias corrections can be switched off. Optionally the moments are
// kept block-wise 8-bit between steps (Dettmers et al., 2022, arXiv:2110.02861; AdamWStateOptions).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <ATen/ATen.h>

#include "lowrank/core/json.h"
#include "lowrank/optim/quantized_state.h"

namespace lowrank::optim {

struct AdamConfig {
  double beta1 = 0.9;           // first-moment decay
  double beta2 = 0.95;          // second-moment decay (0.95 as most LM pretraining recipes)
  double eps = 1e-8;            // added to sqrt(v̂)
  double weight_decay = 0.1;    // decoupled: θ ← θ·(1 − lr·λ) before the Adam step
  bool bias_correction = true;  // divide m and v by (1 − β^t)

  OrderedJson to_json() const;
  // Validates (betas in [0, 1), eps > 0, decay >= 0); throws InvalidArgument naming the key.
  static AdamConfig from_json(const Json& j, std::string_view what);
};

// The per-tensor state of the Adam core.
struct AdamState {
  at::Tensor exp_avg;     // m, like the parameter
  at::Tensor exp_avg_sq;  // v, like the parameter
  int64_t step = 0;       // t: updates applied so far
};

// One Adam/AdamW update of `param` in place from `grad` (same shape) with learning rate `lr`.
// Initialises `state` on first use. Runs without autograd recording. Throws InvalidArgument for
// mismatched shapes.
void adam_update(at::Tensor& param, const at::Tensor& grad, AdamState& state, const AdamConfig& config,
                 double lr);

// The moment half of adam_update, for optimizers that apply the step themselves (this folder's
// projected and magnitude steps): allocates m, v like g on first use, advances the step and
// updates m ← β1·m + (1 − β1)·g, v ← β2·v + (1 − β2)·g² in libtorch's operation order. Returns
// the bias corrections {1 − β1ᵗ, 1 − β2ᵗ} ({1, 1} without bias correction).
std::pair<double, double> update_moments(AdamState& state, const at::Tensor& grad, const AdamConfig& config);

// A per-parameter override of a step's settings: what a token mixer's param_groups() asks for
// (nn/token_mixer.h; S4's A and Δt train with their own learning rate and no weight decay).
// Parameter `name` steps with lr · lr_scale (lr: the scheduled rate, so the override follows the
// schedule) and, when `weight_decay` is set, with that decoupled decay instead of the run's (which
// 1-D tensors otherwise skip).
struct ParamOverride {
  std::string name;
  double lr_scale = 1.0;
  std::optional<double> weight_decay;
};

// What the trainer needs of an optimizer: AdamW below, and the low-rank optimizers beside it.
class Optimizer {
 public:
  virtual ~Optimizer() = default;
  // Installs per-parameter overrides (replacing earlier ones). Throws NotFound for a name the
  // optimizer does not hold, InvalidArgument for a negative scale or decay.
  virtual void set_overrides(const std::vector<ParamOverride>& overrides) = 0;
  // Applies one update to every parameter with a defined .grad(). Not thread-safe.
  // step(lr) = begin_step(lr); step_parameter(i, grad of i) for each i; end_step().
  virtual void step(double lr) = 0;
  // Per-layer updates (GaLore's layer-wise mode, Zhao et al., 2024, §4.3: each parameter is
  // stepped from a post-accumulate-grad hook as soon as its gradient is ready, and the gradient
  // is freed, so the full set of gradients is never resident). Parameters are indexed in the
  // order the optimizer was given them; each is stepped at most once between begin_step and
  // end_step, from `grad`.
  virtual void begin_step(double lr) = 0;
  virtual void step_parameter(size_t index, const at::Tensor& grad) = 0;
  virtual void end_step() = 0;
  virtual void zero_grad() = 0;
  // The state as named CPU tensors (what a checkpoint stores) and the step count.
  virtual std::vector<std::pair<std::string, at::Tensor>> state_tensors() const = 0;
  virtual int64_t steps() const = 0;
  // Restores state_tensors() output. Throws Corruption for a missing or mis-shaped tensor.
  virtual void load_state(const std::vector<std::pair<std::string, at::Tensor>>& tensors, int64_t steps) = 0;
  // Bytes of the training state it accounts for: {"weights", "grads", "optimizer_states",
  // "projectors", "total"} (grads: those defined at the time of the call).
  virtual OrderedJson memory() const = 0;
  // Zeroes the `ratio` fraction of smallest-magnitude entries of parameter `name`'s moment
  // tensors ("<name>.exp_avg", "<name>.exp_avg_sq"; ratio 1: a full reset): ReLoRA's partial
  // optimizer reset at a restart, which keeps the parameter's step count t. With `reset_step`
  // t restarts at 0 as well, so that bias correction restarts and the next update of a full
  // reset equals a freshly constructed optimizer's first (a rebuilt optimizer, as the low-rank
  // BA refactorisation's code does). The default goes through state_tensors()/load_state();
  // AdamW and LowRankAdam prune in place. Throws NotFound when the optimizer holds no such moments.
  virtual void prune_state(const std::string& name, double ratio, bool reset_step = false);
  // Frees the state of parameter `index` (ZeRO-1: a rank drops the state of the tensors another
  // rank steps, train/zero.h). The parameter must not be stepped afterwards. Default: keeps it.
  virtual void release_state(size_t index) { (void)index; }
};

// Zeroes, in place, the `ratio` fraction of `t`'s entries with the smallest magnitude: entries
// with |t| <= the k-th smallest |t|, k = ceil(ratio·numel), are zeroed (ReLoRA's
// magnitude_pruning keeps |t| > quantile(|t|, ratio)). ratio <= 0: unchanged; ratio >= 1: all 0.
void magnitude_prune_(at::Tensor& t, double ratio);

// The index of each override's parameter in `names` (the optimizer's order), checking the name
// and the values; what set_overrides implementations share.
std::vector<size_t> override_indices(const std::vector<std::string>& names,
                                     const std::vector<ParamOverride>& overrides, std::string_view optimizer);

// The memory() object from its four parts.
OrderedJson memory_json(int64_t weights, int64_t grads, int64_t optimizer_states, int64_t projectors);

// AdamW's own options (`--optimizer adamw --optimizer-options`): block-wise 8-bit moments
// (quantized_state.h) for every tensor of at least min_8bit_size elements, as bitsandbytes'
// AdamW8bit; smaller tensors keep float32 moments.
struct AdamWStateOptions {
  int state_bits = 32;           // 32 or 8
  int64_t min_8bit_size = 4096;  // bitsandbytes' threshold

  // From a JSON object holding only these keys; throws InvalidArgument naming `what` and the key
  // or value.
  static AdamWStateOptions from_json(const Json& j, std::string_view what);
};

// AdamW over a list of named parameters (tensors shared with the model). 1-D parameters (norm
// weights, biases) are not decayed. With 8-bit states a parameter's moments live as
// "<param>.exp_avg.codes|absmax|shape" (and exp_avg_sq) in state_tensors() once it has been
// stepped; the update itself runs in float32 on the dequantized moments.
class AdamW final : public Optimizer {
 public:
  AdamW(std::vector<std::pair<std::string, at::Tensor>> params, AdamConfig config,
        AdamWStateOptions state_options = {});

  void step(double lr) override;
  void begin_step(double lr) override { lr_ = lr; }
  void step_parameter(size_t index, const at::Tensor& grad) override;
  void end_step() override { ++steps_; }
  void zero_grad() override;
  void set_overrides(const std::vector<ParamOverride>& overrides) override;

  const AdamConfig& config() const { return config_; }
  const std::vector<std::pair<std::string, at::Tensor>>& params() const { return params_; }
  // "<param>.exp_avg", "<param>.exp_avg_sq" (8-bit: their codes, absmax and shape), and
  // "<param>.step" where a tensor's own t differs from the optimizer's step count (after a
  // prune_state with reset_step, or for a parameter that skipped steps).
  std::vector<std::pair<std::string, at::Tensor>> state_tensors() const override;
  int64_t steps() const override { return steps_; }
  void load_state(const std::vector<std::pair<std::string, at::Tensor>>& tensors, int64_t steps) override;
  OrderedJson memory() const override;
  void prune_state(const std::string& name, double ratio, bool reset_step = false) override;
  void release_state(size_t index) override;

 private:
  // Parameter `index`'s moments → 8-bit; its float copies freed.
  void release_to_8bit(size_t index);

  std::vector<std::pair<std::string, at::Tensor>> params_;
  std::vector<AdamState> states_;
  std::vector<QuantizedMoments> moments8_;  // of the parameters with eight_bit_ set
  std::vector<bool> decay_, eight_bit_;
  std::vector<double> lr_scale_;                     // set_overrides; 1 by default
  std::vector<std::optional<double>> weight_decay_;  // set_overrides; nullopt: the run's rule
  AdamConfig config_;
  int64_t steps_ = 0;
  double lr_ = 0;  // of the step in progress
};

}  // namespace lowrank::optim
