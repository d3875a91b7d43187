// The optimizer registry and its built-in methods; see methods.h.
#include "lowrank/optim/methods.h"

namespace lowrank::optim {

void register_builtin_methods(Registry<OptimizerMethod>& registry) {
  register_galore(registry);
  register_fira(registry);
  register_frugal(registry);
  register_dct_adamw(registry);
  register_gradnorm_lorp(registry);
}

const Registry<OptimizerMethod>& registry() {
  static const Registry<OptimizerMethod> instance =
      Registry<OptimizerMethod>::built("optim", register_builtin_methods);
  return instance;
}

LowRankConfig method_config(const std::string& method, const Json& options) {
  LowRankConfig base = registry().factory(method).defaults;
  base.method = method;
  return apply_options(std::move(base), options, "optimizer " + method);
}

LowRankAdam make_optimizer(const std::string& method, NamedTensors params, const Json& options) {
  return LowRankAdam(std::move(params), method_config(method, options));
}

}  // namespace lowrank::optim
