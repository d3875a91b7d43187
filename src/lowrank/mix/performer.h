// Performer attention, FAVOR+ (Choromanski, Likhosherstov, Dohan, Song, Gane, Sarlos, Hawkins,
// Davis, Mohiuddin, Kaiser, Belanger, Colwell, Weller, 2021, "Rethinking Attention with
// Performers", arXiv:2009.14794): softmax attention through positive orthogonal random features,
//   φ(x) = m^{-1/2} (exp(W x̂ − ‖x̂‖²/2) + ε),  x̂ = x·d^{-1/4},  m = ⌊d ln d⌋ rows of W
//   y = D⁻¹ φ(Q)(φ(K)ᵀV),  D = diag(φ(Q)(φ(K)ᵀ1))
// with E[φ(q)·φ(k)] = exp(q·k/√d) at ε = 0; causal by prefix sums (Σ_{j≤i}), which also give the
// constant-memory decode state Σφ(k)vᵀ, Σφ(k). O(T·m·d) time.
//
// It is the low-rank half of Scatterbrain (scatterbrain.h), sharing its mixer and the features of
// feature_map.h, with the features and normalisation of lucidrains/performer-pytorch
// (performer_pytorch/performer_pytorch.py: `softmax_kernel` with ε = 1e-4 and its stabilisers,
// `gaussian_orthogonal_random_matrix` with scaling 0, `linear_attention`, and the causal
// `causal_linear_attention_noncuda` with 1e-6 added to the key prefix sums), which the tests
// reproduce from a fixture the library wrote. Deviations: the projection is drawn once from
// `feature_seed` and the layer (no `feature_redraw_interval`); in causal mode row i's key
// stabiliser is the maximum over keys j ≤ i rather than over the whole sequence (equal for the
// last row; see feature_map.h), so the forward is causal in value and step() equals it.
// Positions: none (performer-pytorch adds position embeddings outside the attention); option
// `rope: true` rotates q and k first.
#pragma once

#include "lowrank/nn/token_mixer.h"

namespace lowrank::mix {

void register_performer(nn::MixerRegistry& registry);

}  // namespace lowrank::mix
