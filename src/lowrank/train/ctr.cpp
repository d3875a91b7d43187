#include "lowrank/train/ctr.h"

#include <ATen/core/grad_mode.h>

#include <chrono>

#include "lowrank/core/error.h"
#include "lowrank/core/log.h"
#include "lowrank/core/progress.h"
#include "lowrank/eval/binary_metrics.h"
#include "lowrank/train/epoch_loop.h"

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
  tc = epoch_trainer_config(tc, config.epochs, train.rows());

  TrainTarget target;
  target.params = model.parameters();
  CtrTrainResult result;
  EpochLoop loop;
  loop.evaluate = [&](int64_t step, std::ostream& metrics) {
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
  loop.micro_loss = [&](const at::Tensor& rows) {
    const data::CtrData batch = train.gather(rows);
    return at::binary_cross_entropy_with_logits(model.forward(batch), batch.labels);
  };
  loop.eval_every = config.eval_every;
  loop.rate_key = "rows_per_s";
  EpochLoopResult r = run_epoch_loop(target, train.rows(), tc, run_dir, resume, loop);
  result.step = r.step;
  result.steps = std::move(r.steps);
  result.finished = r.finished;
  return result;
}

}  // namespace lowrank::train
