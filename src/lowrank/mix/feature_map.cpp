// Positive orthogonal random features and their linear attention; see feature_map.h.
#include "lowrank/mix/feature_map.h"

#include <ATen/CPUGeneratorImpl.h>

#include <cmath>
#include <limits>
#include <vector>

#include "lowrank/core/error.h"
#include "lowrank/mix/graph_free.h"
#include "lowrank/ops/shifted_exp.h"

namespace lowrank::mix {
namespace {

constexpr int64_t kCausalChunk = 64;

// Without a graph to keep, float CPU features are made by ops::shifted_exp_: one pass over the
// [.., m] tensor instead of the three or four of composed ATen ops.
bool fused_feature_pass(const at::Tensor& x) {
  return keeps_no_graph({x}) && x.device().is_cpu() &&
         (x.scalar_type() == at::kFloat || x.scalar_type() == at::kDouble);
}

// exp(x − c) with c = −inf (no key yet) giving 0 rather than NaN.
at::Tensor finite_or(const at::Tensor& value, const at::Tensor& fallback) {
  return at::where(value.isfinite(), value, fallback);
}

}  // namespace

at::Tensor gaussian_orthogonal_random_matrix(int64_t rows, int64_t d, uint64_t seed) {
  LR_CHECK(rows >= 1 && d >= 1, InvalidArgument, "random features: ", rows, " rows of dimension ", d);
  at::Generator gen = at::detail::createCPUGenerator(seed);
  const auto f64 = at::TensorOptions().dtype(at::kDouble);
  const int64_t blocks = (rows + d - 1) / d;
  std::vector<at::Tensor> parts;
  for (int64_t b = 0; b < blocks; ++b) {
    const at::Tensor g = at::randn({d, d}, gen, f64);
    auto [q, r] = at::linalg_qr(g);
    // Haar-uniform: fix the sign ambiguity of the QR factor by sign(diag R).
    q = q * at::sign(r.diagonal()).unsqueeze(0);
    parts.push_back(q.t());  // rows orthonormal
  }
  const at::Tensor ortho = at::cat(parts, 0).narrow(0, 0, rows);
  // Row norms distributed as those of Gaussian vectors (χ_d): the marginals of an iid draw.
  const at::Tensor norms = at::randn({rows, d}, gen, f64).norm(2, {1}, /*keepdim=*/true);
  return ortho * norms;
}

RandomFeatures::RandomFeatures(int64_t head_dim, int64_t n_features, FeatureKind kind, StabiliseOn stabilise,
                               double eps, uint64_t seed)
    : head_dim_(head_dim), kind_(kind), stabilise_(stabilise), eps_(eps) {
  const int64_t rows = kind == FeatureKind::kCosh ? n_features / 2 : n_features;
  LR_CHECK(rows >= 1, InvalidArgument, "n_features ", n_features, " is too small (at least ",
           kind == FeatureKind::kCosh ? 2 : 1, ")");
  projection_ = gaussian_orthogonal_random_matrix(rows, head_dim, seed);
}

void RandomFeatures::set_projection(const at::Tensor& projection) {
  LR_CHECK(projection.dim() == 2 && projection.size(1) == head_dim_ && projection.size(0) >= 1,
           InvalidArgument, "random features: a projection of shape ", projection.sizes(), " for head_dim ",
           head_dim_);
  projection_ = projection.to(at::kDouble).cpu().contiguous();
}

at::Tensor RandomFeatures::signed_projection(const at::TensorOptions& options) const {
  // x̂ = x·d^(−1/4): the scale folded into W, so one GEMM gives W x̂ (and −W x̂ for cosh) with no
  // pass over x̂ or a concatenation of the [.., m] result.
  const at::Tensor w = projection_ * std::pow(static_cast<double>(head_dim_), -0.25);
  return (kind_ == FeatureKind::kCosh ? at::cat({w, -w}, 0) : w).to(options);
}

RandomFeatures::Projected RandomFeatures::project(const at::Tensor& x) const {
  const double normaliser_sq = 1.0 / std::sqrt(static_cast<double>(head_dim_));
  Projected p;
  p.projected = at::matmul(x, signed_projection(x.options()).t());
  p.half_norm = x.square().sum(-1, /*keepdim=*/true) * (0.5 * normaliser_sq);
  p.projected_max = at::amax(p.projected, {-1}, /*keepdim=*/true).detach();
  return p;
}

at::Tensor RandomFeatures::row_stabiliser(const Projected& p) const {
  // max(a) = max(W x̂) − ‖x̂‖²/2: the row maximum of either quantity, from one pass.
  return stabilise_ == StabiliseOn::kLogFeature ? p.projected_max - p.half_norm.detach() : p.projected_max;
}

at::Tensor RandomFeatures::exponentiate(Projected& p, const at::Tensor& c, double eps,
                                        const at::Tensor& key_mask, at::Tensor* row_sum) const {
  // a − c = W x̂ − (‖x̂‖²/2 + c): one shift per row.
  if (fused_feature_pass(p.projected)) {
    at::Tensor shift = p.half_norm + c;
    if (key_mask.defined())  // a padding key: exp(−inf) = 0
      shift = shift.masked_fill(key_mask.eq(0), std::numeric_limits<double>::infinity());
    at::Tensor sums = ops::shifted_exp_(p.projected, shift, eps, /*row_sums=*/row_sum != nullptr);
    if (row_sum) *row_sum = std::move(sums);
    return p.projected;
  }
  at::Tensor features = at::exp(p.projected - p.half_norm - c);
  if (eps != 0.0) features = features + eps;
  if (key_mask.defined()) features = features * key_mask;
  return features;
}

std::pair<at::Tensor, at::Tensor> RandomFeatures::log_features(const at::Tensor& x) const {
  Projected p = project(x);
  at::Tensor row_max = row_stabiliser(p);
  // Without a graph to keep (inference, or inputs that need no gradient) the [.., m] tensor is
  // updated in place: each pass over it is then one read and one write, with no new allocation.
  at::Tensor log_feature = keeps_no_graph({x}) ? p.projected.sub_(p.half_norm) : p.projected - p.half_norm;
  return {std::move(log_feature), row_max};
}

QueryFeatures RandomFeatures::queries(const at::Tensor& q) const {
  // c = the row's own maximum of the stabilised quantity (fly: of a; performer-pytorch: of W x̂).
  Projected p = project(q);
  const at::Tensor c = row_stabiliser(p);
  QueryFeatures out;
  out.features = exponentiate(p, c, eps_, at::Tensor(), &out.row_sum);
  out.log_scale = c - 0.5 * std::log(static_cast<double>(n_features()));
  return out;
}

KeyFeatures RandomFeatures::keys(const at::Tensor& k, const at::Tensor& key_mask) const {
  // c = the maximum over the sequence's real keys of each key's own maximum.
  Projected p = project(k);
  at::Tensor own = row_stabiliser(p);
  if (key_mask.defined()) own = own.masked_fill(key_mask.eq(0), -std::numeric_limits<double>::infinity());
  // A row without any real key keeps a finite stabiliser (its features are all zero anyway).
  const at::Tensor c = finite_or(at::amax(own, {-2}, /*keepdim=*/true), at::zeros({}, own.options()));
  at::Tensor features = exponentiate(p, c, 0.0, key_mask, nullptr);
  return {std::move(features), c, std::move(own), key_mask};
}

KeySums RandomFeatures::key_sums(const KeyFeatures& k, const at::Tensor& v) const {
  // performer-pytorch adds eps to every real key's features: (K' + eps·w1ᵀ)ᵀV = K'ᵀV + eps·1(wᵀV)
  // and Σ_j (K' + eps·w1ᵀ)_j = Σ_j K'_j + eps·Σ_j w_j, without a second [.., S, m] tensor.
  KeySums sums;
  sums.kv = at::matmul(k.features.transpose(-1, -2), v);  // [.., m, Dv]
  sums.z = k.features.sum(-2, /*keepdim=*/true);          // [.., 1, m]
  if (eps_ != 0.0) {
    const at::Tensor key_weight = k.key_mask.defined() ? k.key_mask : at::ones_like(v.narrow(-1, 0, 1));
    sums.kv = sums.kv + eps_ * (key_weight * v).sum(-2, /*keepdim=*/true);
    sums.z = sums.z + eps_ * key_weight.sum(-2, /*keepdim=*/true);
  }
  sums.stabiliser = k.stabiliser;
  return sums;
}

LowRankTerms RandomFeatures::attend(const QueryFeatures& q, const KeySums& sums) const {
  const at::Tensor& qf = q.features;
  LowRankTerms out;
  out.query_sum = q.row_sum.defined() ? q.row_sum : qf.sum(-1, /*keepdim=*/true);
  out.numerator = at::matmul(qf, sums.kv);
  out.normaliser = at::matmul(qf, sums.z.transpose(-1, -2));  // Σ_f φ(q)_f z_f, no [.., T, m] product
  out.log_scale = q.log_scale + sums.stabiliser - 0.5 * std::log(static_cast<double>(n_features()));
  return out;
}

LowRankTerms RandomFeatures::attend(const QueryFeatures& q, const KeyFeatures& k, const at::Tensor& v,
                                    bool causal) const {
  if (!causal) return attend(q, key_sums(k, v));
  const double half_log_m = 0.5 * std::log(static_cast<double>(n_features()));
  const at::Tensor& qf = q.features;
  const at::Tensor query_sum = q.row_sum.defined() ? q.row_sum : qf.sum(-1, /*keepdim=*/true);
  const at::Tensor ones = at::ones_like(v.narrow(-1, 0, 1));
  const at::Tensor key_weight = k.key_mask.defined() ? k.key_mask : ones;
  LowRankTerms out;
  out.query_sum = query_sum;
  const int64_t dv = v.size(-1);
  const at::Tensor both = causal_linear_product(qf, k.features, at::cat({v, ones}, -1));
  at::Tensor numerator = both.narrow(-1, 0, dv);
  at::Tensor normaliser = both.narrow(-1, dv, 1);
  if (eps_ == 0.0) {
    out.numerator = numerator;
    out.normaliser = normaliser;
    out.log_scale = q.log_scale + k.stabiliser - half_log_m;
    return out;
  }
  // eps > 0: row i is stabilised by the running maximum M_i over its keys (see the header); the
  // exp part, computed at the global stabiliser c ≥ M_i, is brought to M_i by exp(c − M_i).
  const at::Tensor running = std::get<0>(at::cummax(k.own_max, -2));
  const at::Tensor m_i = finite_or(running, k.stabiliser.expand_as(running));
  const at::Tensor lift = at::exp(k.stabiliser - m_i);
  const at::Tensor value_sum = at::cumsum(v * key_weight, -2);
  const at::Tensor key_count = at::cumsum(key_weight, -2);
  out.numerator = lift * numerator + eps_ * query_sum * value_sum;
  out.normaliser = lift * normaliser + eps_ * query_sum * key_count;
  out.log_scale = q.log_scale + m_i - half_log_m;
  return out;
}

at::Tensor causal_linear_product(const at::Tensor& a, const at::Tensor& b, const at::Tensor& v) {
  const int64_t T = a.size(-2);
  std::vector<at::Tensor> rows;
  at::Tensor carried;  // Σ_{j < chunk start} b_jᵀ v_j  [.., m, Dv]
  for (int64_t start = 0; start < T; start += kCausalChunk) {
    const int64_t len = std::min(kCausalChunk, T - start);
    const at::Tensor ac = a.narrow(-2, start, len);
    const at::Tensor bc = b.narrow(-2, start, len);
    const at::Tensor vc = v.narrow(-2, start, len);
    at::Tensor out = at::matmul(at::matmul(ac, bc.transpose(-1, -2)).tril(), vc);
    if (carried.defined()) out = out + at::matmul(ac, carried);
    const at::Tensor chunk_sum = at::matmul(bc.transpose(-1, -2), vc);
    carried = carried.defined() ? carried + chunk_sum : chunk_sum;
    rows.push_back(out);
  }
  return at::cat(rows, -2);
}

RunningFeatureSums::RunningFeatureSums(int64_t batch, int64_t heads, int64_t m, int64_t dv,
                                       const at::TensorOptions& options)
    : kv(at::zeros({batch, heads, m, dv}, options)),
      z(at::zeros({batch, heads, 1, m}, options)),
      vsum(at::zeros({batch, heads, 1, dv}, options)),
      count(at::zeros({batch, heads, 1, 1}, options)),
      max(at::full({batch, heads, 1, 1}, -std::numeric_limits<double>::infinity(), options)) {}

void RunningFeatureSums::add(const RandomFeatures& features, const at::Tensor& k, const at::Tensor& v) {
  const auto [a, row_max] = features.log_features(k);
  const at::Tensor grown = at::maximum(max, row_max);
  // The sums so far were at scale `max`; exp(−inf) = 0 rescales the empty sums harmlessly.
  const at::Tensor rescale = at::exp(max - grown);
  const at::Tensor feature = at::exp(a - grown);  // [B, H, 1, m]
  kv = kv * rescale + at::matmul(feature.transpose(-1, -2), v);
  z = z * rescale + feature;
  vsum = vsum + v;
  count = count + 1;
  max = grown;
  ++added;
}

LowRankTerms RunningFeatureSums::attend(const RandomFeatures& features, const QueryFeatures& q) const {
  LR_CHECK(!empty(), InternalError, "low-rank terms of an empty running sum");
  const double eps = features.eps();
  LowRankTerms out;
  out.query_sum = q.features.sum(-1, /*keepdim=*/true);
  out.numerator = at::matmul(q.features, kv);
  out.normaliser = (q.features * z).sum(-1, /*keepdim=*/true);
  if (eps != 0.0) {
    out.numerator = out.numerator + eps * out.query_sum * vsum;
    out.normaliser = out.normaliser + eps * out.query_sum * count;
  }
  out.log_scale = q.log_scale + max - 0.5 * std::log(static_cast<double>(features.n_features()));
  return out;
}

}  // namespace lowrank::mix
