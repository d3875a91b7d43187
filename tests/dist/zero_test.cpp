// ZeRO-1 (train/zero.h): sorted-greedy ownership weighed by the state each tensor will hold; 2 ranks
// with the state partitioned equal 2 replicated ranks bit for bit (weights and the gathered
// checkpoint state, for AdamW, GaLore and FRUGAL's global block selection), their per-rank state
// bytes add up to the replicated total, and a ZeRO-1 checkpoint resumes sharded or in one process.
#include <gtest/gtest.h>

#include "lowrank/core/safetensors.h"
#include "lowrank/optim/methods.h"
#include "lowrank/train/checkpoint.h"
#include "lowrank/train/data_parallel.h"
#include "lowrank/train/trainer.h"
#include "lowrank/train/zero.h"
#include "tests/dist/dist_testing.h"
#include "tests/train/trainer_testing.h"

namespace lowrank::train {
namespace {

using dist::testing_support::run_ranks;
using testing_support::pattern_stream;
using testing_support::small_config;
using testing_support::tiny_model;
using testing_support::two_rank_config;

#define SKIP_WITHOUT_DIST() \
  if (!dist::available()) GTEST_SKIP() << "built without data-parallel training (LOWRANK_DIST=OFF)"

TEST(ZeroShardingTest, SortedGreedyOverTheStateEachTensorHolds) {
  // AdamW: 2·numel each, weights 20, 80, 60, 40. By decreasing weight: 80 -> rank 0, 60 -> rank 1,
  // 40 -> rank 1 (60 < 80), 20 -> rank 0 (80 < 100).
  std::vector<std::pair<std::string, at::Tensor>> params{
      {"a", at::zeros({10})}, {"b", at::zeros({40})}, {"c", at::zeros({30})}, {"d", at::zeros({4, 5})}};
  const optim::AdamW adamw(params, optim::AdamConfig{});
  const ZeroSharding s = ZeroSharding::assign(params, adamw, 2);
  EXPECT_EQ(s.weight, (std::vector<int64_t>{20, 80, 60, 40}));
  EXPECT_EQ(s.owner, (std::vector<int>{0, 0, 1, 1}));
  EXPECT_EQ(s.owner_of_entry("b.exp_avg"), 0);
  EXPECT_EQ(s.owner_of_entry("c.exp_avg_sq"), 1);
  EXPECT_EQ(s.owner_of_entry("unrelated"), 0);

  // GaLore at rank 4 projects the attention weight [64, 16]: 2·4·64 moments + 4·16 projector = 576
  // state elements, not AdamW's 2048, so the 1-D tensor of 300 (weight 600) outweighs it.
  std::vector<std::pair<std::string, at::Tensor>> lr_params{
      {"model.layers.0.self_attn.q_proj.weight", at::zeros({64, 16})},
      {"model.norm.weight", at::zeros({300})}};
  const optim::LowRankAdam galore = optim::make_optimizer("galore", lr_params, {{"rank", 4}});
  ASSERT_TRUE(galore.is_projected("model.layers.0.self_attn.q_proj.weight"));
  const ZeroSharding g = ZeroSharding::assign(lr_params, galore, 2);
  EXPECT_EQ(g.weight, (std::vector<int64_t>{576, 600}));
  EXPECT_EQ(g.owner, (std::vector<int>{1, 0}));
}

std::vector<at::Tensor> weights(const nn::Model& model) {
  std::vector<at::Tensor> out;
  for (const auto& [n, t] : model.named_tensors()) out.push_back(t.detach().clone());
  return out;
}

struct ZeroCase {
  const char* name;
  const char* optimizer;
  Json options;
};
void PrintTo(const ZeroCase& c, std::ostream* os) {
  *os << c.name;
}

class ZeroEquivalenceTest : public ::testing::TestWithParam<ZeroCase> {};

TEST_P(ZeroEquivalenceTest, PartitionedStateEqualsReplicatedBitForBit) {
  SKIP_WITHOUT_DIST();
  const TokenStream data = pattern_stream(400);
  TrainerConfig c = two_rank_config(5);
  c.optimizer = GetParam().optimizer;
  c.optimizer_options = GetParam().options;
  struct Run {
    std::vector<std::vector<at::Tensor>> weights{2};
    std::vector<TrainResult> results{2};
  };
  const auto run = [&](int zero, const std::filesystem::path& dir) {
    Run out;
    run_ranks(2, [&](int rank, dist::Group& group) {
      nn::Model model = tiny_model(3);
      DataParallel parallel;
      parallel.group = &group;
      parallel.zero = zero;
      out.results[rank] = train(model, data, c, dir, false, &parallel);
      out.weights[rank] = weights(model);
    });
    return out;
  };
  testing::TempDir replicated_dir, zero_dir;
  const Run replicated = run(0, replicated_dir.path());
  const Run zero = run(1, zero_dir.path());
  for (int r = 0; r < 2; ++r)
    for (size_t i = 0; i < replicated.weights[0].size(); ++i)
      EXPECT_TRUE(at::equal(zero.weights[r][i], replicated.weights[0][i])) << "rank " << r << " tensor " << i;
  for (size_t s = 0; s < replicated.results[0].steps.size(); ++s)
    EXPECT_EQ(zero.results[0].steps[s].loss, replicated.results[0].steps[s].loss);
  // The checkpoint's optimizer state, gathered from the owners, is the replicated one.
  const SafetensorsFile a =
      SafetensorsFile::open(*latest_checkpoint(zero_dir.path()) / "optimizer.safetensors");
  const SafetensorsFile b =
      SafetensorsFile::open(*latest_checkpoint(replicated_dir.path()) / "optimizer.safetensors");
  ASSERT_EQ(a.tensors().size(), b.tensors().size());
  for (const TensorInfo& info : b.tensors()) {
    ASSERT_TRUE(a.contains(info.name)) << info.name;
    EXPECT_TRUE(at::equal(a.load(info.name), b.load(info.name))) << info.name;
  }
  // Each rank holds only its share: the shares add up to the replicated state.
  for (const char* kind : {"optimizer_states", "projectors"}) {
    const int64_t whole = replicated.results[0].memory[kind].get<int64_t>();
    const int64_t r0 = zero.results[0].memory[kind].get<int64_t>(),
                  r1 = zero.results[1].memory[kind].get<int64_t>();
    EXPECT_EQ(r0 + r1, whole) << kind;
    if (std::string(kind) == "optimizer_states") {
      EXPECT_GT(r0, 0);
      EXPECT_GT(r1, 0);
    }
  }
}

INSTANTIATE_TEST_SUITE_P(
    Optimizers, ZeroEquivalenceTest,
    ::testing::Values(
        ZeroCase{"adamw", "adamw", Json::object()},
        ZeroCase{"galore", "galore", {{"rank", 4}, {"update_gap", 2}}},
        ZeroCase{"frugal_block", "frugal", {{"projector", "block"}, {"density", 0.5}, {"update_gap", 2}}}),
    [](const ::testing::TestParamInfo<ZeroCase>& info) { return std::string(info.param.name); });

// A ZeRO-1 checkpoint resumes under ZeRO-1 (each rank keeps only its share) to the straight run's
// bits, and in one process to its numbers.
TEST(ZeroTest, CheckpointResumesShardedAndInOneProcess) {
  SKIP_WITHOUT_DIST();
  const TokenStream data = pattern_stream(400);
  TrainerConfig c = two_rank_config(6);
  c.checkpoint_every = 3;
  c.optimizer = "galore";
  c.optimizer_options = {{"rank", 4}, {"update_gap", 2}};
  const auto zero_run = [&](const std::filesystem::path& dir, const TrainerConfig& config, bool resume) {
    std::vector<std::vector<at::Tensor>> out(2);
    std::vector<TrainResult> results(2);
    run_ranks(2, [&](int rank, dist::Group& group) {
      nn::Model model = tiny_model(3);
      DataParallel parallel;
      parallel.group = &group;
      parallel.zero = 1;
      results[rank] = train(model, data, config, dir, resume, &parallel);
      out[rank] = weights(model);
    });
    return std::pair{out[0], results};
  };
  testing::TempDir straight_dir, resumed_dir;
  const auto [straight, straight_results] = zero_run(straight_dir.path(), c, false);
  TrainerConfig killed = c;
  killed.stop_after = 4;
  zero_run(resumed_dir.path(), killed, false);
  testing::TempDir one_dir;
  std::filesystem::copy(resumed_dir.path(), one_dir.path(), std::filesystem::copy_options::recursive);
  const auto [resumed, resumed_results] = zero_run(resumed_dir.path(), c, true);
  ASSERT_EQ(resumed_results[0].steps.front().step, 4);
  for (size_t i = 0; i < straight.size(); ++i) EXPECT_TRUE(at::equal(resumed[i], straight[i])) << i;
  // After the resume each rank again holds its share only.
  const int64_t whole = straight_results[0].memory["optimizer_states"].get<int64_t>() +
                        straight_results[1].memory["optimizer_states"].get<int64_t>();
  EXPECT_EQ(resumed_results[0].memory["optimizer_states"].get<int64_t>() +
                resumed_results[1].memory["optimizer_states"].get<int64_t>(),
            whole);

  nn::Model one = tiny_model(99);
  const TrainResult rest = train(one, data, c, one_dir.path(), true);
  ASSERT_TRUE(rest.finished);
  const auto w = weights(one);
  for (size_t i = 0; i < w.size(); ++i) EXPECT_LE(testing::max_abs_diff(w[i], straight[i]), 1e-5) << i;
}

TEST(ZeroTest, RefusesAParameterizationAndUnknownStages) {
  TrainerConfig c = small_config();
  c.batch_size = 4;
  c.parameterization = "lowrank";
  EXPECT_NE(testing::error_of([&] {
              check_data_parallel_config(c, 2, 1);
            }).find("--zero 1 with --parameterization"),
            std::string::npos);
  c.parameterization.clear();
  EXPECT_NE(testing::error_of([&] { check_data_parallel_config(c, 2, 2); }).find("--zero 2"),
            std::string::npos);
  EXPECT_NO_THROW(check_data_parallel_config(c, 2, 1));
}

}  // namespace
}  // namespace lowrank::train
