// AdamW — Loshchilov & Hutter, 2019, "Decoupled Weight Decay Regularization", ICLR,
// arXiv:1711.05101, Algorithm 2; Adam moments from Kingma & Ba, 2015, arXiv:1412.6980, Alg. 1.
// One Adam core (adam_update) with explicit choices, shared by AdamW here and by later low-rank
// optimizers (GaLore etc. run it on projected gradients):
//   θ ← θ·(1 − η·λ)                         (decoupled decay; λ = weight_decay, η = lr)
//   m ← β1·m + (1 − β1)·g;  v ← β2·v + (1 − β2)·g²
//   θ ← θ − η/(1 − β1^t) · m / (sqrt(v)/sqrt(1 − β2^t) + ε)
// The order of floating-point operations is that of libtorch's torch::optim::AdamW (the test
// checks identical updates); the bias corrections can be switched off.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include <ATen/ATen.h>

#include "lowrank/core/json.h"

namespace lowrank::train {

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

// AdamW over a list of named parameters (tensors shared with the model). Parameters whose names
// are in `no_decay` (norm weights, biases: any 1-D tensor by default) are not decayed.
class AdamW {
 public:
  AdamW(std::vector<std::pair<std::string, at::Tensor>> params, AdamConfig config);

  // Applies one update to every parameter with a defined .grad(). Not thread-safe.
  void step(double lr);
  void zero_grad();

  const AdamConfig& config() const { return config_; }
  const std::vector<std::pair<std::string, at::Tensor>>& params() const { return params_; }
  // The optimizer state as named CPU tensors ("<param>.exp_avg", "<param>.exp_avg_sq") and the
  // step count (the same for every tensor).
  std::vector<std::pair<std::string, at::Tensor>> state_tensors() const;
  int64_t steps() const { return steps_; }
  // Restores state_tensors() output. Throws Corruption for a missing or mis-shaped tensor.
  void load_state(const std::vector<std::pair<std::string, at::Tensor>>& tensors, int64_t steps);

 private:
  std::vector<std::pair<std::string, at::Tensor>> params_;
  std::vector<AdamState> states_;
  std::vector<bool> decay_;
  AdamConfig config_;
  int64_t steps_ = 0;
};

}  // namespace lowrank::train
