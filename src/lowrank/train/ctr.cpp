#include "lowrank/train/ctr.h"

#include <ATen/core/grad_mode.h>

#include <chrono>
#include <fstream>

#include "lowrank/core/error.h"
#include "lowrank/core/log.h"
#include "lowrank/core/progress.h"
#include "lowrank/eval/binary_metrics.h"
#include "lowrank/train/checkpoint.h"
#include "lowrank/train/epoch_order.h"
#include "lowrank/train/schedule.h"

namespace lowrank::train {

namespace fs = std::filesystem;

OrderedJson CtrEvalResult::to_json() const {
  return OrderedJson{{"auc", auc}, {"logloss", logloss}, {"rows", rows}, {"ctr", ctr}, {"seconds", seconds}};
}

at::Tensor predict_ctr(const nn::CtrModel& model, const data::CtrData& data, int64_t batch_size,
                       double* seconds) {
  LR_CHECK(batch_size >= 1, InvalidArgument, "CTR evaluation: batch size ", batch_size, " must be >= 1");
  at::NoGradGuard no_grad;
  std::vector<at::Tensor> out;
  const auto t0 = std::chrono::steady_clock::now();
  for (int64_t begin = 0; begin < data.rows(); begin += batch_size)
    out.push_back(at::sigmoid(model.forward(data.slice(begin, std::min(data.rows(), begin + batch_size)))));
  if (seconds != nullptr)
    *seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return out.empty() ? at::zeros({0}, at::kDouble) : at::cat(out).to(at::kDouble);
}

CtrEvalResult evaluate_ctr(const nn::CtrModel& model, const data::CtrData& data, int64_t batch_size) {
  LR_CHECK(data.rows() >= 1, InvalidArgument, "CTR evaluation: no rows");
  CtrEvalResult r;
  const at::Tensor p = predict_ctr(model, data, batch_size, &r.seconds);
  r.auc = eval::roc_auc(p, data.labels);
  r.logloss = eval::log_loss(p, data.labels);
  r.rows = data.rows();
  r.ctr = data.ctr();
  return r;
}

CtrTrainResult train_ctr(nn::CtrModel& model, const data::CtrData& train, const data::CtrData& test,
                         CtrTrainConfig config, const fs::path& run_dir, bool resume) {
  TrainerConfig& tc = config.trainer;
  LR_CHECK(train.rows() >= 1, InvalidArgument, "CTR training: the training split is empty");
  LR_CHECK(config.epochs >= 1 && config.eval_every >= 0 && config.eval_batch_size >= 1, InvalidArgument,
           "CTR training: epochs (", config.epochs, ") and eval_batch_size (", config.eval_batch_size,
           ") must be >= 1, eval_every (", config.eval_every, ") >= 0");
  LR_CHECK(tc.parameterization.empty() && !tc.per_layer_updates && tc.autocast.empty(), InvalidArgument,
           "CTR training: parameterization, per-layer updates and autocast are not supported");
  tc.seq_len = 1;
  if (tc.steps <= 0) {
    const int64_t per_step = tc.batch_size * tc.grad_accum;
    tc.steps = std::max<int64_t>(1, (config.epochs * train.rows() + per_step - 1) / per_step);
  }
  tc.validate();
  fs::create_directories(run_dir);

  TrainTarget target;
  model.requires_grad(true);
  target.params = model.parameters();
  std::vector<at::Tensor> param_tensors;
  for (auto& [n, p] : target.params) param_tensors.push_back(p);
  const std::unique_ptr<optim::Optimizer> optimizer = make_optimizer(target.params, tc);

  EpochOrder order(tc.seed, train.rows());
  const LrSchedule schedule = tc.schedule();
  const fs::path metrics_path = run_dir / "metrics.jsonl";
  const CheckpointPosition position = start_run(run_dir, resume, tc, target, *optimizer);
  int64_t step = position.step, rows_done = position.tokens;
  uint64_t counter = position.sampler_counter;
  std::ofstream metrics(metrics_path, std::ios::app);
  LR_CHECK(metrics.good(), IoError, "cannot open ", metrics_path.string(), " for appending");

  CtrTrainResult result;
  result.step = step;
  auto evaluate = [&] {
    if (test.rows() == 0) return;
    result.test = evaluate_ctr(model, test, config.eval_batch_size);
    metrics << OrderedJson{{"step", step},
                           {"test_auc", result.test.auc},
                           {"test_logloss", result.test.logloss},
                           {"test_rows", result.test.rows}}
                   .dump()
            << "\n"
            << std::flush;
  };
  ProgressBar bar(tc.steps - step, "train");
  while (step < tc.steps) {
    const double lr = schedule.at(step);
    const StepRecord record = supervised_step(step, lr, tc, *optimizer, param_tensors, [&](int64_t& units) {
      const data::CtrData batch = train.gather(order.rows(counter, tc.batch_size));
      counter += static_cast<uint64_t>(tc.batch_size);
      units += tc.batch_size;
      rows_done += tc.batch_size;
      return at::binary_cross_entropy_with_logits(model.forward(batch), batch.labels);
    });
    ++step;
    result.step = step;
    if (finish_step(record, tc, metrics, result.steps, bar,
                    str("loss ", std::to_string(record.loss).substr(0, 6), " lr ", lr), "rows_per_s"))
      return result;  // as if killed: no checkpoint
    if (config.eval_every > 0 && step % config.eval_every == 0 && step < tc.steps) evaluate();
    if (step == tc.steps || (tc.checkpoint_every > 0 && step % tc.checkpoint_every == 0))
      write_checkpoint(run_dir, target, *optimizer, tc, {step, rows_done, counter});
  }
  bar.finish();
  optimizer->zero_grad();
  model.requires_grad(false);
  evaluate();
  result.finished = true;
  return result;
}

}  // namespace lowrank::train
