// Positive orthogonal random features for the softmax kernel (Choromanski et al., 2021,
// "Rethinking Attention with Performers", arXiv:2009.14794, FAVOR+), the low-rank half that
// Scatterbrain (scatterbrain.h) and Performer (performer.h) share.
//
// With x̂ = x·d^{-1/4} (so that x̂_q·x̂_k = q·k/√d) and projection rows w_r ~ orthogonal Gaussian:
//   positive:  φ(x) = m^{-1/2} · exp(W x̂ − ‖x̂‖²/2)                       (m = rows of W)
//   cosh:      φ(x) = m^{-1/2} · exp([W x̂, −W x̂] − ‖x̂‖²/2)              (m = 2 · rows of W)
// and E[φ(q)·φ(k)] = exp(q·k/√d) (Performer, Lemma 1). W: ⌈rows/d⌉ blocks, each the Q of a QR of
// a d×d Gaussian made Haar-uniform (sign(diag R)), rows rescaled to χ_d-distributed norms
// (`scaling=0` of both reference codes).
//
// Stabilisation (log space, never changing the value): a query's features are exp(a − c_q) with
// c_q its own maximum, a key's exp(a − c_k) with c_k the maximum over the whole sequence (and the
// features), and c_q + c_k − log(m)/2 is carried as the log-scale. The stabilisers are constants
// to autograd (detached): the value does not depend on them, and a future key's maximum then
// cannot reach an earlier output's gradient. Which quantity the maximum is taken of follows each
// reference: HazyResearch/fly src/models/attention/feature_maps_sb.py (`softmax_kernel`, cosh)
// takes it of a = W x̂ − ‖x̂‖²/2; lucidrains/performer-pytorch performer_pytorch.py
// (`softmax_kernel`) takes it of W x̂ alone and adds eps = 1e-4 to every feature after the exp,
// which makes the stabiliser part of the value (eps is relative to it).
//
// Causal sums with eps > 0: performer-pytorch's key stabiliser is the maximum over the whole
// sequence, so an earlier row's eps term depends on later keys. Here row i uses the maximum over
// keys j ≤ i instead (equal for the last row), so that the forward is causal in value and the
// decode step (running sums, rescaled when the maximum grows) equals it.
#pragma once

#include <cstdint>

#include <ATen/ATen.h>

namespace lowrank::mix {

enum class FeatureKind {
  kPositive,  // exp(W x̂ − ‖x̂‖²/2): performer-pytorch
  kCosh,      // [exp(W x̂), exp(−W x̂)]·e^{−‖x̂‖²/2}: fly's Scatterbrain
};

enum class StabiliseOn {
  kLogFeature,  // max of W x̂ − ‖x̂‖²/2 (fly)
  kProjection,  // max of W x̂ (performer-pytorch)
};

// A drawn orthogonal random projection [rows, d] (float64, CPU) from `seed`.
at::Tensor gaussian_orthogonal_random_matrix(int64_t rows, int64_t d, uint64_t seed);

// Query features: q' [.., T, m] (exp(a − c_q) + eps) and c_q − log(m)/2 [.., T, 1] (each side of
// φ(q)·φ(k) carries its m^{-1/2}).
struct QueryFeatures {
  at::Tensor features;
  at::Tensor log_scale;
  at::Tensor row_sum;  // Σ_r q'_r [.., T, 1] when the feature pass produced it; else undefined
};

// Key features exp(a − c) [.., S, m] for the global stabiliser c [.., 1, 1] (over valid keys), and
// each key's own maximum [.., S, 1] (the candidates of the causal running maximum); invalid keys
// (key_mask 0) have zero features.
struct KeyFeatures {
  at::Tensor features;
  at::Tensor stabiliser;
  at::Tensor own_max;
  at::Tensor key_mask;  // [.., S, 1] 1 = real key; undefined: all real
};

// The low-rank attention terms of every query row: numerator = Σ_j φ'(q_i)·φ'(k_j) v_j and
// normaliser = Σ_j φ'(q_i)·φ'(k_j) over the keys j it sees (all, or j ≤ i), in units of
// exp(log_scale) [.., T, 1]; query_sum = Σ_r q'_ir (for performer-pytorch's causal eps).
struct LowRankTerms {
  at::Tensor numerator;
  at::Tensor normaliser;
  at::Tensor log_scale;
  at::Tensor query_sum;
};

// The key side of bidirectional linear attention: Σ_j φ'(k_j) v_jᵀ [.., m, Dv] and Σ_j φ'(k_j)
// [.., 1, m] over the real keys (performer-pytorch's eps included), at the keys' stabiliser. Made
// once, it serves any slice of the query rows.
struct KeySums {
  at::Tensor kv;
  at::Tensor z;
  at::Tensor stabiliser;  // [.., 1, 1]
};

class RandomFeatures {
 public:
  // `n_features` = m (for cosh, rounded down to even: rows = m/2). `eps` is added to every
  // feature after the exp (performer-pytorch: 1e-4; fly: 0).
  RandomFeatures(int64_t head_dim, int64_t n_features, FeatureKind kind, StabiliseOn stabilise, double eps,
                 uint64_t seed);

  int64_t head_dim() const { return head_dim_; }
  int64_t n_features() const {
    return kind_ == FeatureKind::kCosh ? 2 * projection_.size(0) : projection_.size(0);
  }
  double eps() const { return eps_; }
  // W [rows, d], float64 on the CPU.
  const at::Tensor& projection() const { return projection_; }
  // Replaces W (a matrix drawn elsewhere, e.g. by a reference library); [rows, head_dim].
  void set_projection(const at::Tensor& projection);

  // The log of the unscaled feature, a = [±]W x̂ − ‖x̂‖²/2 [.., m], and the row maximum [.., 1]
  // (detached) of the quantity that stabilises it (a, or W x̂ for kProjection).
  std::pair<at::Tensor, at::Tensor> log_features(const at::Tensor& x) const;
  QueryFeatures queries(const at::Tensor& q) const;
  // key_mask [.., S, 1] or undefined.
  KeyFeatures keys(const at::Tensor& k, const at::Tensor& key_mask) const;

  // φ(Q)φ(K)ᵀV and its normaliser, bidirectional or causal (chunked prefix sums).
  LowRankTerms attend(const QueryFeatures& q, const KeyFeatures& k, const at::Tensor& v, bool causal) const;
  // The bidirectional case in two halves: the key sums, then the terms of (any rows of) queries.
  KeySums key_sums(const KeyFeatures& k, const at::Tensor& v) const;
  LowRankTerms attend(const QueryFeatures& q, const KeySums& sums) const;

 private:
  // d^(−1/4)·W, with −d^(−1/4)·W appended for cosh: [m, d] in `options`.
  at::Tensor signed_projection(const at::TensorOptions& options) const;
  // W x̂ [.., m], ‖x̂‖²/2 [.., 1] and the row maximum of W x̂ [.., 1] (detached).
  struct Projected {
    at::Tensor projected, half_norm, projected_max;
  };
  Projected project(const at::Tensor& x) const;
  // The row maximum [.., 1] (detached) of the quantity that stabilises a row: a (kLogFeature) or
  // W x̂ (kProjection).
  at::Tensor row_stabiliser(const Projected& p) const;
  // exp(a − c) + eps with a = W x̂ − ‖x̂‖²/2, c broadcast to the rows; rows whose key_mask is 0 give
  // 0 (key_mask [.., S, 1] or undefined); the row sums into *row_sum when that is not null and the
  // fused pass (ops::shifted_exp_, no graph, float CPU) made them, else it stays undefined. The
  // fused pass overwrites p.projected and returns it.
  at::Tensor exponentiate(Projected& p, const at::Tensor& c, double eps, const at::Tensor& key_mask,
                          at::Tensor* row_sum) const;

  int64_t head_dim_;
  FeatureKind kind_;
  StabiliseOn stabilise_;
  double eps_;
  at::Tensor projection_;
};

// Σ_{j ≤ i} (a_i·b_j) v_j [.., T, Dv] for a [.., T, m], b [.., T, m], v [.., T, Dv], in chunks (an
// exact lower triangle inside a chunk, a carried Σ b_jᵀv_j across chunks): O(T·m·Dv) time and
// O(chunk·T + m·Dv) memory. Row i gets no gradient from rows j > i (exact zeros).
at::Tensor causal_linear_product(const at::Tensor& a, const at::Tensor& b, const at::Tensor& v);

// The running low-rank sums of a causal decode: keys added one at a time, each as exp(a − M)
// with M the running maximum of their stabilisers (sums rescaled when it grows), plus Σ v and the
// count for the eps term.
struct RunningFeatureSums {
  at::Tensor kv;     // [B, H, m, Dv]
  at::Tensor z;      // [B, H, 1, m]
  at::Tensor vsum;   // [B, H, 1, Dv]
  at::Tensor count;  // [B, H, 1, 1]
  at::Tensor max;    // [B, H, 1, 1], -inf while empty
  int64_t added = 0;

  RunningFeatureSums(int64_t batch, int64_t heads, int64_t m, int64_t dv, const at::TensorOptions& options);
  // Adds keys k [B, H, 1, d] with values v [B, H, 1, Dv].
  void add(const RandomFeatures& features, const at::Tensor& k, const at::Tensor& v);
  bool empty() const { return added == 0; }
  // The terms of query q [B, H, 1, d] over the keys added so far.
  LowRankTerms attend(const RandomFeatures& features, const QueryFeatures& q) const;
};

}  // namespace lowrank::mix
