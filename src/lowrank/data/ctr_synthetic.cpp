#include "lowrank/data/ctr_synthetic.h"

#include <algorithm>
#include <cmath>
#include <numbers>

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Parallel.h>

#include "lowrank/core/error.h"
#include "lowrank/core/progress.h"
#include "lowrank/core/random.h"

namespace lowrank::data {

void CtrSyntheticOptions::check() const {
  LR_CHECK(train_rows >= 1 && test_rows >= 1, InvalidArgument, "CTR data: train_rows (", train_rows,
           ") and test_rows (", test_rows, ") must be >= 1");
  LR_CHECK(sparse_fields >= 2 && dense_fields >= 0, InvalidArgument, "CTR data: sparse_fields (",
           sparse_fields, ") must be >= 2 and dense_fields (", dense_fields, ") >= 0");
  LR_CHECK(min_vocab >= 2 && max_vocab >= min_vocab && max_vocab <= (int64_t{1} << 30), InvalidArgument,
           "CTR data: vocabularies from ", min_vocab, " to ", max_vocab, " (need 2 <= min <= max <= 2^30)");
  LR_CHECK(zipf > 0 && std::isfinite(zipf), InvalidArgument, "CTR data: zipf exponent ", zipf,
           " must be > 0");
  LR_CHECK(teacher_rank >= 1 && teacher_hidden >= 1, InvalidArgument, "CTR data: teacher_rank (",
           teacher_rank, ") and teacher_hidden (", teacher_hidden, ") must be >= 1");
  LR_CHECK(base_ctr > 0 && base_ctr < 1, InvalidArgument, "CTR data: base_ctr ", base_ctr,
           " must be in (0, 1)");
}

OrderedJson CtrSyntheticOptions::to_json() const {
  return OrderedJson{{"kind", "synthetic"},          {"train_rows", train_rows},
                     {"test_rows", test_rows},       {"sparse_fields", sparse_fields},
                     {"dense_fields", dense_fields}, {"min_vocab", min_vocab},
                     {"max_vocab", max_vocab},       {"zipf", zipf},
                     {"teacher_rank", teacher_rank}, {"teacher_hidden", teacher_hidden},
                     {"base_ctr", base_ctr},         {"seed", seed}};
}

namespace {

// Streams of the counter-based draws.
enum Stream : uint64_t { kIds = 1, kDense = 2, kLabel = 3 };

double uniform(uint64_t seed, uint64_t stream, uint64_t counter) {
  return unit_interval(splitmix64(splitmix64(seed ^ (stream << 56)) ^ splitmix64(counter)));
}

// The Zipf(s) cumulative distribution over ranks 0..V−1 (float64, last entry exactly 1).
std::vector<double> zipf_cdf(int64_t vocab, double s) {
  std::vector<double> cdf(static_cast<size_t>(vocab));
  double total = 0;
  for (int64_t k = 0; k < vocab; ++k) {
    total += std::pow(static_cast<double>(k + 1), -s);
    cdf[static_cast<size_t>(k)] = total;
  }
  for (double& c : cdf) c /= total;
  cdf.back() = 1.0;
  return cdf;
}

struct Teacher {
  std::vector<at::Tensor> latent;  // per field [V_f, r]
  std::vector<at::Tensor> weight;  // per field [V_f]
  at::Tensor pair;                 // [F r, F r]: the blocks R_fg for f < g, zero elsewhere
  at::Tensor w1, c1, v;            // MLP: [H, F r + D], [H], [H]
  at::Tensor a;                    // [D]
};

Teacher make_teacher(const CtrSyntheticOptions& o, const CtrSchema& schema) {
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(splitmix64(o.seed ^ 0x7eac4e7ull));
  const int64_t F = o.sparse_fields, r = o.teacher_rank, D = o.dense_fields, H = o.teacher_hidden;
  Teacher t;
  for (const CtrField& f : schema.sparse) {
    t.latent.push_back(at::randn({f.vocab_size, r}, gen, at::kFloat));
    t.weight.push_back(at::randn({f.vocab_size}, gen, at::kFloat));
  }
  t.pair = at::zeros({F * r, F * r}, at::kFloat);
  for (int64_t f = 0; f < F; ++f)
    for (int64_t g = f + 1; g < F; ++g)
      t.pair.slice(0, f * r, (f + 1) * r)
          .slice(1, g * r, (g + 1) * r)
          .copy_(at::randn({r, r}, gen, at::kFloat));
  const int64_t in = F * r + D;
  t.w1 = at::randn({H, in}, gen, at::kFloat) * std::sqrt(2.0 / static_cast<double>(in));
  t.c1 = at::randn({H}, gen, at::kFloat) * 0.1;
  t.v = at::randn({H}, gen, at::kFloat);
  t.a = at::randn({std::max<int64_t>(D, 1)}, gen, at::kFloat).slice(0, 0, D);
  return t;
}

// Draws the fields of rows [begin, end): sparse ids and dense values.
void draw_rows(const CtrSyntheticOptions& o, const std::vector<std::vector<double>>& cdfs, int64_t begin,
               int64_t end, at::Tensor& sparse, at::Tensor& dense) {
  const int64_t F = o.sparse_fields, D = o.dense_fields;
  auto* ids = sparse.data_ptr<int64_t>();
  auto* x = dense.data_ptr<float>();
  at::parallel_for(begin, end, 4096, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      for (int64_t f = 0; f < F; ++f) {
        const auto& cdf = cdfs[static_cast<size_t>(f)];
        const double u = uniform(o.seed, kIds, static_cast<uint64_t>(i * F + f));
        const auto k = std::upper_bound(cdf.begin(), cdf.end() - 1, u) - cdf.begin();
        ids[i * F + f] = static_cast<int64_t>(k);
      }
      for (int64_t j = 0; j < D; ++j) {
        // Box–Muller from two uniforms of the row's own counters.
        const uint64_t c = static_cast<uint64_t>(i * D + j) * 2;
        const double u1 = std::max(uniform(o.seed, kDense, c), 0x1.0p-60),
                     u2 = uniform(o.seed, kDense, c + 1);
        const double z = 0.5 + 0.15 * static_cast<double>(j) +
                         std::sqrt(-2 * std::log(u1)) * std::cos(2 * std::numbers::pi * u2);
        const double count = std::floor(std::exp(z));
        x[i * D + j] = static_cast<float>(std::min(1.0, std::log1p(count) / 8.0));
      }
    }
  });
}

// The four raw logit components of rows (ids [B, F], dense [B, D]) as [B, 4].
at::Tensor components(const Teacher& t, const at::Tensor& ids, const at::Tensor& dense, int64_t r) {
  const int64_t B = ids.size(0), F = ids.size(1);
  std::vector<at::Tensor> lat, w;
  for (int64_t f = 0; f < F; ++f) {
    const at::Tensor col = ids.select(1, f);
    lat.push_back(t.latent[static_cast<size_t>(f)].index_select(0, col));
    w.push_back(t.weight[static_cast<size_t>(f)].index_select(0, col));
  }
  const at::Tensor e = at::cat(lat, 1);  // [B, F r]
  const at::Tensor first = at::stack(w, 1).sum(1);
  const at::Tensor fm = at::matmul(e, t.pair).mul_(e).sum(1);
  const at::Tensor h =
      at::relu(at::linear(at::cat({e / std::sqrt(static_cast<double>(r)), dense}, 1), t.w1, t.c1));
  const at::Tensor mlp = at::matmul(h, t.v);
  const at::Tensor lin = dense.size(1) > 0 ? at::matmul(dense, t.a) : at::zeros({B});
  return at::stack({first, fm, mlp, lin}, 1);
}

}  // namespace

CtrSynthetic generate_ctr_synthetic(const CtrSyntheticOptions& o) {
  o.check();
  CtrSynthetic out;
  const int64_t F = o.sparse_fields, D = o.dense_fields;
  const double lo = std::log10(static_cast<double>(o.min_vocab)),
               hi = std::log10(static_cast<double>(o.max_vocab));
  std::vector<std::vector<double>> cdfs;
  for (int64_t f = 0; f < F; ++f) {
    const double t = static_cast<double>(f) / static_cast<double>(F - 1);
    const auto vocab = static_cast<int64_t>(std::llround(std::pow(10.0, lo + t * (hi - lo))));
    out.schema.sparse.push_back({"C" + std::to_string(f + 1), vocab});
    cdfs.push_back(zipf_cdf(vocab, o.zipf));
  }
  for (int64_t j = 0; j < D; ++j) out.schema.dense.push_back("I" + std::to_string(j + 1));
  const Teacher teacher = make_teacher(o, out.schema);

  const int64_t n = o.train_rows + o.test_rows;
  at::Tensor sparse = at::empty({n, F}, at::kLong), dense = at::empty({n, D}, at::kFloat);
  at::Tensor parts = at::empty({n, 4}, at::kFloat);
  constexpr int64_t kChunk = 16384;
  ProgressBar bar((n + kChunk - 1) / kChunk, "generate");
  for (int64_t begin = 0; begin < n; begin += kChunk) {
    const int64_t end = std::min(n, begin + kChunk);
    draw_rows(o, cdfs, begin, end, sparse, dense);
    parts.slice(0, begin, end)
        .copy_(components(teacher, sparse.slice(0, begin, end), dense.slice(0, begin, end), o.teacher_rank));
    bar.advance();
  }
  bar.finish();
  // Standardise each component over all rows, weight, and find the bias of the wanted mean CTR.
  const at::Tensor p64 = parts.to(at::kDouble);
  const at::Tensor mean = p64.mean(0), std = p64.std(0).clamp_min(1e-12);
  const at::Tensor weights = at::tensor({0.8, 1.0, 0.8, 0.4}, at::kDouble);
  const at::Tensor z = ((p64 - mean) / std).mul_(weights).sum(1);
  double b_lo = -30, b_hi = 30;
  for (int it = 0; it < 100; ++it) {
    const double b = 0.5 * (b_lo + b_hi);
    (at::sigmoid(z + b).mean().item<double>() < o.base_ctr ? b_lo : b_hi) = b;
  }
  const at::Tensor prob = at::sigmoid(z + 0.5 * (b_lo + b_hi));
  at::Tensor labels = at::empty({n}, at::kFloat);
  {
    const double* p = prob.data_ptr<double>();
    float* y = labels.data_ptr<float>();
    for (int64_t i = 0; i < n; ++i)
      y[i] = uniform(o.seed, kLabel, static_cast<uint64_t>(i)) < p[i] ? 1.0f : 0.0f;
  }
  const CtrData all = checked_ctr_data(out.schema, sparse, dense, labels, "synthetic CTR data");
  out.train = all.slice(0, o.train_rows);
  out.test = all.slice(o.train_rows, n);
  out.test_probability = prob.slice(0, o.train_rows, n);
  return out;
}

}  // namespace lowrank::data
