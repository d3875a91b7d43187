// The multi-vector encoder and MaxSim; see multivector.h.
#include "lowrank/nn/multivector.h"

#include <limits>
#include <utility>

#include "lowrank/core/error.h"
#include "lowrank/nn/attention.h"

namespace lowrank::nn {

namespace fs = std::filesystem;

Json multivector_config(int64_t vocab_size, int64_t hidden_size, int64_t num_layers, int64_t num_heads,
                        int64_t intermediate_size, int64_t max_positions, int64_t dim) {
  LR_CHECK(dim >= 1, InvalidArgument, "multi-vector encoder: dim ", dim, " must be >= 1");
  const Json keys =
      with_bidirectional_attention(Json{{"layer_mixers", "attention"}, {"mixer_config", Json::object()}});
  Json config = sequence_classifier_config(vocab_size, hidden_size, intermediate_size, num_layers, num_heads,
                                           max_positions, keys, dim, "mean");
  config["multivector"] = Json{{"dim", dim}};
  return config;
}

bool is_multivector_config(const Json& config) {
  return config.is_object() && config.contains("multivector");
}

MultiVectorEncoder MultiVectorEncoder::load(const fs::path& dir, const LoadOptions& options) {
  const ModelConfig config = ModelConfig::load(dir);
  LR_CHECK(is_multivector_config(config.raw), InvalidArgument, (dir / "config.json").string(),
           ": not a multi-vector encoder (no \"multivector\" key)");
  return MultiVectorEncoder(SequenceClassifier::load(dir, options));
}

MultiVectorEncoder MultiVectorEncoder::random(const Json& config, uint64_t seed, const LoadOptions& options) {
  LR_CHECK(is_multivector_config(config), InvalidArgument,
           "MultiVectorEncoder::random: the config has no \"multivector\" key");
  return MultiVectorEncoder(
      SequenceClassifier::random(ModelConfig::from_json(config, "multi-vector encoder"), seed, options));
}

at::Tensor MultiVectorEncoder::encode(const at::Tensor& input_ids, const at::Tensor& attention_mask) const {
  at::Tensor v = net_.token_outputs(input_ids, attention_mask);  // [B, T, dim]
  v = v / v.norm(2, -1, true).clamp_min(1e-12);
  if (attention_mask.defined()) v = v * attention_mask.to(v.scalar_type()).unsqueeze(-1);
  return v;
}

at::Tensor maxsim(const at::Tensor& q, const at::Tensor& d) {
  LR_CHECK(q.dim() == 2 && d.dim() == 2 && q.size(1) == d.size(1), InvalidArgument, "maxsim: query ",
           q.sizes(), " and document ", d.sizes(), " must be [tokens, dim] of one dim");
  LR_CHECK(d.size(0) >= 1, InvalidArgument, "maxsim: the document has no vectors");
  return at::matmul(q, d.t()).amax(1).sum();
}

at::Tensor maxsim_scores(const at::Tensor& queries, const at::Tensor& query_mask, const at::Tensor& documents,
                         const at::Tensor& document_mask) {
  LR_CHECK(queries.dim() == 3 && documents.dim() == 3 && queries.size(2) == documents.size(2),
           InvalidArgument, "maxsim_scores: queries ", queries.sizes(), " and documents ", documents.sizes(),
           " must be [n, tokens, dim] of one dim");
  const int64_t B = queries.size(0), Tq = queries.size(1), C = documents.size(0), Td = documents.size(1);
  // sim[b, c, i, j] = ⟨Q_b,i, D_c,j⟩
  at::Tensor sim = at::einsum("bid,cjd->bcij", {queries, documents});
  if (document_mask.defined()) {
    LR_CHECK(document_mask.sizes() == at::IntArrayRef({C, Td}), InvalidArgument,
             "maxsim_scores: document mask ", document_mask.sizes(), " for documents ", documents.sizes());
    const at::Tensor valid = document_mask.to(at::kBool);
    LR_CHECK(valid.any(1).all().item<bool>(), InvalidArgument,
             "maxsim_scores: a document has no valid vector");
    sim = sim.masked_fill(valid.logical_not().view({1, C, 1, Td}), -std::numeric_limits<float>::infinity());
  }
  at::Tensor best = sim.amax(3);  // [B, C, Tq]
  if (query_mask.defined()) {
    LR_CHECK(query_mask.sizes() == at::IntArrayRef({B, Tq}), InvalidArgument, "maxsim_scores: query mask ",
             query_mask.sizes(), " for queries ", queries.sizes());
    best = best * query_mask.to(best.scalar_type()).view({B, 1, Tq});
  }
  return best.sum(2);
}

}  // namespace lowrank::nn
