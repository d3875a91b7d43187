// FNet's token mixer (Lee-Thorp et al., 2022, "FNet: Mixing Tokens with Fourier Transforms",
// arXiv:2105.03824, eq. 3): a 1-D DFT along the hidden dimension, then one along the sequence,
// and the real part:
//   Y = ℜ( F_T · X · F_H ),   (F_n)_{jk} = e^{−2πi·jk/n}
// No parameters and no projection: the mixer is the Fourier transform alone. It is the speed
// baseline PoNet reports against. Bidirectional (every output sees every input).
// Code followed: the FNet baseline PoNet benchmarks against, lxchtan/PoNet
// examples/LRA/code/attention_fnet.py (the hidden axis first, then the sequence axis, real part;
// the attention block's output projection replaced by the identity).
// Deviations: padding (MixerContext::valid) is ignored, as there; half-precision inputs are
// transformed in float32.
#pragma once

#include "lowrank/nn/token_mixer.h"

namespace lowrank::mix {

// Y = ℜ FFT_seq(FFT_hidden X) of x [B, T, H], in x's dtype.
at::Tensor fnet_mix(const at::Tensor& x);

class FNetMixer final : public nn::TokenMixer {
 public:
  explicit FNetMixer(const nn::MixerSpec& spec);
  std::string name() const override { return "fnet"; }
  at::Tensor forward(const at::Tensor& x, const nn::MixerContext& context) const override;
  bool causal() const override { return false; }
  std::vector<nn::LinearSlot*> slots() override { return {}; }
  using TokenMixer::slots;
};

// Registers "fnet" (no options).
void register_fnet(nn::MixerRegistry& registry);

}  // namespace lowrank::mix
