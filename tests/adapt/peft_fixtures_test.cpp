// PEFT parity on every run, against adapters PEFT itself wrote (tests/fixtures/hf/peft, made by
// make_fixtures.py there; versions in its README): DoRA, rsLoRA with rank_pattern/alpha_pattern,
// PiSSA as trained and after PEFT's conversion to a plain LoRA (path_initial_model_for_weight_
// conversion), and RandLoRA. Each loads through load_adapters, the path `lowrank --adapter` takes,
// and must give PEFT's logits for the stored token ids; lowrank's export of the trained PiSSA
// adapter must equal PEFT's converted files. (tests/interop_peft cross-checks more when the peer
// stack is installed; these run without it.)
#include <cmath>
#include <stdexcept>
#include <string>

#include <gtest/gtest.h>

#include "lowrank/adapt/lora.h"
#include "lowrank/adapt/model_adapters.h"
#include "lowrank/core/safetensors.h"
#include "tests/testing.h"

namespace lowrank::adapt {
namespace {

using testing::fixture;
using testing::rel_max_error;

const std::filesystem::path kModel = fixture("hf/llama-tiny/model");

std::filesystem::path peft_fixture(const std::string& name) {
  return fixture("hf/peft/" + name);
}

at::Tensor logits_of(const nn::Model& model, const at::Tensor& ids) {
  c10::InferenceMode guard;
  return model.forward(ids).clone();
}

// Loads the fixture `name` onto a fresh tiny Llama as `lowrank --adapter` does and checks PEFT's
// logits (relative 1e-5), and that the adapter moves them far beyond that tolerance. Returns the
// model with the adapter attached.
nn::Model expect_peft_logits(const std::string& name) {
  nn::Model model = nn::Model::load(kModel);
  const SafetensorsFile expected = SafetensorsFile::open(peft_fixture(name) / "expected.safetensors");
  const at::Tensor ids = expected.load("input_ids");
  const at::Tensor peft_logits = expected.load("logits");
  EXPECT_GT(rel_max_error(logits_of(model, ids), peft_logits), 0.05) << name;
  const std::vector<AttachedAdapter> adapters = load_adapters(model, {peft_fixture(name).string()});
  EXPECT_EQ(adapters.size(), 1u);
  EXPECT_LE(rel_max_error(logits_of(model, ids), peft_logits), 1e-5) << name;
  return model;
}

// The attached LoRA layer of `module` (rank and scaling as lowrank resolved them).
const LoraAdapter& lora_layer(nn::Model& model, const std::string& module, const std::string& name) {
  const auto* layer = dynamic_cast<const LoraAdapter*>(model.slot(module).adapter(name));
  if (layer == nullptr) throw std::runtime_error("no LoRA layer " + name + " on " + module);
  return *layer;
}

TEST(PeftFixturesTest, DoraGivesPeftLogitsUnmergedAndMerged) {
  nn::Model model = nn::Model::load(kModel);
  const std::filesystem::path dir = peft_fixture("dora");
  const SafetensorsFile expected = SafetensorsFile::open(dir / "expected.safetensors");
  const at::Tensor ids = expected.load("input_ids");
  std::vector<AttachedAdapter> adapters = load_adapters(model, {dir.string()});
  ASSERT_EQ(adapters.size(), 1u);
  EXPECT_EQ(adapters[0].layers.size(), 3u * 2u);  // q, v, down in both layers
  EXPECT_LE(rel_max_error(logits_of(model, ids), expected.load("logits")), 1e-5);
  merge_adapters(model, adapters);
  EXPECT_LE(rel_max_error(logits_of(model, ids), expected.load("merged_logits")), 1e-5);
}

TEST(PeftFixturesTest, RsloraWithRankAndAlphaPatternsGivesPeftLogits) {
  nn::Model model = expect_peft_logits("rslora-patterns");
  // The per-layer ranks and scalings PEFT's config implies: r 4, α 8, use_rslora, rank_pattern
  // {model.layers.1.self_attn.q_proj: 2, down_proj: 6}, alpha_pattern {v_proj: 3}; s = α/√r.
  struct Expected {
    std::string module;
    int64_t r;
    double alpha;
  };
  for (const Expected& e :
       {Expected{"model.layers.0.self_attn.q_proj", 4, 8}, Expected{"model.layers.1.self_attn.q_proj", 2, 8},
        Expected{"model.layers.0.self_attn.v_proj", 4, 3}, Expected{"model.layers.1.mlp.down_proj", 6, 8}}) {
    const std::string name = "rslora-patterns";
    EXPECT_EQ(lora_layer(model, e.module, name).rank(), e.r) << e.module;
    EXPECT_DOUBLE_EQ(lora_layer(model, e.module, name).scaling(), e.alpha / std::sqrt(e.r)) << e.module;
  }
}

TEST(PeftFixturesTest, PissaAsTrainedAndConvertedGivesPeftLogits) {
  for (const char* name : {"pissa", "pissa-converted", "pissa-rslora", "pissa-rslora-converted"})
    expect_peft_logits(name);
}

// lowrank saves a PiSSA adapter as PEFT's conversion does: A' = [A; A₀], B' = [B, −B₀], r, α and the
// patterns doubled (α·√2 with rsLoRA). A₀, B₀ come from each side's own SVD of W, so a component
// may differ by a sign shared by its row of A₀ and column of B₀; everything else must match.
TEST(PeftFixturesTest, PissaExportEqualsPeftConversion) {
  for (const std::string name : {"pissa", "pissa-rslora"}) {
    SCOPED_TRACE(name);
    nn::Model model = nn::Model::load(kModel);
    const AttachedAdapter trained = load_adapter(model, peft_fixture(name));
    testing::TempDir out;
    save_adapter(trained, out.path());
    const std::filesystem::path peft_dir = peft_fixture(name + "-converted");

    const Json ours = read_json_file(out / "adapter_config.json");
    const Json theirs = read_json_file(peft_dir / "adapter_config.json");
    for (const char* key :
         {"peft_type", "r", "rank_pattern", "alpha_pattern", "use_rslora", "init_lora_weights"})
      EXPECT_EQ(ours.at(key), theirs.at(key)) << key;
    EXPECT_NEAR(ours.at("lora_alpha").get<double>(), theirs.at("lora_alpha").get<double>(), 1e-12);

    const SafetensorsFile mine = SafetensorsFile::open(out / "adapter_model.safetensors");
    const SafetensorsFile peft = SafetensorsFile::open(peft_dir / "adapter_model.safetensors");
    ASSERT_EQ(mine.tensors().size(), peft.tensors().size());
    for (const TensorInfo& info : peft.tensors()) {
      if (info.name.find("lora_A") == std::string::npos) continue;
      SCOPED_TRACE(info.name);
      const std::string b_name = std::string(info.name).replace(info.name.find("lora_A"), 6, "lora_B");
      const at::Tensor a_peft = peft.load(info.name), b_peft = peft.load(b_name);
      const at::Tensor a_mine = mine.load(info.name), b_mine = mine.load(b_name);
      ASSERT_EQ(a_mine.sizes(), a_peft.sizes());
      ASSERT_EQ(b_mine.sizes(), b_peft.sizes());
      const int64_t r = a_peft.size(0) / 2;
      // The trained halves are the file's tensors, copied.
      EXPECT_TRUE(a_mine.slice(0, 0, r).equal(a_peft.slice(0, 0, r)));
      EXPECT_TRUE(b_mine.slice(1, 0, r).equal(b_peft.slice(1, 0, r)));
      // The initial halves: A₀ and −B₀, component by component up to a shared sign.
      for (int64_t i = r; i < 2 * r; ++i) {
        const double sign = (a_mine[i] * a_peft[i]).sum().item<double>() >= 0 ? 1.0 : -1.0;
        EXPECT_LE(rel_max_error(a_mine[i] * sign, a_peft[i]), 1e-4) << "row " << i;
        EXPECT_LE(rel_max_error(b_mine.select(1, i) * sign, b_peft.select(1, i)), 1e-4) << "column " << i;
      }
      EXPECT_LE(rel_max_error(at::matmul(b_mine, a_mine), at::matmul(b_peft, a_peft)), 1e-5);
    }
  }
}

TEST(PeftFixturesTest, RandloraGivesPeftLogits) {
  expect_peft_logits("randlora");
}

}  // namespace
}  // namespace lowrank::adapt
