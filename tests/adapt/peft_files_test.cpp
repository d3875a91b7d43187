// PEFT adapter files: the fixture adapter written by PEFT reproduces PEFT's logits, save/load
// round trips, target-selection rules, and errors that name the file and module.
#include <gtest/gtest.h>

#include "lowrank/adapt/model_adapters.h"
#include "lowrank/core/safetensors.h"
#include "tests/testing.h"

namespace lowrank::adapt {
namespace {

using testing::fixture;
using testing::max_abs_diff;

const std::filesystem::path kModel = fixture("hf/llama-tiny/model");
const std::filesystem::path kAdapter = fixture("hf/llama-tiny/adapter-lora");

at::Tensor logits_of(const nn::Model& model, const at::Tensor& ids) {
  c10::InferenceMode guard;
  return model.forward(ids).clone();
}

TEST(PeftFilesTest, FixtureAdapterReproducesPeftLogits) {
  nn::Model model = nn::Model::load(kModel);
  const SafetensorsFile expected = SafetensorsFile::open(kAdapter / "expected.safetensors");
  const at::Tensor ids = expected.load("input_ids");
  const at::Tensor base = logits_of(model, ids);
  AttachedAdapter a = load_adapter(model, kAdapter);
  EXPECT_EQ(a.name, "adapter-lora");
  EXPECT_EQ(a.layers.size(), 7u * model.config().num_hidden_layers);
  const at::Tensor adapted = logits_of(model, ids);
  EXPECT_LE(max_abs_diff(adapted, expected.load("logits")), 1e-4);
  // The adapter really changes the output: the check above is not passing on the base alone.
  EXPECT_GT(max_abs_diff(base, expected.load("logits")), 1e-2);
  // Merged into the weights, PEFT's merge_and_unload logits.
  std::vector<AttachedAdapter> all{a};
  merge_adapters(model, all);
  for (const nn::LinearSlot* slot : model.slots()) EXPECT_FALSE(slot->has_adapters()) << slot->name();
  EXPECT_LE(max_abs_diff(logits_of(model, ids), expected.load("merged_logits")), 1e-4);
}

TEST(PeftFilesTest, SaveLoadRoundTripKeepsTensorsAndConfigKeys) {
  nn::Model model = nn::Model::load(kModel);
  AttachedAdapter a = load_adapter(model, kAdapter, "first");
  testing::TempDir dir;
  save_adapter(a, dir.path());
  const SafetensorsFile original = SafetensorsFile::open(kAdapter / "adapter_model.safetensors");
  const SafetensorsFile written = SafetensorsFile::open(dir / "adapter_model.safetensors");
  ASSERT_EQ(original.tensors().size(), written.tensors().size());
  for (const TensorInfo& info : original.tensors())
    EXPECT_TRUE(original.load(info.name).equal(written.load(info.name))) << info.name;
  const Json before = read_json_file(kAdapter / "adapter_config.json");
  const Json after = read_json_file(dir / "adapter_config.json");
  for (const auto& [k, v] : before.items()) EXPECT_EQ(after.at(k), v) << k;
}

TEST(PeftFilesTest, TargetSelectionFollowsPeftRules) {
  AdapterConfig c;
  c.target_modules = {"q_proj", "mlp.down_proj"};
  EXPECT_TRUE(c.targets("model.layers.0.self_attn.q_proj"));
  EXPECT_TRUE(c.targets("model.layers.3.mlp.down_proj"));
  EXPECT_FALSE(c.targets("model.layers.0.self_attn.k_proj"));
  EXPECT_FALSE(c.targets("model.layers.0.self_attn.xq_proj"));  // suffix must follow a dot
  c.layers_to_transform = {1};
  EXPECT_FALSE(c.targets("model.layers.0.self_attn.q_proj"));
  EXPECT_TRUE(c.targets("model.layers.1.self_attn.q_proj"));
  c.layers_to_transform.clear();
  c.exclude_modules = {"down_proj"};
  EXPECT_FALSE(c.targets("model.layers.3.mlp.down_proj"));

  AdapterConfig re;
  re.target_regex = R"(.*\.(q|v)_proj)";
  EXPECT_TRUE(re.targets("model.layers.0.self_attn.v_proj"));
  EXPECT_FALSE(re.targets("model.layers.0.self_attn.o_proj"));
  re.target_regex = "all-linear";
  EXPECT_TRUE(re.targets("model.layers.0.mlp.up_proj"));
  EXPECT_FALSE(re.targets("lm_head"));

  AdapterConfig p = AdapterConfig::from_json(
      Json::parse(R"({"r": 4, "lora_alpha": 8, "target_modules": ["q_proj"], "use_rslora": true,
                      "rank_pattern": {"layers.1.self_attn.q_proj": 2, "^model.layers.0.self_attn.q_proj": 3},
                      "alpha_pattern": {"q_proj": 18}})"),
      "test");
  EXPECT_EQ(p.rank_for("model.layers.1.self_attn.q_proj"), 2);
  EXPECT_EQ(p.rank_for("model.layers.0.self_attn.q_proj"), 3);
  EXPECT_EQ(p.rank_for("model.layers.2.self_attn.q_proj"), 4);
  EXPECT_DOUBLE_EQ(p.scaling_for("model.layers.2.self_attn.q_proj"), 18.0 / 2.0);  // rsLoRA: α/√r
  EXPECT_DOUBLE_EQ(p.scaling_for("model.layers.1.self_attn.q_proj"), 18.0 / std::sqrt(2.0));
}

// Writes a copy of the fixture adapter with `edit` applied to its config and/or tensors.
std::filesystem::path edited_adapter(
    const testing::TempDir& tmp, const std::function<void(Json&)>& edit_config,
    const std::function<void(std::vector<NamedTensor>&)>& edit_tensors = {}) {
  const std::filesystem::path dir = tmp / "edited";
  std::filesystem::create_directories(dir);
  Json config = read_json_file(kAdapter / "adapter_config.json");
  edit_config(config);
  write_json_file(dir / "adapter_config.json", config);
  const SafetensorsFile file = SafetensorsFile::open(kAdapter / "adapter_model.safetensors");
  std::vector<NamedTensor> tensors;
  for (const TensorInfo& info : file.tensors()) tensors.push_back({info.name, file.load(info.name)});
  if (edit_tensors) edit_tensors(tensors);
  save_safetensors(dir / "adapter_model.safetensors", tensors);
  return dir;
}

TEST(PeftFilesTest, BadAdaptersGetClearErrorsAndLeaveTheModelUnchanged) {
  nn::Model model = nn::Model::load(kModel);
  testing::TempDir tmp;
  auto expect_error = [&](const std::filesystem::path& dir, const std::string& needle) {
    const std::string message = testing::error_of([&] { load_adapter(model, dir); });
    EXPECT_NE(message.find(needle), std::string::npos) << message;
    for (const nn::LinearSlot* slot : model.slots()) EXPECT_FALSE(slot->has_adapters()) << slot->name();
  };
  expect_error(edited_adapter(tmp, [](Json& c) { c["peft_type"] = "PROMPT_TUNING"; }), "PROMPT_TUNING");
  expect_error(edited_adapter(tmp,
                              [](Json& c) {
                                c["target_modules"] = {"wq", "wk"};
                              }),
               "select no linear slot");
  expect_error(edited_adapter(tmp, [](Json& c) { c["r"] = 4; }), "model.layers.0.self_attn.q_proj");
  expect_error(edited_adapter(tmp, [](Json& c) { c["r"] = 1000; }), "exceeds");
  expect_error(edited_adapter(
                   tmp, [](Json&) {},
                   [](std::vector<NamedTensor>& t) {
                     t.back().tensor = at::zeros({3, 3});  // wrong shape for the last tensor
                   }),
               "adapter_model.safetensors");
  expect_error(edited_adapter(
                   tmp, [](Json&) {}, [](std::vector<NamedTensor>& t) { t.erase(t.begin()); }),
               "no tensor");
  expect_error(tmp / "missing", "adapter_config.json");
}

TEST(PeftFilesTest, WeightedAdaptersAddAndFuseLikeSeparateDeltas) {
  nn::Model model = nn::Model::load(kModel);
  const at::Tensor ids = at::arange(12, at::kLong).reshape({2, 6}) * 7 % 500;
  const at::Tensor base = logits_of(model, ids);
  testing::TempDir tmp;
  // A second adapter: the fixture's with B scaled by -0.5.
  const auto second = edited_adapter(
      tmp, [](Json&) {},
      [](std::vector<NamedTensor>& t) {
        for (NamedTensor& n : t)
          if (n.name.find("lora_B") != std::string::npos) n.tensor = n.tensor * -0.5;
      });
  std::vector<AttachedAdapter> adapters = load_adapters(model, {kAdapter.string() + ":0.5", second.string()});
  ASSERT_EQ(adapters.size(), 2u);
  // 0.5·Δ + (−0.5)·Δ = 0: the two cancel through the fused path.
  EXPECT_LE(max_abs_diff(logits_of(model, ids), base), 2e-5);
  detach_adapter(model, adapters[1]);
  adapters[0].set_weight(1.0);
  nn::Model reference = nn::Model::load(kModel);
  load_adapter(reference, kAdapter);
  EXPECT_LE(max_abs_diff(logits_of(model, ids), logits_of(reference, ids)), 1e-6);
}

}  // namespace
}  // namespace lowrank::adapt
