// One 4-byte word of a packed group-quantised row (group_quant.h's layout), as the CUDA GEMV
// (group_quant_cuda.cu) reads it: which inputs its four bytes hold codes for, their scale group,
// and the codes. Host and device code, without ATen: the kernel uses it, and a CPU test rebuilds
// every dequantised row from it, so the kernel's index arithmetic is checked on every machine.
//
// 4-bit: within each group of g inputs, byte i (i < g/2) holds q_i + 8 in its low nibble and
// q_{i+g/2} + 8 in its high nibble; a word (bytes 4w..4w+3 of the row) stays inside one group's
// first half when g % 8 == 0, so it holds two runs of four consecutive codes. 8-bit: one run of
// four consecutive int8 codes.
#pragma once

#include <cstdint>

#if defined(__CUDACC__)
#define LOWRANK_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define LOWRANK_HOST_DEVICE inline
#endif

namespace lowrank::ops::detail {

struct PackedWord {
  int64_t group = 0;      // the scale group of all its codes
  int runs = 1;           // 2 for 4-bit codes, 1 for 8-bit
  int64_t first[2] = {};  // the input index of each run's first code
  float q[2][4] = {};     // the codes of each run, offset removed
};

// Word w of a row of `bits`-bit codes (4 or 8) in groups of `group_size` (a multiple of 8).
LOWRANK_HOST_DEVICE PackedWord unpack_packed_word(uint32_t v, int64_t w, int bits, int64_t group_size) {
  PackedWord p;
  const int64_t byte = 4 * w;
  if (bits == 4) {
    const int64_t half = group_size / 2;
    p.group = byte / half;
    p.runs = 2;
    p.first[0] = p.group * group_size + byte % half;
    p.first[1] = p.first[0] + half;
    for (int t = 0; t < 4; ++t) {
      p.q[0][t] = static_cast<float>(static_cast<int>((v >> (8 * t)) & 15u) - 8);
      p.q[1][t] = static_cast<float>(static_cast<int>((v >> (8 * t + 4)) & 15u) - 8);
    }
  } else {
    p.group = byte / group_size;
    p.first[0] = byte;
    for (int t = 0; t < 4; ++t) p.q[0][t] = static_cast<float>(static_cast<int8_t>((v >> (8 * t)) & 255u));
  }
  return p;
}

}  // namespace lowrank::ops::detail
