// A batch whose rows use different adapters (ForwardOptions::routing) gives each row the logits
// it gets alone with only its adapter attached.
#include <gtest/gtest.h>

#include "lowrank/adapt/model_adapters.h"
#include "tests/testing.h"

namespace lowrank::adapt {
namespace {

AdapterConfig lora(int64_t r, const std::string& method = "lora") {
  AdapterConfig c;
  c.method = method;
  c.r = r;
  c.lora_alpha = 2.0 * static_cast<double>(r);
  c.target_regex = "all-linear";
  return c;
}

void randomize(const AttachedAdapter& a, uint64_t seed) {
  at::Generator gen = at::detail::createCPUGenerator(seed);
  at::NoGradGuard g;
  for (auto& [n, t] : a.parameters()) t.add_(at::randn(t.sizes(), gen) * 0.2);
}

TEST(RoutingTest, EachRowMatchesItsAdapterAlone) {
  nn::Model model = testing::tiny_llama({}, 1);
  const std::vector<std::pair<std::string, AdapterConfig>> specs = {
      {"r2", lora(2)}, {"r4", lora(4)}, {"r8", lora(8)}, {"dora", lora(4, "dora")}};
  std::vector<AttachedAdapter> adapters;
  for (size_t i = 0; i < specs.size(); ++i) {
    adapters.push_back(create_adapter(model, specs[i].first, specs[i].second, i));
    randomize(adapters.back(), 100 + i);
  }
  const at::Tensor all_ids = at::arange(6 * 7, at::kLong).reshape({6, 7}) * 5 % 24;
  nn::AdapterRouting routing;
  for (const auto& [name, c] : specs) routing.adapters.push_back(name);
  // Rows 0-1 form a run of one adapter (one segment), the others runs of one row.
  routing.row_adapter = {2, 2, -1, 0, 3, 1};
  nn::ForwardOptions options;
  options.routing = &routing;
  // 7 tokens per row: every segment takes the GEMM pair; 2 tokens: the two-row run (4 tokens) and
  // the single rows take the gathered kernel (ops/lora_gather.h); 1 token (decode): all gathered.
  for (const int64_t seq : {7, 2, 1}) {
    const at::Tensor ids = all_ids.slice(1, 0, seq);
    at::Tensor mixed;
    {
      c10::InferenceMode g;
      mixed = model.forward(ids, options);
    }
    for (int64_t b = 0; b < ids.size(0); ++b) {
      const int64_t a = routing.row_adapter[static_cast<size_t>(b)];
      // Alone: only row b's adapter enabled (the others detached and re-attached).
      for (size_t i = 0; i < adapters.size(); ++i)
        if (static_cast<int64_t>(i) != a) detach_adapter(model, adapters[i]);
      at::Tensor alone;
      {
        c10::InferenceMode g;
        alone = model.forward(ids.slice(0, b, b + 1));
      }
      for (size_t i = 0; i < adapters.size(); ++i)
        if (static_cast<int64_t>(i) != a)
          for (const auto& [module, layer] : adapters[i].layers)
            model.slot(module).add_adapter(adapters[i].name, layer);
      EXPECT_LE(testing::max_abs_diff(mixed.slice(0, b, b + 1), alone), 1e-5)
          << "row " << b << ", " << seq << " tokens";
    }
    // While gradients are recorded every adapter gathers its rows instead of adding into runs in
    // place: the same result.
    EXPECT_LE(testing::max_abs_diff(model.forward(ids, options).detach(), mixed), 1e-5) << seq << " tokens";
  }
  // A routing's names are checked once, where a request is admitted (the serving scheduler refuses
  // an adapter it has not registered: EngineTest), not by Model::forward at every step.
}

// Slots that read one input (q, k, v) computed together, with their first low-rank products in
// one GEMM, give what each slot gives alone: with and without gradients, with adapters on some
// of the slots only (k has none here), with a non-fusable adapter (DoRA) beside fused ones, and
// per row under a routing.
TEST(RoutingTest, SharedInputSlotsMatchOneByOne) {
  nn::Model model = testing::tiny_llama({}, 2);
  AdapterConfig qv = lora(4);
  qv.target_regex.reset();
  qv.target_modules = {"q_proj", "v_proj"};
  AdapterConfig dora = lora(2, "dora");
  dora.target_regex.reset();
  dora.target_modules = {"v_proj"};
  randomize(create_adapter(model, "qv", qv, 1), 7);
  randomize(create_adapter(model, "second", lora(8), 2), 8);
  randomize(create_adapter(model, "dora", dora, 3), 9);
  const nn::LinearSlot* slots[] = {&model.slot("model.layers.0.self_attn.q_proj"),
                                   &model.slot("model.layers.0.self_attn.k_proj"),
                                   &model.slot("model.layers.0.self_attn.v_proj")};
  const at::Tensor x = at::randn({3, 5, slots[0]->in_features()}, at::detail::createCPUGenerator(4));
  nn::AdapterRouting routing;
  routing.adapters = {"qv", "second", "dora"};
  routing.row_adapter = {1, 0, 2};
  const nn::AdapterRouting* const routings[] = {nullptr, &routing};
  for (const nn::AdapterRouting* r : routings) {
    for (const bool grad : {false, true}) {
      const at::AutoGradMode mode(grad);
      const std::vector<at::Tensor> together = nn::LinearSlot::forward_shared_input(slots, x, r);
      ASSERT_EQ(together.size(), 3u);
      for (size_t i = 0; i < 3; ++i)
        EXPECT_LE(testing::max_abs_diff(together[i].detach(), slots[i]->forward(x, r).detach()), 1e-6)
            << slots[i]->name() << (r ? " routed" : "") << (grad ? " with gradients" : "");
    }
  }
  // Against the base alone, so that the comparison above cannot pass by dropping every adapter.
  const at::NoGradGuard no_grad;
  EXPECT_GT(
      testing::max_abs_diff(nn::LinearSlot::forward_shared_input(slots, x)[0], slots[0]->base().forward(x)),
      1e-3);
}

}  // namespace
}  // namespace lowrank::adapt
