// Evaluating a multi-vector encoder (nn/multivector.h) by exact search over an index
// (nn/multivector_index.h), with the ways to store fewer vectors per text that the CRISP paper
// compares against (Veneroso et al., 2025, arXiv:2505.11471; train/crisp.h). The paper's full text
// was not available here. Its abstract compares against post-hoc clustering and token pruning; tail
// pruning and k-spacing are the project specification's names for the pruning baselines, and the
// definitions below are our reading of them, not checked against the paper:
//   none        every token vector;
//   kmeans:S    k-means centroids with the counts of ClusterSpec S, on queries and documents alike
//               (CRISP's own inference on a CRISP-trained encoder; "post-hoc clustering" on an
//               encoder trained without it);
//   tail:r      the first ⌈T/r⌉ vectors of a document (tail pruning);
//   spacing:r   every r-th vector of a document, from the first (k-spacing).
// Tail pruning and k-spacing prune documents only: queries are short and keep their vectors.
// Metrics over queries with one relevant document each: MRR@k = mean 1/rank (0 past k) and
// Recall@k = the share of queries whose document ranks within k.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include <ATen/ATen.h>

#include "lowrank/core/json.h"
#include "lowrank/nn/multivector.h"
#include "lowrank/nn/multivector_index.h"
#include "lowrank/train/crisp.h"

namespace lowrank::train {

struct VectorReduction {
  enum class Kind { kNone, kKMeans, kTail, kSpacing };
  Kind kind = Kind::kNone;
  ClusterSpec clusters;  // kKMeans
  int64_t ratio = 0;     // kTail, kSpacing
  int64_t iterations = 5;
  uint64_t seed = 0;
  // "none", "kmeans:fixed:CqxCd", "kmeans:relative:r", "tail:r", "spacing:r". InvalidArgument quoting it.
  static VectorReduction parse(std::string_view text);
  std::string to_string() const;
  // The vectors kept for a text's vectors x [n, d] (no gradient).
  at::Tensor apply(const at::Tensor& x, bool query_side) const;
};

// Each text's token vectors [n_i, dim] (float32, no gradient), encoded in batches of `batch_size`.
std::vector<at::Tensor> encode_texts(const nn::MultiVectorEncoder& encoder, const TokenizedTexts& texts,
                                     int64_t batch_size = 64);

// The index of `documents` encoded and reduced.
nn::MultiVectorIndex build_index(const nn::MultiVectorEncoder& encoder, const TokenizedTexts& documents,
                                 const VectorReduction& reduction, int64_t batch_size = 64);

struct RetrievalMetrics {
  int64_t queries = 0, k = 10;
  double mrr = 0, recall = 0;
  double vectors_per_document = 0;  // in the index
  double vectors_per_query = 0;     // after the reduction
  OrderedJson to_json() const;
};

// Searches `index` with `queries` (reduced as `reduction` says for queries); positives[i] is query
// i's document id. InvalidArgument for mismatched counts, a positive out of range or k < 1.
RetrievalMetrics evaluate_retrieval(const nn::MultiVectorEncoder& encoder, const nn::MultiVectorIndex& index,
                                    const TokenizedTexts& queries, const std::vector<int64_t>& positives,
                                    const VectorReduction& reduction, int64_t k = 10,
                                    int64_t batch_size = 64);

// The metrics of ranked hits against positives (no model): what evaluate_retrieval reports.
RetrievalMetrics rank_metrics(const std::vector<std::vector<nn::SearchHit>>& hits,
                              const std::vector<int64_t>& positives, int64_t k);

}  // namespace lowrank::train
