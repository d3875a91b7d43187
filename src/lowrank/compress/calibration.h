// Calibration: streaming statistics of each linear slot's inputs over N calibration sequences,
// gathered by wrapping the slots' base operators for the duration of the passes (a forward hook),
// never storing the activations themselves:
//   gram     H = Σ_t x_t x_tᵀ  (float64, [in, in])          SVD-LLM, EoRA, SVDQuant's output error
//   absmax   max_t |x_tj|       ([in])                        SVDQuant's smoothing span
//   abs_sum  Σ_t |x_tj|         ([in], float64)               ASVD's activation scale
//   fisher   Σ_batches mean_i (∂L/∂W_ij)²  ([in], float64)    FWSVD (needs a backward pass per batch)
//   inputs   up to keep_inputs tokens x_t, evenly strided ([≤keep, in], float32)   SVDQuant W4A4's
//            output error with quantised activations (the Gram cannot express it)
// The loss for the Fisher pass is the model's next-token cross-entropy on the same sequences.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include <ATen/ATen.h>

#include "lowrank/nn/model.h"

namespace lowrank::compress {

struct SlotStatistics {
  at::Tensor gram;     // [in, in] float64 (undefined when not collected)
  at::Tensor absmax;   // [in] float32
  at::Tensor abs_sum;  // [in] float64
  at::Tensor sum;      // [in] float64: Σ_t x_t (AFM's output mean W x̄ + b)
  at::Tensor fisher;   // [in] float64 (undefined when not collected)
  at::Tensor inputs;   // [kept, in] float32: a subsample of the tokens (undefined when not kept)
  int64_t tokens = 0;
  int64_t fisher_batches = 0;

  at::Tensor mean_abs() const { return abs_sum / static_cast<double>(std::max<int64_t>(tokens, 1)); }
  // sqrt(mean over batches of mean_i (∂L/∂W_ij)²): FWSVD's per-input importance as ASVD's code
  // computes it.
  at::Tensor fisher_importance() const;
};

struct CalibrationOptions {
  int64_t samples = 32;    // calibration sequences
  int64_t seq_len = 256;   // tokens per sequence
  int64_t batch_size = 4;  // sequences per forward pass
  bool gram = true;        // collect H (costs in² per slot)
  bool fisher = false;     // run a backward pass per batch for the Fisher diagonal
  int64_t keep_inputs = 0;  // keep up to this many input tokens per slot (every ⌈samples·seq_len / keep⌉-th)
  bool progress = true;
  std::vector<std::string> slots;  // empty: every decoder slot (lm_head excluded)
};

using CalibrationStatistics = std::map<std::string, SlotStatistics>;

// Runs `samples` windows of `seq_len` tokens taken evenly from the 1-D int64 `tokens` through the
// model and returns each slot's statistics. The model's bases are restored on return (also on an
// exception). Throws InvalidArgument when there are fewer than seq_len + 1 tokens, an option is
// out of range or a named slot does not exist.
CalibrationStatistics calibrate(nn::Model& model, const at::Tensor& tokens,
                                const CalibrationOptions& options);

}  // namespace lowrank::compress
