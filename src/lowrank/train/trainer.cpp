// The training loop and its window sampler; see trainer.h.
#include "lowrank/train/trainer.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <fstream>
#include <functional>
#include <optional>
#include <set>

#include <torch/csrc/autograd/function_hook.h>
#include <torch/csrc/autograd/variable.h>

#include "lowrank/core/error.h"
#include "lowrank/core/file.h"
#include "lowrank/core/log.h"
#include "lowrank/core/progress.h"
#include "lowrank/core/random.h"
#include "lowrank/nn/autocast.h"
#include "lowrank/optim/low_rank_adam.h"
#include "lowrank/optim/methods.h"
#include "lowrank/train/checkpoint.h"
#include "lowrank/train/data_parallel.h"
#include "lowrank/train/loss_scaler.h"
#include "lowrank/train/parameterization.h"
#include "lowrank/train/zero.h"

namespace lowrank::train {
namespace fs = std::filesystem;

namespace {

// Trainable parameters: the model's tensors under their HF names.
std::vector<std::pair<std::string, at::Tensor>> trainable(const nn::Model& model) {
  std::vector<std::pair<std::string, at::Tensor>> out;
  for (auto& [name, t] : model.named_tensors()) {
    at::Tensor p = t;
    if (!p.requires_grad()) p.requires_grad_(true);
    out.emplace_back(name, p);
  }
  return out;
}

}  // namespace

std::string metrics_line(const StepRecord& r, std::string_view rate_key) {
  OrderedJson j{{"step", r.step}, {"loss", r.loss}, {"lr", r.lr}, {"grad_norm", r.grad_norm}};
  j[std::string(rate_key)] = r.tokens_per_s;
  if (r.loss_scale > 0) {
    j["loss_scale"] = r.loss_scale;
    j["skipped"] = r.skipped;
  }
  return j.dump();
}

StepRecord supervised_step(int64_t step, double lr, const TrainerConfig& config, optim::Optimizer& optimizer,
                           const std::vector<at::Tensor>& params,
                           const std::function<at::Tensor(int64_t& units)>& micro_loss) {
  const auto t0 = std::chrono::steady_clock::now();
  optimizer.zero_grad();
  double loss_sum = 0;
  int64_t units = 0;
  for (int64_t micro = 0; micro < config.grad_accum; ++micro) {
    const at::Tensor loss = micro_loss(units);
    loss_sum += loss.item<double>();
    (loss / static_cast<double>(config.grad_accum)).backward();
  }
  const double grad_norm = clip_grad_norm(params, config.clip_norm);
  optimizer.step(lr);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return StepRecord{step + 1, loss_sum / static_cast<double>(config.grad_accum), lr, grad_norm,
                    static_cast<double>(units) / std::max(seconds, 1e-9)};
}

bool finish_step(const StepRecord& record, const TrainerConfig& config, std::ostream& metrics,
                 std::vector<StepRecord>& steps, ProgressBar& bar, const std::string& note,
                 std::string_view rate_key) {
  metrics << metrics_line(record, rate_key) << "\n" << std::flush;
  steps.push_back(record);
  bar.set_note(note);
  bar.advance();
  if (config.stop_after > 0 && record.step >= config.stop_after && record.step < config.steps) {
    log::info("stopping after step ", record.step, " (stop_after)");
    return true;
  }
  return false;
}

TokenStream TokenStream::from_tensor(const at::Tensor& tokens) {
  LR_CHECK(tokens.dim() == 1, InvalidArgument, "token stream: expected a 1-D tensor, got shape ",
           tokens.sizes());
  at::Tensor t = tokens.to(at::kLong).contiguous();
  return {t.size(0),
          [t](int64_t begin, int64_t length) { return t.slice(0, begin, begin + length).clone(); }};
}

TokenStream TokenStream::from_dataset(const data::TokenDataset& dataset, std::string split) {
  return {dataset.size(split), [dataset, split = std::move(split)](int64_t begin, int64_t length) {
            return dataset.slice(split, begin, length);
          }};
}

WindowSampler::WindowSampler(uint64_t seed, int64_t stream_size, int64_t window)
    : seed_(seed), positions_(stream_size - window + 1) {
  LR_CHECK(positions_ >= 1, InvalidArgument, "window sampler: the stream has ", stream_size,
           " tokens, fewer than one window of ", window);
}

int64_t WindowSampler::next() {
  const uint64_t r = splitmix64(splitmix64(seed_) ^ counter_++);
  return static_cast<int64_t>(r % static_cast<uint64_t>(positions_));
}

at::Tensor sample_windows(const TokenStream& data, WindowSampler& sampler, int64_t batch, int64_t seq_len) {
  std::vector<at::Tensor> rows;
  rows.reserve(batch);
  for (int64_t i = 0; i < batch; ++i) rows.push_back(data.slice(sampler.next(), seq_len + 1));
  return at::stack(rows);
}

at::Tensor lm_loss(const nn::Model& model, const at::Tensor& windows) {
  const int64_t T = windows.size(1) - 1;
  at::Tensor inputs = windows.slice(1, 0, T).to(model.device());
  at::Tensor targets = windows.slice(1, 1, T + 1).to(model.device());
  at::Tensor logits = model.forward(inputs);  // [B, T, V]
  // Half-precision logits are promoted to float32 for the loss; a float64 model keeps float64.
  if (logits.scalar_type() != at::kDouble) logits = logits.to(at::kFloat);
  return at::cross_entropy_loss(logits.reshape({-1, logits.size(-1)}), targets.reshape({-1}));
}

OrderedJson TrainerConfig::to_json() const {
  OrderedJson j{{"steps", steps},
                {"batch_size", batch_size},
                {"grad_accum", grad_accum},
                {"seq_len", seq_len},
                {"lr", lr},
                {"min_lr", min_lr},
                {"warmup_steps", warmup_steps},
                {"clip_norm", clip_norm},
                {"adam", adam.to_json()},
                {"optimizer", optimizer},
                {"optimizer_options", optimizer_options},
                {"seed", seed},
                {"checkpoint_every", checkpoint_every}};
  // Only when set, so that dense runs' trainer_state.json stays as before.
  if (per_layer_updates) j["per_layer_updates"] = true;
  if (!autocast.empty()) j["autocast"] = autocast;
  if (autocast == "fp16") j["initial_loss_scale"] = initial_loss_scale;
  if (!parameterization.empty()) {
    j["parameterization"] = parameterization;
    j["parameterization_options"] = parameterization_options;
  }
  return j;
}

TrainerConfig TrainerConfig::from_json(const Json& j, std::string_view what) {
  TrainerConfig c;
  c.steps = json_get_or<int64_t>(j, "steps", c.steps, what);
  c.batch_size = json_get_or<int64_t>(j, "batch_size", c.batch_size, what);
  c.grad_accum = json_get_or<int64_t>(j, "grad_accum", c.grad_accum, what);
  c.seq_len = json_get_or<int64_t>(j, "seq_len", c.seq_len, what);
  c.lr = json_get_or<double>(j, "lr", c.lr, what);
  c.min_lr = json_get_or<double>(j, "min_lr", c.min_lr, what);
  c.warmup_steps = json_get_or<int64_t>(j, "warmup_steps", c.warmup_steps, what);
  c.clip_norm = json_get_or<double>(j, "clip_norm", c.clip_norm, what);
  if (j.contains("adam")) c.adam = optim::AdamConfig::from_json(j["adam"], str(what, ".adam"));
  c.optimizer = json_get_or<std::string>(j, "optimizer", c.optimizer, what);
  if (j.contains("optimizer_options") && !j.at("optimizer_options").is_null()) {
    c.optimizer_options = j.at("optimizer_options");
    LR_CHECK(c.optimizer_options.is_object(), InvalidArgument, what,
             ": \"optimizer_options\" must be an object");
  }
  c.parameterization = json_get_or<std::string>(j, "parameterization", c.parameterization, what);
  if (j.contains("parameterization_options") && !j.at("parameterization_options").is_null()) {
    c.parameterization_options = j.at("parameterization_options");
    LR_CHECK(c.parameterization_options.is_object(), InvalidArgument, what,
             ": \"parameterization_options\" must be an object");
  }
  c.seed = json_get_or<uint64_t>(j, "seed", c.seed, what);
  c.per_layer_updates = json_get_or<bool>(j, "per_layer_updates", c.per_layer_updates, what);
  c.autocast = json_get_or<std::string>(j, "autocast", c.autocast, what);
  c.initial_loss_scale = json_get_or<double>(j, "initial_loss_scale", c.initial_loss_scale, what);
  c.checkpoint_every = json_get_or<int64_t>(j, "checkpoint_every", c.checkpoint_every, what);
  c.validate();
  return c;
}

void TrainerConfig::validate() const {
  LR_CHECK(steps >= 1, InvalidArgument, "trainer: steps must be >= 1, got ", steps);
  LR_CHECK(batch_size >= 1, InvalidArgument, "trainer: batch_size must be >= 1, got ", batch_size);
  LR_CHECK(grad_accum >= 1, InvalidArgument, "trainer: grad_accum must be >= 1, got ", grad_accum);
  LR_CHECK(seq_len >= 1, InvalidArgument, "trainer: seq_len must be >= 1, got ", seq_len);
  // lr = 0 is allowed: a run whose updates are zero (PELA's oracle against plain SVD uses one).
  LR_CHECK(std::isfinite(lr) && min_lr >= 0 && min_lr <= lr, InvalidArgument,
           "trainer: need 0 <= min_lr <= lr, got lr ", lr, ", min_lr ", min_lr);
  LR_CHECK(warmup_steps >= 0, InvalidArgument, "trainer: warmup_steps must be >= 0, got ", warmup_steps);
  LR_CHECK(checkpoint_every >= 0, InvalidArgument, "trainer: checkpoint_every must be >= 0, got ",
           checkpoint_every);
  LR_CHECK(stop_after >= 0, InvalidArgument, "trainer: stop_after must be >= 0, got ", stop_after);
  LR_CHECK(!per_layer_updates || grad_accum == 1, InvalidArgument,
           "trainer: per-layer updates step on each gradient as it arrives, so grad_accum must be 1, got ",
           grad_accum);
  LR_CHECK(!per_layer_updates || clip_norm <= 0, InvalidArgument,
           "trainer: per-layer updates cannot clip by the global gradient norm (clip_norm ", clip_norm,
           "); set it to 0");
  // GradNormLoRP is a pair: its weight form's factors are trained by its projected optimizer.
  LR_CHECK(parameterization.empty() || optimizer == "adamw" ||
               (parameterization == "gradnormlorp" && optimizer == "gradnormlorp"),
           InvalidArgument, "trainer: parameterization ", parameterization,
           " trains its factors with adamw, not optimizer ", optimizer,
           " (only parameterization gradnormlorp also takes optimizer gradnormlorp)");
  LR_CHECK(parameterization_options.is_object(), InvalidArgument,
           "trainer: parameterization_options must be a JSON object");
  nn::autocast_dtype(autocast);  // names a bad value
  LR_CHECK(initial_loss_scale > 0 && std::isfinite(initial_loss_scale), InvalidArgument,
           "trainer: initial_loss_scale must be a positive number, got ", initial_loss_scale);
  LR_CHECK(
      autocast != "fp16" || !per_layer_updates, InvalidArgument,
      "trainer: fp16 autocast scales the loss and must see every gradient before a step, so it cannot run "
      "with per-layer updates (use bf16, which needs no loss scaling)");
}

TrainTarget TrainTarget::whole_model(const nn::Model& model) {
  TrainTarget target;
  target.params = trainable(model);
  target.save = [&model](const fs::path& dir) { model.save(dir, at::kFloat); };
  target.param_groups = model.param_groups();
  return target;
}

std::vector<optim::ParamOverride> param_overrides(
    const std::vector<nn::ParamGroup>& groups, const std::vector<std::pair<std::string, at::Tensor>>& params,
    double peak_lr) {
  std::set<std::string> trained;
  for (const auto& [name, p] : params) trained.insert(name);
  std::vector<optim::ParamOverride> out;
  for (const nn::ParamGroup& g : groups) {
    LR_CHECK(!g.lr || (*g.lr > 0 && std::isfinite(*g.lr)), InvalidArgument, "param group of \"", g.tensor,
             "\": lr must be positive, got ", g.lr.value_or(0));
    LR_CHECK(!g.weight_decay || *g.weight_decay >= 0, InvalidArgument, "param group of \"", g.tensor,
             "\": weight_decay must be >= 0, got ", g.weight_decay.value_or(0));
    if (!trained.contains(g.tensor)) continue;
    out.push_back({g.tensor, g.lr ? *g.lr / peak_lr : 1.0, g.weight_decay});
  }
  return out;
}

std::unique_ptr<optim::Optimizer> make_optimizer(std::vector<std::pair<std::string, at::Tensor>> params,
                                                 const TrainerConfig& config) {
  if (config.optimizer == "adamw")
    return std::make_unique<optim::AdamW>(
        std::move(params), config.adam,
        optim::AdamWStateOptions::from_json(config.optimizer_options, "optimizer_options"));
  return std::make_unique<optim::LowRankAdam>(
      optim::make_optimizer(config.optimizer, std::move(params), config.optimizer_options));
}

TrainResult train(nn::Model& model, const TokenStream& data, const TrainerConfig& config,
                  const fs::path& run_dir, bool resume, const DataParallel* parallel) {
  if (!config.parameterization.empty()) {
    config.validate();
    // A salt keeps the factor and support draws apart from the window sampler's stream.
    AppliedParameterization applied =
        apply_parameterization(model, config.parameterization, config.parameterization_options,
                               splitmix64(config.seed ^ 0x5052414dull));
    applied.target.param_groups = model.param_groups();  // the mixers' tensors it trains as they are
    return train(model, applied.target, data, config, run_dir, resume, parallel);
  }
  TrainTarget target = TrainTarget::whole_model(model);
  return train(model, target, data, config, run_dir, resume, parallel);
}

namespace {

// Per-layer updates: a post-accumulate-grad hook on every parameter steps it with its gradient
// the moment autograd has accumulated it, then frees the gradient. Installed for one run and
// removed by the destructor.
class PerLayerUpdates {
 public:
  PerLayerUpdates(const std::vector<at::Tensor>& params, optim::Optimizer& optimizer) : params_(params) {
    for (size_t i = 0; i < params_.size(); ++i)
      torch::autograd::impl::set_post_acc_grad_hooks(
          params_[i], std::make_unique<Hook>([this, &optimizer, i](const at::Tensor& p) {
            at::Tensor& grad = p.mutable_grad();
            const double norm = grad.detach().norm().item<double>();
            squared_norm_ += norm * norm;
            peak_grad_bytes_ =
                std::max(peak_grad_bytes_, grad.numel() * static_cast<int64_t>(grad.element_size()));
            optimizer.step_parameter(i, grad);
            grad.reset();
          }));
  }
  PerLayerUpdates(const PerLayerUpdates&) = delete;
  PerLayerUpdates& operator=(const PerLayerUpdates&) = delete;
  ~PerLayerUpdates() {
    for (const at::Tensor& p : params_) torch::autograd::impl::set_post_acc_grad_hooks(p, nullptr);
  }
  // Starts a step's accounting; grad_norm() is then that step's global norm.
  void begin() { squared_norm_ = 0; }
  double grad_norm() const { return std::sqrt(squared_norm_); }
  // The most gradient bytes resident at once: one parameter's (each is freed before the next).
  int64_t peak_grad_bytes() const { return peak_grad_bytes_; }

 private:
  struct Hook final : torch::autograd::PostAccumulateGradHook {
    explicit Hook(std::function<void(const at::Tensor&)> fn) : fn(std::move(fn)) {}
    void operator()(const torch::autograd::Variable& tensor) override { fn(tensor); }
    std::function<void(const at::Tensor&)> fn;
  };
  std::vector<at::Tensor> params_;
  double squared_norm_ = 0;
  int64_t peak_grad_bytes_ = 0;
};

// Bytes of the tensors a run holds but does not train: the model's other tensors (a fine-tuned
// model's base, ...) and target.frozen (ReLoRA's merged W0, SLTrain's support indices). Each
// storage counts once, and not at all when a trained parameter lives in it.
int64_t frozen_bytes(const nn::Model& model, const TrainTarget& target) {
  std::set<const void*> seen;
  for (const auto& [n, p] : target.params) seen.insert(p.storage().data());
  int64_t bytes = 0;
  auto count = [&](const at::Tensor& t) {
    if (t.defined() && seen.insert(t.storage().data()).second)
      bytes += static_cast<int64_t>(t.storage().nbytes());
  };
  for (const auto& [n, t] : model.named_tensors()) count(t);
  for (const auto& [n, t] : target.frozen) count(t);
  return bytes;
}

// Optimizer::memory()'s parts with the frozen bytes beside the weights, and in the total.
OrderedJson with_frozen(const OrderedJson& m, int64_t frozen) {
  OrderedJson out = OrderedJson::object();
  for (const auto& [key, value] : m.items()) {
    if (key == "total") {
      out["total"] = value.get<int64_t>() + frozen;
      continue;
    }
    out[key] = value;
    if (key == "weights") out["frozen"] = frozen;
  }
  return out;
}

}  // namespace

TrainResult train(const nn::Model& model, TrainTarget& target, const TokenStream& data,
                  const TrainerConfig& config, const fs::path& run_dir, bool resume,
                  const DataParallel* parallel) {
  config.validate();
  dist::Group* const group = parallel ? parallel->group : nullptr;
  const int world = group ? group->size() : 1, rank = group ? group->rank() : 0;
  const int zero = parallel ? parallel->zero : 0;
  check_data_parallel_config(config, world, zero);
  const int64_t local_batch = config.batch_size / world;
  nn::check_autocast_device(config.autocast, model.device());
  const at::ScalarType autocast = nn::autocast_dtype(config.autocast);
  fs::create_directories(run_dir);
  for (auto& [n, p] : target.params)
    if (!p.requires_grad()) p.requires_grad_(true);
  const auto& params = target.params;
  std::vector<at::Tensor> param_tensors;
  for (auto& [n, p] : params) param_tensors.push_back(p);
  const std::unique_ptr<optim::Optimizer> optimizer_ptr = make_optimizer(params, config);
  optim::Optimizer& optimizer = *optimizer_ptr;
  optimizer.set_overrides(param_overrides(target.param_groups, params, config.lr));
  WindowSampler sampler(config.seed, data.size, config.seq_len + 1);
  const LrSchedule schedule = config.schedule();
  const fs::path metrics_path = run_dir / "metrics.jsonl";

  const CheckpointPosition position = start_run(run_dir, resume, config, target, optimizer, rank == 0);
  std::unique_ptr<dist::GradientReducer> reducer;
  if (group) {
    Fingerprint fingerprint = run_fingerprint(config, target, data);
    fingerprint.insert(fingerprint.end(), parallel->fingerprint.begin(), parallel->fingerprint.end());
    fingerprint.emplace_back("resumed at step", std::to_string(position.step));
    fingerprint.emplace_back("ZeRO stage", std::to_string(zero));
    check_same_run(*group, fingerprint);
    std::vector<std::string> names;
    for (const auto& [n, p] : params) names.push_back(n);
    // Broadcasts rank 0's weights, as DDP does (they are equal already: the same seed or checkpoint).
    reducer = std::make_unique<dist::GradientReducer>(*group, param_tensors, names, parallel->reducer);
  }
  std::optional<ZeroSharding> sharding;  // ZeRO-1: which rank steps (and holds the state of) each tensor
  if (group && zero == 1) {
    sharding = ZeroSharding::assign(params, optimizer, world);
    release_unowned_state(optimizer, *sharding, rank);  // a resume loaded all of it
  }
  int64_t step = position.step, tokens = position.tokens;
  sampler.set_counter(position.sampler_counter);
  std::optional<LossScaler> scaler;  // fp16 only (loss_scaler.h)
  if (autocast == at::kHalf) {
    LossScalerOptions so;
    so.init_scale = config.initial_loss_scale;
    scaler.emplace(so);
    if (position.loss_scale > 0) scaler->set_state(position.loss_scale, position.loss_scale_growth_tracker);
  }

  TrainResult result;
  result.step = step;
  // Rank 0 alone writes the metrics; the other ranks' lines go nowhere.
  std::ofstream metrics_file;
  std::ostream discarded(nullptr);
  if (rank == 0) {
    metrics_file.open(metrics_path, std::ios::app);
    LR_CHECK(metrics_file.good(), IoError, "cannot open ", metrics_path.string(), " for appending");
  }
  std::ostream& metrics = rank == 0 ? static_cast<std::ostream&>(metrics_file) : discarded;
  const int64_t tokens_per_step = config.batch_size * config.grad_accum * config.seq_len;
  std::optional<PerLayerUpdates> per_layer;
  if (config.per_layer_updates) per_layer.emplace(param_tensors, optimizer);
  ProgressBar bar(config.steps - step, "train");
  while (step < config.steps) {
    const auto t0 = std::chrono::steady_clock::now();
    const double lr = schedule.at(step) * (target.lr_factor ? target.lr_factor(step) : 1.0);
    optimizer.zero_grad();
    if (target.before_step) target.before_step(step);
    if (per_layer) {
      per_layer->begin();
      optimizer.begin_step(lr);  // the hooks step each parameter during backward()
    }
    if (group) group->set_context(str("step ", step + 1));
    double loss_sum = 0;
    for (int64_t micro = 0; micro < config.grad_accum; ++micro) {
      // This rank's share of the global micro-batch (data_parallel.h); all of it with one rank.
      const uint64_t first = sampler.counter();
      sampler.set_counter(first + static_cast<uint64_t>(rank * local_batch));
      at::Tensor windows = sample_windows(data, sampler, local_batch, config.seq_len);
      sampler.set_counter(first + static_cast<uint64_t>(config.batch_size));
      // Only the last micro-batch's backward all-reduces (DDP's no_sync for the others).
      const bool sync = reducer && micro + 1 == config.grad_accum;
      if (sync) reducer->prepare_for_forward();
      if (target.before_forward) target.before_forward(windows);
      at::Tensor loss;
      {
        const nn::AutocastScope scope(model.device().type(), autocast);
        loss = target.loss ? target.loss(windows) : lm_loss(model, windows);
      }
      loss_sum += loss.item<double>();
      const at::Tensor mean_part = loss / static_cast<double>(config.grad_accum);
      if (sync) {
        reducer->prepare_for_backward();
        try {
          (scaler ? scaler->scale_loss(mean_part) : mean_part).backward();
        } catch (const Error&) {
          throw;
        } catch (const std::exception& e) {  // a bucket's all-reduce failed: a peer died or hung
          group->fail("the gradient all-reduce", e);
        }
      } else {
        (scaler ? scaler->scale_loss(mean_part) : mean_part).backward();
      }
    }
    if (group) loss_sum = group->all_reduce_mean(loss_sum);  // the logged loss: the global batch's
    double grad_norm = 0;
    bool skipped = false;
    if (per_layer) {
      optimizer.end_step();
      grad_norm = per_layer->grad_norm();
      if (result.memory.is_null()) {
        const OrderedJson m = optimizer.memory();  // no gradient is held now: count the peak
        result.memory = with_frozen(
            optim::memory_json(m["weights"].get<int64_t>(), per_layer->peak_grad_bytes(),
                               m["optimizer_states"].get<int64_t>(), m["projectors"].get<int64_t>()),
            frozen_bytes(model, target));
      }
    } else {
      // fp16: the gradients are unscaled before the norm and the step; a step with an inf or a NaN
      // among them is skipped, as GradScaler.step does.
      skipped = scaler && scaler->unscale(param_tensors);
      grad_norm = clip_grad_norm(param_tensors, skipped ? 0.0 : config.clip_norm);
      if (!skipped) {
        if (sharding) {
          zero_step(optimizer, param_tensors, *sharding, *group, lr);
        } else {
          // Replicated ranks refresh their projectors themselves: check that they agree.
          const auto* low_rank = dynamic_cast<const optim::LowRankAdam*>(&optimizer);
          const bool refresh = group && low_rank && low_rank->refreshes_next_step();
          optimizer.step(lr);
          if (refresh) check_same_projectors(*group, optimizer, step + 1);
        }
      }
      if (scaler) scaler->update(skipped);
      if (result.memory.is_null())  // gradients still held
        result.memory = with_frozen(optimizer.memory(), frozen_bytes(model, target));
    }
    if (target.after_step) target.after_step(step, lr);
    if (target.after_update) target.after_update(step, optimizer);
    ++step;
    tokens += tokens_per_step;
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    StepRecord record{step, loss_sum / static_cast<double>(config.grad_accum), lr, grad_norm,
                      static_cast<double>(tokens_per_step) / std::max(seconds, 1e-9)};
    if (scaler) {
      record.loss_scale = scaler->scale();
      record.skipped = skipped;
    }
    result.step = step;
    if (finish_step(record, config, metrics, result.steps, bar,
                    str("loss ", std::to_string(record.loss).substr(0, 6), " lr ", lr, " ",
                        static_cast<int64_t>(record.tokens_per_s), " tok/s")))
      return result;  // as if killed: no checkpoint
    if (step == config.steps || (config.checkpoint_every > 0 && step % config.checkpoint_every == 0)) {
      // ZeRO-1: every rank sends the state it owns; rank 0 writes the whole of it.
      std::optional<std::vector<std::pair<std::string, at::Tensor>>> gathered;
      if (sharding) gathered = gather_optimizer_state(optimizer, *sharding, *group, str("step-", step));
      if (rank == 0)
        write_checkpoint(run_dir, target, optimizer, config,
                         {step, tokens, sampler.counter(), scaler ? scaler->scale() : 0.0,
                          scaler ? scaler->growth_tracker() : 0, world},
                         gathered ? &*gathered : nullptr);
    }
  }
  bar.finish();
  optimizer.zero_grad();
  if (!result.memory.is_null()) {
    const auto mib = [&](const char* key) {
      return str(static_cast<double>(result.memory[key].get<int64_t>()) / (1 << 20), " MiB");
    };
    log::info("training memory (", config.optimizer, "): weights ", mib("weights"), ", frozen ",
              mib("frozen"), ", gradients ", mib("grads"), ", optimizer states ", mib("optimizer_states"),
              ", projectors ", mib("projectors"));
  }
  result.finished = true;
  return result;
}

}  // namespace lowrank::train
