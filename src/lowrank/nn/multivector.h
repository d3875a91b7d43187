// A multi-vector (late-interaction) text encoder, as ColBERT (Khattab & Zaharia, 2020, "ColBERT:
// Efficient and Effective Passage Search via Contextualized Late Interaction over BERT", §3.2):
// every token gets its own unit vector,
//   E(x) = Normalize(W · h_t)  for each real token t,   h = the trunk's final hidden states,
//   W ∈ ℝ^{dim×hidden} (no bias; dim 32 here),
// and a query Q scores a document D by MaxSim (the Chamfer similarity):
//   s(Q, D) = Σ_{q∈Q} max_{d∈D} ⟨q, d⟩.
// The trunk is this project's Llama-shaped mixer trunk (classifier.h) with bidirectional
// attention, as ColBERT's BERT encoder; the projection is the sequence classifier's head applied
// at every position. ColBERT's [Q]/[D] marker tokens and query augmentation with [MASK] are left
// out: one encoder serves both sides, and queries are not padded to a fixed length.
//
// Files: a LowrankMixerForSequenceClassification directory (config.json, model.safetensors, and
// the tokenizer.json beside it) whose config carries "multivector": {"dim": D}; num_labels = D and
// the head `score.weight` [D, hidden] is the projection W.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>

#include <ATen/ATen.h>

#include "lowrank/core/json.h"
#include "lowrank/nn/classifier.h"

namespace lowrank::nn {

// The config.json of an encoder: vocabulary, trunk sizes (SwiGLU width `intermediate`), the longest
// sequence and the vector dimension. Attention is bidirectional.
Json multivector_config(int64_t vocab_size, int64_t hidden_size, int64_t num_layers, int64_t num_heads,
                        int64_t intermediate_size, int64_t max_positions, int64_t dim);
// Whether a config.json describes a multi-vector encoder (has the "multivector" key).
bool is_multivector_config(const Json& config);

class MultiVectorEncoder {
 public:
  // Throws as SequenceClassifier::load, and InvalidArgument when the config is not a multi-vector
  // encoder's (naming the file).
  static MultiVectorEncoder load(const std::filesystem::path& dir, const LoadOptions& options = {});
  static MultiVectorEncoder random(const Json& config, uint64_t seed, const LoadOptions& options = {});

  void save(const std::filesystem::path& dir) const { net_.save(dir); }

  int64_t dim() const { return net_.config().num_labels; }
  const ModelConfig& config() const { return net_.config(); }

  // input_ids [B, T] int64, attention_mask [B, T] (1 = token; undefined: all) -> unit vectors
  // [B, T, dim], zero at padding. Differentiable in every tensor.
  at::Tensor encode(const at::Tensor& input_ids, const at::Tensor& attention_mask = {}) const;

  NamedTensors named_tensors() const { return net_.named_tensors(); }
  std::vector<ParamGroup> param_groups() const { return net_.param_groups(); }

 private:
  explicit MultiVectorEncoder(SequenceClassifier net) : net_(std::move(net)) {}
  SequenceClassifier net_;
};

// MaxSim of one query q [Tq, dim] against one document d [Td, dim]: Σ_i max_j ⟨q_i, d_j⟩, as a
// 0-d tensor. InvalidArgument for shapes that are not [*, dim] alike or an empty document.
at::Tensor maxsim(const at::Tensor& q, const at::Tensor& d);

// All pairs: queries [B, Tq, dim] with mask [B, Tq], documents [C, Td, dim] with mask [C, Td]
// (bool or 0/1; undefined: all valid) -> [B, C], s[b, c] = Σ_{valid i} max_{valid j} ⟨Q_b,i, D_c,j⟩.
// Differentiable. Every document needs a valid vector (InvalidArgument).
at::Tensor maxsim_scores(const at::Tensor& queries, const at::Tensor& query_mask, const at::Tensor& documents,
                         const at::Tensor& document_mask);

}  // namespace lowrank::nn
