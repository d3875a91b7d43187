// Kernel entry points of ops/group_quant (internal: shared by group_quant.cpp, group_quant_cpu.cpp,
// group_quant_avx2.cpp and the tests). No ATen include: group_quant_avx2.cpp is compiled with
// -mavx2 -mfma and without the precompiled header, so it must see only plain C++ types here.
//
// Every kernel computes, for the output features o in [out_begin, out_end) and the input rows
// r in [0, rows):
//   y[r, o] = bias[o] + sum_i x[r, i] * (s[o, i / g] * q[o, i])
// accumulating in float32 (activations stay float: W4A16-style). The portable kernel forms each
// s * q in float32 first, exactly as GroupQuantized::dequantize() does; the AVX2 kernel scales each
// group's partial sum instead (see its header). Both equal x · dequantize()ᵀ up to float rounding
// (summation order), which the tests bound at 1e-5 of max |y|.
#pragma once

#include <cstdint>

namespace lowrank::ops::detail {

// A raw, contiguous view of a GroupQuantized.
struct GroupQuantView {
  int bits = 4;
  int64_t group_size = 64;
  int64_t out_features = 0, in_features = 0;
  // bits 4: [out, in / 2] bytes; within each group of g inputs byte i (i < g / 2) holds q_i + 8 in
  // its low nibble and q_{i + g/2} + 8 in its high nibble. bits 8: [out, in] int8 q, reinterpreted.
  const uint8_t* packed = nullptr;
  const float* scales = nullptr;  // [out, in / group_size]
};

// The portable reference (group_quant_cpu.cpp). x: [rows, in] row-major; y: [rows, out] row-major
// (only the columns in [out_begin, out_end) are written); bias: [out] or nullptr. Thread-safe for
// disjoint output ranges.
void group_quant_gemv_rows_cpu(const GroupQuantView& w, const float* x, int64_t rows, const float* bias,
                               int64_t out_begin, int64_t out_end, float* y);

// Ŵ = s q for the output features [out_begin, out_end) into W [out, in] row-major float32 (exact:
// one float32 product per weight). Portable (group_quant_cpu.cpp); the compiler vectorises it.
void group_quant_dequantize_rows_cpu(const GroupQuantView& w, int64_t out_begin, int64_t out_end, float* W);

// The AVX2 + FMA twin (group_quant_avx2.cpp), same contract. Only call it when
// group_quant_avx2_usable(w) is true.
void group_quant_gemv_rows_avx2(const GroupQuantView& w, const float* x, int64_t rows, const float* bias,
                                int64_t out_begin, int64_t out_end, float* y);

// True when the AVX2 kernel was compiled in (x86-64 build), the CPU has AVX2 and FMA, and the
// layout suits it (bits 8, or bits 4 with group_size a multiple of 16).
bool group_quant_avx2_usable(const GroupQuantView& w);

// The AVX-512 kernel for one input row of 4-bit weights (group_quant_avx512.cpp): the decode
// step's product, same contract with rows = 1. Only call it when group_quant_avx512_usable(w).
void group_quant_gemv_row_4bit_avx512(const GroupQuantView& w, const float* x, const float* bias,
                                      int64_t out_begin, int64_t out_end, float* y);

// True when the AVX-512 kernel was compiled in (x86-64 build), the CPU has AVX-512 F and BW, and
// the layout suits it (bits 4, group_size a multiple of 32).
bool group_quant_avx512_usable(const GroupQuantView& w);

enum class GroupQuantKernel {
  kAuto,      // AVX2 when group_quant_avx2_usable, else portable
  kPortable,  // group_quant_gemv_rows_cpu
  kAvx2,      // group_quant_gemv_rows_avx2 (Unsupported when it is not usable)
};

// The packed path of group_quant_linear on raw pointers: y = x Ŵᵀ + bias for x [rows, in], in
// parallel over output features in up to at::get_num_threads() chunks (defined in
// group_quant.cpp; see parallel_chunks there for why not at::parallel_for). Forcing kAvx2 when it
// is not usable throws lowrank::Unsupported.
void group_quant_packed_matmul(const GroupQuantView& w, const float* x, int64_t rows, const float* bias,
                               float* y, GroupQuantKernel kernel = GroupQuantKernel::kAuto);

// Input rows up to which group_quant_linear takes the packed kernel; above it, dequantize + GEMM.
// Measured (bench/compress.cpp, 4096x4096 INT4 g64, AMD EPYC Zen 3, AVX2): the packed kernel costs
// ~1 ms per input row at 1 thread; dequantise + at::linear costs ~12 ms + the dense GEMM, which
// grows more slowly per row. They cross between 32 and 64 rows at 1 and at 2 threads.
inline constexpr int64_t kGroupQuantPackedMaxRows = 32;

}  // namespace lowrank::ops::detail
