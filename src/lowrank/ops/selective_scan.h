// The selective scan of Mamba (Gu & Dao, 2023, "Mamba: Linear-Time Sequence Modeling with Selective
// State Spaces", arXiv:2312.00752, Algorithm 2 and eqs. 2a-2b with the ZOH discretisation of eq. 4
// as the authors' kernel simplifies it, Ā = exp(ΔA), B̄ ≈ ΔB):
//   h_t[d, n] = exp(Δ_t[d] · A[d, n]) · h_{t−1}[d, n] + Δ_t[d] · B_t[n] · u_t[d]      (h_{−1} = h₀)
//   y_t[d]    = Σ_n C_t[n] · h_t[d, n]  (+ D[d] · u_t[d])  (· SiLU(z_t[d]))
// with Δ = softplus(Δ_raw + Δ_bias) when asked. A is per channel (not input-dependent); Δ, B, C
// vary with the position ("selective"); B and C are shared by all channels of a position.
// Code followed: state-spaces/mamba, mamba_ssm/ops/selective_scan_interface.py (selective_scan_ref:
// the float reference of the fused kernel, and the order of D, z, delta_bias, delta_softplus), and
// transformers' models/mamba/modeling_mamba.py (mamba_selective_scan, the pure-PyTorch path).
//
// Layout here is position-major, u/Δ [batch, L, D] and B/C [batch, L, N] (what a linear projection
// of [batch, L, hidden] gives, so the mixer transposes nothing); the authors' is channel-major
// (b, d, l) / (b, n, l). States are [batch, D, N].
//
// Two paths compute the core recurrence (h and y without D and z):
//   - the CPU kernel (selective_scan_cpu.cpp): float32 / float64 loops in parallel over (row,
//     channel block), with the state of a block in a small local buffer (float32 steps with N a
//     multiple of 8 in AVX2 + FMA, selective_scan_avx2.cpp); its backward is written
//     by hand and keeps no per-position state: forward saves the state at every `chunk`-th
//     position only, and backward recomputes the states of one chunk at a time from its checkpoint
//     and walks it in reverse (the recomputation of the authors' fused kernel, at chunk grain), so
//     training memory is O(batch·D·N·(L/chunk + chunk)) rather than O(batch·D·N·L);
//   - a composite of ATen ops (one step per position) for other devices, whose backward autograd
//     derives.
// Both are differentiable in u, Δ, A, B, C and the initial state. Half-precision inputs compute in
// float32 and return their own dtype.
#pragma once

#include <cstdint>

#include <ATen/ATen.h>

namespace lowrank::ops {

struct SelectiveScanOptions {
  at::Tensor D;           // [D] skip connection; undefined: none
  at::Tensor z;           // [batch, L, D] gate: y ⊙ SiLU(z); undefined: none
  at::Tensor delta_bias;  // [D] added to Δ before the softplus; undefined: none
  bool delta_softplus = false;
  at::Tensor initial_state;  // [batch, D, N] h₀; undefined: zeros
  // Positions between two saved states in the CPU backward (see the file comment); >= 1.
  int64_t chunk = 64;
};

struct SelectiveScanResult {
  at::Tensor y;           // [batch, L, D], u's dtype
  at::Tensor last_state;  // [batch, D, N] h_{L−1}, float32 (float64 for float64 inputs)
};

// The full scan as described above. Throws InvalidArgument naming the argument for a wrong shape,
// Unsupported for a non-floating dtype.
SelectiveScanResult selective_scan(const at::Tensor& u, const at::Tensor& delta, const at::Tensor& A,
                                   const at::Tensor& B, const at::Tensor& C,
                                   const SelectiveScanOptions& options = {});

// The core recurrence alone (Δ already discretised, no D, no z), on the CPU kernel: u, delta
// [batch, L, D], A [D, N], B, C [batch, L, N], h0 [batch, D, N], all float32 or all float64,
// contiguous, on the CPU. Returns y [batch, L, D] and the last state; differentiable (autograd
// Function with the hand-written backward).
SelectiveScanResult selective_scan_core_cpu(const at::Tensor& u, const at::Tensor& delta, const at::Tensor& A,
                                            const at::Tensor& B, const at::Tensor& C, const at::Tensor& h0,
                                            int64_t chunk);

// The same through ATen ops (any device; autograd's backward).
SelectiveScanResult selective_scan_core_composite(const at::Tensor& u, const at::Tensor& delta,
                                                  const at::Tensor& A, const at::Tensor& B,
                                                  const at::Tensor& C, const at::Tensor& h0);

// Whether the CPU kernel's float32 steps take the AVX2 + FMA path (selective_scan_avx2.cpp) for
// state size N: N a multiple of 8 on a CPU with AVX2 and FMA.
bool selective_scan_uses_avx2(int64_t state_size);

// One float32 position of the recurrence for `channels` channels (selective_scan_kernels.h's step
// contract: h ← exp(Δ A) h + Δ u B, y = C·h; y may be null), through the fastest step this CPU has
// for N: AVX-512 (N a multiple of 16), AVX2 + FMA (a multiple of 8), or the portable loop.
void selective_scan_step(int64_t channels, int64_t N, const float* delta, const float* u, const float* A,
                         const float* b_row, const float* c_row, float* h, float* y);

// The kernels behind selective_scan_core_cpu (selective_scan_cpu.cpp), without autograd.
// Forward: fills y and last_state, and `checkpoints` [batch, ⌈L/chunk⌉, D, N] (the state before
// positions 0, chunk, 2·chunk, ...) when it is defined.
void selective_scan_cpu_forward(const at::Tensor& u, const at::Tensor& delta, const at::Tensor& A,
                                const at::Tensor& B, const at::Tensor& C, const at::Tensor& h0, int64_t chunk,
                                at::Tensor& y, at::Tensor& last_state, at::Tensor& checkpoints);
struct SelectiveScanGrads {
  at::Tensor u, delta, A, B, C, h0;
};
// Backward from dL/dy `grad_y` and dL/dh_{L−1} `grad_last` (undefined: zero).
SelectiveScanGrads selective_scan_cpu_backward(const at::Tensor& u, const at::Tensor& delta,
                                               const at::Tensor& A, const at::Tensor& B, const at::Tensor& C,
                                               const at::Tensor& checkpoints, int64_t chunk,
                                               const at::Tensor& grad_y, const at::Tensor& grad_last);

}  // namespace lowrank::ops
