#include "lowrank/compress/afm.h"

#include "lowrank/core/error.h"

namespace lowrank::compress {

void OutputStatistics::add(const at::Tensor& y) {
  LR_CHECK(y.dim() == 2, InvalidArgument, "AFM statistics: outputs must be [batch, features], got ",
           y.sizes());
  const at::Tensor yd = y.detach().to(at::kCPU, at::kDouble);
  if (!sum.defined()) {
    sum = at::zeros({yd.size(1)}, at::kDouble);
    square = at::zeros({yd.size(1), yd.size(1)}, at::kDouble);
  }
  LR_CHECK(yd.size(1) == sum.size(0), InvalidArgument, "AFM statistics: outputs of width ", yd.size(1),
           " added to statistics of width ", sum.size(0));
  sum += yd.sum(0);
  square.addmm_(yd.t(), yd);
  count += yd.size(0);
}

at::Tensor OutputStatistics::mean() const {
  LR_CHECK(count > 0, InvalidArgument, "AFM: empty calibration (no outputs collected)");
  return sum / static_cast<double>(count);
}

at::Tensor OutputStatistics::covariance(bool centred) const {
  const at::Tensor mu = mean();
  at::Tensor c = square / static_cast<double>(count);
  if (centred) c = c - at::outer(mu, mu);
  return c;
}

double AfmProjection::tail() const {
  return eigenvalues.slice(0, rank()).sum().item<double>();
}

AfmProjection afm_projection(const at::Tensor& covariance, const at::Tensor& mean, int64_t k) {
  const int64_t n = covariance.size(0);
  LR_CHECK(covariance.dim() == 2 && covariance.size(1) == n && mean.dim() == 1 && mean.size(0) == n,
           InvalidArgument, "AFM: covariance ", covariance.sizes(), " and mean ", mean.sizes(),
           " do not fit");
  LR_CHECK(k >= 1 && k < n, InvalidArgument, "AFM: rank ", k, " must be in [1, ", n,
           ") (the layer's output width is ", n, "; k >= width compresses nothing)");
  const at::Tensor c = covariance.to(at::kDouble);
  auto [values, vectors] = at::linalg_eigh(0.5 * (c + c.t()));  // ascending
  values = values.flip(0);
  vectors = vectors.flip(1);
  AfmProjection p;
  p.eigenvalues = values;
  p.basis = vectors.slice(1, 0, k).contiguous();
  p.mean = mean.to(at::kDouble);
  return p;
}

AfmProjection afm_projection(const OutputStatistics& stats, int64_t k, bool centred) {
  const at::Tensor mu = stats.mean();
  return afm_projection(stats.covariance(centred), centred ? mu : at::zeros_like(mu), k);
}

AfmLinear afm_linear(const at::Tensor& weight, const at::Tensor& bias, const AfmProjection& p) {
  const at::Tensor W = weight.detach().to(at::kDouble), U = p.basis;
  LR_CHECK(W.dim() == 2 && W.size(0) == U.size(0), InvalidArgument, "AFM: weight ", W.sizes(),
           " for a projection of width ", U.size(0));
  const int64_t out = W.size(0);
  const at::Tensor b = bias.defined() ? bias.detach().to(at::kDouble) : at::zeros({out}, at::kDouble);
  AfmLinear r;
  r.w1 = at::matmul(U.t(), W).to(at::kFloat);
  r.b1 = at::matmul(U.t(), b).to(at::kFloat);
  r.w2 = U.to(at::kFloat);
  r.b2 = (p.mean - at::matmul(U, at::matmul(U.t(), p.mean))).to(at::kFloat);
  return r;
}

AfmEmbedding afm_embedding(const at::Tensor& table, const AfmProjection& p) {
  const at::Tensor E = table.detach().to(at::kDouble), U = p.basis;
  LR_CHECK(E.dim() == 2 && E.size(1) == U.size(0), InvalidArgument, "AFM: embedding table ", E.sizes(),
           " for a projection of width ", U.size(0));
  AfmEmbedding r;
  r.table = at::matmul(E - p.mean.unsqueeze(0), U).to(at::kFloat);
  r.proj_weight = U.to(at::kFloat);
  r.proj_bias = p.mean.to(at::kFloat);
  return r;
}

bool afm_centred(const CompressOptions& options) {
  if (!options.method_options.contains("centred")) return true;
  const Json& v = options.method_options["centred"];
  LR_CHECK(v.is_boolean(), InvalidArgument, "--method-options \"centred\": ", v.dump(),
           " must be true or false");
  return v.get<bool>();
}

std::shared_ptr<StoredOperator> compress_afm(const SlotInput& in, const CompressOptions& options) {
  LR_CHECK(in.stats != nullptr && in.stats->gram.defined() && in.stats->sum.defined() && in.stats->tokens > 0,
           InvalidArgument, "afm needs the Gram matrix and input sum of slot ", in.name, " (calibration)");
  const at::Tensor W = in.weight.to(at::kDouble);
  const int64_t out = W.size(0);
  LR_CHECK(in.rank >= 1 && in.rank < out, InvalidArgument, "afm: rank ", in.rank, " for slot ", in.name,
           " of ", out, " outputs (k must be in [1, ", out, "))");
  const double n = static_cast<double>(in.stats->tokens);
  const at::Tensor x_mean = in.stats->sum.to(at::kDouble) / n;
  const at::Tensor b = in.bias.defined() ? in.bias.to(at::kDouble) : at::zeros({out}, at::kDouble);
  const bool centred = afm_centred(options);
  // E[x xᵀ] and, centred, Cov(x) = E[x xᵀ] − x̄ x̄ᵀ; C = W Cov(x) Wᵀ (b cancels), μ = W x̄ + b.
  at::Tensor second = in.stats->gram.to(at::kDouble) / n;
  at::Tensor mu = at::matmul(W, x_mean) + b;
  at::Tensor C;
  if (centred) {
    C = at::matmul(at::matmul(W, second - at::outer(x_mean, x_mean)), W.t());
  } else {
    // E[y yᵀ] = W E[x xᵀ] Wᵀ + W x̄ bᵀ + b x̄ᵀ Wᵀ + b bᵀ.
    const at::Tensor wx = at::matmul(W, x_mean);
    C = at::matmul(at::matmul(W, second), W.t()) + at::outer(wx, b) + at::outer(b, wx) + at::outer(b, b);
    mu = at::zeros_like(mu);
  }
  const AfmProjection p = afm_projection(C, mu, in.rank);
  const AfmLinear f = afm_linear(in.weight, in.bias, p);
  // Without a ReLU the two layers fold into one lowrank operator: W₂ (W₁ x + b₁) + b₂.
  const at::Tensor bias = at::addmv(f.b2, f.w2, f.b1);
  return std::make_shared<LowRankOperator>(f.w2, f.w1, bias);
}

}  // namespace lowrank::compress
