// The central seam, LinearSlot, against float64 oracles written out here: the base alone; the base
// plus several adapters, fusable (scaled low-rank products, summed through stacked factors) and
// not (a nonlinear delta), with few rows and with many (where the first products become one GEMM);
// merging an adapter into the base and unmerging it; a routed batch, row by row, against separate
// forwards of each row with only its adapter (segments, the gathered kernel, and the gradient
// path); slots that share an input; and a compressed (factored) base operator.
#include <gtest/gtest.h>

#include <ATen/CPUGeneratorImpl.h>

#include "lowrank/core/error.h"
#include "lowrank/nn/linear_slot.h"
#include "lowrank/ops/lora_gather.h"
#include "tests/testing.h"

namespace lowrank::nn {
namespace {

using testing::max_abs_diff;

at::Tensor randn(std::vector<int64_t> shape, uint64_t seed) {
  at::Generator gen = at::detail::createCPUGenerator(seed);
  return at::randn(shape, gen);
}

constexpr int64_t kIn = 12, kOut = 10;

// Δ(x) = s·(x Aᵀ) Bᵀ, offered to the slot as a fusable low-rank delta.
class ScaledLowRank final : public Adapter {
 public:
  ScaledLowRank(int64_t rank, double scale, uint64_t seed)
      : a_(randn({rank, kIn}, seed)), b_(randn({kOut, rank}, seed + 1)), scale_(scale) {}
  std::string_view kind() const override { return "test_low_rank"; }
  at::Tensor delta(const at::Tensor& x, const at::Tensor&, const BaseOperator&) const override {
    return at::matmul(at::matmul(x, a_.t()), b_.t()) * scale_;
  }
  std::optional<LowRankDelta> low_rank_delta() const override { return LowRankDelta{a_, b_, scale_}; }
  // The oracle: s·B A in float64.
  at::Tensor weight() const { return at::matmul(b_, a_).to(at::kDouble) * scale_; }

 private:
  at::Tensor a_, b_;
  double scale_;
};

// Δ(x) = tanh(x Cᵀ) + base_y / 2: not linear in x, and reads the base output.
class Nonlinear final : public Adapter {
 public:
  explicit Nonlinear(uint64_t seed) : c_(randn({kOut, kIn}, seed)) {}
  std::string_view kind() const override { return "test_nonlinear"; }
  at::Tensor delta(const at::Tensor& x, const at::Tensor& base_y, const BaseOperator&) const override {
    return at::tanh(at::matmul(x, c_.t())) + base_y / 2;
  }
  // The oracle in float64, for x and the base output y0.
  at::Tensor expected(const at::Tensor& x, const at::Tensor& y0) const {
    return at::tanh(at::matmul(x.to(at::kDouble), c_.to(at::kDouble).t())) + y0 / 2;
  }

 private:
  at::Tensor c_;
};

// A factored base W = U V (a compressed operator's form), applied as (x Vᵀ) Uᵀ.
class Factored final : public BaseOperator {
 public:
  Factored(at::Tensor u, at::Tensor v) : u_(std::move(u)), v_(std::move(v)) {}
  std::string_view kind() const override { return "test_factored"; }
  int64_t in_features() const override { return v_.size(1); }
  int64_t out_features() const override { return u_.size(0); }
  at::Tensor forward(const at::Tensor& x) const override { return at::matmul(at::matmul(x, v_.t()), u_.t()); }
  NamedTensors tensors() const override { return {{"u", u_}, {"v", v_}}; }
  at::Tensor dense_weight() const override { return at::matmul(u_, v_); }

 private:
  at::Tensor u_, v_;
};

std::shared_ptr<const DenseOperator> dense_base(uint64_t seed) {
  return std::make_shared<const DenseOperator>(randn({kOut, kIn}, seed), randn({kOut}, seed + 1));
}

// x Wᵀ + b in float64.
at::Tensor base_oracle(const BaseOperator& base, const at::Tensor& x) {
  at::Tensor y = at::matmul(x.to(at::kDouble), base.dense_weight().to(at::kDouble).t());
  if (base.bias().defined()) y = y + base.bias().to(at::kDouble);
  return y;
}

at::Tensor no_grad_forward(const LinearSlot& slot, const at::Tensor& x,
                           const AdapterRouting* routing = nullptr) {
  c10::InferenceMode guard;
  return slot.forward(x, routing);
}

TEST(LinearSlotTest, BaseAloneIsTheAffineMap) {
  LinearSlot slot("layer.q_proj", dense_base(1));
  EXPECT_EQ(slot.in_features(), kIn);
  EXPECT_EQ(slot.out_features(), kOut);
  const at::Tensor x = randn({3, 4, kIn}, 2);
  EXPECT_LT(max_abs_diff(no_grad_forward(slot, x), base_oracle(slot.base(), x)), 1e-5);
  EXPECT_TRUE(slot.forward(x).equal(slot.base().forward(x)));
}

TEST(LinearSlotTest, AdaptersAddTheirDeltasWithFewRowsAndWithMany) {
  LinearSlot slot("layer.q_proj", dense_base(3));
  auto l1 = std::make_shared<const ScaledLowRank>(2, 0.5, 10);
  auto l2 = std::make_shared<const ScaledLowRank>(3, 2.0, 20);
  auto l3 = std::make_shared<const ScaledLowRank>(1, 1.5, 30);
  auto nonlinear = std::make_shared<const Nonlinear>(40);
  slot.add_adapter("l1", l1);
  slot.add_adapter("nonlinear", nonlinear);
  slot.add_adapter("l2", l2);
  slot.add_adapter("l3", l3);
  // 6 rows: each low-rank adapter takes its own pair of products; 120 rows (more than 8 × the
  // total rank 6): the first products are one GEMM over the stacked A's.
  for (const int64_t rows : {6, 120}) {
    SCOPED_TRACE(rows);
    const at::Tensor x = randn({rows / 2, 2, kIn}, 5);
    const at::Tensor y0 = base_oracle(slot.base(), x);
    const at::Tensor expected =
        y0 + at::matmul(x.to(at::kDouble), (l1->weight() + l2->weight() + l3->weight()).t()) +
        nonlinear->expected(x, y0);
    EXPECT_LT(max_abs_diff(no_grad_forward(slot, x), expected), 1e-4);
    EXPECT_LT(max_abs_diff(slot.forward(x), expected), 1e-4);  // the gradient-recording path
  }
  const at::Tensor x = randn({4, kIn}, 6);
  slot.set_adapters_enabled(false);
  EXPECT_TRUE(no_grad_forward(slot, x).equal(slot.base().forward(x)));
  slot.set_adapters_enabled(true);
  EXPECT_EQ(slot.adapter_names(), (std::vector<std::string>{"l1", "nonlinear", "l2", "l3"}));
  EXPECT_EQ(slot.remove_adapter("nonlinear").get(), nonlinear.get());
  EXPECT_EQ(slot.adapter("nonlinear"), nullptr);
  EXPECT_THROW(slot.remove_adapter("nonlinear"), NotFound);
  EXPECT_THROW(slot.add_adapter("l1", l1), InvalidArgument);
  EXPECT_THROW(slot.add_adapter("", l1), InvalidArgument);
}

TEST(LinearSlotTest, GradientsReachTheAdaptersThroughTheFusedProducts) {
  const at::Tensor a = randn({2, kIn}, 7).requires_grad_(true);
  const at::Tensor b = randn({kOut, 2}, 8).requires_grad_(true);
  class Trainable final : public Adapter {
   public:
    Trainable(at::Tensor a, at::Tensor b) : a_(std::move(a)), b_(std::move(b)) {}
    std::string_view kind() const override { return "test_trainable"; }
    at::Tensor delta(const at::Tensor& x, const at::Tensor&, const BaseOperator&) const override {
      return at::matmul(at::matmul(x, a_.t()), b_.t());
    }
    std::optional<LowRankDelta> low_rank_delta() const override { return LowRankDelta{a_, b_, 1.0}; }

   private:
    at::Tensor a_, b_;
  };
  LinearSlot slot("layer.v_proj", dense_base(9));
  slot.add_adapter("t", std::make_shared<const Trainable>(a, b));
  const at::Tensor x = randn({5, kIn}, 10);
  slot.forward(x).square().sum().backward();
  // Oracle: d/dA, d/dB of ‖x Wᵀ + c + x Aᵀ Bᵀ‖² by autograd on the formula written out.
  const at::Tensor a2 = a.detach().clone().requires_grad_(true);
  const at::Tensor b2 = b.detach().clone().requires_grad_(true);
  (slot.base().forward(x) + at::matmul(at::matmul(x, a2.t()), b2.t())).square().sum().backward();
  EXPECT_LT(max_abs_diff(a.grad(), a2.grad()), 1e-4);
  EXPECT_LT(max_abs_diff(b.grad(), b2.grad()), 1e-4);
  EXPECT_FALSE(dynamic_cast<const DenseOperator&>(slot.base()).weight().grad().defined());
}

TEST(LinearSlotTest, MergingIntoTheBaseAndUnmergingKeepTheForward) {
  LinearSlot slot("layer.o_proj", dense_base(11));
  auto lora = std::make_shared<const ScaledLowRank>(3, 0.75, 12);
  slot.add_adapter("l", lora);
  const at::Tensor x = randn({7, kIn}, 13);
  const at::Tensor adapted = no_grad_forward(slot, x);
  // Merge: W ← W + s B A, adapter detached.
  const at::Tensor merged_w = (slot.base().dense_weight().to(at::kDouble) + lora->weight()).to(at::kFloat);
  std::shared_ptr<const BaseOperator> original =
      slot.replace_base(std::make_shared<const DenseOperator>(merged_w, slot.base().bias()));
  slot.remove_adapter("l");
  EXPECT_LT(max_abs_diff(no_grad_forward(slot, x), adapted), 1e-4);
  // Unmerge: the original base back, the adapter re-attached.
  slot.replace_base(original);
  slot.add_adapter("l", lora);
  EXPECT_TRUE(no_grad_forward(slot, x).equal(adapted));
  // A base of another shape is refused, naming the slot.
  const std::string message = testing::error_of([&] {
    slot.replace_base(std::make_shared<const DenseOperator>(randn({kOut, kIn + 1}, 14)));
  });
  EXPECT_NE(message.find("layer.o_proj"), std::string::npos) << message;
  EXPECT_THROW(slot.replace_base(nullptr), InvalidArgument);
}

TEST(LinearSlotTest, CompressedBaseCarriesAdaptersLikeADenseOne) {
  LinearSlot slot("layer.down_proj",
                  std::make_shared<const Factored>(randn({kOut, 4}, 15), randn({4, kIn}, 16)));
  auto lora = std::make_shared<const ScaledLowRank>(2, 1.0, 17);
  slot.add_adapter("l", lora);
  const at::Tensor x = randn({2, 3, kIn}, 18);
  const at::Tensor expected = base_oracle(slot.base(), x) + at::matmul(x.to(at::kDouble), lora->weight().t());
  EXPECT_LT(max_abs_diff(no_grad_forward(slot, x), expected), 1e-4);
  EXPECT_EQ(slot.base().kind(), "test_factored");
}

// Restores the gathered kernel's threshold on scope exit.
struct GatherThreshold {
  int64_t saved = ops::lora_gather_max_tokens();
  explicit GatherThreshold(int64_t tokens) { ops::set_lora_gather_max_tokens(tokens); }
  ~GatherThreshold() { ops::set_lora_gather_max_tokens(saved); }
};

TEST(LinearSlotTest, RoutedRowsEqualSeparateForwardsWithTheirAdapterAlone) {
  LinearSlot slot("layer.q_proj", dense_base(19));
  const std::vector<std::pair<std::string, std::shared_ptr<const Adapter>>> adapters = {
      {"r1", std::make_shared<const ScaledLowRank>(1, 0.5, 20)},
      {"r3", std::make_shared<const ScaledLowRank>(3, 2.0, 21)},
      {"nonlinear", std::make_shared<const Nonlinear>(22)},
      {"unused", std::make_shared<const ScaledLowRank>(2, 1.0, 23)}};
  for (const auto& [name, a] : adapters) slot.add_adapter(name, a);
  AdapterRouting routing;
  routing.adapters = {"r1", "r3", "nonlinear", "absent"};  // "absent": held by no slot here
  // A two-row run of r3 (one segment), single rows, a base-only row, an adapter this slot lacks.
  routing.row_adapter = {1, 1, 0, -1, 2, 0, 3, 1};
  const int64_t rows = static_cast<int64_t>(routing.row_adapter.size());
  // Each row alone, with only its adapter attached (none for -1 and "absent").
  auto alone = [&](const at::Tensor& x, int64_t b) {
    LinearSlot single("layer.q_proj", slot.base_ptr());
    const int64_t a = routing.row_adapter[static_cast<size_t>(b)];
    if (a >= 0 && a < 3) single.add_adapter("only", adapters[static_cast<size_t>(a)].second);
    return no_grad_forward(single, x.slice(0, b, b + 1));
  };
  // 5 tokens per row: segments take the GEMM pair; 1 token with the gathered kernel on, and off.
  for (const auto& [tokens, gather] : std::vector<std::pair<int64_t, int64_t>>{{5, 4}, {1, 4}, {1, 0}}) {
    SCOPED_TRACE("tokens " + std::to_string(tokens) + ", gather " + std::to_string(gather));
    const GatherThreshold threshold(gather);
    const at::Tensor x = randn({rows, tokens, kIn}, 24);
    const at::Tensor mixed = no_grad_forward(slot, x, &routing);
    const at::Tensor recorded = slot.forward(x, &routing);  // the gradient path gathers every adapter
    for (int64_t b = 0; b < rows; ++b) {
      const at::Tensor want = alone(x, b);
      EXPECT_LT(max_abs_diff(mixed.slice(0, b, b + 1), want), 1e-5) << "row " << b;
      EXPECT_LT(max_abs_diff(recorded.slice(0, b, b + 1), want), 1e-5) << "row " << b;
    }
  }
  AdapterRouting short_routing = routing;
  short_routing.row_adapter.pop_back();
  EXPECT_THROW(no_grad_forward(slot, randn({rows, 1, kIn}, 25), &short_routing), InvalidArgument);
}

TEST(LinearSlotTest, SlotsSharingAnInputComputeWhatEachComputesAlone) {
  LinearSlot q("layer.q_proj", dense_base(26)), k("layer.k_proj", dense_base(27)),
      v("layer.v_proj", dense_base(28));
  q.add_adapter("a", std::make_shared<const ScaledLowRank>(2, 1.0, 29));
  v.add_adapter("a", std::make_shared<const ScaledLowRank>(3, 0.5, 30));
  v.add_adapter("b", std::make_shared<const Nonlinear>(31));
  const std::vector<const LinearSlot*> slots{&q, &k, &v};
  AdapterRouting routing;
  routing.adapters = {"a", "b"};
  routing.row_adapter = {0, 1, -1, 0};
  for (const int64_t rows : {4, 64}) {  // 64 rows: the first products of q and v are one GEMM
    const at::Tensor x = randn({rows, 2, kIn}, 32);
    c10::InferenceMode guard;
    const std::vector<at::Tensor> together = LinearSlot::forward_shared_input(slots, x);
    for (size_t i = 0; i < slots.size(); ++i)
      EXPECT_LT(max_abs_diff(together[i], slots[i]->forward(x)), 1e-5) << slots[i]->name();
  }
  const at::Tensor x = randn({4, 2, kIn}, 33);
  c10::InferenceMode guard;
  const std::vector<at::Tensor> routed = LinearSlot::forward_shared_input(slots, x, &routing);
  for (size_t i = 0; i < slots.size(); ++i)
    EXPECT_LT(max_abs_diff(routed[i], slots[i]->forward(x, &routing)), 1e-5) << slots[i]->name();
}

}  // namespace
}  // namespace lowrank::nn
