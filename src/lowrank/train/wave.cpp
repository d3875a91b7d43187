// Training the wave-equation encoder–decoder (wave.h).
#include "lowrank/train/wave.h"

#include <ATen/core/grad_mode.h>

#include <cmath>
#include <string>

#include "lowrank/core/error.h"
#include "lowrank/train/epoch_loop.h"

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
  tc = epoch_trainer_config(tc, config.epochs, rows);

  TrainTarget target;
  target.params = model.named_tensors();
  const double scale = model.config().output_scale;
  WaveTrainResult result;
  EpochLoop loop;
  loop.micro_loss = [&](const at::Tensor& index) {
    const at::Tensor x = train.inputs.index_select(0, index), y = train.targets.index_select(0, index);
    return ((model.forward(x) - y) / scale).square().mean();
  };
  if (has_test)
    loop.evaluate = [&](int64_t step, std::ostream& metrics) {
      result.test = evaluate_wave(model, test, config.eval_batch_size);
      metrics << OrderedJson{{"step", step},
                             {"test_relative_l2", result.test.relative_l2},
                             {"test_mse", result.test.mse}}
                     .dump()
              << "\n"
              << std::flush;
    };
  loop.eval_every = config.eval_every;
  loop.rate_key = "samples_per_s";
  EpochLoopResult r = run_epoch_loop(target, rows, tc, run_dir, resume, loop);
  result.step = r.step;
  result.steps = std::move(r.steps);
  if (!r.finished) return result;  // as if killed
  result.train = evaluate_wave(model, train, config.eval_batch_size);
  result.finished = true;
  return result;
}

}  // namespace lowrank::train
