// Training the wave encoder–decoder (train/wave.h): it learns (the error falls well below the
// persistence baseline's), a stopped and resumed run equals the uninterrupted one bit for bit, and
// the errors are the sums they claim to be, whatever the batch size.
#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include "lowrank/data/wave2d.h"
#include "lowrank/nn/wave_cnn.h"
#include "lowrank/train/wave.h"
#include "tests/testing.h"

namespace lowrank::train {
namespace {

data::WaveDataset small_data(int64_t samples, uint64_t seed) {
  data::WaveOptions o;
  o.n = 16;
  o.sponge = 3;
  return data::simulate_wave_dataset(o, samples, 2, seed, 2);
}

nn::WaveCnn small_model(const data::WaveDataset& d, const std::string& conv) {
  nn::WaveCnnConfig c;
  c.width = 4;
  c.levels = 1;
  c.kernel_size = 3;
  c.set_conv(conv);
  const auto [in, out] = nn::wave_scales(d.inputs, d.targets);
  c.input_scale = in;
  c.output_scale = out;
  return nn::WaveCnn::random(c, 1);
}

WaveTrainConfig small_config(int64_t steps) {
  WaveTrainConfig c;
  c.trainer.steps = steps;
  c.trainer.batch_size = 4;
  c.trainer.lr = 1e-2;
  c.trainer.min_lr = 1e-3;
  c.trainer.warmup_steps = 0;
  c.trainer.adam.weight_decay = 0;
  return c;
}

TEST(WaveTraining, LearnsTheNextField) {
  const data::WaveDataset train = small_data(24, 1), test = small_data(8, 2);
  for (const std::string conv : {"dense", "cp:3"}) {
    nn::WaveCnn m = small_model(train, conv);
    testing::TempDir dir;
    const WaveTrainResult r = train_wave(m, train, test, small_config(80), dir / "run", false);
    ASSERT_TRUE(r.finished) << conv;
    EXPECT_EQ(r.train.samples, 24);
    EXPECT_EQ(r.test.samples, 8);
    EXPECT_LT(r.steps.back().loss, 0.5 * r.steps.front().loss) << conv;
    EXPECT_LT(r.train.relative_l2, 0.6 * r.train.persistence_relative_l2) << conv;
  }
}

TEST(WaveTraining, ResumeEqualsTheUninterruptedRun) {
  const data::WaveDataset train = small_data(10, 3);
  nn::WaveCnn straight = small_model(train, "cp:2"), resumed = small_model(train, "cp:2");
  testing::TempDir a, b;
  WaveTrainConfig config = small_config(7);
  train_wave(straight, train, {}, config, a / "run", false);
  config.trainer.checkpoint_every = 3;
  config.trainer.stop_after = 5;  // killed after step 5: resumes from the step-3 checkpoint
  EXPECT_FALSE(train_wave(resumed, train, {}, config, b / "run", false).finished);
  config.trainer.stop_after = 0;
  nn::WaveCnn fresh = small_model(train, "cp:2");
  EXPECT_TRUE(train_wave(fresh, train, {}, config, b / "run", true).finished);
  const auto x = straight.named_tensors(), y = fresh.named_tensors();
  for (size_t i = 0; i < x.size(); ++i) EXPECT_TRUE(at::equal(x[i].second, y[i].second)) << x[i].first;
}

TEST(WaveTraining, ErrorsAreTheirSumsAtAnyBatchSize) {
  const data::WaveDataset d = small_data(7, 4);
  const nn::WaveCnn m = small_model(d, "dense");
  at::Tensor y, p;
  {
    at::NoGradGuard no_grad;
    y = d.targets.to(at::kDouble);
    p = m.forward(d.inputs).to(at::kDouble);
  }
  const double want = std::sqrt((p - y).square().sum().item<double>() / y.square().sum().item<double>());
  const double persistence =
      std::sqrt((d.inputs.narrow(1, 1, 1).to(at::kDouble) - y).square().sum().item<double>() /
                y.square().sum().item<double>());
  for (int64_t batch : {1, 3, 7, 32}) {
    const WaveEvalResult r = evaluate_wave(m, d, batch);
    EXPECT_NEAR(r.relative_l2, want, 1e-6 * want) << batch;
    EXPECT_NEAR(r.persistence_relative_l2, persistence, 1e-9) << batch;
    EXPECT_NEAR(r.mse, (p - y).square().mean().item<double>(), 1e-6 * r.mse) << batch;
  }
  EXPECT_NE(testing::error_of([&] { evaluate_wave(m, {}, 4); }).find("no samples"), std::string::npos);
}

}  // namespace
}  // namespace lowrank::train
