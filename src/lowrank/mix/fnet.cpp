// FNet's Fourier token mixing; see fnet.h.
#include "lowrank/mix/fnet.h"

#include "lowrank/core/error.h"

namespace lowrank::mix {

at::Tensor fnet_mix(const at::Tensor& x) {
  LR_CHECK(x.dim() == 3, InvalidArgument, "fnet: input must be [B, T, hidden], got ", x.sizes());
  const bool low_precision = x.scalar_type() != at::kFloat && x.scalar_type() != at::kDouble;
  const at::Tensor in = low_precision ? x.to(at::kFloat) : x;
  const at::Tensor y = at::real(at::fft_fft(at::fft_fft(in, std::nullopt, -1), std::nullopt, 1));
  return low_precision ? y.to(x.scalar_type()) : y;
}

FNetMixer::FNetMixer(const nn::MixerSpec& spec) {
  LR_CHECK(spec.options.is_object() && spec.options.empty(), InvalidArgument, "fnet: takes no options, got ",
           spec.options.dump(), " (known: none)");
}

at::Tensor FNetMixer::forward(const at::Tensor& x, const nn::MixerContext&) const {
  return fnet_mix(x);
}

void register_fnet(nn::MixerRegistry& registry) {
  registry.add({"fnet",
                "FNet: the real part of a 2-D DFT over the sequence and hidden axes; no parameters, "
                "bidirectional",
                "Lee-Thorp et al., 2022, arXiv:2105.03824",
                {}},
               [](const nn::MixerSpec& spec) -> std::unique_ptr<nn::TokenMixer> {
                 return std::make_unique<FNetMixer>(spec);
               });
}

}  // namespace lowrank::mix
