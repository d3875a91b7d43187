// RandLoRA in PEFT's format. The forward is checked against an oracle written here as PEFT's
// sum of rank-one terms, element by element in float64:
//   ΔW_Mm[p, q] = s Σ_k B[p, k / r, k mod r] · λ[k / n, k mod n] · A[k / n, 0, q] · γ[k mod n, q],
// ΔW = ΔW_Mm for in ≤ out and its transpose otherwise (M = max(in, out), m = min(in, out));
// the bases against PEFT's construction (shapes from the largest targeted layer, unit standard
// deviation, bfloat16 values, ternary when sparse, one copy shared by every slot). Also: Δ = 0 at
// initialisation, the update is full rank, λ and γ are the only parameters, the file holds the
// bases once under PEFT's names and reloads with identical logits (also from per-module copies),
// merge equals the forward (training: AdapterContractTest). PEFT's own logits are checked
// in tests/interop_peft.
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "lowrank/adapt/randlora.h"
#include "lowrank/core/safetensors.h"
#include "tests/adapt/method_testing.h"

namespace lowrank::adapt {
namespace {

using namespace method_testing;
using testing::max_abs_diff;

constexpr int64_t kRank = 4;
constexpr double kAlpha = 8;

AdapterConfig randlora_config() {
  AdapterConfig c = config_for("randlora", kRank);
  c.target_modules = {"q_proj", "v_proj", "up_proj", "down_proj"};  // square, out > in and out < in
  c.extra["randlora_alpha"] = kAlpha;
  return c;
}

const RandloraAdapter& randlora_of(const AttachedAdapter& a, size_t i) {
  return dynamic_cast<const RandloraAdapter&>(*a.layers.at(i).second);
}

at::Tensor oracle_delta(const RandloraAdapter& layer, int64_t in, int64_t out) {
  const int64_t big = std::max(in, out), m = std::min(in, out);
  const at::Tensor lambda = tensor_of(layer, "randlora_lambda").to(at::kDouble);
  const at::Tensor gamma = tensor_of(layer, "randlora_gamma").to(at::kDouble);
  const int64_t n = lambda.size(1);
  const auto a = layer.basis_a().to(at::kDouble).contiguous();
  const auto b = layer.basis_b().to(at::kDouble).contiguous();
  auto A = a.accessor<double, 3>();
  auto B = b.accessor<double, 3>();
  auto L = lambda.accessor<double, 2>();
  auto G = gamma.accessor<double, 2>();
  at::Tensor w = at::zeros({big, m}, at::kDouble);
  auto W = w.accessor<double, 2>();
  for (int64_t p = 0; p < big; ++p)
    for (int64_t q = 0; q < m; ++q) {
      double sum = 0;
      for (int64_t k = 0; k < kRank * n; ++k)
        sum += B[p][k / kRank][k % kRank] * L[k / n][k % n] * A[k / n][0][q] * G[k % n][q];
      W[p][q] = kAlpha / kRank * sum;
    }
  return in <= out ? w : w.t();
}

TEST(RandloraTest, StartsAtTheBaseWithLambdaAndGammaAsItsOnlyParameters) {
  nn::Model model = tiny();
  const at::Tensor ids = token_ids();
  const at::Tensor base = logits_of(model, ids);
  AttachedAdapter a = create_adapter(model, "r", randlora_config(), 7);
  EXPECT_EQ(a.config.peft_type, "RANDLORA");
  EXPECT_TRUE(logits_of(model, ids).equal(base));  // λ = 0
  ASSERT_EQ(a.layers.size(), 8u);
  // Every slot has min(in, out) = 16: n = 4 bases, λ [4, 4] and γ [4, 16].
  EXPECT_EQ(a.num_parameters(), 8 * (kRank * 4 + 4 * 16));
  for (const auto& [name, t] : a.parameters())
    EXPECT_TRUE(name.ends_with(".randlora_lambda") || name.ends_with(".randlora_gamma")) << name;
  for (size_t i = 0; i < a.layers.size(); ++i) {
    const RandloraAdapter& layer = randlora_of(a, i);
    EXPECT_TRUE(tensor_of(layer, "randlora_lambda").eq(0).all().item<bool>());
    EXPECT_TRUE(tensor_of(layer, "randlora_gamma").eq(1.0 / 16).all().item<bool>());  // 1 / max(n, m)
  }
}

TEST(RandloraTest, BasesFollowPeftsConstructionAndAreSharedBySlots) {
  nn::Model model = tiny();
  AttachedAdapter a = create_adapter(model, "r", randlora_config(), 7);
  // Largest targeted (out, in) is (32, 32): A [r, 1, 32], B [32, ⌈32 / r⌉, r].
  const at::Tensor A = randlora_of(a, 0).basis_a(), B = randlora_of(a, 0).basis_b();
  EXPECT_EQ(A.sizes(), (std::vector<int64_t>{kRank, 1, 32}));
  EXPECT_EQ(B.sizes(), (std::vector<int64_t>{32, 8, kRank}));
  for (size_t i = 1; i < a.layers.size(); ++i) {
    EXPECT_EQ(randlora_of(a, i).basis_a().data_ptr(), A.data_ptr());
    EXPECT_EQ(randlora_of(a, i).basis_b().data_ptr(), B.data_ptr());
  }
  // kaiming_uniform draws in bfloat16, divided by their standard deviation.
  EXPECT_NEAR(A.std().item<double>(), 1.0, 0.02);
  EXPECT_NEAR(B.std().item<double>(), 1.0, 0.02);
  EXPECT_TRUE(A.to(at::kBFloat16).to(at::kFloat).equal(A));
  // The same seed gives the same bases, another seed others.
  const auto [a0, b0] = randlora_bases(kRank, 32, 32, 0, false, false);
  const auto [a1, b1] = randlora_bases(kRank, 32, 32, 1, false, false);
  EXPECT_TRUE(a0.equal(A) && b0.equal(B));
  EXPECT_FALSE(a1.equal(A));
  // Sparse: ternary values {−c, 0, c}, P(0) = 2/3.
  const auto [as, bs] = randlora_bases(kRank, 64, 256, 0, true, false);
  EXPECT_EQ(bs.sizes(), (std::vector<int64_t>{256, 16, kRank}));
  const double c = bs.abs().max().item<double>();
  EXPECT_TRUE((bs.eq(0) | bs.eq(c) | bs.eq(-c)).all().item<bool>());
  EXPECT_NEAR(bs.eq(0).to(at::kDouble).mean().item<double>(), 2.0 / 3.0, 0.02);
  EXPECT_NEAR(bs.std().item<double>(), 1.0, 1e-5);
}

TEST(RandloraTest, ForwardAndMergeMatchTheSumOfRankOneTermsAndAreFullRank) {
  nn::Model model = tiny();
  AttachedAdapter a = create_adapter(model, "r", randlora_config(), 7);
  randomize(a, 1);
  expect_forward_and_merge_match(
      model, a,
      [](const nn::LinearSlot& slot, const nn::Adapter& layer) {
        const at::Tensor delta = oracle_delta(dynamic_cast<const RandloraAdapter&>(layer), slot.in_features(),
                                              slot.out_features());
        EXPECT_EQ(at::linalg_matrix_rank(delta).item<int64_t>(),
                  std::min(slot.in_features(), slot.out_features()))
            << slot.name();
        return slot.base().dense_weight().to(at::kDouble) + delta;
      },
      1e-4);
}

TEST(RandloraTest, FileHoldsTheBasesOnceAndReloadsWithIdenticalLogits) {
  nn::Model model = tiny();
  const at::Tensor ids = token_ids();
  AttachedAdapter a = create_adapter(model, "r", randlora_config(), 7);
  randomize(a, 2);
  const at::Tensor adapted = logits_of(model, ids);
  testing::TempDir dir;
  const AdapterConfig saved = save_adapter(a, dir.path());
  EXPECT_EQ(saved.extra.at("save_projection"), true);
  const SafetensorsFile file = SafetensorsFile::open(dir / "adapter_model.safetensors");
  std::vector<NamedTensor> tensors;
  for (const TensorInfo& info : file.tensors()) tensors.push_back({info.name, file.load(info.name)});
  ASSERT_EQ(tensors.size(), 2u + 2u * a.layers.size());
  EXPECT_TRUE(file.load("base_model.randlora_A").equal(randlora_of(a, 0).basis_a()));
  EXPECT_TRUE(file.load("base_model.randlora_B").equal(randlora_of(a, 0).basis_b()));
  EXPECT_TRUE(
      file.load("base_model.model.model.layers.1.mlp.down_proj.randlora_gamma")
          .equal(tensor_of(*model.slot("model.layers.1.mlp.down_proj").adapter("r"), "randlora_gamma")));

  expect_reload_and_merge(dir.path(), ids, adapted, "randlora", 1e-5);

  // PEFT >= 0.21 also writes the bases under every module; such copies alone load as well.
  testing::TempDir copies;
  std::filesystem::copy_file(dir / "adapter_config.json", copies / "adapter_config.json");
  std::vector<NamedTensor> per_module;
  for (const NamedTensor& t : tensors) {
    if (t.name.starts_with("base_model.randlora_")) continue;
    per_module.push_back(t);
    if (t.name.ends_with(".randlora_lambda")) {
      const std::string module = t.name.substr(0, t.name.size() - std::string("randlora_lambda").size());
      per_module.push_back({module + "randlora_A", file.load("base_model.randlora_A")});
      per_module.push_back({module + "randlora_B", file.load("base_model.randlora_B")});
    }
  }
  save_safetensors(copies / "adapter_model.safetensors", per_module);
  nn::Model third = tiny();
  load_adapter(third, copies.path());
  EXPECT_TRUE(logits_of(third, ids).equal(adapted));

  // Without the bases (PEFT's save_projection = false) the file is refused, naming the reason.
  testing::TempDir bare;
  Json config = read_json_file(dir / "adapter_config.json");
  config["save_projection"] = false;
  write_json_file(bare / "adapter_config.json", config);
  std::vector<NamedTensor> without;
  for (const NamedTensor& t : tensors)
    if (!t.name.starts_with("base_model.randlora_")) without.push_back(t);
  save_safetensors(bare / "adapter_model.safetensors", without);
  nn::Model fourth = tiny();
  EXPECT_NE(testing::error_of([&] { load_adapter(fourth, bare.path()); }).find("save_projection"),
            std::string::npos);
  for (const nn::LinearSlot* slot : fourth.slots()) EXPECT_FALSE(slot->has_adapters());
}

}  // namespace
}  // namespace lowrank::adapt
