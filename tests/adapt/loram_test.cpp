// LoRAM: the pruned model equals the full model with the pruned MLP channels removed (their
// down_proj columns zeroed), and the recovered adapter on that zeroed full model reproduces the
// pruned model with its trained adapter exactly. The loram method prunes to half the channels by
// default, lora only when asked, and no other method at all.
#include "lowrank/adapt/loram.h"

#include "lowrank/adapt/finetune.h"
#include "tests/adapt/method_testing.h"

namespace lowrank::adapt {
namespace {

using namespace method_testing;

// The full model with every MLP channel outside `kept` cut off (down_proj columns zeroed).
void zero_pruned_channels(nn::Model& model, const PrunedModel& pruned) {
  at::NoGradGuard g;
  for (int64_t l = 0; l < model.config().num_hidden_layers; ++l) {
    nn::LinearSlot& down = model.slot("model.layers." + std::to_string(l) + ".mlp.down_proj");
    at::Tensor mask = at::zeros({pruned.full_intermediate}, at::kFloat);
    mask.index_fill_(0, pruned.kept[static_cast<size_t>(l)], 1.0);
    down.replace_base(std::make_shared<nn::DenseOperator>(down.base().dense_weight() * mask.unsqueeze(0)));
  }
}

TEST(LoramTest, RecoveredAdapterReproducesThePrunedTraining) {
  nn::Model full = tiny();
  PrunedModel pruned = prune_mlp_channels(full, 0.5);
  ASSERT_EQ(pruned.model.config().intermediate_size, 16);
  ASSERT_EQ(pruned.kept.size(), 2u);
  const at::Tensor ids = token_ids();

  nn::Model zeroed = tiny();
  zero_pruned_channels(zeroed, pruned);
  EXPECT_LE(testing::max_abs_diff(logits_of(pruned.model, ids), logits_of(zeroed, ids)), 1e-5);

  AdapterConfig c = config_for("lora");
  c.target_modules = {"q_proj", "gate_proj", "up_proj", "down_proj"};
  AttachedAdapter trained = create_adapter(pruned.model, "a", c, 1);
  randomize(trained, 8);
  AttachedAdapter recovered = recover_adapter(zeroed, trained, pruned, "a");
  EXPECT_LE(testing::max_abs_diff(logits_of(zeroed, ids), logits_of(pruned.model, ids)), 1e-5);
  // The recovered factors have full shapes with zeros at the pruned channels.
  for (const auto& [module, layer] : recovered.layers) {
    if (module.ends_with("down_proj")) {
      const at::Tensor a = tensor_of(*layer, "lora_A.weight");
      EXPECT_EQ(a.size(1), 32);
      EXPECT_EQ(at::count_nonzero(a.abs().sum(0)).item<int64_t>(), 16) << module;
    }
  }
  // On the unpruned model it is an ordinary LoRA that saves and loads like one.
  nn::Model original = tiny();
  AttachedAdapter on_full = recover_adapter(original, trained, pruned, "a");
  testing::TempDir dir;
  save_adapter(on_full, dir.path());
  nn::Model fresh = tiny();
  load_adapter(fresh, dir.path());
  EXPECT_LE(testing::max_abs_diff(logits_of(fresh, ids), logits_of(original, ids)), 1e-6);
  EXPECT_NE(testing::error_of([&] { prune_mlp_channels(full, 1.5); }).find("keep ratio"), std::string::npos);
}

TEST(LoramTest, KeepRatioFollowsTheMethodAndItsOption) {
  EXPECT_EQ(loram_keep(config_for("loram")), kLoramDefaultKeep);
  EXPECT_EQ(loram_keep(config_for("lora")), 1.0);
  AdapterConfig quarter = config_for("loram");
  quarter.options["loram_keep"] = 0.25;
  EXPECT_EQ(loram_keep(quarter), 0.25);
  quarter.method = "lora";
  EXPECT_EQ(loram_keep(quarter), 0.25);
  quarter.method = "dora";
  EXPECT_NE(testing::error_of([&] { loram_keep(quarter); }).find("plain LoRA adapters only"),
            std::string::npos);
  EXPECT_EQ(loram_keep(config_for("dora")), 1.0);
  // Listed with its option, and saved as the plain LoRA it trains.
  const MethodInfo& info = registry().info("loram");
  EXPECT_TRUE(std::any_of(info.options.begin(), info.options.end(),
                          [](const auto& option) { return option.first == "loram_keep"; }));
  nn::Model model = tiny();
  const AttachedAdapter a = create_adapter(model, "a", config_for("loram"), 1);
  testing::TempDir dir;
  const AdapterConfig written = save_adapter(a, dir.path());
  EXPECT_EQ(written.peft_type, "LORA");
  EXPECT_EQ(written.method, "lora");
}

}  // namespace
}  // namespace lowrank::adapt
