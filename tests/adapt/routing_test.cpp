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
  const at::Tensor ids = at::arange(6 * 7, at::kLong).reshape({6, 7}) * 5 % 24;
  nn::AdapterRouting routing;
  for (const auto& [name, c] : specs) routing.adapters.push_back(name);
  // Rows 0-1 form a run of one adapter (one segment), the others runs of one row.
  routing.row_adapter = {2, 2, -1, 0, 3, 1};
  nn::ForwardOptions options;
  options.routing = &routing;
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
    EXPECT_LE(testing::max_abs_diff(mixed.slice(0, b, b + 1), alone), 1e-5) << "row " << b;
  }
  // While gradients are recorded every adapter gathers its rows instead of adding into runs in
  // place: the same result.
  EXPECT_LE(testing::max_abs_diff(model.forward(ids, options).detach(), mixed), 1e-5);
  // A routing that names an adapter a slot lacks is an error naming it.
  routing.adapters[0] = "missing";
  EXPECT_NE(testing::error_of([&] { model.forward(ids, options); }).find("missing"), std::string::npos);
}

}  // namespace
}  // namespace lowrank::adapt
