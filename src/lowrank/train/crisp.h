// CRISP: clustered multi-vector representations, trained end to end (Veneroso, Jayaram, Rao,
// Hernández Ábrego, Hadian & Cer, 2025, "CRISP: Clustering Multi-Vector Representations for
// Denoising and Pruning", arXiv:2505.11471). Sources: its abstract and secondary summaries of it.
// The paper's full text and code were not available here, so the clustering schedule below
// (k-means++, 5 Lloyd rounds, means with gradient) and the loss follow the project's specification
// of the method, and the details it leaves open are named as ours.
//
// A multi-vector encoder (nn/multivector.h) is trained with its clustering inside the forward pass:
// the token vectors X = {x_1..x_T} of each query and each document are replaced by the centroids of
// a k-means clustering of X, and MaxSim runs on the centroids,
//   s(Q, D) = Σ_{c∈C(Q)} max_{c'∈C(D)} ⟨c, c'⟩.
// The clustering of each sequence:
//   seeding: k-means++ (Arthur & Vassilvitskii, 2007) from a generator seeded afresh for every
//            sequence, so that a text's vectors never depend on the batch it sits in;
//   Lloyd:   `iterations` (5) rounds of  a_i = argmin_j ‖x_i − μ_j‖²,  μ_j = mean{x_i : a_i = j}
//            on the detached vectors (an empty cluster keeps its centre);
//   output:  μ_j = (1/|S_j|) Σ_{i∈S_j} x_i over the final assignment, computed from the undetached
//            x, so gradients reach every member (∂μ_j/∂x_i = I/|S_j|) while the assignment carries
//            none. Empty clusters are dropped.
// Cluster counts (ClusterSpec): fixed, C_q for queries and C_d for documents ("fixed:4x8",
// "fixed:8x32"), or relative, ⌈T/r⌉ for a sequence of T tokens ("relative:4"); never more than T.
// Loss: InfoNCE with in-batch negatives, L = −(1/B) Σ_b log softmax_c(s(Q_b, D_c))_b: the
// cross-entropy over the batch's documents with the paired one as the label (ColBERT's in-batch
// loss; the temperature is 1, as the MaxSim scores are sums of cosines). `colbert` is the same
// training without the clustering: the unpruned baseline.
// Not in the paper's setup: the encoder is this project's small trunk trained on inverse-cloze
// pairs (data/inverse_cloze.h; the repro trains it one epoch without clustering, then continues it
// with CRISP through `retrieve train --init`), not a pretrained Gemma fine-tuned on BEIR's training
// mix. Centroids are not renormalised and the temperature is 1; whether the paper does either is
// not known here.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

#include <ATen/ATen.h>

#include "lowrank/core/json.h"
#include "lowrank/data/tokenizer.h"
#include "lowrank/nn/multivector.h"
#include "lowrank/train/trainer.h"

namespace lowrank::train {

struct ClusterSpec {
  enum class Kind { kNone, kFixed, kRelative };
  Kind kind = Kind::kNone;
  int64_t query_clusters = 0, document_clusters = 0;  // kFixed
  int64_t ratio = 0;                                  // kRelative: ⌈T / ratio⌉
  // "none", "fixed:CqxCd" or "relative:r". Throws InvalidArgument quoting the text.
  static ClusterSpec parse(std::string_view text);
  std::string to_string() const;
  // The clusters for a sequence of `tokens` tokens (0 for kNone: no clustering), at most `tokens`.
  int64_t count(bool query_side, int64_t tokens) const;
};

struct LloydResult {
  at::Tensor centers;      // [k, d]
  at::Tensor assignments;  // [n] int64, the last assignment step's
  // The k-means objective Σ_i ‖x_i − μ_{a_i}‖² after every half-step: [assign₁, update₁, assign₂, …].
  std::vector<double> objective;
};

// `iterations` Lloyd rounds on x [n, d] from `centers` [k, d] (no gradient). It stops early when an
// assignment repeats the previous one, as scikit-learn's lloyd does. InvalidArgument for bad shapes
// or iterations < 1.
LloydResult lloyd(const at::Tensor& x, const at::Tensor& centers, int64_t iterations);

// The means of x [n, d] over the clusters of `assignments` [n] (values in [0, k)), dropping empty
// clusters: [k', d], differentiable in x.
at::Tensor cluster_means(const at::Tensor& x, const at::Tensor& assignments, int64_t k);

// CRISP's clustering of one sequence's vectors x [n, d]: k-means++ seeded by `seed`, `iterations`
// Lloyd rounds, then cluster_means of x (gradients flow into x). k is clamped to n.
at::Tensor cluster_vectors(const at::Tensor& x, int64_t k, uint64_t seed, int64_t iterations = 5);

struct ClusteredBatch {
  at::Tensor vectors;  // [B, K, d], zero where mask is false
  at::Tensor mask;     // [B, K] bool
};
// Each row of x [B, T, d] (valid where mask [B, T]) clustered by `spec` (the query or document
// count); kNone returns x and mask as they are.
ClusteredBatch cluster_batch(const at::Tensor& x, const at::Tensor& mask, const ClusterSpec& spec,
                             bool query_side, uint64_t seed, int64_t iterations = 5);

// InfoNCE over in-batch negatives: scores [B, B] with the positives on the diagonal.
at::Tensor in_batch_infonce(const at::Tensor& scores);

// Texts as padded token rows: ids [N, T] int64 (0 beyond a row's length), lengths [N].
struct TokenizedTexts {
  at::Tensor ids, lengths;
  int64_t size() const { return ids.defined() ? ids.size(0) : 0; }
  // Rows `index` [b] trimmed to their longest: ids [b, t] and mask [b, t] (bool).
  std::pair<at::Tensor, at::Tensor> batch(const at::Tensor& index) const;
};
// Encodes and truncates to `max_tokens`. InvalidArgument naming the text's index when a text has no token.
TokenizedTexts tokenize_texts(const data::Tokenizer& tokenizer, const std::vector<std::string>& texts,
                              int64_t max_tokens);

struct RetrievalTrainConfig {
  // steps (0: `epochs` passes over the pairs), batch_size (pairs per step, the negatives), lr,
  // schedule, clipping, AdamW, seed, checkpoint_every, stop_after.
  TrainerConfig trainer;
  int64_t epochs = 1;
  std::string method = "colbert";  // "colbert" | "crisp"
  ClusterSpec clusters;            // crisp: the counts; colbert: kind none
  int64_t iterations = 5;          // Lloyd rounds inside the forward pass
  uint64_t cluster_seed = 0;
  OrderedJson to_json() const;
};

struct RetrievalTrainResult {
  int64_t step = 0;
  bool finished = false;
  std::vector<StepRecord> steps;
};

// Trains every tensor of `encoder` on the pairs (queries[i], documents[i]). With `resume` and a
// checkpoint in `run_dir`, continues from it bitwise. Throws InvalidArgument for a bad config or
// pair counts that differ, Corruption for a damaged checkpoint, IoError.
RetrievalTrainResult train_retrieval(nn::MultiVectorEncoder& encoder, const TokenizedTexts& queries,
                                     const TokenizedTexts& documents, RetrievalTrainConfig config,
                                     const std::filesystem::path& run_dir, bool resume);

}  // namespace lowrank::train
