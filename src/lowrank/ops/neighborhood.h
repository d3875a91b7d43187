// Neighborhood attention (NA) in one and two dimensions: each query attends to the k (k_h × k_w)
// keys around it instead of to all of them (Hassani et al., 2023, "Neighborhood Attention
// Transformer", arXiv:2204.07143; dilation: Hassani & Shi, 2022, "Dilated Neighborhood Attention
// Transformer", arXiv:2209.15001; the tiled kernel: Hassani et al., 2024, "Faster Neighborhood
// Attention", arXiv:2403.04690):
//   y_i = Σ_{j ∈ ρ(i)} softmax_j( q_i·k_j · scale + b[(j − i)/d + k − 1] ) v_j
// per axis, with ρ(i) NATTEN's neighborhood (SHI-Labs/NATTEN,
// csrc/include/natten/cpu/naive/natten_cpu_commons.h, get_window_start / get_window_end):
//   - dilation d splits an axis into d interleaved groups (p = i mod d); NA runs inside each group,
//     on group coordinates i' = i div d over the group's length L_p = ⌈(L − p)/d⌉;
//   - not causal: the k consecutive group positions centred on i' (ns = ⌊k/2⌋), slid inward at the
//     borders so that every query sees exactly k keys (clamped, never zero-padded):
//       s' = max(i' − ns, 0) + [i' + ns ≥ L_p] · (L_p − i' − ns − 1);
//     this needs L_p ≥ k in every group, i.e. L ≥ k·d (checked, naming the axis);
//   - causal: the group positions i' − k + 1 … i' that exist (fewer than k near the start), so a
//     causal axis needs no minimum length;
//   - in 2-D the neighborhood is the Cartesian product of the two axes' neighborhoods;
//   - the relative position bias b (NAT's RPB) is a table of 2k − 1 entries per axis and head,
//     indexed by the offset in group coordinates; NATTEN's get_pb_start is that offset for every
//     window its rule produces.
// Deviations: NATTEN refuses RPB together with causal masking; here a causal axis indexes the same
// table (offsets −(k−1) … 0 use its first k entries). Even kernel sizes (NATTEN ≥ 0.20) are not
// supported: k must be odd, as in NATTEN's naive CPU kernels (k = 1, which NATTEN's modules refuse, is
// allowed: each query sees itself only).
//
// Two kernels compute the same thing:
//   - naive (neighborhood_cpu.cpp): the gather reference. It builds each query's key indices,
//     gathers K and V into [.., N, k, D], and applies softmax there; ATen ops only, so it runs on
//     any device and autograd differentiates it;
//   - tiled (neighborhood_tiled.cpp): Fused NA on the CPU. Per query tile (in group coordinates),
//     the union of its queries' windows is one "haloed" KV tile; it is walked in KV sub-tiles,
//     each a small GEMM Q·Kᵀ, then the NA mask (window per axis, causal) and bias, an online
//     softmax, and P·V accumulated: the attention weights are never stored. Forward only, float32
//     and float64 on the CPU; training (grad mode with an input that requires grad) takes the
//     naive path, whose backward autograd derives.
#pragma once

#include <cstdint>
#include <vector>

#include <ATen/ATen.h>

namespace lowrank::ops {

// One axis of a neighborhood.
struct NeighborhoodAxis {
  int64_t kernel = 1;  // odd, >= 1
  int64_t dilation = 1;
  bool causal = false;
};

// A query's window on one axis: keys at p + d·(start + t), t = 0 … count − 1, where p = i mod d
// (all in original coordinates: first = p + d·start, step = d).
struct NeighborhoodWindow {
  int64_t first = 0;
  int64_t count = 0;
};

// NATTEN's window of query `index` on an axis of `length` (see the header).
NeighborhoodWindow neighborhood_window(int64_t index, int64_t length, const NeighborhoodAxis& axis);

// Refuses a bad axis (kernel even or < 1, dilation < 1) or one too long for its length (not causal
// and kernel·dilation > length), naming `what` (e.g. "sequence length", "grid height").
void check_neighborhood_axis(const NeighborhoodAxis& axis, int64_t length, const char* what);

enum class NeighborhoodKernel {
  kAuto,  // tiled when it applies (CPU, float32/64, no gradient needed), naive otherwise
  kNaive,
  kTiled,
};

// q, k, v: [B, heads, L, D] (1-D, axes.size() == 1) or [B, heads, H, W, D] (2-D, two axes, the
// first for H); bias: undefined (none) or [heads, 2k − 1] / [heads, 2k_h − 1, 2k_w − 1].
// Returns [B, heads, (spatial...), D] in q's dtype.
at::Tensor neighborhood_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                  const at::Tensor& bias, const std::vector<NeighborhoodAxis>& axes,
                                  double scale, NeighborhoodKernel kernel = NeighborhoodKernel::kAuto);

// The two kernels, for tests and benchmarks (inputs already checked; 2-D layout, a 1-D call has
// H = 1 and axes {kernel 1, dilation 1, not causal} first).
at::Tensor neighborhood_attention_naive(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                        const at::Tensor& bias, const NeighborhoodAxis& axis_h,
                                        const NeighborhoodAxis& axis_w, double scale);
at::Tensor neighborhood_attention_tiled(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                        const at::Tensor& bias, const NeighborhoodAxis& axis_h,
                                        const NeighborhoodAxis& axis_w, double scale);

}  // namespace lowrank::ops
