// Causal FFT convolution; see fft_conv.h.
#include "lowrank/ops/fft_conv.h"

#include "lowrank/core/error.h"

namespace lowrank::ops {

at::Tensor fft_causal_conv(const at::Tensor& u, const at::Tensor& k) {
  LR_CHECK(u.dim() == 3 && k.dim() == 2 && k.size(0) == u.size(1) && k.size(1) >= 1, InvalidArgument,
           "fft_causal_conv: u must be [B, H, L] and k [H, L_k], got ", u.sizes(), " and ", k.sizes());
  const int64_t L = u.size(2), n = L + k.size(1);
  const bool reduced = u.scalar_type() != at::kFloat && u.scalar_type() != at::kDouble;
  const at::ScalarType work = reduced ? at::kFloat : u.scalar_type();
  const at::Tensor u_f = at::fft_rfft(u.to(work), n, -1);
  const at::Tensor k_f = at::fft_rfft(k.to(work), n, -1);
  const at::Tensor y = at::fft_irfft(u_f * k_f, n, -1).narrow(-1, 0, L);
  return reduced ? y.to(u.scalar_type()) : y;
}

}  // namespace lowrank::ops
