// The base operators of compressed slots (nn/linear_slot.h): what `lowrank compress` puts in place
// of a dense y = W x + b, and what a compressed model directory stores (compress/format.h).
//
//   lowrank         y = U (V x) + b                      U [out, k], V [k, in]   (SVD family, WeLore)
//   quantized       y = Q(W) x + b                       packed INT4/INT8 groups (ops/group_quant.h)
//                   y = Q(W) Q(x) + b  with act_bits 4    W4A4 (ops/w4a4_gemm.h)
//   lowrank_quantized y = Q(Uᵀ)ᵀ (Q(V) x) + b          a factored slot's U and V quantised (LoRD + INT4)
//   svdquant        y = (L1 L2 + Q(R)) (x ⊘ λ) + b        SVDQuant (compress/svdquant.h)
//                   y = L1 L2 x̂ + Q(R) Q(x̂) + b         with act_bits 4 (W4A4), x̂ = x ⊘ λ
//   sparse24        y = W₂:₄ x + b                        2:4 magnitude pruning (two of every four kept)
//   sparse_lowrank  y = U (V x) + S x + b                 robust PCA split (linalg/rpca.h)
//   compensated     y = base(x) + B (A x)                 EoRA / plain-SVD compensation of any base
//
// Each operator keeps the tensors it was built from, names them for the file (tensors()), describes
// itself as JSON (describe(), one entry of lowrank_config.json) and materialises its dense
// equivalent for export and analysis (dense_weight()). Forward passes run in the model's compute
// dtype; the packed 4-bit and 8-bit forms go through the ops/ kernels.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include <ATen/ATen.h>

#include "lowrank/core/json.h"
#include "lowrank/nn/linear_slot.h"
#include "lowrank/ops/group_quant.h"

namespace lowrank::compress {

// A base operator that lowrank can store and reload: every compressed operator is one.
class StoredOperator : public nn::BaseOperator {
 public:
  // The lowrank_config.json entry: {"kind": ..., method-specific sizes}.
  virtual OrderedJson describe() const = 0;
  // Bytes of the stored tensors at their in-memory dtypes (floating tensors counted at `float_bytes`
  // each, e.g. 2 for a 16-bit file).
  int64_t storage_bytes(int64_t float_bytes) const;
};

class LowRankOperator final : public StoredOperator {
 public:
  // Throws InvalidArgument when U [out, k] and V [k, in] do not chain or the bias is not [out].
  LowRankOperator(at::Tensor u, at::Tensor v, at::Tensor bias = {});
  std::string_view kind() const override { return "lowrank"; }
  int64_t in_features() const override { return v_.size(1); }
  int64_t out_features() const override { return u_.size(0); }
  int64_t rank() const { return u_.size(1); }
  at::Tensor forward(const at::Tensor& x) const override;
  nn::NamedTensors tensors() const override;
  at::Tensor dense_weight() const override { return at::matmul(u_, v_); }
  at::Tensor bias() const override { return bias_; }
  OrderedJson describe() const override;
  const at::Tensor& u() const { return u_; }
  const at::Tensor& v() const { return v_; }

 private:
  at::Tensor u_, v_, bias_;
};

class QuantizedOperator final : public StoredOperator {
 public:
  // act_bits 16: float activations (W4A16 / W8A16); 4: INT4 activations per token and group
  // (needs 4-bit weights; ops/w4a4_gemm.h). Throws InvalidArgument otherwise.
  QuantizedOperator(ops::GroupQuantized weight, at::Tensor bias = {}, int act_bits = 16);
  std::string_view kind() const override { return "quantized"; }
  int64_t in_features() const override { return weight_.in_features; }
  int64_t out_features() const override { return weight_.out_features; }
  at::Tensor forward(const at::Tensor& x) const override;
  nn::NamedTensors tensors() const override;
  at::Tensor dense_weight() const override;
  at::Tensor bias() const override { return bias_; }
  // Packed weights on the CPU, float activations (act_bits 16) and no bias or a float32 one.
  bool has_row_product() const override;
  void row_product(const float* x, int64_t begin, int64_t end, float* y) const override;
  OrderedJson describe() const override;
  const ops::GroupQuantized& weight() const { return weight_; }
  int act_bits() const { return act_bits_; }

 private:
  ops::GroupQuantized weight_;
  at::Tensor bias_;
  int act_bits_ = 16;
};

// A low-rank slot whose factors are group-quantised: y = Q(Uᵀ)ᵀ (Q(V) x) + b, the base that
// "QLoRA over LoRD" trains LoRA on (Kaushal et al., 2023, arXiv:2309.14021: the LoRD model's two
// linear layers per slot quantised to 4 bits). V [k, in] is grouped along its inputs as any RTN
// weight; U [out, k] is stored transposed, Uᵀ [k, out], grouped along the slot's outputs, so that
// the rank k need not be a multiple of the group size. The forward dequantises Uᵀ (the k-wide
// product is small).
class QuantizedLowRankOperator final : public StoredOperator {
 public:
  // ut = Q(Uᵀ) [k, out], v = Q(V) [k, in]. Throws InvalidArgument when the ranks differ.
  QuantizedLowRankOperator(ops::GroupQuantized ut, ops::GroupQuantized v, at::Tensor bias = {});
  // RTN of `factored`'s U and V (ops::quantize_groups). Throws InvalidArgument when group_size does
  // not divide in_features or out_features.
  static std::shared_ptr<QuantizedLowRankOperator> quantize(const LowRankOperator& factored, int bits,
                                                            int64_t group_size);
  std::string_view kind() const override { return "lowrank_quantized"; }
  int64_t in_features() const override { return v_.in_features; }
  int64_t out_features() const override { return ut_.in_features; }
  int64_t rank() const { return v_.out_features; }
  at::Tensor forward(const at::Tensor& x) const override;
  nn::NamedTensors tensors() const override;
  at::Tensor dense_weight() const override;
  at::Tensor bias() const override { return bias_; }
  OrderedJson describe() const override;

 private:
  ops::GroupQuantized ut_, v_;
  at::Tensor bias_;
};

// SVDQuant's form: y = L1 (L2 x̂) + Q(R) x̂ + b with x̂ = x ⊘ λ (elementwise over input channels),
// and with act_bits 4 (the paper's W4A4) y = L1 (L2 x̂) + Q(R) Q(x̂) + b: on the CPU one pass over
// x scales it, quantises it to INT4 and computes L2 x̂ (the fused kernel of ops/w4a4_gemm.h), then
// the integer product runs and the 16-bit branch's up projection is added. Rank 0: no branch.
class SvdQuantOperator final : public StoredOperator {
 public:
  // smooth [in], lora_up L1 [out, r], lora_down L2 [r, in], act_bits 16 or 4 (4-bit residual only).
  // Throws InvalidArgument on a mismatch.
  SvdQuantOperator(at::Tensor smooth, at::Tensor lora_up, at::Tensor lora_down, ops::GroupQuantized residual,
                   at::Tensor bias = {}, int act_bits = 16);
  std::string_view kind() const override { return "svdquant"; }
  int64_t in_features() const override { return residual_.in_features; }
  int64_t out_features() const override { return residual_.out_features; }
  int64_t rank() const { return lora_up_.size(1); }
  at::Tensor forward(const at::Tensor& x) const override;
  nn::NamedTensors tensors() const override;
  at::Tensor dense_weight() const override;
  at::Tensor bias() const override { return bias_; }
  OrderedJson describe() const override;
  // This operator with `other`'s λ and L2 tensors when they are equal to its own (a shared
  // branch read back from a file, where each slot stores its own copy), so that forward computes
  // x̂ L2ᵀ once for both; null when they differ.
  std::shared_ptr<SvdQuantOperator> sharing_branch_input(const SvdQuantOperator& other) const;
  int act_bits() const { return act_bits_; }

 private:
  at::Tensor forward_w4a4(const at::Tensor& x) const;

  at::Tensor smooth_, inv_smooth_, lora_up_, lora_down_;
  ops::GroupQuantized residual_;
  at::Tensor bias_;
  int act_bits_ = 16;
  at::Tensor inv_smooth_f32_, lora_up_f32_, lora_down_f32_, bias_f32_;  // the W4A4 kernel's operands
};

// 2:4 semi-structured sparsity: in every group of four consecutive input channels of a row two
// weights are kept. Stored as the kept values [out, in/2] and their positions in the group (two
// 2-bit indices per group, packed into one uint8 per group: low bits the first). The CPU forward
// runs on the dense (zero-filled) weight materialised once at construction: CPUs have no 2:4
// instructions, so the saving is in the file, not in the GEMM.
class Sparse24Operator final : public StoredOperator {
 public:
  // From a dense weight that already has at most two nonzeros in every group of four (the
  // zero-filled positions are chosen to fill groups with fewer). Throws InvalidArgument when
  // in % 4 != 0 or a group has more than two nonzeros.
  static std::shared_ptr<Sparse24Operator> from_dense(const at::Tensor& weight, at::Tensor bias = {});
  // From stored tensors: values [out, in/2], indices uint8 [out, in/4]. Throws Corruption on bad
  // shapes or indices.
  Sparse24Operator(at::Tensor values, at::Tensor indices, at::Tensor bias = {});
  std::string_view kind() const override { return "sparse24"; }
  int64_t in_features() const override { return dense_.size(1); }
  int64_t out_features() const override { return dense_.size(0); }
  at::Tensor forward(const at::Tensor& x) const override { return at::linear(x, dense_, bias_); }
  nn::NamedTensors tensors() const override;
  at::Tensor dense_weight() const override { return dense_; }
  at::Tensor bias() const override { return bias_; }
  OrderedJson describe() const override;

 private:
  at::Tensor values_, indices_, dense_, bias_;
};

// Low rank plus sparse: y = U (V x) + S x + b. S is stored as CSR: row offsets (int64, out + 1
// entries), column indices (int32, strictly increasing within a row) and values; the file holds
// exactly these, so 4 index bytes per nonzero plus 8 per row.
class SparseLowRankOperator final : public StoredOperator {
 public:
  // Throws Corruption when the CSR arrays are not a valid [out, in] pattern.
  SparseLowRankOperator(at::Tensor u, at::Tensor v, at::Tensor row_offsets, at::Tensor col_indices,
                        at::Tensor sparse_values, at::Tensor bias = {});
  // S given densely ([out, in]; its nonzeros are kept).
  static std::shared_ptr<SparseLowRankOperator> from_dense_sparse(at::Tensor u, at::Tensor v,
                                                                  const at::Tensor& sparse,
                                                                  at::Tensor bias = {});
  std::string_view kind() const override { return "sparse_lowrank"; }
  int64_t in_features() const override { return v_.size(1); }
  int64_t out_features() const override { return u_.size(0); }
  int64_t rank() const { return u_.size(1); }
  int64_t nonzeros() const { return values_.numel(); }
  at::Tensor forward(const at::Tensor& x) const override;
  nn::NamedTensors tensors() const override;
  at::Tensor dense_weight() const override;
  at::Tensor bias() const override { return bias_; }
  OrderedJson describe() const override;

 private:
  at::Tensor u_, v_, row_offsets_, col_indices_, values_, csr_, bias_;
};

// base(x) + B (A x): a low-rank compensation of a compressed base (EoRA; plain-SVD compensation).
// The bias is the inner base's.
class CompensatedOperator final : public StoredOperator {
 public:
  // a [r, in], b [out, r]; `method` names how they were found ("eora", "svd"). Throws
  // InvalidArgument on a mismatch with the inner operator.
  CompensatedOperator(std::shared_ptr<const StoredOperator> inner, at::Tensor a, at::Tensor b,
                      std::string method);
  std::string_view kind() const override { return "compensated"; }
  int64_t in_features() const override { return inner_->in_features(); }
  int64_t out_features() const override { return inner_->out_features(); }
  int64_t rank() const { return a_.size(0); }
  at::Tensor forward(const at::Tensor& x) const override;
  nn::NamedTensors tensors() const override;
  at::Tensor dense_weight() const override { return inner_->dense_weight() + at::matmul(b_, a_); }
  at::Tensor bias() const override { return inner_->bias(); }
  OrderedJson describe() const override;
  const StoredOperator& inner() const { return *inner_; }

 private:
  std::shared_ptr<const StoredOperator> inner_;
  at::Tensor a_, b_;
  std::string method_;
};

}  // namespace lowrank::compress
