// Local (sliding-window) attention: exact softmax attention restricted to a window of w keys,
//   y_i = Σ_{j∈Ω(i)} softmax_j(q_i·k_j/√d) v_j,
//   Ω(i) = (i − w, i] (causal, the last w keys) or [i − ⌊w/2⌋, i + ⌈w/2⌉) (bidirectional),
// the sparse half of Scatterbrain (scatterbrain.h, Chen et al., 2021, arXiv:2110.15343) and its
// "local" baseline; computed in blocks of w queries against their 3w-key neighbourhood, O(T·w·d).
// The window follows HazyResearch/fly src/models/attention/local_attention.py (`local_context`,
// centred) for the bidirectional case; the causal window is Mistral's trailing one. The decode
// state keeps the last w keys and values. Positions: none by default (as fly's module); option
// `rope: true` rotates q and k first. It shares Scatterbrain's mixer (KernelAttentionMixer).
#pragma once

#include "lowrank/nn/token_mixer.h"

namespace lowrank::mix {

void register_local_attention(nn::MixerRegistry& registry);

}  // namespace lowrank::mix
