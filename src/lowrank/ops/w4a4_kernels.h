// Kernel entry points of ops/w4a4_gemm (internal: shared by w4a4_gemm.cpp, w4a4_gemm_cpu.cpp,
// w4a4_gemm_avx2.cpp and the tests). No ATen include: w4a4_gemm_avx2.cpp is compiled with -mavx2
// and without the precompiled header, so it must see only plain C++ types here.
//
// Activations, per input row m and group k of g consecutive input features (i in group k):
//   x̂_i   = x_i · inv_smooth_i                     (inv_smooth = 1/λ; all ones without smoothing)
//   s_mk  = max_{i in k} |x̂_i| / 7                 (float32; 0 for an all-zero group)
//   a_mi  = clamp(round_half_even(x̂_i / s_mk), −8, 7)   (0 when s_mk = 0)
//   t_mk  = Σ_{i in k} a_mi                        (kept for the weight offset below)
// and, fused into the same pass over x (nunchaku's quantize_w4a4_act_fuse_lora), the low-rank
// branch's down projection h_mj = Σ_i x̂_i L2[j, i] in float32.
//
// The product, per output feature o (weights q_oi = u_oi − 8 with the stored nibble u in [0, 15],
// scales w_ok, ops/group_quant.h):
//   y_mo = bias_o + Σ_k s_mk w_ok (Σ_{i in k} u_oi a_mi − 8 t_mk)
// The inner sums are exact int32 dot products (|u a| ≤ 120, at most g terms); only the per-group
// scaling and the sum over groups are float32. The unsigned nibble u is what x86's u8 × s8
// instructions (maddubs, vpdpbusd) need on their first operand; the −8 t_mk term turns it back
// into the signed weight.
#pragma once

#include <cstdint>

#include "lowrank/ops/group_quant_kernels.h"

namespace lowrank::ops::detail {

// Raw view of a row-major [rows, in] block of quantised activations.
struct Int4ActivationView {
  int64_t rows = 0, in_features = 0, group_size = 64;
  const int8_t* values = nullptr;       // a [rows, in], each in [−8, 7]
  const float* scales = nullptr;        // s [rows, in / group_size]
  const int32_t* group_sums = nullptr;  // t [rows, in / group_size]
};

// Quantises rows [row_begin, row_end) of x [rows, in] as above into values/scales/group_sums
// (same row indexing). inv_smooth: [in] or nullptr (no smoothing). With lora_down [rank, in]
// (row-major) also writes h [rows, rank]; rank 0 / nullptr skips it. Portable (w4a4_gemm_cpu.cpp).
void w4a4_quantize_rows_cpu(const float* x, int64_t in, int64_t group_size, const float* inv_smooth,
                            const float* lora_down, int64_t rank, int64_t row_begin, int64_t row_end,
                            int8_t* values, float* scales, int32_t* group_sums, float* h);
// The AVX2 twin (w4a4_gemm_avx2.cpp), same contract; needs group_size % 8 == 0.
void w4a4_quantize_rows_avx2(const float* x, int64_t in, int64_t group_size, const float* inv_smooth,
                             const float* lora_down, int64_t rank, int64_t row_begin, int64_t row_end,
                             int8_t* values, float* scales, int32_t* group_sums, float* h);

// y[m, o] for m in [0, a.rows), o in [out_begin, out_end) (y is [rows, out] row-major); bias [out]
// or nullptr. w must be 4-bit with w.group_size == a.group_size. Portable (w4a4_gemm_cpu.cpp).
void w4a4_gemm_rows_cpu(const GroupQuantView& w, const Int4ActivationView& a, const float* bias,
                        int64_t out_begin, int64_t out_end, float* y);
// The AVX2 twin: u8 × s8 products by vpmaddubsw (pairs summed to int16, |sum| ≤ 240, no
// saturation) and vpmaddwd against ones (int32). Needs group_size % 64 == 0.
void w4a4_gemm_rows_avx2(const GroupQuantView& w, const Int4ActivationView& a, const float* bias,
                         int64_t out_begin, int64_t out_end, float* y);
// The AVX-VNNI twin: vpdpbusd does the u8 × s8 four-term dot and the int32 accumulation in one
// instruction. Same contract as the AVX2 one.
void w4a4_gemm_rows_avxvnni(const GroupQuantView& w, const Int4ActivationView& a, const float* bias,
                            int64_t out_begin, int64_t out_end, float* y);

// Which kernels this build and CPU can run.
bool w4a4_avx2_compiled();      // AVX2 kernels compiled in and the CPU has AVX2 + FMA
bool w4a4_avxvnni_available();  // and the CPU also has AVX-VNNI

enum class W4A4Kernel {
  kAuto,      // AVX-VNNI, else AVX2 when usable for the group size, else portable
  kPortable,  // w4a4_*_cpu
  kAvx2,      // w4a4_gemm_rows_avx2 (Unsupported when not usable)
  kAvxVnni,   // w4a4_gemm_rows_avxvnni (Unsupported when not usable)
};

}  // namespace lowrank::ops::detail
