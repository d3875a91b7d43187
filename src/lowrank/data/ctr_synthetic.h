// Synthetic click-through-rate data in Criteo's shape, for the CTR compression study (AFM, Yu et
// al., KDD'24): Criteo and Avazu cannot be downloaded here, so the rows come from a hidden teacher.
//
// Fields: `sparse_fields` categorical fields C1..C26 with vocabularies log-spaced from `min_vocab` to
// `max_vocab` (V_f = round(10^(log10 min + f/(F−1)·(log10 max − log10 min)))), ids drawn from a
// Zipf(s = 1.1) law over ranks, P(id = k) ∝ (k + 1)^{−s}, k < V_f; `dense_fields` numeric fields
// I1..I13, x_j = min(1, log(1 + ⌊exp(z)⌋) / 8) with z ~ N(0.5 + 0.15 j, 1) (Criteo's counts after
// the usual log transform).
// Teacher: every id has a latent vector e_{f,k} ∈ ℝ^r (r = `teacher_rank`, N(0, 1)) and a weight
// w_{f,k} ~ N(0, 1); the logit is
//   z = b + 0.8·ẑ₁ + 1.0·ẑ₂ + 0.8·ẑ₃ + 0.4·ẑ₄,
//   z₁ = Σ_f w_{f,x_f}                                            (first order)
//   z₂ = Σ_{f<g} e_{f,x_f}ᵀ R_{fg} e_{g,x_g}                       (field-matrixed rank-r FM: FmFM,
//                                                                   Sun et al., WWW'21, R_{fg} ~ N(0, 1))
//   z₃ = v·ReLU(W [e_{1,x_1}, …, e_{F,x_F}, x_dense] + c)        (an MLP with `teacher_hidden` units)
//   z₄ = aᵀ x_dense
// each component ẑ standardised to mean 0 and variance 1 over all generated rows, and b found by
// bisection so that the mean click probability σ(z) is `base_ctr`. Labels ~ Bernoulli(σ(z)).
// Every draw is counter-based (splitmix64 of the seed, the stream and the row), so the data depend
// only on the options; the teacher's logits go through float32 matrix products (the same on one
// machine; a label whose uniform falls within rounding of σ(z) may differ across BLAS builds).
#pragma once

#include <cstdint>

#include "lowrank/core/json.h"
#include "lowrank/data/ctr_data.h"

namespace lowrank::data {

struct CtrSyntheticOptions {
  int64_t train_rows = 1'000'000;
  int64_t test_rows = 200'000;
  int64_t sparse_fields = 26;
  int64_t dense_fields = 13;
  int64_t min_vocab = 10;
  int64_t max_vocab = 100'000;
  double zipf = 1.1;
  int64_t teacher_rank = 8;
  int64_t teacher_hidden = 32;
  double base_ctr = 0.05;
  uint64_t seed = 0;
  // Throws InvalidArgument naming the option and value.
  void check() const;
  OrderedJson to_json() const;
};

struct CtrSynthetic {
  CtrSchema schema;
  CtrData train, test;
  at::Tensor test_probability;  // [test_rows] float64: the teacher's σ(z), whose AUC is the ceiling
};

// Generates the data set (progress on stderr for large sets). Throws as check().
CtrSynthetic generate_ctr_synthetic(const CtrSyntheticOptions& options);

}  // namespace lowrank::data
