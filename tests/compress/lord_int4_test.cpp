// LoRD + INT4 (Kaushal et al., 2023, arXiv:2309.14021: "QLoRA over LoRD"): `compress --method rtn`
// over a factored model quantises each slot's U and V (QuantizedLowRankOperator). Checked against
// a float64 round-to-nearest written out here, through a file round trip, with a gradient through
// the quantised base against autograd on the dequantised weight, and end to end: a LoRA adapter
// fine-tuned on the LoRD + INT4 base of the bundled tiny Llama.
#include <gtest/gtest.h>

#include "lowrank/adapt/finetune.h"
#include "lowrank/compress/format.h"
#include "lowrank/compress/methods.h"
#include "lowrank/compress/operators.h"
#include "lowrank/compress/pipeline.h"
#include "lowrank/core/file.h"
#include "tests/finetune_testing.h"
#include "tests/testing.h"

namespace lowrank::compress {
namespace {

namespace fs = std::filesystem;

// INT4 round to nearest of W [rows, cols] in groups of g along cols, in float64: s = absmax / 7
// rounded to float16 (the stored scale), q = clamp(round(w / s), −8, 7), ŵ = s q.
at::Tensor rtn4_reference(const at::Tensor& W, int64_t g) {
  const at::Tensor w = W.to(at::kDouble);
  at::Tensor out = at::zeros_like(w);
  for (int64_t r = 0; r < w.size(0); ++r)
    for (int64_t c0 = 0; c0 < w.size(1); c0 += g) {
      const at::Tensor grp = w[r].slice(0, c0, c0 + g);
      const double s = (grp.abs().max() / 7.0).to(at::kHalf).item<double>();
      if (s > 0) out[r].slice(0, c0, c0 + g).copy_(at::clamp(at::round(grp / s), -8, 7) * s);
    }
  return out;
}

TEST(LordInt4Test, QuantisedFactorsAreTheRoundedUAndV) {
  at::manual_seed(7);
  const at::Tensor u = at::randn({32, 5}), v = at::randn({5, 48}), bias = at::randn({32});
  const LowRankOperator factored(u, v, bias);
  const auto q = QuantizedLowRankOperator::quantize(factored, 4, 16);
  EXPECT_EQ(q->rank(), 5);  // any rank: Uᵀ is grouped along the 32 outputs
  const at::Tensor w_ref = at::matmul(rtn4_reference(u.t(), 16).t(), rtn4_reference(v, 16));
  EXPECT_LT(testing::max_abs_diff(q->dense_weight(), w_ref), 1e-5);
  const at::Tensor x = at::randn({3, 48});
  at::NoGradGuard no_grad;
  EXPECT_LT(testing::max_abs_diff(q->forward(x), at::matmul(x.to(at::kDouble), w_ref.t()) + bias), 1e-4);
  EXPECT_NE(testing::error_of([&] {
              QuantizedLowRankOperator::quantize(factored, 4, 64);
            }).find("--group-size 64 must divide"),
            std::string::npos);
}

TEST(LordInt4Test, GradientsReachTheInputThroughAQuantisedBase) {
  // A LoRA adapter below a quantised slot trains only if the slot passes dL/dx back: compare with
  // autograd through the dequantised weight (few rows: the packed decode kernel's case).
  at::manual_seed(8);
  const auto q =
      QuantizedLowRankOperator::quantize(LowRankOperator(at::randn({32, 4}), at::randn({4, 32})), 4, 16);
  const QuantizedOperator dense_q(ops::quantize_groups(at::randn({32, 32}), 4, 16));
  for (const StoredOperator* op :
       {static_cast<const StoredOperator*>(q.get()), static_cast<const StoredOperator*>(&dense_q)}) {
    SCOPED_TRACE(std::string(op->kind()));
    const at::Tensor x = at::randn({2, 32}).requires_grad_(true);
    const at::Tensor g = at::randn({2, 32});
    (op->forward(x) * g).sum().backward();
    const at::Tensor expected = at::matmul(g.to(at::kDouble), op->dense_weight().to(at::kDouble));
    EXPECT_LT(testing::max_abs_diff(x.grad(), expected), 1e-4);
  }
}

TEST(LordInt4Test, RtnOverAFactoredModelReloadsAndTakesALoraAdapter) {
  testing::TempDir dir;
  const fs::path hf = testing::tiny_hf_model(dir.path());
  RunOptions lord;
  lord.model = hf;
  lord.out = dir / "lord";
  lord.compress.method = "svd";
  lord.compress.ratio = 0.3;
  lord.progress = false;
  (void)run(lord);
  RunOptions int4 = lord;
  int4.model = dir / "lord";
  int4.out = dir / "lord_int4";
  int4.compress = {};
  int4.compress.method = "rtn";
  int4.compress.bits = 4;
  int4.compress.group_size = 16;
  const RunResult r = run(int4);
  // Every decoder slot now holds quantised factors of the LoRD ranks.
  const nn::Model factored = load_model(dir / "lord");
  const nn::Model quantised = load_model(dir / "lord_int4");
  int64_t slots = 0;
  for (const nn::LinearSlot* s : quantised.slots()) {
    if (s->name() == "lm_head") continue;
    ++slots;
    const auto* q = dynamic_cast<const QuantizedLowRankOperator*>(&s->base());
    ASSERT_NE(q, nullptr) << s->name();
    const auto& f = dynamic_cast<const LowRankOperator&>(factored.find_slot(s->name())->base());
    EXPECT_EQ(q->rank(), f.rank());
    const at::Tensor w_ref = at::matmul(rtn4_reference(f.u().t(), 16).t(), rtn4_reference(f.v(), 16));
    EXPECT_LT(testing::max_abs_diff(q->dense_weight(), w_ref), 1e-5) << s->name();
  }
  EXPECT_EQ(slots, 14);
  EXPECT_LT(r.report.bytes_after, r.report.bytes_before / 3);  // 4-bit factors of 16-bit ones

  adapt::FinetuneOptions o = testing::two_step_finetune(dir / "lord_int4", "lora", dir.path(), "qlora");
  o.config = {{"r", 2}};
  const adapt::FinetuneSummary s = adapt::finetune(o);
  ASSERT_TRUE(s.finished);
  EXPECT_TRUE(fs::exists(dir / "qlora/adapter_model.safetensors"));
  // LoRA's B starts at zero: the adapted base scores as the base until B moves, and it moved.
  EXPECT_NE(s.validation.nll, s.base_validation.nll);
}

}  // namespace
}  // namespace lowrank::compress
