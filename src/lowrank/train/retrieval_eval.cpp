// Multi-vector retrieval evaluation and vector reductions; see retrieval_eval.h.
#include "lowrank/train/retrieval_eval.h"

#include <ATen/core/grad_mode.h>

#include <charconv>

#include "lowrank/core/error.h"
#include "lowrank/core/progress.h"

namespace lowrank::train {

VectorReduction VectorReduction::parse(std::string_view text) {
  VectorReduction r;
  if (text == "none") return r;
  if (text.starts_with("kmeans:")) {
    r.kind = Kind::kKMeans;
    r.clusters = ClusterSpec::parse(text.substr(7));
    LR_CHECK(r.clusters.kind != ClusterSpec::Kind::kNone, InvalidArgument, "reduction \"", text,
             "\": k-means needs counts (kmeans:fixed:CqxCd or kmeans:relative:r)");
    return r;
  }
  const bool tail = text.starts_with("tail:"), spacing = text.starts_with("spacing:");
  LR_CHECK(tail || spacing, InvalidArgument, "reduction \"", text,
           "\": expected none, kmeans:fixed:CqxCd, kmeans:relative:r, tail:r or spacing:r");
  r.kind = tail ? Kind::kTail : Kind::kSpacing;
  const std::string_view digits = text.substr(tail ? 5 : 8);
  const auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), r.ratio);
  LR_CHECK(ec == std::errc() && end == digits.data() + digits.size() && r.ratio >= 1, InvalidArgument,
           "reduction \"", text, "\": r must be a positive integer");
  return r;
}

std::string VectorReduction::to_string() const {
  switch (kind) {
    case Kind::kNone:
      return "none";
    case Kind::kKMeans:
      return "kmeans:" + clusters.to_string();
    case Kind::kTail:
      return str("tail:", ratio);
    case Kind::kSpacing:
      return str("spacing:", ratio);
  }
  return "none";
}

at::Tensor VectorReduction::apply(const at::Tensor& x, bool query_side) const {
  at::NoGradGuard no_grad;
  const int64_t n = x.size(0);
  switch (kind) {
    case Kind::kNone:
      return x;
    case Kind::kKMeans:
      return cluster_vectors(x, clusters.count(query_side, n), seed, iterations).to(at::kFloat);
    case Kind::kTail:
      return query_side ? x : x.narrow(0, 0, (n + ratio - 1) / ratio);
    case Kind::kSpacing:
      return query_side ? x : x.slice(0, 0, n, ratio);
  }
  return x;
}

std::vector<at::Tensor> encode_texts(const nn::MultiVectorEncoder& encoder, const TokenizedTexts& texts,
                                     int64_t batch_size) {
  LR_CHECK(batch_size >= 1, InvalidArgument, "encode: batch size ", batch_size, " must be >= 1");
  at::NoGradGuard no_grad;
  std::vector<at::Tensor> out;
  const int64_t n = texts.size();
  for (int64_t begin = 0; begin < n; begin += batch_size) {
    const int64_t len = std::min(batch_size, n - begin);
    const auto [ids, mask] = texts.batch(at::arange(begin, begin + len, at::kLong));
    const at::Tensor v = encoder.encode(ids, mask).to(at::kFloat);
    const int64_t* lengths = texts.lengths.data_ptr<int64_t>();
    for (int64_t i = 0; i < len; ++i) out.push_back(v[i].narrow(0, 0, lengths[begin + i]).contiguous());
  }
  return out;
}

nn::MultiVectorIndex build_index(const nn::MultiVectorEncoder& encoder, const TokenizedTexts& documents,
                                 const VectorReduction& reduction, int64_t batch_size) {
  nn::MultiVectorIndex index(encoder.dim());
  ProgressBar bar(documents.size(), "index");
  for (int64_t begin = 0; begin < documents.size(); begin += 1024) {
    const int64_t len = std::min<int64_t>(1024, documents.size() - begin);
    TokenizedTexts part{documents.ids.narrow(0, begin, len), documents.lengths.narrow(0, begin, len)};
    for (const at::Tensor& v : encode_texts(encoder, part, batch_size)) index.add(reduction.apply(v, false));
    bar.advance(len);
  }
  bar.finish();
  return index;
}

OrderedJson RetrievalMetrics::to_json() const {
  return OrderedJson{{"queries", queries},
                     {"k", k},
                     {"mrr", mrr},
                     {"recall", recall},
                     {"vectors_per_document", vectors_per_document},
                     {"vectors_per_query", vectors_per_query}};
}

RetrievalMetrics rank_metrics(const std::vector<std::vector<nn::SearchHit>>& hits,
                              const std::vector<int64_t>& positives, int64_t k) {
  LR_CHECK(hits.size() == positives.size() && !hits.empty(), InvalidArgument,
           "retrieval metrics: ", hits.size(), " result lists for ", positives.size(), " positives");
  LR_CHECK(k >= 1, InvalidArgument, "retrieval metrics: k ", k, " must be >= 1");
  RetrievalMetrics m;
  m.k = k;
  m.queries = static_cast<int64_t>(hits.size());
  for (std::size_t i = 0; i < hits.size(); ++i)
    for (std::size_t r = 0; r < hits[i].size() && static_cast<int64_t>(r) < k; ++r)
      if (hits[i][r].document == positives[i]) {
        m.mrr += 1.0 / static_cast<double>(r + 1);
        m.recall += 1.0;
        break;
      }
  m.mrr /= static_cast<double>(m.queries);
  m.recall /= static_cast<double>(m.queries);
  return m;
}

RetrievalMetrics evaluate_retrieval(const nn::MultiVectorEncoder& encoder, const nn::MultiVectorIndex& index,
                                    const TokenizedTexts& queries, const std::vector<int64_t>& positives,
                                    const VectorReduction& reduction, int64_t k, int64_t batch_size) {
  LR_CHECK(queries.size() == static_cast<int64_t>(positives.size()) && queries.size() >= 1, InvalidArgument,
           "retrieval evaluation: ", queries.size(), " queries and ", positives.size(), " positives");
  for (std::size_t i = 0; i < positives.size(); ++i)
    LR_CHECK(positives[i] >= 0 && positives[i] < index.documents(), InvalidArgument,
             "retrieval evaluation: query ", i, "'s positive ", positives[i],
             " is not a document of the index (", index.documents(), ")");
  LR_CHECK(encoder.dim() == index.dim(), InvalidArgument,
           "retrieval evaluation: the encoder's vectors have dim ", encoder.dim(), ", the index's ",
           index.dim());
  std::vector<at::Tensor> reduced;
  int64_t query_vectors = 0;
  for (const at::Tensor& v : encode_texts(encoder, queries, batch_size)) {
    reduced.push_back(reduction.apply(v, true));
    query_vectors += reduced.back().size(0);
  }
  RetrievalMetrics m = rank_metrics(index.search(reduced, k), positives, k);
  m.vectors_per_document = static_cast<double>(index.vectors()) / static_cast<double>(index.documents());
  m.vectors_per_query = static_cast<double>(query_vectors) / static_cast<double>(queries.size());
  return m;
}

}  // namespace lowrank::train
