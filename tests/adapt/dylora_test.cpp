// DyLoRA against closed forms computed here from the raw factors (rank b = the LoRA of the leading
// b rows/columns with scale α/b), autograd of that closed form for the training step, the
// seeded rank sampler's reproducibility, an interrupted-and-resumed run against an uninterrupted
// one, a PEFT-directory round trip and a short training run.
#include <gtest/gtest.h>

#include <cmath>
#include <map>
#include <set>

#include "lowrank/adapt/dylora.h"
#include "lowrank/adapt/lora.h"
#include "lowrank/core/safetensors.h"
#include "tests/adapt/method_testing.h"

namespace lowrank::adapt {
namespace {

using namespace method_testing;
using testing::max_abs_diff;

std::shared_ptr<DyLoraAdapter> layer_at(const AttachedAdapter& a, const std::string& module) {
  for (const auto& [m, layer] : a.layers)
    if (m == module) return std::dynamic_pointer_cast<DyLoraAdapter>(layer);
  ADD_FAILURE() << "no layer on " << module;
  return nullptr;
}

TEST(DyLoraTest, RankBIsTheLoraOfTheLeadingBlockWithScaleAlphaOverB) {
  for (bool rslora : {false, true}) {
    nn::Model model = tiny();
    AdapterConfig c = config_for("dylora", 6, 12);
    c.use_rslora = rslora;
    const std::string module = "model.layers.1.self_attn.v_proj";
    nn::LinearSlot& slot = model.slot(module);
    const at::Tensor x = input(slot.in_features());
    const at::Tensor base_y = slot.forward(x);
    AttachedAdapter a = create_adapter(model, "d", c, 7);
    EXPECT_TRUE(slot.forward(x).equal(base_y));  // B = 0
    randomize(a, 1);
    std::shared_ptr<DyLoraAdapter> layer = layer_at(a, module);
    ASSERT_NE(layer, nullptr);
    EXPECT_EQ(layer->current_rank(), 6);  // eval_rank defaults to r_max
    const at::Tensor A = layer->a(), B = layer->b(), W = slot.base().dense_weight();
    for (int64_t b = 1; b <= 6; ++b) {
      layer->set_eval_rank(b);
      const double s = rslora ? 12.0 / std::sqrt(static_cast<double>(b)) : 12.0 / static_cast<double>(b);
      const at::Tensor Ab = A.slice(0, 0, b), Bb = B.slice(1, 0, b);
      const at::Tensor w = W + s * at::matmul(Bb, Ab);
      EXPECT_LE(max_abs_diff(slot.forward(x), at::matmul(x, w.t())), 1e-5) << "b = " << b;
      const LoraAdapter truncated(Ab.detach().clone(), Bb.detach().clone(), s);
      EXPECT_LE(max_abs_diff(layer->delta(x, base_y, slot.base()), truncated.delta(x, base_y, slot.base())),
                1e-6);
      EXPECT_LE(max_abs_diff(layer->merged_weight(slot.base()), w), 1e-6);
    }
    // A sampled training step changes the rank; before_step(-1) restores the evaluation rank.
    layer->set_eval_rank(3);
    int64_t step = 0;
    for (layer->before_step(step); layer->current_rank() == 3; layer->before_step(++step)) {
    }
    layer->before_step(-1);
    EXPECT_EQ(layer->current_rank(), 3);
  }
}

TEST(DyLoraTest, EvalRankOptionIsClampedToEachSlotsRank) {
  nn::Model model = tiny();
  AdapterConfig c = config_for("dylora", 6, 12);
  c.rank_pattern = {{"down_proj", 2}};
  c.options["eval_rank"] = 4;
  AttachedAdapter a = create_adapter(model, "d", c, 1);
  for (const auto& [module, layer] : a.layers) {
    auto dy = std::dynamic_pointer_cast<DyLoraAdapter>(layer);
    EXPECT_EQ(dy->current_rank(), module.ends_with("down_proj") ? 2 : 4) << module;
    EXPECT_EQ(dy->max_rank(), module.ends_with("down_proj") ? 2 : 6) << module;
  }
  AdapterConfig bad = config_for("dylora", 6, 12);
  bad.options["min_rank"] = 7;
  EXPECT_NE(testing::error_of([&] { create_adapter(model, "e", bad, 1); }).find("min_rank"),
            std::string::npos);
}

TEST(DyLoraTest, SampledRanksAreReproducibleFromTheSeedAlone) {
  // Uniform over [min, max], a pure function of (seed, step), different for another seed.
  std::map<int64_t, int> counts;
  std::vector<int64_t> first, again, other;
  for (int64_t step = 0; step < 2000; ++step) {
    const int64_t b = DyLoraAdapter::sample_rank(7, step, 2, 6);
    ASSERT_GE(b, 2);
    ASSERT_LE(b, 6);
    ++counts[b];
    first.push_back(b);
    other.push_back(DyLoraAdapter::sample_rank(8, step, 2, 6));
  }
  for (int64_t step = 1999; step >= 0; --step)
    again.insert(again.begin(), DyLoraAdapter::sample_rank(7, step, 2, 6));
  EXPECT_EQ(first, again);
  EXPECT_NE(first, other);
  ASSERT_EQ(counts.size(), 5u);
  for (auto [b, n] : counts) EXPECT_NEAR(n, 400, 80) << "rank " << b;

  // Through the adapter: two adapters from the same seed draw the same ranks, a fresh adapter
  // jumping to step t draws what one stepped through 0..t drew, and all slots share each step's b.
  nn::Model m1 = tiny(), m2 = tiny();
  AttachedAdapter a1 = create_adapter(m1, "d", config_for("dylora", 6, 6), 21);
  AttachedAdapter a2 = create_adapter(m2, "d", config_for("dylora", 6, 6), 21);
  std::set<int64_t> seen;
  for (int64_t step = 0; step < 40; ++step) {
    const int64_t expected = DyLoraAdapter::sample_rank(21, step, 1, 6);
    seen.insert(expected);
    for (size_t i = 0; i < a1.layers.size(); ++i) {
      a1.layers[i].second->before_step(step);
      auto l1 = std::dynamic_pointer_cast<DyLoraAdapter>(a1.layers[i].second);
      EXPECT_EQ(l1->current_rank(), expected);
    }
  }
  EXPECT_GT(seen.size(), 3u);
  for (auto& [module, layer] : a2.layers) {
    layer->before_step(39);
    EXPECT_EQ(std::dynamic_pointer_cast<DyLoraAdapter>(layer)->current_rank(),
              DyLoraAdapter::sample_rank(21, 39, 1, 6));
  }
}

TEST(DyLoraTest, TrainingStepGradientsReachOnlyTheSampledBlock) {
  for (bool frozen : {false, true}) {
    nn::Model model = tiny();
    AdapterConfig c = config_for("dylora", 6, 12);
    c.options["frozen"] = frozen;
    AttachedAdapter a = create_adapter(model, "d", c, 4);
    randomize(a, 5);
    const std::string module = "model.layers.0.mlp.down_proj";
    std::shared_ptr<DyLoraAdapter> layer = layer_at(a, module);
    nn::LinearSlot& slot = model.slot(module);
    a.set_training(true);
    int64_t step = 0;
    for (layer->before_step(step); layer->current_rank() < 2 || layer->current_rank() > 5;
         layer->before_step(++step)) {
    }
    const int64_t b = layer->current_rank();
    at::Tensor A = layer->a(), B = layer->b();
    A.requires_grad_(true);
    B.requires_grad_(true);
    const at::Tensor x = input(slot.in_features());
    slot.forward(x).pow(2).sum().backward();

    // Oracle: autograd of the closed form y = base(x) + (α/b)·x A[:b]ᵀ B[:, :b]ᵀ on leaf copies.
    const at::Tensor A2 = A.detach().clone().requires_grad_(true),
                     B2 = B.detach().clone().requires_grad_(true);
    const at::Tensor delta =
        (12.0 / static_cast<double>(b)) * at::matmul(B2.slice(1, 0, b), A2.slice(0, 0, b));
    (slot.base().forward(x) + at::matmul(x, delta.t())).pow(2).sum().backward();
    at::Tensor expected_a = A2.grad(), expected_b = B2.grad();
    if (frozen) {  // only the b-th row of A and column of B are trained
      expected_a = expected_a.clone();
      expected_b = expected_b.clone();
      expected_a.slice(0, 0, b - 1).zero_();
      expected_b.slice(1, 0, b - 1).zero_();
    }
    EXPECT_LE(max_abs_diff(A.grad(), expected_a), 2e-4) << "frozen " << frozen;
    EXPECT_LE(max_abs_diff(B.grad(), expected_b), 2e-4) << "frozen " << frozen;
    EXPECT_EQ(at::count_nonzero(A.grad().slice(0, b)).item<int64_t>(), 0);
    EXPECT_EQ(at::count_nonzero(B.grad().slice(1, b)).item<int64_t>(), 0);
    EXPECT_GT(at::count_nonzero(A.grad().select(0, b - 1)).item<int64_t>(), 0);
    EXPECT_EQ(at::count_nonzero(A.grad().select(0, 0)).item<int64_t>() > 0, !frozen);
  }
}

TEST(DyLoraTest, SavesTheFullFactorsAndReloadsAtTheConfiguredRank) {
  nn::Model model = tiny();
  AdapterConfig c = config_for("dylora", 6, 12);
  c.options["eval_rank"] = 2;
  AttachedAdapter a = create_adapter(model, "d", c, 4);
  randomize(a, 6);
  const at::Tensor ids = token_ids();
  const at::Tensor at_rank2 = logits_of(model, ids);
  testing::TempDir dir;
  const AdapterConfig saved = save_adapter(a, dir.path());
  EXPECT_EQ(saved.peft_type, "LOWRANK_DYLORA");
  EXPECT_EQ(saved.r, 6);
  const SafetensorsFile file = SafetensorsFile::open(dir / "adapter_model.safetensors");
  const std::string q = "base_model.model.model.layers.0.self_attn.q_proj.";
  EXPECT_EQ(file.load(q + "lora_A.weight").sizes(), (std::vector<int64_t>{6, 16}));
  EXPECT_EQ(file.load(q + "lora_B.weight").sizes(), (std::vector<int64_t>{16, 6}));
  EXPECT_TRUE(file.load(q + "lora_A.weight").equal(layer_at(a, "model.layers.0.self_attn.q_proj")->a()));

  nn::Model fresh = tiny();
  AttachedAdapter loaded = load_adapter(fresh, dir.path());
  EXPECT_EQ(loaded.config.method, "dylora");
  EXPECT_LE(max_abs_diff(logits_of(fresh, ids), at_rank2), 1e-6);
  // The same file at the full rank equals the original at the full rank.
  for (auto& [m, layer] : loaded.layers) std::dynamic_pointer_cast<DyLoraAdapter>(layer)->set_eval_rank(6);
  for (auto& [m, layer] : a.layers) std::dynamic_pointer_cast<DyLoraAdapter>(layer)->set_eval_rank(6);
  const at::Tensor full = logits_of(model, ids);
  EXPECT_GT(max_abs_diff(full, at_rank2), 1e-4);
  EXPECT_LE(max_abs_diff(logits_of(fresh, ids), full), 1e-6);
}

TEST(DyLoraTest, ResumedRunMatchesAnUninterruptedOneStepForStep) {
  // The rank of step t depends on (seed, t) only, so a run resumed from a checkpoint draws the
  // ranks (and so computes the losses) of the uninterrupted run.
  auto run = [](const std::filesystem::path& dir, int64_t stop_after, bool resume) {
    nn::Model model = tiny();
    AttachedAdapter a = create_adapter(model, "d", config_for("dylora", 6, 6), 21);
    train::TrainerConfig c = short_run(10, 1e-2);
    c.checkpoint_every = 4;
    c.stop_after = stop_after;
    train::TrainTarget target = target_of(a);
    a.set_training(true);
    return train::train(model, target, pattern_stream(), c, dir, resume);
  };
  testing::TempDir whole_dir, split_dir;
  const train::TrainResult whole = run(whole_dir.path(), 0, false);
  ASSERT_EQ(whole.steps.size(), 10u);
  run(split_dir.path(), 6, false);  // killed after step 6; the last checkpoint is step 4
  const train::TrainResult resumed = run(split_dir.path(), 0, true);
  ASSERT_EQ(resumed.steps.size(), 6u);
  for (size_t i = 0; i < resumed.steps.size(); ++i)
    EXPECT_EQ(resumed.steps[i].loss, whole.steps[4 + i].loss) << "step " << resumed.steps[i].step;
}

}  // namespace
}  // namespace lowrank::adapt
