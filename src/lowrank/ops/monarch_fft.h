// The FFT as a Monarch product (FlashButterfly: Fu et al., 2023, "Simple Hardware-Efficient Long
// Convolutions for Sequence Modeling", arXiv:2302.06646, §3.3; FlashFFTConv: Fu et al., 2023,
// arXiv:2311.05908, §3.1). For N = N1·N2, the Cooley–Tukey identity writes the N-point DFT
//   X[k1 + N1·k2] = Σ_{n2} ω_{N2}^{n2·k2} · ω_N^{n2·k1} · Σ_{n1} ω_{N1}^{n1·k1} · x[n1·N2 + n2],
//   ω_n = e^{−2πi/n},
// that is, FFT_N = P_out · (I_{N1} ⊗ F_{N2}) · T · (F_{N1} ⊗ I_{N2}) · P_in:
//   1. permute: view x as the N1 × N2 matrix A[n1, n2] = x[n1·N2 + n2];
//   2. N2 dense DFTs of size N1 (down the columns): B = F_{N1} · A;
//   3. twiddle: B[k1, n2] ·= ω_N^{k1·n2};
//   4. N1 DFTs of size N2 (along the rows): C = B · F_{N2};
//   5. permute: X[k1 + N1·k2] = C[k1, k2] (read C transposed).
// Steps 2 and 4 are batched GEMMs (a real input makes step 2 one real GEMM against [Re F; Im F]),
// so the transform runs on matrix units, and FFT_N costs O(N·(N1 + N2)) instead of O(N log N).
// The factors F_{N1}, F_{N2} may be replaced by learned matrices (the learned variant of
// FlashButterfly), see MonarchFactors. The fixed transform (monarch_fft(x, n)) builds its DFT
// matrices and twiddles once per size, dtype and device and reuses them.
// Code followed: HazyResearch/safari src/models/sequence/block_fft.py (_cooley_tukey: reshape to
// (m, n), m-point DFTs as a dense einsum, twiddle, n-point DFTs; the learnable dft matrices of
// BlockFFT initialised at the DFT) and HazyResearch/flash-fft-conv (the order-2 Monarch
// decomposition of its monarch_cuda kernels, N = N1·N2 with both factors dense).
// Deviation: safari recurses with blocks of at most 16 (tensor-core tiles); this is the order-2
// form with the balanced split below (no recursion), which is what a CPU GEMM prefers.
//
// Supported N: N = N1·N2 where N1 is the largest divisor of N not above √N, N1 ≥ 2 (N composite)
// and N2 ≤ kMonarchMaxBlock (4096). Every power of two from 4 to 2^24, and every composite N up
// to 2^24 without a prime factor above 4096 whose balanced split stays under the bound. A prime N
// (or one whose split needs a factor above 4096) is refused naming N (monarch_split).
#pragma once

#include <cstdint>
#include <utility>

#include <ATen/ATen.h>

namespace lowrank::ops {

inline constexpr int64_t kMonarchMaxBlock = 4096;

// The split (N1, N2) the Monarch FFT uses for N; throws InvalidArgument naming N when N is not
// supported (see above).
std::pair<int64_t, int64_t> monarch_split(int64_t n);
bool monarch_supported(int64_t n);
// The smallest power of two ≥ n (the FFT size the Monarch convolutions pad to).
int64_t next_power_of_two(int64_t n);

// F_n[j, k] = ω_n^{j·k}, [n, n] complex of `dtype` (kComplexFloat or kComplexDouble).
at::Tensor dft_matrix(int64_t n, at::ScalarType dtype, at::Device device = at::kCPU);

// The two dense factors of one Monarch FFT, [N1, N1] and [N2, N2] complex. At the DFT they give
// FFT_N exactly; the learned variant trains them (the twiddle and permutations stay fixed).
struct MonarchFactors {
  at::Tensor f1;
  at::Tensor f2;
  int64_t size() const { return f1.size(0) * f2.size(0); }
  // The DFT factors of N (monarch_split's N1, N2).
  static MonarchFactors dft(int64_t n, at::ScalarType dtype, at::Device device = at::kCPU);
};

// FFT_N of x [..., L] along the last axis, zero-padded or truncated to N as at::fft_fft(x, N):
// complex [..., N] (complex64 for float32 and lower, complex128 for float64). Throws naming N
// when N is not supported.
at::Tensor monarch_fft(const at::Tensor& x, int64_t n);
// The same product with the given factors (N = factors.size()); differentiable in x and in the
// factors.
at::Tensor monarch_fft(const at::Tensor& x, const MonarchFactors& factors);
// The inverse DFT of complex x [..., N] through the same factorisation: conj(FFT_N(conj x)) / N.
at::Tensor monarch_ifft(const at::Tensor& x, int64_t n);

}  // namespace lowrank::ops
