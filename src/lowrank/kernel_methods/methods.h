// The kernel family's registrations, one function per method file, called in order by
// register_builtin_methods (estimator.cpp's registry()).
#pragma once

#include "lowrank/kernel_methods/estimator.h"

namespace lowrank::kernel_methods {

void register_rf_ridge(Registry<EstimatorMethod>& registry);        // rf_ridge.cpp
void register_kde(Registry<EstimatorMethod>& registry);             // kde.cpp
void register_quantum_kernel(Registry<EstimatorMethod>& registry);  // quantum_kernel.cpp
void register_mcr2(Registry<EstimatorMethod>& registry);            // mcr2.cpp
void register_rkme(Registry<EstimatorMethod>& registry);            // rkme.cpp
void register_loki(Registry<EstimatorMethod>& registry);            // loki.cpp
void register_ntk(Registry<EstimatorMethod>& registry);             // ntk.cpp
void register_cnn_kernel(Registry<EstimatorMethod>& registry);      // cnn_kernel.cpp
void register_dpp_sampling(Registry<EstimatorMethod>& registry);    // dpp_sampling.cpp
void register_gcr(Registry<EstimatorMethod>& registry);             // gcr.cpp
void register_molrg(Registry<EstimatorMethod>& registry);           // molrg.cpp

void register_hierarchical_poly(Registry<EstimatorMethod>& registry);    // hierarchical_poly.cpp
void register_singular_likelihood(Registry<EstimatorMethod>& registry);  // singular_likelihood.cpp
void register_gkcl(Registry<EstimatorMethod>& registry);                 // gkcl.cpp
void register_dp_similarity(Registry<EstimatorMethod>& registry);        // dp_similarity.cpp
void register_snnk(Registry<EstimatorMethod>& registry);                 // snnk.cpp
void register_funbat(Registry<EstimatorMethod>& registry);               // funbat.cpp
void register_dkm(Registry<EstimatorMethod>& registry);                  // dkm.cpp

void register_builtin_methods(Registry<EstimatorMethod>& registry);

}  // namespace lowrank::kernel_methods
