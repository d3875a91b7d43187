// Causal long convolution by FFT (the convolution of the long-convolution mixers: long_conv, SGConv,
// and the kernels of state-space models):
//   y[..., t] = Σ_{s=0}^{t} k[..., t − s] · u[..., s],   t < L,
// for an input u [..., L] and a kernel k [..., L'] whose leading axes broadcast (u [B, H, L] with
// k [H, L'], or u [B, 1, H, L] with k [C, H, L'] for C output channels). Both are zero-padded to
// N ≥ L' + L, so the circular convolution the DFT computes has no wrap-around, and the first L
// outputs are kept:
//   y = iFFT_N(FFT_N(u) ⊙ FFT_N(k))[..., :L].
// Implementations (FftConvImpl):
//   fft      at::fft_rfft / irfft at N = L' + L (any N);
//   monarch  the Monarch FFT of ops/monarch_fft.h at N = the next power of two ≥ L' + L, as
//            safari's BlockFFT pads; with learned factors (long_conv's learned_monarch) the
//            transforms of u and of k are the trained Monarch products and the inverse stays the
//            exact iDFT (the real part is kept), as safari's LongConv(block_fft_conv=True).
// The skip term D·u of the mixers is theirs (outside this op). direct_causal_conv is the O(L·L')
// reference the tests and the FFT-vs-direct benchmark compare against.
// Code followed: HazyResearch/safari src/models/sequence/long_conv.py (rfft(u, n=L'+L) ·
// rfft(k, n=L'+L), irfft, [..., :L]; block_fft_conv: block FFTs of u and k in complex64, ifft,
// real part).
#pragma once

#include <cstdint>
#include <string>

#include <ATen/ATen.h>

#include "lowrank/ops/monarch_fft.h"

namespace lowrank::ops {

enum class FftConvImpl { kFft, kMonarch };

// "fft" or "monarch"; anything else throws InvalidArgument naming `what` and the value.
FftConvImpl parse_fft_conv_impl(const std::string& value, const std::string& what);
std::string to_string(FftConvImpl impl);

// The FFT length `impl` uses for an input of L and a kernel of L' positions: L' + L for fft, the
// next power of two for monarch (throws naming N when it is above the Monarch bound).
int64_t fft_conv_size(int64_t input_length, int64_t kernel_length, FftConvImpl impl);

// y [..., L] (broadcast leading axes) in u's floating dtype; half-precision inputs are convolved in
// float32 and returned in their dtype. Differentiable in u and k.
at::Tensor fft_conv(const at::Tensor& u, const at::Tensor& k, FftConvImpl impl = FftConvImpl::kFft);

// The learned-Monarch convolution: Re iDFT_N(M_u(u) ⊙ M_k(k))[..., :L], with N = the factors'
// size (≥ L' + L). At DFT factors it equals fft_conv; trained factors need not keep it a
// convolution (nor causal).
at::Tensor monarch_conv(const at::Tensor& u, const at::Tensor& k, const MonarchFactors& u_factors,
                        const MonarchFactors& k_factors);

// The same causal convolution by its definition, O(L·L') multiply-adds (conv1d on the flipped
// kernel with L' − 1 zeros in front); the oracle of fft_conv and the direct side of the crossover.
at::Tensor direct_causal_conv(const at::Tensor& u, const at::Tensor& k);

}  // namespace lowrank::ops
