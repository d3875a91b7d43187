// Data-parallel training (train/data_parallel.h) with ranks as threads: 2 ranks with half the
// global batch each give the one-process run (the summation order is the only difference), for
// every optimizer family and a parameterisation; checkpoints move between world sizes; mismatched
// runs and bad configurations are refused on every rank.
#include <gtest/gtest.h>

#include "lowrank/dist/gradient_reducer.h"
#include "lowrank/optim/methods.h"
#include "lowrank/train/data_parallel.h"
#include "lowrank/train/trainer.h"
#include "tests/dist/dist_testing.h"
#include "tests/train/trainer_testing.h"

namespace lowrank::train {
namespace {

using dist::testing_support::run_ranks;
using testing_support::pattern_stream;
using testing_support::small_config;
using testing_support::two_rank_config;

nn::Model tiny_model(uint64_t seed, at::ScalarType dtype = at::kFloat) {
  if (dtype == at::kFloat) return testing_support::tiny_model(seed);
  nn::Model f32 = testing_support::tiny_model(seed);
  testing::TempDir dir;
  f32.save(dir.path());
  nn::LoadOptions load;
  load.dtype = dtype;
  return nn::Model::load(dir.path(), load);
}

#define SKIP_WITHOUT_DIST() \
  if (!dist::available()) GTEST_SKIP() << "built without data-parallel training (LOWRANK_DIST=OFF)"

std::vector<at::Tensor> weights(const nn::Model& model) {
  std::vector<at::Tensor> out;
  for (const auto& [n, t] : model.named_tensors()) out.push_back(t.detach().clone());
  return out;
}

// Step 1's gradients: 2 ranks × 2 windows through DDP's Reducer against 1 process × 4 windows.
TEST(DataParallelTest, ReducedGradientsEqualTheOneProcessBatch) {
  SKIP_WITHOUT_DIST();
  const TokenStream data = pattern_stream(400);
  WindowSampler sampler(5, data.size, 13);
  const at::Tensor windows = sample_windows(data, sampler, 4, 12);
  nn::Model reference = tiny_model(1);
  std::vector<std::string> names;
  std::vector<at::Tensor> ref_params;
  for (auto& [n, t] : reference.named_tensors()) {
    t.requires_grad_(true);
    names.push_back(n);
    ref_params.push_back(t);
  }
  lm_loss(reference, windows).backward();

  std::vector<std::vector<at::Tensor>> reduced(2), local(2);
  run_ranks(2, [&](int rank, dist::Group& group) {
    nn::Model model = tiny_model(1);
    std::vector<at::Tensor> params;
    for (auto& [n, t] : model.named_tensors()) params.push_back(t.requires_grad_(true));
    const at::Tensor mine = windows.slice(0, 2 * rank, 2 * rank + 2);
    lm_loss(model, mine).backward();  // no Reducer yet: this rank's own gradient
    for (const at::Tensor& p : params) local[rank].push_back(p.grad().clone());
    for (const at::Tensor& p : params) p.mutable_grad().reset();
    dist::GradientReducer reducer(group, params, names, {.bucket_bytes = 4096, .first_bucket_bytes = 1024});
    EXPECT_GT(reducer.stats().buckets, 2);  // several buckets, so the bucketing is exercised
    reducer.prepare_for_forward();
    const at::Tensor loss = lm_loss(model, mine);
    reducer.prepare_for_backward();
    loss.backward();
    for (const at::Tensor& p : params) reduced[rank].push_back(p.grad().clone());
  });
  double local_error = 0;
  for (size_t i = 0; i < ref_params.size(); ++i) {
    for (int r = 0; r < 2; ++r)
      EXPECT_LE(testing::rel_max_error(reduced[r][i], ref_params[i].grad()), 1e-6)
          << names[i] << " rank " << r;
    EXPECT_TRUE(at::equal(reduced[0][i], reduced[1][i])) << names[i];  // the same bits on every rank
    local_error = std::max(local_error, testing::rel_max_error(local[0][i], ref_params[i].grad()));
  }
  EXPECT_GT(local_error, 1e-3);  // a rank's own gradient is not the batch's: the reduction matters
}

struct Case {
  const char* name;
  const char* optimizer;
  Json options;
  const char* parameterization = "";
  double float32_weight_tolerance = 1e-5;
};

void PrintTo(const Case& c, std::ostream* os) {
  *os << c.name;
}

class DataParallelEquivalenceTest : public ::testing::TestWithParam<Case> {};

// 5 steps of 2 micro-batches (the first accumulated without synchronising) of a global batch of 4,
// in float32 (losses and weights within 1e-5) and in float64 (1e-12): the ranks' summation order
// is the only difference.
TEST_P(DataParallelEquivalenceTest, TwoRanksWithHalfTheBatchGiveTheOneProcessRun) {
  SKIP_WITHOUT_DIST();
  const Case& k = GetParam();
  const TokenStream data = pattern_stream(400);
  TrainerConfig c = two_rank_config(5);
  c.optimizer = k.optimizer;
  c.optimizer_options = k.options;
  c.parameterization = k.parameterization;
  if (!c.parameterization.empty()) c.parameterization_options = {{"rank", 4}};
  for (const auto& [dtype, tolerance] : {std::pair{at::kFloat, 1e-5}, std::pair{at::kDouble, 1e-12}}) {
    SCOPED_TRACE(c10::toString(dtype));
    testing::TempDir one_dir, two_dir;
    nn::Model one = tiny_model(3, dtype);
    const TrainResult straight = train(one, data, c, one_dir.path(), false);
    ASSERT_TRUE(straight.finished);

    std::vector<std::vector<at::Tensor>> rank_weights(2);
    std::vector<TrainResult> results(2);
    run_ranks(2, [&](int rank, dist::Group& group) {
      nn::Model model = tiny_model(3, dtype);
      DataParallel parallel;
      parallel.group = &group;
      parallel.reducer.bucket_bytes = 8192;
      results[rank] = train(model, data, c, two_dir.path(), false, &parallel);
      rank_weights[rank] = weights(model);
    });
    ASSERT_TRUE(results[0].finished);
    ASSERT_EQ(results[0].steps.size(), straight.steps.size());
    for (size_t s = 0; s < straight.steps.size(); ++s)
      for (int r = 0; r < 2; ++r)
        EXPECT_NEAR(results[r].steps[s].loss, straight.steps[s].loss,
                    tolerance * std::abs(straight.steps[s].loss))
            << "step " << s + 1 << " rank " << r;
    // The gradient norm in float64 only: in float32 a factorised model's (W = BA) norm moves by
    // 1e-4 with the summation order, while float64 agrees to 1e-12.
    if (dtype == at::kDouble)
      for (size_t s = 0; s < straight.steps.size(); ++s)
        EXPECT_NEAR(results[0].steps[s].grad_norm, straight.steps[s].grad_norm,
                    1e-12 * straight.steps[s].grad_norm)
            << "step " << s + 1;
    const std::vector<at::Tensor> expected = weights(one);
    const auto names = one.named_tensors();
    const double weight_tolerance = dtype == at::kFloat ? k.float32_weight_tolerance : tolerance;
    for (size_t i = 0; i < expected.size(); ++i) {
      EXPECT_LE(testing::max_abs_diff(rank_weights[0][i], expected[i]), weight_tolerance) << names[i].first;
      // Replicated: every rank holds the same bits (projectors included, or the weights would part).
      EXPECT_TRUE(at::equal(rank_weights[0][i], rank_weights[1][i])) << names[i].first;
    }
    // Rank 0 alone wrote the metrics: one line per step.
    EXPECT_EQ(testing::read_jsonl(two_dir / "metrics.jsonl").size(), 5u);
  }
}

INSTANTIATE_TEST_SUITE_P(
    Optimizers, DataParallelEquivalenceTest,
    ::testing::Values(
        Case{"adamw", "adamw", Json::object()}, Case{"galore", "galore", {{"rank", 4}, {"update_gap", 2}}},
        Case{"fira", "fira", {{"rank", 4}, {"update_gap", 2}}},
        // FRUGAL steps the residual by sign-SGD: in float32 the summation order can flip the
        // sign of a near-zero residual coordinate (2e-5 after 5 steps); float64 agrees to 1e-12.
        Case{"frugal_svd", "frugal", {{"density", 0.25}, {"update_gap", 2}}, "", 1e-4},
        Case{"frugal_block", "frugal", {{"projector", "block"}, {"density", 0.5}, {"update_gap", 2}}},
        Case{"dct", "dct", {{"rank", 4}, {"update_gap", 2}}},
        Case{"gradnormlorp", "gradnormlorp", {{"rank", 4}, {"update_gap", 2}}},
        Case{"lowrank_parameterization", "adamw", Json::object(), "lowrank"}),
    [](const ::testing::TestParamInfo<Case>& info) { return std::string(info.param.name); });

// A checkpoint written by 2 ranks resumes in 1 process, and one written by 1 process resumes on
// 2 ranks: both continue the straight run (same global batch).
TEST(DataParallelTest, CheckpointsMoveBetweenWorldSizes) {
  SKIP_WITHOUT_DIST();
  const TokenStream data = pattern_stream(400);
  TrainerConfig c = two_rank_config(6);
  c.checkpoint_every = 3;
  testing::TempDir straight_dir;
  nn::Model straight = tiny_model(6);
  const TrainResult full = train(straight, data, c, straight_dir.path(), false);
  const auto two_ranks = [&](const std::filesystem::path& dir, const TrainerConfig& config, bool resume) {
    std::vector<TrainResult> out(2);
    run_ranks(2, [&](int rank, dist::Group& group) {
      nn::Model model = tiny_model(rank == 0 ? 6 : 7);  // rank 0's weights are broadcast
      DataParallel parallel;
      parallel.group = &group;
      out[rank] = train(model, data, config, dir, resume, &parallel);
    });
    return out[0];
  };
  TrainerConfig killed = c;
  killed.stop_after = 4;  // checkpoint at step 3, then "killed" after step 4
  {
    testing::TempDir dir;
    two_ranks(dir.path(), killed, false);
    nn::Model resumed = tiny_model(99);
    const TrainResult rest = train(resumed, data, c, dir.path(), true);
    ASSERT_TRUE(rest.finished);
    ASSERT_EQ(rest.steps.front().step, 4);
    for (size_t s = 0; s < rest.steps.size(); ++s)
      EXPECT_NEAR(rest.steps[s].loss, full.steps[s + 3].loss, 1e-5 * full.steps[s + 3].loss) << "2 -> 1";
    const auto a = weights(resumed), b = weights(straight);
    for (size_t i = 0; i < a.size(); ++i) EXPECT_LE(testing::max_abs_diff(a[i], b[i]), 1e-5) << "2 -> 1";
  }
  {
    testing::TempDir dir;
    nn::Model first = tiny_model(6);
    train(first, data, killed, dir.path(), false);
    const TrainResult rest = two_ranks(dir.path(), c, true);
    ASSERT_TRUE(rest.finished);
    ASSERT_EQ(rest.steps.front().step, 4);
    for (size_t s = 0; s < rest.steps.size(); ++s)
      EXPECT_NEAR(rest.steps[s].loss, full.steps[s + 3].loss, 1e-5 * full.steps[s + 3].loss) << "1 -> 2";
  }
  {
    // The same global batch of 8 as 4 windows × 2 accumulation steps, then as 8 × 1: the same run.
    testing::TempDir dir;
    nn::Model first = tiny_model(6);
    train(first, data, killed, dir.path(), false);
    TrainerConfig one_micro_batch = c;
    one_micro_batch.batch_size = 8;
    one_micro_batch.grad_accum = 1;
    nn::Model resumed = tiny_model(99);
    const TrainResult rest = train(resumed, data, one_micro_batch, dir.path(), true);
    ASSERT_EQ(rest.steps.front().step, 4);
    for (size_t s = 0; s < rest.steps.size(); ++s)
      EXPECT_NEAR(rest.steps[s].loss, full.steps[s + 3].loss, 1e-5 * full.steps[s + 3].loss) << "8 x 1";
    // Another global batch is refused, naming both.
    TrainerConfig other = c;
    other.batch_size = 2;
    nn::Model refused = tiny_model(99);
    EXPECT_NE(testing::error_of([&] {
                train(refused, data, other, dir.path(), true);
              }).find("global batch of 8 (8 x 1 accumulation steps), this run's is 4 (2 x 2)"),
              std::string::npos);
  }
}

// A rank whose run differs stops every rank before step 1, naming the field and the ranks.
TEST(DataParallelTest, MismatchedRunsAreRefusedOnEveryRank) {
  SKIP_WITHOUT_DIST();
  const TokenStream data = pattern_stream(400);
  std::vector<std::string> errors(2);
  testing::TempDir dir;
  run_ranks(2, [&](int rank, dist::Group& group) {
    TrainerConfig c = small_config();
    c.batch_size = 4;
    if (rank == 1) c.lr = 1e-2;
    nn::Model model = tiny_model(3);
    DataParallel parallel;
    parallel.group = &group;
    errors[rank] = testing::error_of([&] { train(model, data, c, dir.path(), false, &parallel); });
  });
  for (int r = 0; r < 2; ++r) {
    EXPECT_NE(errors[r].find("the ranks disagree on the run before step 1: trainer config differs"),
              std::string::npos)
        << errors[r];
    EXPECT_NE(errors[r].find("rank 1: "), std::string::npos) << errors[r];
  }
  EXPECT_FALSE(std::filesystem::exists(dir.path() / "checkpoints"));
}

// Replicated ranks check their projectors after a refresh: the same gradient gives the same
// GaLore projectors and passes; a rank whose gradient (hence SVD) differed stops every rank.
TEST(DataParallelTest, ProjectorsThatDifferAfterARefreshStopEveryRank) {
  SKIP_WITHOUT_DIST();
  std::vector<std::string> errors(2);
  for (const bool same : {true, false}) {
    run_ranks(2, [&](int rank, dist::Group& group) {
      std::vector<std::pair<std::string, at::Tensor>> params{
          {"model.layers.0.self_attn.q_proj.weight", at::zeros({12, 8}, at::kDouble)}};
      optim::LowRankAdam galore = optim::make_optimizer("galore", params, {{"rank", 2}});
      const at::Tensor grad = at::linspace(-1, 1, 96, at::kDouble).reshape({12, 8}).sin() + (same ? 0 : rank);
      params[0].second.mutable_grad() = grad;
      galore.step(1e-3);  // step 0 refreshes
      errors[rank] = testing::error_of([&] { check_same_projectors(group, galore, 1); });
    });
    for (int r = 0; r < 2; ++r) {
      if (same)
        EXPECT_EQ(errors[r], "(no error)") << r;
      else
        EXPECT_NE(errors[r].find(
                      "after the projector refresh of step 1 rank(s) 1 hold other projectors than rank 0"),
                  std::string::npos)
            << errors[r];
    }
  }
}

TEST(DataParallelTest, RefusesAnIndivisibleBatchAndPerLayerUpdates) {
  TrainerConfig c = small_config();
  c.batch_size = 3;
  EXPECT_NE(testing::error_of([&] {
              check_data_parallel_config(c, 2);
            }).find("the global batch of 3 windows does not split over 2 ranks"),
            std::string::npos);
  EXPECT_NO_THROW(check_data_parallel_config(c, 1));
  c.batch_size = 4;
  c.grad_accum = 1;
  c.clip_norm = 0;
  c.per_layer_updates = true;
  EXPECT_NE(testing::error_of([&] { check_data_parallel_config(c, 2); }).find("per-layer updates"),
            std::string::npos);
}

}  // namespace
}  // namespace lowrank::train
