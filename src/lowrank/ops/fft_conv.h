// Causal long convolution by FFT, the convolution of S4/S4D and the long-convolution mixers:
//   y[b, h, t] = Σ_{s ≤ t} k[h, t − s] · u[b, h, s]
// computed as irfft(rfft(u, n) · rfft(k, n), n)[..., :L] with n = L + L_k, long enough that the
// circular convolution has no wrap-around (state-spaces/s4, models/s4/s4d.py, S4D.forward, n = 2L).
// O(B·H·n log n) instead of O(B·H·L·L_k). Half-precision inputs are transformed in float32 (the CPU
// FFT has no half kernels) and the result cast back.
#pragma once

#include <ATen/ATen.h>

namespace lowrank::ops {

// u [B, H, L], k [H, L_k] (L_k ≥ 1; positions beyond L_k have weight 0) -> y [B, H, L].
// Differentiable in u and k.
at::Tensor fft_causal_conv(const at::Tensor& u, const at::Tensor& k);

}  // namespace lowrank::ops
