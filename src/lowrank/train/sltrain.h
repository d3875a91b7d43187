// SLTrain — Han et al., 2024, "SLTrain: a sparse plus low-rank approach for parameter and memory
// efficient pretraining", NeurIPS 2024, arXiv:2406.02214 (code: andyjm3/SLTrain).
// Implements W = (α/r)·B·A + S (the paper's Eq. for the SLTrain linear layer):
//   y = (α/r)·(x Aᵀ) Bᵀ + x Sᵀ + b,  B [out, r], A [r, in], S [out, in] with nnz = ⌊δ·out·in⌋
// entries on a support drawn once, uniformly at random (randperm(out·in)[:nnz], sorted, stored as
// flat row-major int64 indices) and never changed; only S's values (1-D [nnz]) are trained, with
// B and A. Init as the reference (splora_linear.py): B = 0, A ~ kaiming_uniform(a=√5) =
// U(±1/√in), values ~ U(±1/√in).
// Cost: the sparse part scatters the values into a transient dense S [out, in] each forward
// (and its gradient is the dense gᵀx gathered at the support in backward) — the memory of one
// dense weight per slot while it runs, as the reference's own forward (which materialises the
// whole W = BA + S); the factors are never multiplied into a dense out×in product.
// Deviations: the reference's optional trainable tanh scaling is not implemented; the S values
// are 1-D, so AdamW does not decay them (the reference runs weight decay 0).
#pragma once

#include <memory>

#include "lowrank/train/parameterization.h"

namespace lowrank::train {

class SlTrainOperator final : public ParameterizedOperator {
 public:
  // b [out, r], a [r, in], indices int64 [nnz] (flat row-major positions in [0, out·in), unique),
  // values [nnz], bias [out] or undefined. Throws InvalidArgument on mismatched shapes or indices.
  SlTrainOperator(at::Tensor b, at::Tensor a, double scale, at::Tensor indices, at::Tensor values,
                  at::Tensor bias = {});
  static std::shared_ptr<SlTrainOperator> init(const nn::LinearSlot& slot,
                                               const ParameterizationConfig& config, uint64_t seed);

  std::string_view kind() const override { return "sltrain"; }
  int64_t in_features() const override { return a_.size(1); }
  int64_t out_features() const override { return b_.size(0); }
  at::Tensor forward(const at::Tensor& x) const override;
  nn::NamedTensors trainable() const override;
  nn::NamedTensors frozen() const override { return {{"sparse_indices", indices_}}; }
  at::Tensor dense_weight() const override;
  at::Tensor bias() const override { return bias_; }

  // S as a dense [out, in] tensor (differentiable with respect to the values).
  at::Tensor sparse_weight() const;
  const at::Tensor& a() const { return a_; }
  const at::Tensor& b() const { return b_; }
  const at::Tensor& indices() const { return indices_; }
  const at::Tensor& values() const { return values_; }
  double scale() const { return scale_; }

 private:
  at::Tensor b_;        // [out, r]
  at::Tensor a_;        // [r, in]
  double scale_;        // α/r
  at::Tensor indices_;  // int64 [nnz], sorted flat row-major positions of S's support
  at::Tensor values_;   // [nnz]
  at::Tensor bias_;
};

void register_sltrain(Registry<ParameterizationMethod>& registry);

}  // namespace lowrank::train
