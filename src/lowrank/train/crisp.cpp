// CRISP: clustering inside the forward pass of a multi-vector encoder; see crisp.h.
#include "lowrank/train/crisp.h"

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/core/grad_mode.h>

#include <charconv>

#include "lowrank/core/error.h"
#include "lowrank/linalg/kmeans.h"
#include "lowrank/train/epoch_loop.h"

namespace lowrank::train {

namespace fs = std::filesystem;

namespace {

int64_t parse_positive(std::string_view digits, std::string_view whole) {
  int64_t v = 0;
  const auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), v);
  LR_CHECK(ec == std::errc() && end == digits.data() + digits.size() && v >= 1, InvalidArgument,
           "clusters \"", whole, "\": expected none, fixed:CqxCd or relative:r with positive integers");
  return v;
}

}  // namespace

ClusterSpec ClusterSpec::parse(std::string_view text) {
  ClusterSpec s;
  if (text == "none") return s;
  if (text.starts_with("fixed:")) {
    const std::string_view rest = text.substr(6);
    const std::size_t x = rest.find('x');
    LR_CHECK(x != std::string_view::npos, InvalidArgument, "clusters \"", text,
             "\": fixed counts are written fixed:CqxCd (e.g. fixed:8x32)");
    s.kind = Kind::kFixed;
    s.query_clusters = parse_positive(rest.substr(0, x), text);
    s.document_clusters = parse_positive(rest.substr(x + 1), text);
    return s;
  }
  if (text.starts_with("relative:")) {
    s.kind = Kind::kRelative;
    s.ratio = parse_positive(text.substr(9), text);
    return s;
  }
  throw InvalidArgument(str("clusters \"", text, "\": expected none, fixed:CqxCd or relative:r"));
}

std::string ClusterSpec::to_string() const {
  switch (kind) {
    case Kind::kNone:
      return "none";
    case Kind::kFixed:
      return str("fixed:", query_clusters, "x", document_clusters);
    case Kind::kRelative:
      return str("relative:", ratio);
  }
  return "none";
}

int64_t ClusterSpec::count(bool query_side, int64_t tokens) const {
  switch (kind) {
    case Kind::kNone:
      return 0;
    case Kind::kFixed:
      return std::min(tokens, query_side ? query_clusters : document_clusters);
    case Kind::kRelative:
      return std::min(tokens, (tokens + ratio - 1) / ratio);
  }
  return 0;
}

LloydResult lloyd(const at::Tensor& x, const at::Tensor& centers, int64_t iterations) {
  LR_CHECK(x.dim() == 2 && centers.dim() == 2 && x.size(1) == centers.size(1) && centers.size(0) >= 1,
           InvalidArgument, "lloyd: data ", x.sizes(), " and centres ", centers.sizes(),
           " must be [n, d] and [k >= 1, d]");
  LR_CHECK(iterations >= 1, InvalidArgument, "lloyd: iterations ", iterations, " must be >= 1");
  at::NoGradGuard no_grad;
  const at::Tensor data = x.detach();
  const int64_t k = centers.size(0);
  LloydResult r;
  r.centers = centers.detach().to(data.scalar_type()).clone();
  auto objective = [&](const at::Tensor& a) {
    return (data - r.centers.index_select(0, a)).square().sum().item<double>();
  };
  for (int64_t it = 0; it < iterations; ++it) {
    const at::Tensor a = linalg::squared_distances_to(data, r.centers).argmin(1);
    if (r.assignments.defined() && a.equal(r.assignments)) break;  // converged: the update would repeat
    r.assignments = a;
    r.objective.push_back(objective(a));
    const at::Tensor sums = at::zeros_like(r.centers).index_add_(0, a, data);
    const at::Tensor counts =
        at::zeros({k}, data.options()).index_add_(0, a, at::ones({data.size(0)}, data.options()));
    r.centers = at::where(counts.gt(0).unsqueeze(1), sums / counts.clamp_min(1).unsqueeze(1), r.centers);
    r.objective.push_back(objective(a));
  }
  return r;
}

at::Tensor cluster_means(const at::Tensor& x, const at::Tensor& assignments, int64_t k) {
  LR_CHECK(x.dim() == 2 && assignments.dim() == 1 && assignments.size(0) == x.size(0), InvalidArgument,
           "cluster_means: data ", x.sizes(), " and assignments ", assignments.sizes(), " do not match");
  const at::Tensor a = assignments.to(at::kLong);
  // members[j, i] = 1 when x_i belongs to cluster j
  const at::Tensor members =
      at::arange(k, a.options()).unsqueeze(1).eq(a.unsqueeze(0)).to(x.scalar_type());  // [k, n]
  const at::Tensor counts = members.sum(1);
  const at::Tensor occupied = counts.gt(0).nonzero().squeeze(1);
  return at::matmul(members.index_select(0, occupied), x) / counts.index_select(0, occupied).unsqueeze(1);
}

at::Tensor cluster_vectors(const at::Tensor& x, int64_t k, uint64_t seed, int64_t iterations) {
  LR_CHECK(x.dim() == 2 && x.size(0) >= 1, InvalidArgument, "cluster_vectors: expected [n >= 1, d], got ",
           x.sizes());
  LR_CHECK(k >= 1, InvalidArgument, "cluster_vectors: k ", k, " must be >= 1");
  k = std::min(k, x.size(0));
  const at::Tensor data = x.detach().to(at::kDouble);
  at::Generator gen = at::detail::createCPUGenerator(seed);
  const at::Tensor init = linalg::kmeans_plus_plus(data, k, gen);
  const LloydResult r = lloyd(data, init, iterations);
  return cluster_means(x, r.assignments, k);
}

ClusteredBatch cluster_batch(const at::Tensor& x, const at::Tensor& mask, const ClusterSpec& spec,
                             bool query_side, uint64_t seed, int64_t iterations) {
  LR_CHECK(x.dim() == 3 && mask.dim() == 2 && mask.size(0) == x.size(0) && mask.size(1) == x.size(1),
           InvalidArgument, "cluster_batch: vectors ", x.sizes(), " and mask ", mask.sizes(),
           " do not match");
  const at::Tensor valid = mask.to(at::kBool);
  if (spec.kind == ClusterSpec::Kind::kNone) return {x, valid};
  const int64_t B = x.size(0), d = x.size(2);
  std::vector<at::Tensor> rows;
  int64_t K = 1;
  for (int64_t b = 0; b < B; ++b) {
    const at::Tensor xb = x[b].index({valid[b]});
    LR_CHECK(xb.size(0) >= 1, InvalidArgument, "cluster_batch: row ", b, " has no valid vector");
    rows.push_back(cluster_vectors(xb, spec.count(query_side, xb.size(0)), seed, iterations));
    K = std::max(K, rows.back().size(0));
  }
  std::vector<at::Tensor> padded;
  at::Tensor out_mask = at::zeros({B, K}, at::kBool);
  for (int64_t b = 0; b < B; ++b) {
    const int64_t n = rows[static_cast<std::size_t>(b)].size(0);
    out_mask[b].narrow(0, 0, n).fill_(true);
    padded.push_back(
        n == K ? rows[static_cast<std::size_t>(b)]
               : at::cat({rows[static_cast<std::size_t>(b)], at::zeros({K - n, d}, x.options())}, 0));
  }
  return {at::stack(padded, 0), out_mask};
}

at::Tensor in_batch_infonce(const at::Tensor& scores) {
  LR_CHECK(scores.dim() == 2 && scores.size(0) == scores.size(1), InvalidArgument,
           "in-batch InfoNCE: scores must be [B, B], got ", scores.sizes());
  return at::cross_entropy_loss(scores, at::arange(scores.size(0), scores.options().dtype(at::kLong)));
}

std::pair<at::Tensor, at::Tensor> TokenizedTexts::batch(const at::Tensor& index) const {
  const at::Tensor len = lengths.index_select(0, index);
  const int64_t t = len.max().item<int64_t>();
  const at::Tensor rows = ids.index_select(0, index).narrow(1, 0, t);
  const at::Tensor mask = at::arange(t, at::kLong).unsqueeze(0).lt(len.unsqueeze(1));
  return {rows, mask};
}

TokenizedTexts tokenize_texts(const data::Tokenizer& tokenizer, const std::vector<std::string>& texts,
                              int64_t max_tokens) {
  LR_CHECK(max_tokens >= 1, InvalidArgument, "tokenize: max_tokens ", max_tokens, " must be >= 1");
  const int64_t n = static_cast<int64_t>(texts.size());
  TokenizedTexts out;
  out.ids = at::zeros({n, max_tokens}, at::kLong);
  out.lengths = at::zeros({n}, at::kLong);
  int64_t* ids = out.ids.data_ptr<int64_t>();
  int64_t* lengths = out.lengths.data_ptr<int64_t>();
  int64_t longest = 1;
  for (int64_t i = 0; i < n; ++i) {
    const std::vector<int32_t> t = tokenizer.encode(texts[static_cast<std::size_t>(i)]);
    LR_CHECK(!t.empty(), InvalidArgument, "tokenize: text ", i, " has no token");
    const int64_t len = std::min<int64_t>(max_tokens, static_cast<int64_t>(t.size()));
    for (int64_t j = 0; j < len; ++j) ids[i * max_tokens + j] = t[static_cast<std::size_t>(j)];
    lengths[i] = len;
    longest = std::max(longest, len);
  }
  out.ids = out.ids.narrow(1, 0, longest).contiguous();
  return out;
}

OrderedJson RetrievalTrainConfig::to_json() const {
  return OrderedJson{{"method", method},         {"clusters", clusters.to_string()},
                     {"iterations", iterations}, {"cluster_seed", cluster_seed},
                     {"epochs", epochs},         {"trainer", trainer.to_json()}};
}

RetrievalTrainResult train_retrieval(nn::MultiVectorEncoder& encoder, const TokenizedTexts& queries,
                                     const TokenizedTexts& documents, RetrievalTrainConfig config,
                                     const fs::path& run_dir, bool resume) {
  TrainerConfig& tc = config.trainer;
  const int64_t rows = queries.size();
  LR_CHECK(rows >= 2 && documents.size() == rows, InvalidArgument, "retrieval training: ", rows,
           " queries and ", documents.size(), " documents; needs at least 2 pairs");
  LR_CHECK(config.method == "colbert" || config.method == "crisp", InvalidArgument,
           "retrieval training: method \"", config.method, "\" is not colbert or crisp");
  LR_CHECK((config.method == "crisp") == (config.clusters.kind != ClusterSpec::Kind::kNone), InvalidArgument,
           "retrieval training: crisp needs clusters (fixed:CqxCd or relative:r) and colbert none; got ",
           config.method, " with ", config.clusters.to_string());
  LR_CHECK(config.epochs >= 1 && config.iterations >= 1, InvalidArgument, "retrieval training: epochs (",
           config.epochs, ") and iterations (", config.iterations, ") must be >= 1");
  LR_CHECK(tc.batch_size >= 2, InvalidArgument, "retrieval training: batch size ", tc.batch_size,
           " must be >= 2 (the other pairs are the negatives)");
  LR_CHECK(tc.parameterization.empty() && !tc.per_layer_updates && tc.autocast.empty(), InvalidArgument,
           "retrieval training: parameterization, per-layer updates and autocast are not supported");
  tc = epoch_trainer_config(tc, config.epochs, rows);

  TrainTarget target;
  target.params = encoder.named_tensors();
  EpochLoop loop;
  loop.micro_loss = [&](const at::Tensor& index) {
    const auto [q_ids, q_mask] = queries.batch(index);
    const auto [d_ids, d_mask] = documents.batch(index);
    const ClusteredBatch q = cluster_batch(encoder.encode(q_ids, q_mask), q_mask, config.clusters, true,
                                           config.cluster_seed, config.iterations);
    const ClusteredBatch d = cluster_batch(encoder.encode(d_ids, d_mask), d_mask, config.clusters, false,
                                           config.cluster_seed, config.iterations);
    return in_batch_infonce(nn::maxsim_scores(q.vectors, q.mask, d.vectors, d.mask));
  };
  loop.rate_key = "pairs_per_s";
  EpochLoopResult r = run_epoch_loop(target, rows, tc, run_dir, resume, loop);
  return {r.step, r.finished, std::move(r.steps)};
}

}  // namespace lowrank::train
