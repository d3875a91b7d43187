#include "lowrank/analysis/spectra.h"

#include <gtest/gtest.h>

#include <cmath>

#include "tests/testing.h"

namespace lowrank::analysis {
namespace {

// A matrix with prescribed singular values: Q1 diag(s) Q2^T with random orthogonal Q1, Q2.
at::Tensor with_spectrum(const std::vector<double>& s, int64_t rows, int64_t cols, uint64_t seed) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  auto q1 = std::get<0>(at::linalg_qr(at::randn({rows, rows}, gen, at::kDouble)));
  auto q2 = std::get<0>(at::linalg_qr(at::randn({cols, cols}, gen, at::kDouble)));
  auto sig = at::zeros({rows, cols}, at::kDouble);
  for (size_t i = 0; i < s.size(); ++i) sig[i][i] = s[i];
  return q1.matmul(sig).matmul(q2.t());
}

TEST(SpectraTest, NamesToModuleTypeAndLayer) {
  EXPECT_EQ(module_type_of("model.layers.3.self_attn.q_proj.weight"), "q_proj");
  EXPECT_EQ(layer_of("model.layers.3.self_attn.q_proj.weight"), 3);
  EXPECT_EQ(module_type_of("lm_head.weight"), "lm_head");
  EXPECT_EQ(layer_of("lm_head.weight"), -1);
  EXPECT_EQ(layer_of("transformer.h.11.attn.c_attn.weight"), 11);
}

TEST(SpectraTest, PlantedSpectrumGivesClosedFormRanks) {
  testing::TempDir dir;
  // s = (4, 2, 1, 1, 0...) on an 8x6 matrix: energy 16+4+1+1 = 22.
  std::vector<double> s = {4, 2, 1, 1, 0, 0};
  std::vector<NamedTensor> tensors = {{"model.layers.0.mlp.up_proj.weight", with_spectrum(s, 8, 6, 1)},
                                      {"model.norm.weight", at::ones({6}, at::kDouble)}};
  save_safetensors(dir / "model.safetensors", tensors);
  auto spectra = analyze_spectra(Checkpoint::open(dir.path()), {});
  ASSERT_EQ(spectra.size(), 1u);  // the 1-D norm weight is skipped
  const auto& m = spectra[0];
  EXPECT_EQ(m.module_type, "up_proj");
  EXPECT_EQ(m.layer, 0);
  for (size_t i = 0; i < s.size(); ++i) EXPECT_NEAR(m.singular_values[i], s[i], 1e-10);
  EXPECT_EQ(m.rank90, 2);  // (16 + 4)/22 = 0.909 >= 0.9
  EXPECT_EQ(m.rank99, 4);  // 21/22 = 0.955 < 0.99 <= 22/22
  // p = (0.5, 0.25, 0.125, 0.125): H = 1.75 ln 2, effective rank 2^1.75.
  EXPECT_NEAR(m.effective_rank, std::pow(2.0, 1.75), 1e-9);
  // Normalised: (1, 0.5, 0.25, 0.25, 0, 0): 2 values below tau = 0.175.
  EXPECT_EQ(m.welore_rank, 4);
  auto j = spectra_json(spectra, {});
  EXPECT_EQ(j["matrices"][0]["full_rank"], 6);
  EXPECT_NE(spectra_svg(spectra, {}, "t").find("up_proj"), std::string::npos);
}

TEST(SpectraTest, IncludeFilterAndErrors) {
  testing::TempDir dir;
  std::vector<NamedTensor> tensors = {{"a.q_proj.weight", at::randn({4, 4}, at::kFloat)},
                                      {"a.k_proj.weight", at::randn({4, 4}, at::kFloat)}};
  save_safetensors(dir / "model.safetensors", tensors);
  auto ckpt = Checkpoint::open(dir.path());
  SpectraOptions opts;
  opts.include = "q_proj";
  EXPECT_EQ(analyze_spectra(ckpt, opts).size(), 1u);
  opts.include = "nothing-matches";
  EXPECT_THROW(analyze_spectra(ckpt, opts), InvalidArgument);
  opts.include = "([";
  EXPECT_THROW(analyze_spectra(ckpt, opts), InvalidArgument);
}

}  // namespace
}  // namespace lowrank::analysis
