// Training the wave-equation encoder–decoder (wave.h).
#include "lowrank/train/wave.h"

#include <ATen/core/grad_mode.h>

#include <cmath>
#include <fstream>
#include <string>

#include "lowrank/core/error.h"
#include "lowrank/core/progress.h"
#include "lowrank/train/checkpoint.h"
#include "lowrank/train/epoch_order.h"
#include "lowrank/train/schedule.h"

namespace lowrank::train {

namespace fs = std::filesystem;

OrderedJson WaveEvalResult::to_json() const {
  return OrderedJson{{"relative_l2", relative_l2},
                     {"mse", mse},
                     {"persistence_relative_l2", persistence_relative_l2},
                     {"samples", samples}};
}

WaveEvalResult evaluate_wave(const nn::WaveCnn& model, const data::WaveDataset& data, int64_t batch_size) {
  const int64_t n = data.inputs.defined() ? data.inputs.size(0) : 0;
  LR_CHECK(n >= 1, InvalidArgument, "wave evaluation: no samples");
  LR_CHECK(batch_size >= 1, InvalidArgument, "wave evaluation: batch size ", batch_size, " must be >= 1");
  at::NoGradGuard no_grad;
  double err2 = 0, ref2 = 0, persist2 = 0;
  for (int64_t begin = 0; begin < n; begin += batch_size) {
    const int64_t len = std::min(batch_size, n - begin);
    const at::Tensor x = data.inputs.narrow(0, begin, len), y = data.targets.narrow(0, begin, len);
    const at::Tensor y64 = y.to(at::kDouble);
    err2 += (model.forward(x).to(at::kDouble) - y64).square().sum().item<double>();
    persist2 += (x.narrow(1, 1, 1).to(at::kDouble) - y64).square().sum().item<double>();
    ref2 += y64.square().sum().item<double>();
  }
  WaveEvalResult r;
  r.samples = n;
  r.mse = err2 / static_cast<double>(data.targets.numel());
  r.relative_l2 = std::sqrt(err2 / std::max(ref2, 1e-300));
  r.persistence_relative_l2 = std::sqrt(persist2 / std::max(ref2, 1e-300));
  return r;
}

WaveTrainResult train_wave(nn::WaveCnn& model, const data::WaveDataset& train, const data::WaveDataset& test,
                           WaveTrainConfig config, const fs::path& run_dir, bool resume) {
  TrainerConfig& tc = config.trainer;
  const int64_t rows = train.inputs.defined() ? train.inputs.size(0) : 0;
  LR_CHECK(rows >= 1, InvalidArgument, "wave training: the training set is empty");
  LR_CHECK(config.epochs >= 1 && config.eval_every >= 0 && config.eval_batch_size >= 1, InvalidArgument,
           "wave training: epochs (", config.epochs, ") and eval_batch_size (", config.eval_batch_size,
           ") must be >= 1, eval_every (", config.eval_every, ") >= 0");
  LR_CHECK(tc.parameterization.empty() && !tc.per_layer_updates && tc.autocast.empty(), InvalidArgument,
           "wave training: parameterization, per-layer updates and autocast are not supported");
  const bool has_test = test.inputs.defined() && test.inputs.size(0) > 0;
  LR_CHECK(!has_test || test.inputs.sizes().slice(1) == train.inputs.sizes().slice(1), InvalidArgument,
           "wave training: the test samples ", test.inputs.sizes(), " are not of the training grid ",
           train.inputs.sizes());
  tc.seq_len = 1;
  if (tc.steps <= 0) {
    const int64_t per_step = tc.batch_size * tc.grad_accum;
    tc.steps = std::max<int64_t>(1, (config.epochs * rows + per_step - 1) / per_step);
  }
  tc.validate();
  fs::create_directories(run_dir);

  TrainTarget target;
  model.requires_grad(true);
  target.params = model.named_tensors();
  std::vector<at::Tensor> param_tensors;
  for (auto& [name, p] : target.params) param_tensors.push_back(p);
  const std::unique_ptr<optim::Optimizer> optimizer = make_optimizer(target.params, tc);

  EpochOrder order(tc.seed, rows);
  const LrSchedule schedule = tc.schedule();
  const CheckpointPosition position = start_run(run_dir, resume, tc, target, *optimizer);
  int64_t step = position.step, samples_done = position.tokens;
  uint64_t counter = position.sampler_counter;
  const fs::path metrics_path = run_dir / "metrics.jsonl";
  std::ofstream metrics(metrics_path, std::ios::app);
  LR_CHECK(metrics.good(), IoError, "cannot open ", metrics_path.string(), " for appending");

  const double scale = model.config().output_scale;
  WaveTrainResult result;
  result.step = step;
  auto evaluate = [&] {
    if (!has_test) return;
    result.test = evaluate_wave(model, test, config.eval_batch_size);
    metrics << OrderedJson{{"step", step},
                           {"test_relative_l2", result.test.relative_l2},
                           {"test_mse", result.test.mse}}
                   .dump()
            << "\n"
            << std::flush;
  };
  ProgressBar bar(tc.steps - step, "train");
  while (step < tc.steps) {
    const double lr = schedule.at(step);
    const StepRecord record = supervised_step(step, lr, tc, *optimizer, param_tensors, [&](int64_t& units) {
      const at::Tensor index = order.rows(counter, tc.batch_size);
      counter += static_cast<uint64_t>(tc.batch_size);
      units += tc.batch_size;
      samples_done += tc.batch_size;
      const at::Tensor x = train.inputs.index_select(0, index), y = train.targets.index_select(0, index);
      return ((model.forward(x) - y) / scale).square().mean();
    });
    ++step;
    result.step = step;
    if (finish_step(record, tc, metrics, result.steps, bar,
                    str("loss ", std::to_string(record.loss).substr(0, 7), " lr ", lr), "samples_per_s"))
      return result;  // as if killed: no checkpoint
    if (config.eval_every > 0 && step % config.eval_every == 0 && step < tc.steps) evaluate();
    if (step == tc.steps || (tc.checkpoint_every > 0 && step % tc.checkpoint_every == 0))
      write_checkpoint(run_dir, target, *optimizer, tc, {step, samples_done, counter});
  }
  bar.finish();
  optimizer->zero_grad();
  model.requires_grad(false);
  result.train = evaluate_wave(model, train, config.eval_batch_size);
  evaluate();
  result.finished = true;
  return result;
}

}  // namespace lowrank::train
