// Kernel entry points of the selective scan's CPU path (internal: shared by
// selective_scan_cpu.cpp, selective_scan_avx2.cpp and the tests). No ATen include:
// selective_scan_avx2.cpp is compiled with -mavx2 -mfma and without the precompiled header.
//
// One position of the recurrence for a block of channels (selective_scan.h):
//   h[d, n] ← exp(Δ[d] · A[d, n]) · h[d, n] + Δ[d] · u[d] · B[n],   y[d] = Σ_n C[n] · h[d, n]
// for d in [0, channels): delta, u and y point at the block's first channel of this position,
// A and h at the block's [channels, N] rows, b_row and c_row at the position's [N] vectors; y may
// be null (the backward's recomputation needs the states only).
#pragma once

#include <cstdint>

namespace lowrank::ops::detail {

// The portable loop (selective_scan_cpu.cpp), float32.
void selective_scan_step_portable(int64_t channels, int64_t N, const float* delta, const float* u,
                                  const float* A, const float* b_row, const float* c_row, float* h, float* y);

// The AVX2 + FMA twin (selective_scan_avx2.cpp), float32, for N a multiple of 8: eight states at
// once, exp by exp_avx2 below. Only call it when cpu_has_avx2_fma() (cpu_features.h).
void selective_scan_step_avx2(int64_t channels, int64_t N, const float* delta, const float* u, const float* A,
                              const float* b_row, const float* c_row, float* h, float* y);

// exp(x) of 8 float32 lanes as the AVX2 kernel computes it, written to out[0..8) (for the tests):
// Cody–Waite reduction x = k ln2 + r, |r| ≤ ln2 / 2, a degree-5 minimax polynomial for e^r (the
// Cephes expf coefficients), and 2^k built in the exponent bits; x is clamped to ±88.376.
// Relative error ≲ 2e-7 over the clamped range.
void exp_avx2(const float* x, float* out);

// The AVX-512 twin of the forward step (selective_scan_avx512.cpp), float32, for N a multiple of
// 16; only call it when selective_scan_avx512_usable(N): compiled in (x86-64 build), the CPU has
// AVX-512 F, and N % 16 == 0. exp_avx512 is its exp for 16 lanes (for the tests; exp_avx2's
// polynomial, 2^k by vscalefps).
void selective_scan_step_avx512(int64_t channels, int64_t N, const float* delta, const float* u,
                                const float* A, const float* b_row, const float* c_row, float* h, float* y);
bool selective_scan_avx512_usable(int64_t N);
void exp_avx512(const float* x, float* out);

// One channel of the backward at one position (selective_scan_cpu.cpp's backward_impl): with
// g = dL/dh_l on entry (N states), gh = g + gy·C, a = exp(Δ A):
//   dC += gy·h_l,  dA += gh·h_{l−1}·a·Δ,  dB += gh·Δ·u,  g ← gh·a   (dL/dh_{l−1} on return)
// and returns (Σ_n gh·Δ·B, Σ_n gh·h_{l−1}·a·A + gh·B·u) = (dL/du, dL/dΔ) of the position.
// N a multiple of 8; the portable form is the loop in backward_impl.
struct ScanBackwardSums {
  float du, ddelta;
};
ScanBackwardSums selective_scan_backward_channel_avx2(int64_t N, float delta, float u, float gy,
                                                      const float* a_row, const float* b_row,
                                                      const float* c_row, const float* h_prev,
                                                      const float* h_cur, float* g, float* dA, float* dB,
                                                      float* dC);

}  // namespace lowrank::ops::detail
