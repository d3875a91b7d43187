#include "lowrank/kernel_methods/gkcl.h"

#include <ATen/CPUGeneratorImpl.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <string>
#include <vector>

#include "lowrank/core/error.h"
#include "lowrank/kernel_methods/estimator.h"
#include "lowrank/kernel_methods/krr.h"
#include "lowrank/kernel_methods/methods.h"

namespace lowrank::kernel_methods {
namespace {

constexpr const char* kName = "gkcl";

// Float64 values checked to be integers (labels, task ids); `what` names them in the message.
at::Tensor checked_integers(const at::Tensor& values, std::string_view what) {
  LR_CHECK(values.defined() && values.dim() == 1, InvalidArgument, kName, ": ", what,
           " must be a vector [n]");
  LR_CHECK(at::round(values).eq(values).all().item<bool>(), InvalidArgument, kName, ": ", what,
           " must be integers");
  return values.to(at::kDouble);
}

at::Tensor sorted_unique(const at::Tensor& values) {
  return std::get<0>(at::_unique(values, /*sorted=*/true));
}

std::vector<double> to_vector(const at::Tensor& t) {
  const at::Tensor c = t.to(at::kDouble).contiguous();
  return {c.data_ptr<double>(), c.data_ptr<double>() + c.numel()};
}

std::string to_string(const at::Tensor& t) {
  std::string out;
  for (double v : to_vector(t)) out += (out.empty() ? "" : ", ") + std::to_string(static_cast<int64_t>(v));
  return out;
}

class Gkcl final : public Estimator {
 public:
  Gkcl(const Json& options, uint64_t seed) : Estimator(options, seed) {
    kernel_ = kernel_spec_from_options(options, kName);
    ridge_ = json_get_or<double>(options, "ridge", 0.01, kName);
    LR_CHECK(std::isfinite(ridge_) && ridge_ >= 0, InvalidArgument, kName,
             ": option \"ridge\" must be >= 0, got ", ridge_);
    const auto support = json_get_or<std::string>(options, "support", "coreset", kName);
    LR_CHECK(support == "coreset" || support == "generated", InvalidArgument, kName,
             ": option \"support\" must be \"coreset\" or \"generated\", got \"", support, "\"");
    generated_ = support == "generated";
    per_class_ = json_get_or<int64_t>(options, "per_class", 20, kName);
    LR_CHECK(per_class_ >= 1, InvalidArgument, kName, ": option \"per_class\" must be >= 1, got ",
             per_class_);
    covariance_ =
        covariance_from_name(json_get_or<std::string>(options, "covariance", "diagonal", kName), kName);
    rank_ = json_get_or<int64_t>(options, "rank", 2, kName);
    LR_CHECK(rank_ >= 1, InvalidArgument, kName, ": option \"rank\" must be >= 1, got ", rank_);
  }
  std::string_view method() const override { return kName; }

 protected:
  void fit_impl(const Dataset& data) override {
    LR_CHECK(data.x.size(1) >= 2, InvalidArgument, kName,
             ": x needs the task id in its first column and at least one input column, got width ",
             data.x.size(1));
    LR_CHECK(data.y.defined() && data.y.dim() == 1, InvalidArgument, kName, ": fit needs class labels y [n]");
    const at::Tensor task_column = checked_integers(data.x.select(1, 0), "the task ids (x's first column)");
    LR_CHECK(task_column.ge(0).all().item<bool>(), InvalidArgument, kName, ": task ids must be >= 0");
    const at::Tensor labels = checked_integers(data.y, "the labels y");
    const at::Tensor inputs = data.x.slice(1, 1);
    LR_CHECK(!generated_ || covariance_ == Covariance::kDiagonal || rank_ < inputs.size(1), InvalidArgument,
             kName, ": option \"rank\" must be below the input width ", inputs.size(1), ", got ", rank_);
    tasks_ = sorted_unique(task_column);
    std::vector<at::Tensor> support, support_labels, support_tasks, class_tasks, class_labels, means, factors,
        noises;
    for (int64_t i = 0; i < tasks_.size(0); ++i) {
      const double task = tasks_[i].item<double>();
      const at::Tensor rows = task_column.eq(task).nonzero().squeeze(1);
      const at::Tensor x = inputs.index_select(0, rows), y = labels.index_select(0, rows);
      if (!generated_) {
        at::Generator generator = task_generator(seed(), static_cast<int64_t>(task));
        const at::Tensor keep = coreset_indices(y, per_class_, generator);
        support.push_back(x.index_select(0, keep));
        support_labels.push_back(y.index_select(0, keep));
        support_tasks.push_back(at::full({keep.size(0)}, task, at::kDouble));
        continue;
      }
      const at::Tensor classes = sorted_unique(y);
      for (int64_t c = 0; c < classes.size(0); ++c) {
        const double label = classes[c].item<double>();
        const at::Tensor members = x.index_select(0, y.eq(label).nonzero().squeeze(1));
        LR_CHECK(members.size(0) >= 2, InvalidArgument, kName, ": class ", label, " of task ", task, " has ",
                 members.size(0), " point(s); its generator needs at least 2");
        const ClassGaussian g = fit_class_gaussian(members, covariance_, rank_);
        class_tasks.push_back(at::full({1}, task, at::kDouble));
        class_labels.push_back(at::full({1}, label, at::kDouble));
        means.push_back(g.mean);
        factors.push_back(g.factor);
        noises.push_back(g.noise);
      }
    }
    if (generated_) {
      class_tasks_ = at::cat(class_tasks);
      class_labels_ = at::cat(class_labels);
      means_ = at::stack(means);
      factors_ = at::stack(factors);
      noise_ = at::stack(noises);
    } else {
      support_ = at::cat(support);
      support_labels_ = at::cat(support_labels);
      support_tasks_ = at::cat(support_tasks);
    }
    build_heads();
  }

  at::Tensor predict_impl(const at::Tensor& x) const override {
    const at::Tensor task_column = checked_integers(x.select(1, 0), "the task ids (x's first column)");
    at::Tensor out = at::empty({x.size(0)}, at::kDouble);
    for (const double task : to_vector(sorted_unique(task_column))) {
      const auto head = heads_.find(static_cast<int64_t>(task));
      LR_CHECK(head != heads_.end(), InvalidArgument, kName, ": task id ", task,
               " in x's first column was not fitted (fitted tasks: ", to_string(tasks_), ")");
      const at::Tensor rows = task_column.eq(task).nonzero().squeeze(1);
      out.index_copy_(0, rows, krr_head_predict(kernel_, head->second, x.index_select(0, rows).slice(1, 1)));
    }
    return out;
  }

  std::vector<NamedTensor> state() const override {
    if (generated_) {
      std::vector<NamedTensor> out = {{"tasks", tasks_},
                                      {"class_tasks", class_tasks_},
                                      {"class_labels", class_labels_},
                                      {"means", means_},
                                      {"noise", noise_}};
      // The diagonal model has no factor (an empty [C, d, 0] tensor is not written).
      if (covariance_ == Covariance::kLowRank) out.push_back({"factors", factors_});
      return out;
    }
    return {{"tasks", tasks_},
            {"support", support_},
            {"support_labels", support_labels_},
            {"support_tasks", support_tasks_}};
  }

  void restore(const SafetensorsFile& file) override {
    tasks_ = expect_state(file, "tasks");
    const int64_t d = input_dim() - 1;
    if (generated_) {
      class_tasks_ = expect_state(file, "class_tasks");
      class_labels_ = expect_state(file, "class_labels");
      means_ = expect_state(file, "means");
      noise_ = expect_state(file, "noise");
      const int64_t c = class_tasks_.size(0);
      factors_ = covariance_ == Covariance::kLowRank ? expect_state(file, "factors")
                                                     : at::zeros({c, d, 0}, at::kDouble);
      LR_CHECK(class_labels_.size(0) == c && means_.dim() == 2 && means_.size(0) == c &&
                   means_.size(1) == d && factors_.dim() == 3 && factors_.size(0) == c &&
                   factors_.size(1) == d && noise_.dim() == 2 && noise_.size(0) == c,
               Corruption, file.path().string(), ": the class generators' shapes do not fit together");
    } else {
      support_ = expect_state(file, "support");
      support_labels_ = expect_state(file, "support_labels");
      support_tasks_ = expect_state(file, "support_tasks");
      LR_CHECK(support_.dim() == 2 && support_.size(1) == d && support_labels_.size(0) == support_.size(0) &&
                   support_tasks_.size(0) == support_.size(0),
               Corruption, file.path().string(), ": support ", support_.sizes(), ", its labels ",
               support_labels_.sizes(), " and tasks ", support_tasks_.sizes(), " do not fit together");
    }
    build_heads();
  }

 private:
  // The heads from the stored state: the coreset as kept, or the support drawn afresh from each
  // task's class generators with that task's generator (the same draw on every rebuild).
  void build_heads() {
    heads_.clear();
    int64_t floats = 0, support_points = 0;
    double jitter = 0;
    for (double task : to_vector(tasks_)) {
      at::Tensor support, labels;
      if (generated_) {
        at::Generator generator = task_generator(seed(), static_cast<int64_t>(task));
        std::vector<at::Tensor> draws, draw_labels;
        for (int64_t c = 0; c < class_tasks_.size(0); ++c) {
          if (class_tasks_[c].item<double>() != task) continue;
          const ClassGaussian g{means_[c], factors_[c], noise_[c]};
          draws.push_back(sample_class_gaussian(g, per_class_, generator));
          draw_labels.push_back(at::full({per_class_}, class_labels_[c].item<double>(), at::kDouble));
          floats += stored_floats(g) + 1;  // + its label
        }
        support = at::cat(draws);
        labels = at::cat(draw_labels);
      } else {
        const at::Tensor rows = support_tasks_.eq(task).nonzero().squeeze(1);
        support = support_.index_select(0, rows);
        labels = support_labels_.index_select(0, rows);
        floats += support.numel() + labels.numel();
      }
      KrrHead head = krr_head(kernel_, support, labels, ridge_);
      jitter = std::max(jitter, head.jitter);
      support_points += support.size(0);
      heads_.emplace(static_cast<int64_t>(task), std::move(head));
    }
    report_ = {{"tasks", tasks_.size(0)},
               {"support", generated_ ? "generated" : "coreset"},
               {"support_points", support_points},
               {"stored_floats", floats},
               {"max_jitter", jitter}};
  }

  KernelSpec kernel_;
  double ridge_ = 0.01;
  bool generated_ = false;
  int64_t per_class_ = 20;
  Covariance covariance_ = Covariance::kDiagonal;
  int64_t rank_ = 2;
  at::Tensor tasks_;
  at::Tensor support_, support_labels_, support_tasks_;              // coreset
  at::Tensor class_tasks_, class_labels_, means_, factors_, noise_;  // generated
  std::map<int64_t, KrrHead> heads_;
};

}  // namespace

KrrHead krr_head(const KernelSpec& kernel, const at::Tensor& support, const at::Tensor& labels,
                 double ridge) {
  LR_CHECK(support.dim() == 2 && support.size(0) >= 1, InvalidArgument,
           "gkcl: the support must be a non-empty [s, d] matrix, got ", support.sizes());
  LR_CHECK(labels.dim() == 1 && labels.size(0) == support.size(0), InvalidArgument,
           "gkcl: the labels must be [", support.size(0), "], got ", labels.sizes());
  KrrHead head;
  head.support = support.to(at::kDouble);
  const at::Tensor y = checked_integers(labels, "the support labels");
  head.classes = sorted_unique(y);
  // Y [s, c]: the one-hot of each label among the task's classes.
  const at::Tensor one_hot = y.unsqueeze(1).eq(head.classes.unsqueeze(0)).to(at::kDouble);
  const KrrSolution solution = krr_solve(gram(kernel, head.support, head.support), one_hot, ridge);
  head.alpha = solution.alpha;
  head.jitter = solution.jitter;
  return head;
}

at::Tensor krr_head_scores(const KernelSpec& kernel, const KrrHead& head, const at::Tensor& x) {
  return at::matmul(gram(kernel, x.to(at::kDouble), head.support), head.alpha);
}

at::Tensor krr_head_predict(const KernelSpec& kernel, const KrrHead& head, const at::Tensor& x) {
  return head.classes.index_select(0, krr_head_scores(kernel, head, x).argmax(1));
}

at::Tensor coreset_indices(const at::Tensor& labels, int64_t per_class, at::Generator& generator) {
  LR_CHECK(per_class >= 1, InvalidArgument, "gkcl: the coreset needs per_class >= 1, got ", per_class);
  const at::Tensor y = checked_integers(labels, "the labels");
  std::vector<at::Tensor> keep;
  for (double label : to_vector(sorted_unique(y))) {
    const at::Tensor members = y.eq(label).nonzero().squeeze(1);
    const at::Tensor order = at::randperm(members.size(0), generator, at::kLong);
    keep.push_back(members.index_select(0, order.slice(0, 0, std::min(per_class, members.size(0)))));
  }
  return at::cat(keep);
}

Covariance covariance_from_name(std::string_view name, std::string_view what) {
  if (name == "diagonal") return Covariance::kDiagonal;
  if (name == "low_rank") return Covariance::kLowRank;
  throw InvalidArgument(
      str(what, ": option \"covariance\" must be \"diagonal\" or \"low_rank\", got \"", name, "\""));
}

ClassGaussian fit_class_gaussian(const at::Tensor& x, Covariance covariance, int64_t rank) {
  LR_CHECK(x.dim() == 2 && x.size(0) >= 2, InvalidArgument,
           "gkcl: a class generator needs x [n, d] with n >= 2, got ", x.sizes());
  const int64_t n = x.size(0), d = x.size(1);
  const at::Tensor xd = x.to(at::kDouble);
  ClassGaussian g;
  g.mean = xd.mean(0);
  const at::Tensor centred = xd - g.mean;
  if (covariance == Covariance::kDiagonal) {
    g.factor = at::zeros({d, 0}, at::kDouble);
    g.noise = (centred.square().sum(0) / static_cast<double>(n - 1)).sqrt();
    return g;
  }
  LR_CHECK(rank >= 1 && rank < d, InvalidArgument, "gkcl: the low-rank generator needs 1 <= rank < d = ", d,
           ", got ", rank);
  const at::Tensor sample_covariance = at::matmul(centred.t(), centred) / static_cast<double>(n - 1);
  auto [values, vectors] = at::linalg_eigh(sample_covariance);  // ascending
  const at::Tensor top = values.slice(0, d - rank).flip({0}), basis = vectors.slice(1, d - rank).flip({1});
  // The discarded directions' mean variance is the isotropic noise (Tipping & Bishop's σ²_ML).
  const double sigma2 = std::max(0.0, values.slice(0, 0, d - rank).mean().item<double>());
  g.factor = basis * (top - sigma2).clamp_min(0).sqrt().unsqueeze(0);
  g.noise = at::full({1}, std::sqrt(sigma2), at::kDouble);
  return g;
}

at::Tensor sample_class_gaussian(const ClassGaussian& g, int64_t count, at::Generator& generator) {
  LR_CHECK(count >= 1, InvalidArgument, "gkcl: the number of draws must be >= 1, got ", count);
  const int64_t d = g.mean.size(0), r = g.factor.size(1);
  const at::Tensor z = at::empty({count, r}, at::kDouble).normal_(0, 1, generator);
  const at::Tensor eps = at::empty({count, d}, at::kDouble).normal_(0, 1, generator);
  return g.mean.unsqueeze(0) + at::matmul(z, g.factor.t()) + g.noise.unsqueeze(0) * eps;
}

at::Tensor class_gaussian_covariance(const ClassGaussian& g) {
  const int64_t d = g.mean.size(0);
  return at::matmul(g.factor, g.factor.t()) + at::diag(g.noise.square().expand({d}).contiguous());
}

int64_t stored_floats(const ClassGaussian& g) {
  return g.mean.numel() + g.factor.numel() + g.noise.numel();
}

at::Generator task_generator(uint64_t seed, int64_t task) {
  // A fixed odd multiplier spreads (seed, task) pairs apart (the golden-ratio constant of splitmix).
  return at::detail::createCPUGenerator(seed ^ (0x9E3779B97F4A7C15ULL * static_cast<uint64_t>(task + 1)));
}

void register_gkcl(Registry<EstimatorMethod>& registry) {
  registry.add(
      {kName,
       "Kernel continual learning: a kernel ridge head per task on a stored per-class coreset (KCL) or on "
       "support drawn from per-class Gaussian generators (GKCL); x's first column is the task id",
       "Derakhshani, Zhen, Shao & Snoek, 2021, ICML, arXiv:2107.05757; arXiv:2112.13410",
       {{"kernel", "rbf (default) | laplace | matern | arccos0 | arccos1"},
        {"bandwidth", "kernel bandwidth h > 0 (default 1)"},
        {"nu", "Matérn smoothness 0.5, 1.5 or 2.5 (default 2.5)"},
        {"ridge", "λ >= 0 of α = (K(S, S) + λI)⁻¹Y (default 0.01)"},
        {"support", "\"coreset\" (default: stored random points per class) or \"generated\""},
        {"per_class", "support points per class: coreset size or generated draws (default 20)"},
        {"covariance", "generator covariance \"diagonal\" (default) or \"low_rank\" (PPCA)"},
        {"rank", "rank r of the low-rank generator, 1 <= r < input width (default 2)"}}},
      {[](const Json& options, uint64_t seed) { return std::make_unique<Gkcl>(options, seed); }});
}

}  // namespace lowrank::kernel_methods
