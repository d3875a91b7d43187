// Language-model pretraining loop: next-token cross entropy on random contiguous windows of a
// token stream, AdamW (adamw.h), warmup + cosine schedule and global-norm clipping
// (schedule.h), gradient accumulation, JSONL metrics, atomic checkpoints and exact resume.
// The run directory it writes (metrics.jsonl, checkpoints/) and the exact resume are in
// checkpoint.h.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <iosfwd>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <ATen/ATen.h>

#include "lowrank/core/json.h"
#include "lowrank/data/token_dataset.h"
#include "lowrank/nn/model.h"
#include "lowrank/optim/adamw.h"
#include "lowrank/train/schedule.h"

namespace lowrank {
class ProgressBar;
}  // namespace lowrank

namespace lowrank::train {

struct DataParallel;  // data_parallel.h

// A 1-D stream of token ids to sample windows from.
struct TokenStream {
  int64_t size = 0;
  // Tokens [begin, begin + length) as a 1-D int64 CPU tensor.
  std::function<at::Tensor(int64_t begin, int64_t length)> slice;

  // A stream over an in-memory 1-D integer tensor (converted to int64).
  static TokenStream from_tensor(const at::Tensor& tokens);
  // A stream over a split of a token dataset (which it keeps open).
  static TokenStream from_dataset(const data::TokenDataset& dataset, std::string split);
};

// Seeded sampler of window start offsets: start_i = splitmix64(seed, i) mod (size − window + 1).
// Its whole state is the counter i, so it checkpoints as one integer.
class WindowSampler {
 public:
  // Throws InvalidArgument when the stream is shorter than one window.
  WindowSampler(uint64_t seed, int64_t stream_size, int64_t window);
  int64_t next();
  uint64_t counter() const { return counter_; }
  void set_counter(uint64_t counter) { counter_ = counter; }

 private:
  uint64_t seed_;
  int64_t positions_;
  uint64_t counter_ = 0;
};

// `batch` windows of seq_len + 1 tokens: [batch, seq_len + 1] int64.
at::Tensor sample_windows(const TokenStream& data, WindowSampler& sampler, int64_t batch, int64_t seq_len);

// Mean next-token cross entropy of `model` over windows [B, T + 1]: inputs [:, :T] predict
// targets [:, 1:]. A scalar float32 tensor (float64 for a float64 model), differentiable.
at::Tensor lm_loss(const nn::Model& model, const at::Tensor& windows);

struct TrainerConfig {
  int64_t steps = 100;        // optimizer steps in the whole run
  int64_t batch_size = 8;     // windows per micro-batch
  int64_t grad_accum = 1;     // micro-batches per optimizer step
  int64_t seq_len = 128;      // tokens per window (inputs)
  double lr = 1e-3;           // peak learning rate
  double min_lr = 1e-4;       // cosine floor
  int64_t warmup_steps = 10;  // linear warmup steps
  double clip_norm = 1.0;     // global gradient-norm clip (<= 0: off)
  optim::AdamConfig adam;     // AdamW settings
  // "adamw", or a method of optim/ (galore, fira, frugal, dct, gradnormlorp) with its options (a JSON object,
  // optim::apply_options); the low-rank methods take their β, ε and decay from the options.
  std::string optimizer = "adamw";
  Json optimizer_options = Json::object();
  // A low-rank weight parameterisation of the attention/MLP projections (parameterization.h:
  // lowrank, sltrain, relora, sst, trp, maestro) with its options; empty: dense training. Applied by the
  // whole-model train() overload; needs optimizer "adamw".
  std::string parameterization;
  Json parameterization_options = Json::object();
  uint64_t seed = 0;             // window sampler seed
  int64_t checkpoint_every = 0;  // write a checkpoint every N steps (0: only at the end)
  // Stop (without a checkpoint, as if killed) after this step; 0: run to the end. For testing
  // interruption and resume.
  int64_t stop_after = 0;
  // Step each parameter from a post-accumulate-grad hook as soon as its gradient is ready and
  // free that gradient (Optimizer::begin_step): the full set of gradients is never resident.
  // Needs grad_accum 1 and clip_norm <= 0 (a global norm needs every gradient at once, so the
  // mode cannot clip, as in GaLore's layer-wise mode); grad_norm is still reported.
  bool per_layer_updates = false;
  // "" (off), "bf16" or "fp16": the forward passes under autocast on the model's device (CPU or
  // CUDA), as PyTorch's torch.autocast (matrix products in the half type, reductions, norms and
  // the loss in float32); weights, gradients and optimizer states stay float32. fp16 adds dynamic
  // loss scaling (loss_scaler.h: skipped steps and the scale are logged and checkpointed).
  std::string autocast;
  // fp16 autocast: the loss scale of the first step (GradScaler's init_scale, 2^16).
  double initial_loss_scale = 65536.0;

  OrderedJson to_json() const;
  // Validates every field; throws InvalidArgument naming the key and value.
  static TrainerConfig from_json(const Json& j, std::string_view what);
  void validate() const;
  LrSchedule schedule() const { return {lr, min_lr, warmup_steps, steps}; }
};

struct StepRecord {
  int64_t step = 0;  // 1-based: the number of optimizer steps done
  double loss = 0;   // mean loss over the step's micro-batches (before the update)
  double lr = 0;
  double grad_norm = 0;  // before clipping
  double tokens_per_s = 0;
  double loss_scale = 0;  // fp16 autocast: the loss scale after the step (0: no scaling)
  bool skipped = false;   // fp16 autocast: the gradients held an inf or a NaN, no update
};

// One optimizer step of a supervised loop (classify.h, ctr.h): zero the gradients, run
// `config.grad_accum` micro-batches of `micro_loss` (it returns the micro-batch's mean loss,
// differentiable, and adds the units it consumed, tokens or rows, to its argument), clip to
// config.clip_norm and update at `lr`. Returns the record of step `step` + 1 (rate: units per second).
StepRecord supervised_step(int64_t step, double lr, const TrainerConfig& config, optim::Optimizer& optimizer,
                           const std::vector<at::Tensor>& params,
                           const std::function<at::Tensor(int64_t& units)>& micro_loss);

// The step's metrics.jsonl line: {"step", "loss", "lr", "grad_norm", `rate_key`: rate} (and the
// loss scale with fp16 autocast).
std::string metrics_line(const StepRecord& record, std::string_view rate_key = "tokens_per_s");

// The end of a step shared by the loops: appends the metrics line to `metrics` (flushed), records
// the step in `steps`, notes it on the bar and advances it. Returns true when `config.stop_after`
// ends the run here before its last step (as if killed: the caller returns without a checkpoint).
bool finish_step(const StepRecord& record, const TrainerConfig& config, std::ostream& metrics,
                 std::vector<StepRecord>& steps, ProgressBar& bar, const std::string& note,
                 std::string_view rate_key = "tokens_per_s");

struct TrainResult {
  int64_t step = 0;               // steps done when the call returned
  bool finished = false;          // reached config.steps
  std::vector<StepRecord> steps;  // the steps this call ran
  // Bytes of trained weights, frozen tensors (the model's untrained tensors and
  // TrainTarget::frozen, each storage once), gradients, optimizer states and projectors after this
  // call's first update, and their total (Optimizer::memory() plus "frozen"; null when the call
  // ran no step).
  OrderedJson memory;
};

// The optimizer `config` names over `params`: AdamW, or a low-rank method of optim/. Throws
// NotFound for an unknown name, InvalidArgument for a bad option.
std::unique_ptr<optim::Optimizer> make_optimizer(std::vector<std::pair<std::string, at::Tensor>> params,
                                                 const TrainerConfig& config);

// What the loop trains and how its checkpoints store it. The whole model for pretraining;
// adapter tensors for fine-tuning (the base stays frozen).
struct TrainTarget {
  // The trainable tensors (requires_grad is set on them), named as in the checkpoint file.
  std::vector<std::pair<std::string, at::Tensor>> params;
  // The checkpoint file holding `params` under their names.
  std::string weights_file = "model.safetensors";
  // Writes a checkpoint's weights into the directory; default: `params` into weights_file.
  std::function<void(const std::filesystem::path& dir)> save;
  // Called before each optimizer step's forward passes and after its update (0-based step):
  // DyLoRA samples a rank, SoRA applies its proximal step. Optional.
  std::function<void(int64_t step)> before_step;
  std::function<void(int64_t step, double lr)> after_step;
  // Called with each micro-batch's windows [B, T + 1] before its forward pass (PETAL scores the
  // batch's inputs there). Optional.
  std::function<void(const at::Tensor& windows)> before_forward;
  // The loss of a micro-batch's windows [B, T + 1] in place of lm_loss(model, windows): PELA adds
  // its feature-distillation and weight-perturbation terms here. Optional.
  std::function<at::Tensor(const at::Tensor& windows)> loss;
  // Tensors that are training state but not trained (ReLoRA's merged W0, SLTrain's support
  // indices): written with `params` by the default checkpoint writer (floating point as float32,
  // integers exactly) and restored on resume.
  std::vector<std::pair<std::string, at::Tensor>> frozen;
  // Called after each optimizer update (0-based step, after after_step) with the optimizer, so
  // that it may change the model and the optimizer state: ReLoRA merges, re-initialises and
  // prunes moments here. Optional.
  std::function<void(int64_t step, optim::Optimizer& optimizer)> after_update;
  // A factor on the scheduled learning rate of a step (ReLoRA's jagged re-warmup). Optional.
  std::function<double(int64_t step)> lr_factor;
  // Called on resume for a trained tensor whose checkpoint shape differs from its own, with the
  // saved tensor, before it is copied: a target whose tensors change shape during training
  // (Maestro's shrinking) takes the saved shape here. Unset: the shapes must match.
  std::function<void(const std::string& name, const at::Tensor& saved)> reshape;
  // Per-tensor optimizer settings (the token mixers' param_groups(), nn/token_mixer.h), handed to
  // the optimizer by param_overrides(); groups of tensors that are not trained are ignored.
  std::vector<nn::ParamGroup> param_groups;

  // Every tensor of `model` under its HF name, saved as an HF model directory, with the model's
  // mixers' param_groups.
  static TrainTarget whole_model(const nn::Model& model);
};

// The optimizer overrides of `groups` (ParamGroup -> optim::ParamOverride) for the tensors among
// `params`: a group's lr is a peak rate, so its scale is lr / peak_lr (the schedule then shapes it
// as every other). Throws InvalidArgument for a non-positive group lr or a negative decay.
std::vector<optim::ParamOverride> param_overrides(
    const std::vector<nn::ParamGroup>& groups, const std::vector<std::pair<std::string, at::Tensor>>& params,
    double peak_lr);

// Trains `model` (its tensors get requires_grad) on `data` in place. With
// config.parameterization, the target slots are first parameterised (apply_parameterization,
// seeded from config.seed) and stay so on return (densify() gives the dense model); the slots
// must then be dense. With `resume` and a
// checkpoint in `run_dir`, continues from it (the checkpoint's config must match for the
// fields that shape the run: batch, accumulation, seq_len, seed); otherwise starts fresh
// (metrics.jsonl truncated). Throws InvalidArgument for a bad config, Corruption for a damaged
// checkpoint, IoError when the run directory cannot be written. Not thread-safe.
// With `parallel` (data_parallel.h), this process is one rank of a data-parallel run:
// config.batch_size is the global micro-batch, split over the ranks.
TrainResult train(nn::Model& model, const TokenStream& data, const TrainerConfig& config,
                  const std::filesystem::path& run_dir, bool resume, const DataParallel* parallel = nullptr);
// The same loop over `target`'s tensors only (the model's other tensors get no gradient).
TrainResult train(const nn::Model& model, TrainTarget& target, const TokenStream& data,
                  const TrainerConfig& config, const std::filesystem::path& run_dir, bool resume,
                  const DataParallel* parallel = nullptr);

}  // namespace lowrank::train
