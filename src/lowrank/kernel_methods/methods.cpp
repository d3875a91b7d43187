#include "lowrank/kernel_methods/methods.h"

namespace lowrank::kernel_methods {

void register_builtin_methods(Registry<EstimatorMethod>& registry) {
  register_rf_ridge(registry);
  register_kde(registry);
  register_quantum_kernel(registry);
  register_mcr2(registry);
  register_rkme(registry);
  register_loki(registry);
  register_ntk(registry);
  register_cnn_kernel(registry);
  register_dpp_sampling(registry);
  register_gcr(registry);
  register_molrg(registry);
  register_hierarchical_poly(registry);
  register_singular_likelihood(registry);
  register_gkcl(registry);
  register_dp_similarity(registry);
  register_snnk(registry);
  register_funbat(registry);
  register_dkm(registry);
}

}  // namespace lowrank::kernel_methods
