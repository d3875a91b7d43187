// The epoch-based training loop; see epoch_loop.h.
#include "lowrank/train/epoch_loop.h"

#include <fstream>

#include "lowrank/core/error.h"
#include "lowrank/core/progress.h"
#include "lowrank/train/checkpoint.h"
#include "lowrank/train/epoch_order.h"
#include "lowrank/train/schedule.h"

namespace lowrank::train {

namespace fs = std::filesystem;

TrainerConfig epoch_trainer_config(TrainerConfig tc, int64_t epochs, int64_t rows) {
  tc.seq_len = 1;
  if (tc.steps <= 0) {
    const int64_t per_step = tc.batch_size * tc.grad_accum;
    tc.steps = std::max<int64_t>(1, (epochs * rows + per_step - 1) / per_step);
  }
  tc.validate();
  return tc;
}

EpochLoopResult run_epoch_loop(TrainTarget& target, int64_t rows, const TrainerConfig& tc,
                               const fs::path& run_dir, bool resume, const EpochLoop& loop) {
  fs::create_directories(run_dir);
  std::vector<at::Tensor> params;
  for (auto& [name, p] : target.params) params.push_back(p.requires_grad_(true));
  const std::unique_ptr<optim::Optimizer> optimizer = make_optimizer(target.params, tc);
  EpochOrder order(tc.seed, rows);
  const LrSchedule schedule = tc.schedule();
  const CheckpointPosition position = start_run(run_dir, resume, tc, target, *optimizer);
  int64_t step = position.step, rows_done = position.tokens;
  uint64_t counter = position.sampler_counter;
  const fs::path metrics_path = run_dir / "metrics.jsonl";
  std::ofstream metrics(metrics_path, std::ios::app);
  LR_CHECK(metrics.good(), IoError, "cannot open ", metrics_path.string(), " for appending");

  EpochLoopResult result;
  result.step = step;
  ProgressBar bar(tc.steps - step, "train");
  while (step < tc.steps) {
    const double lr = schedule.at(step);
    const StepRecord record = supervised_step(step, lr, tc, *optimizer, params, [&](int64_t& units) {
      const at::Tensor index = order.rows(counter, tc.batch_size);
      counter += static_cast<uint64_t>(tc.batch_size);
      units += tc.batch_size;
      rows_done += tc.batch_size;
      return loop.micro_loss(index);
    });
    ++step;
    result.step = step;
    if (finish_step(record, tc, metrics, result.steps, bar,
                    str("loss ", std::to_string(record.loss).substr(0, 7), " lr ", lr), loop.rate_key))
      return result;  // as if killed: no checkpoint
    if (loop.evaluate && loop.eval_every > 0 && step % loop.eval_every == 0 && step < tc.steps)
      loop.evaluate(step, metrics);
    if (step == tc.steps || (tc.checkpoint_every > 0 && step % tc.checkpoint_every == 0))
      write_checkpoint(run_dir, target, *optimizer, tc, {step, rows_done, counter});
  }
  bar.finish();
  optimizer->zero_grad();
  for (at::Tensor& p : params) p.requires_grad_(false);
  if (loop.evaluate) loop.evaluate(step, metrics);
  result.finished = true;
  return result;
}

}  // namespace lowrank::train
