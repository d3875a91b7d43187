#include "lowrank/kernel_methods/mcr2.h"

#include <ATen/CPUGeneratorImpl.h>

#include <algorithm>
#include <cmath>
#include <numeric>

#include "lowrank/core/error.h"
#include "lowrank/kernel_methods/methods.h"
#include "lowrank/linalg/kmeans.h"
#include "lowrank/linalg/sinkhorn.h"

namespace lowrank::kernel_methods {
namespace {

constexpr const char* kName = "mcr2";

void check_epsilon(double epsilon_sq) {
  LR_CHECK(std::isfinite(epsilon_sq) && epsilon_sq > 0, InvalidArgument, "mcr2: epsilon_sq must be > 0, got ",
           epsilon_sq);
}

// log det of symmetric positive definite matrices [..., d, d] by Cholesky.
at::Tensor logdet_spd(const at::Tensor& a) {
  return 2 * at::log(at::linalg_cholesky(a).diagonal(0, -2, -1)).sum(-1);
}

// Adam (Kingma & Ba, 2015) on a list of leaf tensors, maximising.
struct Adam {
  explicit Adam(std::vector<at::Tensor> params, double lr) : params(std::move(params)), lr(lr) {
    for (const auto& p : this->params) m.push_back(at::zeros_like(p)), v.push_back(at::zeros_like(p));
  }
  void ascend() {
    at::NoGradGuard no_grad;
    ++t;
    const double b1 = 0.9, b2 = 0.999, eps = 1e-8;
    for (size_t i = 0; i < params.size(); ++i) {
      const at::Tensor g = params[i].grad();
      m[i].mul_(b1).add_(g, 1 - b1);
      v[i].mul_(b2).addcmul_(g, g, 1 - b2);
      const at::Tensor step = (m[i] / (1 - std::pow(b1, t))) / ((v[i] / (1 - std::pow(b2, t))).sqrt() + eps);
      params[i].add_(step, lr);
      params[i].mutable_grad().zero_();
    }
  }
  std::vector<at::Tensor> params, m, v;
  double lr;
  int64_t t = 0;
};

class Mcr2 final : public Estimator {
 public:
  Mcr2(const Json& options, uint64_t seed) : Estimator(options, seed) {
    o_.clusters = json_get_or<int64_t>(options, "clusters", 2, kName);
    o_.feature_dim = json_get_or<int64_t>(options, "feature_dim", 16, kName);
    o_.epsilon_sq = json_get_or<double>(options, "epsilon_sq", 0.5, kName);
    o_.eta = json_get_or<double>(options, "eta", 0.1, kName);
    o_.sinkhorn_iterations = json_get_or<int64_t>(options, "sinkhorn_iterations", 30, kName);
    o_.tcr_steps = json_get_or<int64_t>(options, "tcr_steps", 100, kName);
    o_.steps = json_get_or<int64_t>(options, "steps", 200, kName);
    o_.learning_rate = json_get_or<double>(options, "learning_rate", 0.01, kName);
    o_.subspace_rank = json_get_or<int64_t>(options, "subspace_rank", 0, kName);
    validate(o_);
  }
  std::string_view method() const override { return kName; }

  static void validate(const Mcr2Options& o) {
    LR_CHECK(o.clusters >= 1, InvalidArgument, kName, ": option \"clusters\" must be >= 1, got ", o.clusters);
    LR_CHECK(o.feature_dim >= 1, InvalidArgument, kName, ": option \"feature_dim\" must be >= 1, got ",
             o.feature_dim);
    LR_CHECK(std::isfinite(o.epsilon_sq) && o.epsilon_sq > 0, InvalidArgument, kName,
             ": option \"epsilon_sq\" must be > 0, got ", o.epsilon_sq);
    LR_CHECK(std::isfinite(o.eta) && o.eta > 0, InvalidArgument, kName, ": option \"eta\" must be > 0, got ",
             o.eta);
    LR_CHECK(o.sinkhorn_iterations >= 1, InvalidArgument, kName,
             ": option \"sinkhorn_iterations\" must be >= 1, got ", o.sinkhorn_iterations);
    LR_CHECK(o.tcr_steps >= 0 && o.steps >= 0, InvalidArgument, kName,
             ": options \"tcr_steps\" and \"steps\" must be >= 0, got ", o.tcr_steps, " and ", o.steps);
    LR_CHECK(std::isfinite(o.learning_rate) && o.learning_rate > 0, InvalidArgument, kName,
             ": option \"learning_rate\" must be > 0, got ", o.learning_rate);
    LR_CHECK(o.subspace_rank >= 0 && o.subspace_rank <= o.feature_dim, InvalidArgument, kName,
             ": option \"subspace_rank\" must be in [0, feature_dim = ", o.feature_dim, "], got ",
             o.subspace_rank);
  }

 protected:
  void fit_impl(const Dataset& data) override {
    at::Generator generator = at::detail::createCPUGenerator(seed());
    Mcr2Fit fit = mcr2_fit(data.x, o_, generator);
    feature_head_ = fit.feature_head;
    bases_ = fit.bases;
    labels_ = fit.labels;
    const at::Tensor z = mcr2_features(data.x, feature_head_);
    report_ = {{"clusters", o_.clusters},
               {"rate_reduction", fit.rate_reduction.empty() ? 0.0 : fit.rate_reduction.back()},
               {"coding_rate", coding_rate(z, o_.epsilon_sq).item<double>()}};
  }
  at::Tensor predict_impl(const at::Tensor& x) const override {
    return nearest_subspace(mcr2_features(x, feature_head_), bases_).to(at::kDouble);
  }
  std::vector<NamedTensor> state() const override {
    return {{"feature_head", feature_head_}, {"bases", bases_}, {"train_labels", labels_}};
  }
  void restore(const SafetensorsFile& file) override {
    feature_head_ = expect_state(file, "feature_head");
    bases_ = expect_state(file, "bases");
    labels_ = expect_state(file, "train_labels");
    LR_CHECK(feature_head_.dim() == 2 && feature_head_.size(1) == input_dim() && bases_.dim() == 3 &&
                 bases_.size(1) == feature_head_.size(0),
             Corruption, file.path().string(), ": feature_head ", feature_head_.sizes(), " and bases ",
             bases_.sizes(), " do not fit together");
  }

 private:
  Mcr2Options o_;
  at::Tensor feature_head_, bases_, labels_;
};

}  // namespace

at::Tensor coding_rate(const at::Tensor& z, double epsilon_sq) {
  check_epsilon(epsilon_sq);
  LR_CHECK(z.dim() == 2 && z.size(0) >= 1, InvalidArgument, "mcr2: features must be [n, d], got ", z.sizes());
  const double n = static_cast<double>(z.size(0)), d = static_cast<double>(z.size(1));
  const at::Tensor identity = at::eye(z.size(1), z.options());
  return 0.5 * logdet_spd(identity + (d / (n * epsilon_sq)) * at::matmul(z.t(), z));
}

at::Tensor clustered_coding_rate(const at::Tensor& z, const at::Tensor& gamma, double epsilon_sq) {
  check_epsilon(epsilon_sq);
  LR_CHECK(z.dim() == 2 && z.size(0) >= 1, InvalidArgument, "mcr2: features must be [n, d], got ", z.sizes());
  const int64_t n = z.size(0);
  LR_CHECK(gamma.dim() == 2 && gamma.size(0) == n && gamma.size(1) == n, InvalidArgument,
           "mcr2: the membership must be [", n, ", ", n, "], got ", gamma.sizes());
  const double d = static_cast<double>(z.size(1));
  // Z Diag(Γ_j) Zᵀ for every j at once: Σ_i Γ_ji z_i z_iᵀ → [n, d, d].
  const at::Tensor outer = z.unsqueeze(2) * z.unsqueeze(1);  // [n, d, d]
  const at::Tensor scatter = at::tensordot(gamma, outer, {1}, {0});
  const at::Tensor identity = at::eye(z.size(1), z.options());
  return logdet_spd(identity + (d / epsilon_sq) * scatter).sum() / (2.0 * static_cast<double>(n));
}

at::Tensor doubly_stochastic_membership(const at::Tensor& c, double eta, int64_t iterations) {
  LR_CHECK(c.dim() == 2 && c.size(0) >= 1, InvalidArgument, "mcr2: cluster features must be [n, d], got ",
           c.sizes());
  const int64_t n = c.size(0);
  const at::Tensor uniform = at::full({n}, 1.0 / static_cast<double>(n), at::kDouble);
  linalg::SinkhornOptions options;
  options.epsilon = eta;
  options.max_iterations = iterations;
  options.tolerance = 0;  // exactly `iterations` steps: a fixed unrolled map to differentiate
  return static_cast<double>(n) * linalg::sinkhorn_log(-at::matmul(c, c.t()), uniform, uniform, options).plan;
}

at::Tensor spectral_clustering(const at::Tensor& affinity, int64_t clusters, at::Generator& generator) {
  LR_CHECK(affinity.dim() == 2 && affinity.size(0) == affinity.size(1), InvalidArgument,
           "mcr2: the affinity must be square, got ", affinity.sizes());
  const int64_t n = affinity.size(0);
  LR_CHECK(clusters >= 1 && clusters <= n, InvalidArgument, "mcr2: clusters must be in [1, ", n, "], got ",
           clusters);
  const at::Tensor a = 0.5 * (affinity + affinity.t()).to(at::kDouble);
  const at::Tensor inv_sqrt_degree = a.sum(1).clamp_min(1e-300).rsqrt();
  const at::Tensor normalised = inv_sqrt_degree.unsqueeze(1) * a * inv_sqrt_degree.unsqueeze(0);
  const at::Tensor vectors = std::get<1>(at::linalg_eigh(normalised));  // ascending eigenvalues
  at::Tensor embedding = vectors.slice(1, n - clusters, n);
  embedding = embedding / embedding.norm(2, 1, /*keepdim=*/true).clamp_min(1e-300);
  return linalg::kmeans(embedding.contiguous(), clusters, generator).assignments;
}

at::Tensor mcr2_features(const at::Tensor& x, const at::Tensor& head) {
  const at::Tensor raw = at::matmul(x, head.t());
  return raw / raw.norm(2, 1, /*keepdim=*/true).clamp_min(1e-12);
}

at::Tensor nearest_subspace(const at::Tensor& features, const at::Tensor& bases) {
  // ‖B_kᵀ z‖² for every k: [m, k].
  const at::Tensor projections = at::einsum("md,kdr->mkr", {features, bases});
  return projections.square().sum(2).argmax(1);
}

Mcr2Fit mcr2_fit(const at::Tensor& x, const Mcr2Options& options, at::Generator& generator) {
  Mcr2::validate(options);
  LR_CHECK(x.dim() == 2 && x.size(0) >= options.clusters, InvalidArgument,
           "mcr2: x must be [n, D] with n >= ", options.clusters, " clusters, got ", x.sizes());
  const at::Tensor xd = x.to(at::kDouble);
  const int64_t dim_in = xd.size(1), d = options.feature_dim;
  at::Tensor feature_head =
      at::empty({d, dim_in}, at::kDouble).normal_(0, 1 / std::sqrt(double(dim_in)), generator);
  feature_head.set_requires_grad(true);

  // TCR initialisation: maximise R(Z) alone.
  {
    Adam adam({feature_head}, options.learning_rate);
    for (int64_t step = 0; step < options.tcr_steps; ++step) {
      coding_rate(mcr2_features(xd, feature_head), options.epsilon_sq).backward();
      adam.ascend();
    }
  }
  at::Tensor cluster_head = feature_head.detach().clone();
  cluster_head.set_requires_grad(true);

  // MLC: maximise ΔR = R(Z) − R_c(Z, Γ) jointly over both heads.
  Mcr2Fit fit;
  Adam adam({feature_head, cluster_head}, options.learning_rate);
  for (int64_t step = 0; step < options.steps; ++step) {
    const at::Tensor z = mcr2_features(xd, feature_head);
    const at::Tensor gamma = doubly_stochastic_membership(mcr2_features(xd, cluster_head), options.eta,
                                                          options.sinkhorn_iterations);
    const at::Tensor reduction =
        coding_rate(z, options.epsilon_sq) - clustered_coding_rate(z, gamma, options.epsilon_sq);
    reduction.backward();
    adam.ascend();
    fit.rate_reduction.push_back(reduction.item<double>());
  }

  at::NoGradGuard no_grad;
  fit.feature_head = feature_head.detach();
  fit.cluster_head = cluster_head.detach();
  fit.membership = doubly_stochastic_membership(mcr2_features(xd, fit.cluster_head), options.eta,
                                                options.sinkhorn_iterations);
  fit.labels = spectral_clustering(fit.membership, options.clusters, generator);
  // Each cluster's subspace: the top right singular vectors of its features.
  const at::Tensor z = mcr2_features(xd, fit.feature_head);
  const int64_t rank =
      options.subspace_rank > 0 ? options.subspace_rank : std::max<int64_t>(1, d / options.clusters);
  fit.bases = at::zeros({options.clusters, d, rank}, at::kDouble);
  for (int64_t k = 0; k < options.clusters; ++k) {
    const at::Tensor members = z.index_select(0, at::nonzero(fit.labels.eq(k)).flatten());
    if (members.size(0) == 0) continue;  // an empty cluster never wins (its projections are 0)
    const at::Tensor v =
        std::get<2>(at::linalg_svd(members, /*full_matrices=*/false)).t();  // [d, min(n_k, d)]
    const int64_t r = std::min<int64_t>(rank, v.size(1));
    fit.bases[k].slice(1, 0, r).copy_(v.slice(1, 0, r));
  }
  return fit;
}

double clustering_accuracy(const at::Tensor& predicted, const at::Tensor& truth, int64_t clusters) {
  LR_CHECK(predicted.sizes() == truth.sizes() && predicted.dim() == 1, InvalidArgument,
           "mcr2: predicted and true labels must be equal-length vectors");
  LR_CHECK(clusters >= 1 && clusters <= 10, InvalidArgument,
           "mcr2: accuracy by permutations needs 1..10 clusters, got ", clusters);
  const at::Tensor p = predicted.to(at::kLong).contiguous(), t = truth.to(at::kLong).contiguous();
  std::vector<int64_t> counts(clusters * clusters, 0);
  for (int64_t i = 0; i < p.size(0); ++i) {
    const int64_t a = p[i].item<int64_t>(), b = t[i].item<int64_t>();
    if (a >= 0 && a < clusters && b >= 0 && b < clusters) ++counts[a * clusters + b];
  }
  std::vector<int64_t> perm(clusters);
  std::iota(perm.begin(), perm.end(), 0);
  int64_t best = 0;
  do {
    int64_t hits = 0;
    for (int64_t a = 0; a < clusters; ++a) hits += counts[a * clusters + perm[a]];
    best = std::max(best, hits);
  } while (std::next_permutation(perm.begin(), perm.end()));
  return static_cast<double>(best) / static_cast<double>(p.size(0));
}

void register_mcr2(Registry<EstimatorMethod>& registry) {
  registry.add(
      {kName,
       "MLC: maximal coding rate reduction with a Sinkhorn doubly stochastic membership, TCR initialisation, "
       "spectral clustering of Γ; fit clusters, predict gives cluster labels (nearest subspace)",
       "Ding et al., 2023, ICCV, arXiv:2301.01805 (MCR²: Yu et al., 2020, arXiv:2006.08558)",
       {{"clusters", "number of clusters k (default 2)"},
        {"feature_dim", "feature dimension d of the linear heads (default 16)"},
        {"epsilon_sq", "quantisation error ε² > 0 of the coding rates (default 0.5)"},
        {"eta", "Sinkhorn entropic regulariser η > 0 of Γ (default 0.1)"},
        {"sinkhorn_iterations", "unrolled Sinkhorn iterations per step (default 30)"},
        {"tcr_steps", "TCR initialisation steps, maximising R(Z) (default 100)"},
        {"steps", "MLC steps maximising R − R_c (default 200)"},
        {"learning_rate", "Adam step size (default 0.01)"},
        {"subspace_rank", "rank of each cluster subspace for predict (default 0: max(1, d/k))"}}},
      {[](const Json& options, uint64_t seed) { return std::make_unique<Mcr2>(options, seed); }});
}

}  // namespace lowrank::kernel_methods
