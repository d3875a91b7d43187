// Checkpoints and the metrics log of a run directory; see checkpoint.h.
#include "lowrank/train/checkpoint.h"

#include <cstdio>
#include <functional>
#include <sstream>
#include <string>
#include <vector>

#include "lowrank/core/error.h"
#include "lowrank/core/file.h"
#include "lowrank/core/json.h"
#include "lowrank/core/log.h"
#include "lowrank/core/safetensors.h"

namespace lowrank::train {
namespace fs = std::filesystem;

namespace {

std::string step_name(int64_t step) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "step-%08lld", static_cast<long long>(step));
  return buf;
}

// Copies the checkpoint's tensors called as `tensors` into them, checking each shape (after
// `reshape`, when given, had its chance to take a differing saved shape).
void restore_tensors(const SafetensorsFile& weights,
                     const std::vector<std::pair<std::string, at::Tensor>>& tensors,
                     const std::function<void(const std::string&, const at::Tensor&)>& reshape = nullptr) {
  at::NoGradGuard no_grad;
  for (const auto& [name, p] : tensors) {
    at::Tensor t = weights.load(name);
    if (t.sizes() != p.sizes() && reshape) reshape(name, t);
    LR_CHECK(t.sizes() == p.sizes(), Corruption, weights.path().string(), ": tensor ", name, " has shape ",
             t.sizes(), ", the model's is ", p.sizes());
    p.copy_(t);
  }
}

}  // namespace

void write_checkpoint(const fs::path& run_dir, const TrainTarget& target, const optim::Optimizer& optimizer,
                      const TrainerConfig& config, const CheckpointPosition& position,
                      const std::vector<std::pair<std::string, at::Tensor>>* optimizer_state) {
  const fs::path dir = run_dir / "checkpoints";
  fs::create_directories(dir);
  const std::string name = step_name(position.step);
  const fs::path tmp = dir / ("." + name + ".tmp");
  fs::remove_all(tmp);
  fs::create_directories(tmp);
  if (target.save) {
    target.save(tmp);
  } else {
    std::vector<NamedTensor> weights;
    for (const auto& [n, t] : target.params)
      weights.push_back({n, t.detach().to(at::kCPU, at::kFloat).contiguous()});
    for (const auto& [n, t] : target.frozen) {
      at::Tensor c = t.detach().to(at::kCPU);
      weights.push_back({n, (c.is_floating_point() ? c.to(at::kFloat) : c).contiguous()});
    }
    save_safetensors(tmp / target.weights_file, weights);
  }
  std::vector<NamedTensor> state;
  // 16-bit floating state widened to float32; float32/float64 (Fira's norms) and integer state
  // (projector indices, 8-bit codes, counters) stored exactly as they are.
  for (auto& [n, t] : optimizer_state ? *optimizer_state : optimizer.state_tensors()) {
    const bool narrow = t.scalar_type() == at::kBFloat16 || t.scalar_type() == at::kHalf;
    state.push_back({n, (narrow ? t.to(at::kFloat) : t).contiguous()});
  }
  save_safetensors(tmp / "optimizer.safetensors", state, {{"steps", std::to_string(optimizer.steps())}});
  OrderedJson train_state{{"format", "lowrank.train_state"},
                          {"version", 1},
                          {"step", position.step},
                          {"sampler_counter", position.sampler_counter},
                          {"tokens", position.tokens},
                          // Optimizer-step batch over every rank and micro-batch (data_parallel.h).
                          {"global_batch", config.batch_size * config.grad_accum},
                          {"world_size", position.world_size}};
  if (position.loss_scale > 0) {  // fp16 autocast (loss_scaler.h)
    train_state["loss_scale"] = position.loss_scale;
    train_state["loss_scale_growth_tracker"] = position.loss_scale_growth_tracker;
  }
  train_state["config"] = config.to_json();
  write_json_file(tmp / "trainer_state.json", train_state);
  const fs::path final_dir = dir / name;
  fs::remove_all(final_dir);
  fs::rename(tmp, final_dir);
  write_file_atomic(dir / "latest", name + "\n");
  // Older checkpoints are dropped once `latest` points past them.
  std::vector<fs::path> stale;
  for (const auto& entry : fs::directory_iterator(dir)) {
    const std::string n = entry.path().filename().string();
    if (entry.is_directory() && n.starts_with("step-") && n != name) stale.push_back(entry.path());
  }
  for (const fs::path& p : stale) fs::remove_all(p);
}

std::optional<fs::path> latest_checkpoint(const fs::path& run_dir) {
  const fs::path latest = run_dir / "checkpoints" / "latest";
  if (!fs::exists(latest)) return std::nullopt;
  std::string name = read_text_file(latest);
  while (!name.empty() && (name.back() == '\n' || name.back() == ' ')) name.pop_back();
  const fs::path dir = run_dir / "checkpoints" / name;
  LR_CHECK(fs::is_directory(dir), Corruption, latest.string(), " names ", name, ", which does not exist");
  return dir;
}

CheckpointPosition read_checkpoint(const fs::path& checkpoint, const TrainerConfig& config,
                                   TrainTarget& target, optim::Optimizer& optimizer) {
  const Json state = read_json_file(checkpoint / "trainer_state.json");
  const std::string what = (checkpoint / "trainer_state.json").string();
  const TrainerConfig saved =
      TrainerConfig::from_json(json_get<Json>(state, "config", what), what + ".config");
  // The global batch (windows or rows per optimizer step) must be the same; how it is split into
  // micro-batches (grad_accum) and over data-parallel ranks may change: the samplers draw the same
  // windows per step either way (data_parallel.h).
  LR_CHECK(saved.batch_size * saved.grad_accum == config.batch_size * config.grad_accum, InvalidArgument,
           "resume: ", what, " was written with a global batch of ", saved.batch_size * saved.grad_accum,
           " (", saved.batch_size, " x ", saved.grad_accum, " accumulation steps), this run's is ",
           config.batch_size * config.grad_accum, " (", config.batch_size, " x ", config.grad_accum, ")");
  LR_CHECK(saved.seq_len == config.seq_len && saved.seed == config.seed, InvalidArgument, "resume: ", what,
           " was written with seq_len ", saved.seq_len, " and seed ", saved.seed, ", this run has seq_len ",
           config.seq_len, " and seed ", config.seed);
  LR_CHECK(saved.optimizer == config.optimizer && saved.optimizer_options == config.optimizer_options,
           InvalidArgument, "resume: ", what, " was written by optimizer ", saved.optimizer, " ",
           saved.optimizer_options.dump(), ", this run uses ", config.optimizer, " ",
           config.optimizer_options.dump());
  LR_CHECK(saved.parameterization == config.parameterization &&
               saved.parameterization_options == config.parameterization_options,
           InvalidArgument, "resume: ", what, " was written with parameterization \"", saved.parameterization,
           "\" ", saved.parameterization_options.dump(), ", this run uses \"", config.parameterization, "\" ",
           config.parameterization_options.dump());
  CheckpointPosition position;
  position.step = json_get<int64_t>(state, "step", what);
  position.tokens = json_get<int64_t>(state, "tokens", what);
  position.sampler_counter = json_get<uint64_t>(state, "sampler_counter", what);
  position.loss_scale = json_get_or<double>(state, "loss_scale", 0.0, what);
  position.loss_scale_growth_tracker = json_get_or<int64_t>(state, "loss_scale_growth_tracker", 0, what);
  const SafetensorsFile weights = SafetensorsFile::open(checkpoint / target.weights_file);
  restore_tensors(weights, target.params, target.reshape);
  restore_tensors(weights, target.frozen);
  const SafetensorsFile opt = SafetensorsFile::open(checkpoint / "optimizer.safetensors");
  std::vector<std::pair<std::string, at::Tensor>> opt_state;
  for (const TensorInfo& info : opt.tensors()) opt_state.emplace_back(info.name, opt.load(info.name));
  // The optimizer's own step count, from the metadata "steps": below the run's step when fp16 loss
  // scaling skipped updates (bias corrections and projector schedules count the updates made).
  int64_t optimizer_steps = position.step;
  if (auto it = opt.metadata().find("steps"); it != opt.metadata().end()) {
    try {
      optimizer_steps = std::stoll(it->second);
    } catch (const std::exception&) {
      throw Corruption(str(what, ": optimizer.safetensors has a bad \"steps\" entry \"", it->second, "\""));
    }
  }
  optimizer.load_state(opt_state, optimizer_steps);
  return position;
}

CheckpointPosition start_run(const fs::path& run_dir, bool resume, const TrainerConfig& config,
                             TrainTarget& target, optim::Optimizer& optimizer, bool owner) {
  const fs::path metrics_path = run_dir / "metrics.jsonl";
  const std::optional<fs::path> checkpoint = resume ? latest_checkpoint(run_dir) : std::nullopt;
  if (!checkpoint) {
    if (owner) write_file_atomic(metrics_path, "");
    return {};
  }
  const CheckpointPosition position = read_checkpoint(*checkpoint, config, target, optimizer);
  if (owner) truncate_metrics(metrics_path, position.step);
  log::info("resuming from ", checkpoint->string(), " at step ", position.step);
  return position;
}

void truncate_metrics(const fs::path& path, int64_t step) {
  if (!fs::exists(path)) return;
  std::istringstream in(read_text_file(path));
  std::string kept, line;
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    Json j;
    try {
      j = Json::parse(line);
    } catch (const Json::exception&) {
      break;  // a torn last line of a killed run
    }
    if (json_get<int64_t>(j, "step", path.string()) > step) break;
    kept += line + "\n";
  }
  write_file_atomic(path, kept);
}

}  // namespace lowrank::train
