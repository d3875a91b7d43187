// PELA (compress/pela.h): with α = β = 0 and a zero learning rate the whole pipeline writes exactly
// the bytes of plain SVD compression; the teacher is never written and gets no gradient; the
// distillation term vanishes at full rank; the weight-perturbation term equals a float64
// computation from the factors; the intermediate stage resumes exactly; bad input fails first.
#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include "lowrank/compress/methods.h"
#include "lowrank/compress/operators.h"
#include "lowrank/compress/pela.h"
#include "lowrank/compress/pipeline.h"
#include "lowrank/core/file.h"
#include "tests/compress/compress_testing.h"
#include "tests/testing.h"

namespace lowrank::compress {
namespace {

using compress_testing::small_model;
using compress_testing::token_stream;

nn::Model factored(uint64_t seed, int64_t rank) {
  nn::Model m = small_model(seed);
  CompressOptions o;
  o.method = "pela";
  o.rank = rank;
  compress_model(m, o, nullptr);
  return m;
}

std::map<std::string, at::Tensor> originals_of(const nn::Model& teacher) {
  std::map<std::string, at::Tensor> out;
  for (const nn::LinearSlot* s : teacher.slots()) out[s->name()] = s->base().dense_weight().detach();
  return out;
}

PelaOptions quick(int64_t steps) {
  PelaOptions o = PelaOptions::from(
      -1, -1, steps, Json{{"batch_size", 2}, {"seq_len", 16}, {"lr", 1e-3}, {"warmup_steps", 0}});
  return o;
}

TEST(Pela, ZeroWeightsAndRateWriteExactlyTheSvdModel) {
  testing::TempDir dir;
  const auto model = testing::tiny_hf_model(dir.path());
  std::string text;
  for (int i = 0; i < 200; ++i)
    text += "the quick brown fox jumps over the lazy dog " + std::to_string(i) + ". ";
  testing::write_text_file(dir / "corpus.txt", text);
  RunOptions svd;
  svd.model = model;
  svd.out = dir / "svd";
  svd.compress.method = "svd";
  svd.compress.ratio = 0.5;
  svd.progress = false;
  run(svd);
  RunOptions pela = svd;
  pela.out = dir / "pela";
  pela.compress.method = "pela";
  pela.compress.alpha = 0;
  pela.compress.beta = 0;
  pela.compress.method_options = Json{{"lr", 0.0}, {"min_lr", 0.0}, {"batch_size", 2}, {"seq_len", 16}};
  pela.distill_data = dir / "corpus.txt";
  pela.distill_steps = 3;
  const RunResult r = run(pela);
  EXPECT_EQ(r.pela["steps"].get<int64_t>(), 3);
  EXPECT_TRUE(std::filesystem::exists(dir / "pela.pela-run/metrics.jsonl"));
  EXPECT_EQ(read_text_file(dir / "pela/model.safetensors"), read_text_file(dir / "svd/model.safetensors"));
  // With a learning rate the stage changes the factors.
  pela.out = dir / "pela-lr";
  pela.compress.method_options = Json{{"lr", 1e-3}, {"batch_size", 2}, {"seq_len", 16}};
  run(pela);
  EXPECT_NE(read_text_file(dir / "pela-lr/model.safetensors"), read_text_file(dir / "svd/model.safetensors"));
}

TEST(Pela, TheTeacherIsNeverWrittenAndGetsNoGradient) {
  const nn::Model teacher = small_model(1);
  std::vector<at::Tensor> before;
  for (const auto& [name, t] : teacher.named_tensors()) before.push_back(t.clone());
  nn::Model student = factored(1, 8);
  const at::Tensor u0 = dynamic_cast<const LowRankOperator&>(student.slots()[0]->base()).u().clone();
  testing::TempDir dir;
  const PelaResult r = pela_pretrain(student, teacher, train::TokenStream::from_tensor(token_stream(400)),
                                     quick(4), dir / "run");
  EXPECT_TRUE(r.finished);
  size_t i = 0;
  for (const auto& [name, t] : teacher.named_tensors()) {
    EXPECT_TRUE(at::equal(t, before[i++])) << name;
    EXPECT_FALSE(t.grad().defined()) << name;
    EXPECT_FALSE(t.requires_grad()) << name;
  }
  EXPECT_FALSE(at::equal(dynamic_cast<const LowRankOperator&>(student.slots()[0]->base()).u(), u0));
}

TEST(Pela, DistillationVanishesAtFullRankAndPerturbationMatchesFloat64) {
  const nn::Model teacher = small_model(2);
  const at::Tensor windows = token_stream(34).view({2, 17});
  const PelaOptions o = quick(1);
  // Full rank: every slot W = (U √S)(√S Vᵀ) at rank min(m, n), so the student computes the teacher's
  // function.
  nn::Model full = small_model(2);
  for (nn::LinearSlot* s : full.slots()) {
    auto [U, S, Vh] = at::linalg_svd(s->base().dense_weight().to(at::kDouble), false);
    const at::Tensor root = S.sqrt();
    s->replace_base(std::make_shared<LowRankOperator>((U * root.unsqueeze(0)).to(at::kFloat),
                                                      (Vh * root.unsqueeze(1)).to(at::kFloat)));
  }
  const PelaTerms t = pela_terms(full, teacher, windows, originals_of(teacher), o);
  EXPECT_LT(t.distill.item<double>(), 1e-10);
  EXPECT_GT(t.task.item<double>(), 0.1);
  // At rank 4: (1/S) Σ (max|U V − W| − ε)² in float64 from the stored factors.
  const nn::Model low = factored(2, 4);
  const PelaTerms u = pela_terms(low, teacher, windows, originals_of(teacher), o);
  EXPECT_GT(u.distill.item<double>(), 1e-6);
  double sum = 0;
  int count = 0;
  for (const nn::LinearSlot* s : low.slots()) {
    const auto* lr = dynamic_cast<const LowRankOperator*>(&s->base());
    if (lr == nullptr) continue;  // lm_head is not a target
    const LowRankOperator& op = *lr;
    const at::Tensor W = originals_of(teacher).at(s->name()).to(at::kDouble);
    const double m =
        (at::matmul(op.u().to(at::kDouble), op.v().to(at::kDouble)) - W).abs().max().item<double>();
    sum += (m - 1e-3) * (m - 1e-3);
    ++count;
  }
  EXPECT_NEAR(u.perturb.item<double>(), sum / count, 1e-6 * sum / count);
}

TEST(Pela, TheIntermediateStageResumesExactly) {
  const nn::Model teacher = small_model(3);
  const train::TokenStream data = train::TokenStream::from_tensor(token_stream(500));
  testing::TempDir dir;
  nn::Model full = factored(3, 8);
  PelaOptions o = quick(6);
  o.trainer.checkpoint_every = 2;
  pela_pretrain(full, teacher, data, o, dir / "full");
  nn::Model part = factored(3, 8);
  o.trainer.stop_after = 3;
  EXPECT_FALSE(pela_pretrain(part, teacher, data, o, dir / "part").finished);
  o.trainer.stop_after = 0;
  nn::Model resumed = factored(3, 8);
  EXPECT_TRUE(pela_pretrain(resumed, teacher, data, o, dir / "part").finished);
  const auto a = full.named_tensors(), b = resumed.named_tensors();
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) EXPECT_TRUE(at::equal(a[i].second, b[i].second)) << a[i].first;
}

TEST(Pela, BadInputFailsBeforeAnyWork) {
  testing::TempDir dir;
  const auto model = testing::tiny_hf_model(dir.path());
  RunOptions r;
  r.model = model;
  r.out = dir / "out";
  r.compress.method = "pela";
  r.compress.ratio = 0.5;
  EXPECT_NE(testing::error_of([&] { run(r); }).find("--distill-data"), std::string::npos);
  EXPECT_FALSE(std::filesystem::exists(dir / "out"));
  r.distill_data = dir / "missing.txt";
  EXPECT_NE(testing::error_of([&] { run(r); }).find("missing.txt"), std::string::npos);
  testing::write_text_file(dir / "c.txt", "some text");
  r.distill_data = dir / "c.txt";
  r.compress.method_options = Json{{"learning_rate", 1}};
  EXPECT_NE(testing::error_of([&] { run(r); }).find("no option \"learning_rate\""), std::string::npos);
  r.compress.method_options = Json::object();
  r.compress.method = "svd";
  EXPECT_NE(testing::error_of([&] { run(r); }).find("options of --method pela"), std::string::npos);
  r.distill_data.clear();
  r.compress.beta = 0.5;
  EXPECT_NE(testing::error_of([&] { run(r); }).find("--beta is an option of pela only"), std::string::npos);
  EXPECT_FALSE(std::filesystem::exists(dir / "out"));
}

}  // namespace
}  // namespace lowrank::compress
