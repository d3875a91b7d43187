// Block-wise dynamic 8-bit quantisation of optimizer states — Dettmers, Lewis, Shleifer &
// Zettlemoyer, 2022, "8-bit Optimizers via Block-wise Quantization", ICLR 2022, arXiv:2110.02861
// (bitsandbytes functional.create_dynamic_map / quantize_blockwise), as GaLore's 8-bit variant
// uses for its low-rank states (GaLoreAdamW8bit, galore_torch/adamw8bit.py).
//
// Dynamic tree map (256 sorted values in [−1, 1], §2.2): for exponent i = 0..6, the midpoints of
// linspace(0.1, 1, 2^i + 1) scaled by 10^(i−6), both signs (signed map, for M) or the midpoints of
// linspace(0.1, 1, 2^(i+1) + 1), positive only (unsigned map, for V ≥ 0); plus 0 and 1, each
// value rounded in float32 as bitsandbytes computes it. So the precision is relative: each decade
// below the block's absmax has its own linear grid. The map, codes, absmax and dequantised values
// are checked against a fixture written by bitsandbytes (tests/fixtures/optim/make_fixtures.py).
// Block-wise (§2.1): the flattened tensor is cut into blocks of 2048; each block stores its absmax
// (float32) and one uint8 code per value, the index of the map value nearest to x / absmax.
//   quantize:   c_i = argmin_k |map[k] − x_i / absmax_b|
//   dequantize: x_i ≈ map[c_i] · absmax_b
// Deviation: the Adam update dequantizes, updates in float32 and requantizes with separate
// tensor ops instead of bitsandbytes' fused kernel (same values, more transient memory).
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include <ATen/ATen.h>

namespace lowrank::optim {

// The 256-value dynamic map (float32, sorted).
at::Tensor dynamic_map(bool is_signed);

struct QuantizedTensor {
  at::Tensor codes;            // uint8 [numel]
  at::Tensor absmax;           // float32 [ceil(numel / block)]
  std::vector<int64_t> shape;  // of the original tensor
  bool is_signed = true;
  int64_t block = 2048;

  bool defined() const { return codes.defined(); }
  int64_t bytes() const;
};

// Throws InvalidArgument for block < 1, or negative values with is_signed = false.
QuantizedTensor quantize_blockwise(const at::Tensor& x, bool is_signed, int64_t block = 2048);
// float32, of q.shape, on q's device.
at::Tensor dequantize_blockwise(const QuantizedTensor& q);

// Adam's two moments kept 8-bit between updates (M on the signed map, V on the unsigned one), as
// bitsandbytes' 8-bit optimizers keep them. An update restores them as floats, runs, keeps them
// again, and the caller releases the floats.
struct QuantizedMoments {
  QuantizedTensor m, v;

  bool defined() const { return m.defined(); }
  int64_t bytes() const { return m.bytes() + v.bytes(); }
  // exp_avg, exp_avg_sq ← the dequantized moments in `dtype`; unchanged while undefined (the first
  // update, which starts from zeros).
  void restore(at::Tensor& exp_avg, at::Tensor& exp_avg_sq, at::ScalarType dtype) const;
  void keep(const at::Tensor& exp_avg, const at::Tensor& exp_avg_sq);
  // The checkpoint form: "<name>.exp_avg.codes", ".absmax", ".shape" and the same for exp_avg_sq
  // (nothing while undefined).
  void append_state(std::vector<std::pair<std::string, at::Tensor>>& out, const std::string& name) const;
  // Reads that form back onto `device` when "<name>.exp_avg.codes" is among `tensors`, else leaves
  // the moments undefined. Throws Corruption naming `name` for an incomplete or inconsistent set.
  void read_state(const std::vector<std::pair<std::string, at::Tensor>>& tensors, const std::string& name,
                  const at::Device& device);
};

}  // namespace lowrank::optim
