// Reproduction of Wu, Xu, Liu & Zhou, 2023, "Model Reuse with Reduced Kernel Mean Embedding
// Specification" (IEEE TKDE, arXiv:2001.07135), with kernel_methods/rkme.h.
//
// The paper's claim: a model's RKME — m weighted points whose kernel mean embedding approximates its
// training data's — identifies the model that suits a user's task from an unlabelled query sample alone
// (the smallest MMD), without sharing the data. Here: the 8×8 digits (pixels / 16), split in half
// (train / query pool); 20 generators, each a distinct pair of digit classes ({c, c+1} and {c, c+2}
// mod 10), each holding 60 training points of its two classes; each generator's RKME (m = 16, the
// reference code's γ = 0.1, 3 steps, simplex β) and, as the exact reference, its full kernel mean
// embedding (z = its 60 points, β = 1/60). Queries: 5 per generator per seed, each 20 points from the
// query pool of the generator's classes; `identify` ranks the 20 stored specifications by MMD². Reported:
// top-1 and top-4 identification rates (chance 1/20 and 4/20).
#include <ATen/CPUGeneratorImpl.h>

#include <algorithm>

#include "lowrank/kernel_methods/dataset.h"
#include "lowrank/kernel_methods/rkme.h"
#include "repro/kernels/repro.h"

namespace lowrank::repro_kernels {
namespace {

using namespace kernel_methods;

constexpr int64_t kGenerators = 20, kTopK = 4, kReducedSize = 16;

// The two digit classes of generator g.
std::pair<int64_t, int64_t> classes_of(int64_t g) {
  return {g % 10, (g % 10 + 1 + g / 10) % 10};
}

// `count` random rows of x among those whose label is a or b.
at::Tensor sample_classes(const at::Tensor& x, const at::Tensor& labels, std::pair<int64_t, int64_t> classes,
                          int64_t count, at::Generator& gen) {
  const at::Tensor pool = (labels.eq(classes.first) | labels.eq(classes.second)).nonzero().squeeze(1);
  const at::Tensor pick = at::randperm(pool.size(0), gen, at::kLong).slice(0, 0, count);
  return x.index_select(0, pool.index_select(0, pick));
}

struct Rates {
  double top1 = 0, top_k = 0;
};

Rates identification_rates(const std::vector<Rkme>& stored, const std::vector<at::Tensor>& queries,
                           const std::vector<int64_t>& owners) {
  Rates r;
  for (size_t q = 0; q < queries.size(); ++q) {
    const std::vector<int64_t> ranking = identify(queries[q], stored).ranking;
    const auto position = std::find(ranking.begin(), ranking.end(), owners[q]) - ranking.begin();
    r.top1 += position == 0;
    r.top_k += position < kTopK;
  }
  r.top1 /= static_cast<double>(queries.size());
  r.top_k /= static_cast<double>(queries.size());
  return r;
}

ReproResult run(const ReproOptions& options) {
  const int64_t per_generator = options.quick ? 40 : 60, query_size = options.quick ? 10 : 20;
  const int64_t queries_per_generator = options.quick ? 2 : 5;
  const Dataset digits = read_builtin_dataset("digits");
  const RkmeOptions rkme_options{.size = kReducedSize};  // γ = 0.1, 3 steps, simplex β
  std::vector<double> reduced_top1, reduced_topk, full_top1, full_topk;
  for (int64_t seed = 0; seed < options.seeds; ++seed) {
    at::Generator gen = at::detail::createCPUGenerator(static_cast<uint64_t>(600 + seed));
    const at::Tensor order = at::randperm(digits.x.size(0), gen, at::kLong);
    const int64_t half = digits.x.size(0) / 2;
    const at::Tensor x = digits.x.index_select(0, order) / 16.0;
    const at::Tensor labels = digits.y.index_select(0, order).to(at::kLong);
    const at::Tensor x_train = x.slice(0, 0, half), x_query = x.slice(0, half);
    const at::Tensor y_train = labels.slice(0, 0, half), y_query = labels.slice(0, half);
    std::vector<Rkme> reduced, full;
    std::vector<at::Tensor> queries;
    std::vector<int64_t> owners;
    for (int64_t g = 0; g < kGenerators; ++g) {
      const at::Tensor data = sample_classes(x_train, y_train, classes_of(g), per_generator, gen);
      reduced.push_back(rkme_build(data, at::Tensor(), rkme_options, gen));
      full.push_back({data, at::full({per_generator}, 1.0 / static_cast<double>(per_generator), at::kDouble),
                      rkme_options.gamma});
      for (int64_t q = 0; q < queries_per_generator; ++q) {
        queries.push_back(sample_classes(x_query, y_query, classes_of(g), query_size, gen));
        owners.push_back(g);
      }
    }
    const Rates r = identification_rates(reduced, queries, owners),
                f = identification_rates(full, queries, owners);
    reduced_top1.push_back(r.top1);
    reduced_topk.push_back(r.top_k);
    full_top1.push_back(f.top1);
    full_topk.push_back(f.top_k);
  }

  ReproResult out;
  Table table{"Identification of the generator among 20 (chance: top-1 5%, top-4 20%)",
              {"seed", "RKME m=16 top-1", "RKME m=16 top-4", "full KME top-1", "full KME top-4"},
              {}};
  for (int64_t s = 0; s < options.seeds; ++s)
    table.rows.push_back({s, reduced_top1[s], reduced_topk[s], full_top1[s], full_topk[s]});
  const double mean_reduced = mean(reduced_topk), mean_full = mean(full_topk);
  table.rows.push_back({"mean", mean(reduced_top1), mean_reduced, mean(full_top1), mean_full});
  out.tables.push_back(table);
  const double chance = static_cast<double>(kTopK) / kGenerators;
  auto pct = [](double a) { return format_number(100 * a, 3) + "%"; };
  out.claims.push_back(
      {"top4_three_times_chance", "RKME (m = 16) mean top-4 identification ≥ 3× chance (60%)",
       "RKME identifies the suitable model (top-4 > 80% in the paper)", mean_reduced >= 3 * chance,
       "top-4 " + pct(mean_reduced) + " vs chance " + pct(chance) + " (per seed " +
           join_numbers(reduced_topk) + ")",
       true});
  out.claims.push_back(
      {"reduced_matches_full_kme", "RKME (m = 16) mean top-4 within 2 points of the full KME's",
       "the reduced set keeps the embedding's identifying power", std::abs(mean_reduced - mean_full) <= 0.02,
       "m = 16 " + pct(mean_reduced) + " vs full KME " + pct(mean_full), false});
  out.setup = "digits / 16, split in half; 20 generators (class pairs {c, c+1}, {c, c+2}), " +
              std::to_string(per_generator) + " points each; " + std::to_string(queries_per_generator) +
              " queries of " + std::to_string(query_size) + " points per generator; γ = 0.1; " +
              std::to_string(options.seeds) + " seeds" + (options.quick ? " (quick sizes)" : "");
  return out;
}

}  // namespace

KernelRepro rkme_repro() {
  return {
      "rkme",
      "Wu, Xu, Liu & Zhou 2023, \"Model Reuse with Reduced Kernel Mean Embedding Specification\" (IEEE TKDE)",
      "a model's reduced kernel mean embedding identifies it from a user's unlabelled sample", &run};
}

}  // namespace lowrank::repro_kernels
