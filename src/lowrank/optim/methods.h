// The optimizer method registry (for `lowrank methods` and trainers): each low-rank method is a
// preset of LowRankConfig, registered by one function in its own file pair. Adding a method is a
// file pair under optim/ plus one line in register_builtin_methods (methods.cpp).
#pragma once

#include <string>

#include "lowrank/core/json.h"
#include "lowrank/core/registry.h"
#include "lowrank/optim/low_rank_adam.h"

namespace lowrank::optim {

struct OptimizerMethod {
  LowRankConfig defaults;  // the method's published defaults; options override them
};

// The optimizer methods (built-ins registered on first use). Thread-safe.
const Registry<OptimizerMethod>& registry();

void register_builtin_methods(Registry<OptimizerMethod>& registry);

// The configuration of registered `method` with `options` (a JSON object, see apply_options)
// applied. Throws NotFound for an unknown method, InvalidArgument for a bad option.
LowRankConfig method_config(const std::string& method, const Json& options = Json::object());

// A LowRankAdam for `method` over `params`.
LowRankAdam make_optimizer(const std::string& method, NamedTensors params,
                           const Json& options = Json::object());

void register_galore(Registry<OptimizerMethod>& registry);         // galore.cpp
void register_fira(Registry<OptimizerMethod>& registry);           // fira.cpp
void register_frugal(Registry<OptimizerMethod>& registry);         // frugal.cpp
void register_dct_adamw(Registry<OptimizerMethod>& registry);      // dct_adamw.cpp
void register_gradnorm_lorp(Registry<OptimizerMethod>& registry);  // gradnorm_lorp.cpp

}  // namespace lowrank::optim
