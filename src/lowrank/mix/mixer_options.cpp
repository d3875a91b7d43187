// Option-key checks and name-seeded initial values of mix/'s mixers; see mixer_options.h.
#include "lowrank/mix/mixer_options.h"

#include <ATen/CPUGeneratorImpl.h>

#include <algorithm>
#include <cstdint>

#include "lowrank/core/error.h"
#include "lowrank/core/random.h"

namespace lowrank::mix {

void check_option_keys(const std::string& mixer, const Json& options, const OptionHelp& known) {
  LR_CHECK(options.is_object(), InvalidArgument, "mixer ", mixer, ": options must be a JSON object, got ",
           options.dump());
  std::string names;
  for (const auto& [k, _] : known) names += (names.empty() ? "" : ", ") + k;
  for (const auto& [key, _] : options.items()) {
    const bool ok = std::any_of(known.begin(), known.end(), [&](const auto& o) { return o.first == key; });
    LR_CHECK(ok, InvalidArgument, "mixer ", mixer, ": unknown option \"", key, "\" (known: ", names, ")");
  }
}

at::Tensor uniform_by_name(const std::string& name, at::IntArrayRef shape, double bound) {
  // FNV-1a: a hash that is the same on every platform and run (std::hash is not).
  uint64_t h = 1469598103934665603ull;
  for (const unsigned char c : name) h = (h ^ c) * 1099511628211ull;
  at::Generator gen = at::detail::createCPUGenerator(splitmix64(h));
  at::Tensor t = at::empty(shape, at::TensorOptions().dtype(at::kFloat));
  t.uniform_(-bound, bound, gen);
  return t;
}

}  // namespace lowrank::mix
