// Click-through-rate models in DeepCTR-Torch's layout (shenweichen/DeepCTR-Torch, deepctr_torch/
// models/{basemodel,deepfm,dcn}.py and layers/{core,interaction}.py: the code the AFM authors built
// on, yuhao318/Atomic_Feature_Mimicking), for the CTR
// compression study (compress/afm.h). A row has F categorical fields (ids x_f) and D numeric ones.
//   embeddings   e_f = E_f[x_f] ∈ ℝ^d                            embedding_dict.<field>.weight [V_f+1, d]
//   linear part  z_lin = Σ_f w_f[x_f] + aᵀ x_dense               linear_model.embedding_dict.<field>.weight
//                                                                  [V_f+1, 1], linear_model.weight [D, 1]
//   DNN input    x₀ = [e_1; …; e_F; x_dense] ∈ ℝ^{F d + D}
//   DNN          h_{i+1} = ReLU(W_i h_i + b_i), h_0 = x₀          dnn.linears.<i>.{weight,bias}
//   models (logit z, prediction σ(z), out.bias the PredictionLayer's bias):
//     dnn        z = z_lin + w_outᵀ h_L + b                       dnn_linear.weight [1, units_L]
//     deepfm     z = z_lin + FM(e) + w_outᵀ h_L + b,  FM(e) = ½ Σ_k ((Σ_f e_fk)² − Σ_f e_fk²)
//     dcnv2      z = z_lin + w_outᵀ [x_L; h_L] + b, with the DCN-M cross network
//                x_{l+1} = x₀ ⊙ (C_l x_l + c_l) + x_l               crossnet.kernels [L, n, n],
//                                                                  crossnet.bias [L, n, 1]
//                (Wang et al., 2021, "DCN V2", WWW; DeepCTR's CrossNet, parameterization "matrix")
// Every id table has V_f + 1 rows: the last is the out-of-vocabulary bucket (data/ctr_data.h).
// Compressed layers (compress/afm.h writes them; lowrank_config.json lists them):
//   a linear layer y = W x + b becomes y = W₂ φ(W₁ x + b₁) + b₂, φ the identity or ReLU
//     (dnn.linears.<i> holds W₁, b₁; dnn.after_linears.<i> W₂, b₂ — the authors' DNN_Ada naming;
//      cross layers crossnet.<l>.down / crossnet.<l>.up, and then no stacked crossnet.kernels);
//   an embedding e = E[x] becomes e = P E'[x] + p (embedding_dict.<field>.weight [V+1, k],
//     embedding_proj.<field>.{weight [d, k], bias [d]}).
// Files: ctr_config.json {"architectures": ["LowrankCtrModel"], "model_type": "dnn" | "deepfm" |
//   "dcnv2", "embedding_dim", "hidden_units", "cross_layers", "sparse_fields", "dense_fields"} +
//   model.safetensors (+ lowrank_config.json when compressed).
// Inference (no gradients) fuses the lookups of all fields into one gather per kind of table and
// one batched product for the factored projections, from concatenated copies of the tables built
// on first use and rebuilt when a table changes: it holds a second copy of the embeddings.
// Initialisation as DeepCTR's: embeddings and the linear part N(0, 1e-4); DNN weights N(0, 1e-4) and
// biases U(±1/√in) (nn.Linear's); dnn_linear U(±1/√in); cross kernels Xavier-normal, cross biases 0;
// out.bias 0.
// Deviation from DeepCTR: no L2 penalty on the embeddings in the loss (DeepCTR adds 1e-5·Σ‖E‖² over
// whole tables each step, which costs a pass over every table per step).
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <ATen/ATen.h>

#include "lowrank/core/json.h"
#include "lowrank/data/ctr_data.h"
#include "lowrank/nn/linear_slot.h"

namespace lowrank::nn {

struct CtrConfig {
  std::string model_type = "dcnv2";  // dnn | deepfm | dcnv2
  data::CtrSchema schema;
  int64_t embedding_dim = 16;
  std::vector<int64_t> hidden_units = {400, 400, 400};
  int64_t cross_layers = 2;   // dcnv2 only (DeepCTR's cross_num default)
  Json raw = Json::object();  // the file's keys (unknown ones kept on save)

  int64_t dnn_input_dim() const { return schema.sparse_count() * embedding_dim + schema.dense_count(); }
  // Throws InvalidArgument naming the key and value.
  void check() const;
  OrderedJson to_json() const;
  static CtrConfig from_json(const Json& j, const std::string& what);
};

// A linear map y = W x + b, or its factored form y = W₂ φ(W₁ x + b₁) + b₂.
struct CtrLinear {
  at::Tensor weight, bias;        // W [out, in], b [out]; factored: W₁ [k, in], b₁ [k]
  at::Tensor up_weight, up_bias;  // factored: W₂ [out, k], b₂ [out]; undefined when dense
  bool relu = false;              // φ = ReLU between the factors

  bool factored() const { return up_weight.defined(); }
  int64_t in_features() const { return weight.size(1); }
  int64_t out_features() const { return factored() ? up_weight.size(0) : weight.size(0); }
  int64_t rank() const { return factored() ? weight.size(0) : -1; }
  int64_t parameter_count() const;
  at::Tensor forward(const at::Tensor& x) const;
  // (name suffix, tensor): weight, bias (and up.weight, up.bias when factored), under `prefix`.
  void append(NamedTensors& out, const std::string& prefix, const std::string& up_prefix) const;
};

// An embedding table, or its factored form e = P E'[x] + p.
struct CtrEmbedding {
  at::Tensor table;                   // [V+1, d], or E' [V+1, k]
  at::Tensor proj_weight, proj_bias;  // P [d, k], p [d]; undefined when dense
  bool factored() const { return proj_weight.defined(); }
  int64_t dim() const { return factored() ? proj_weight.size(0) : table.size(1); }
  int64_t rank() const { return factored() ? table.size(1) : -1; }
  int64_t parameter_count() const;
  at::Tensor forward(const at::Tensor& ids) const;  // ids [B] -> [B, d]
};

class CtrModel {
 public:
  // Fresh weights (DeepCTR's initialisers, except as the header says), seeded. Throws as check().
  static CtrModel random(const CtrConfig& config, uint64_t seed);
  // ctr_config.json + model.safetensors (+ lowrank_config.json). Throws NotFound / InvalidArgument /
  // Corruption naming the file and tensor.
  static CtrModel load(const std::filesystem::path& dir);
  // Writes the directory atomically (staged, then renamed); `compression` (lowrank_config.json) is
  // written when the model has a factored layer.
  void save(const std::filesystem::path& dir) const;

  const CtrConfig& config() const { return config_; }
  // Observes a layer's output during forward(): the layer's name ("embedding_dict.C3",
  // "dnn.linears.0", "crossnet.1") and its output [B, out].
  using Observer = std::function<void(const std::string& layer, const at::Tensor& output)>;
  // Logits [B] (float32) of a batch; differentiable in every tensor. Throws InvalidArgument for a
  // batch of another schema.
  at::Tensor forward(const data::CtrData& batch, const Observer& observe = {}) const;

  // The tensors as the file names them (an uncompressed cross network stacked, as DeepCTR's).
  NamedTensors named_tensors() const;
  // The model's own tensors (aliases, for training), cross layers one by one (crossnet.<l>.*).
  NamedTensors parameters() const;
  int64_t parameter_count() const;
  // The layers AFM and SVD compress: embeddings (by field), DNN layers, cross layers.
  std::vector<CtrEmbedding>& embeddings() { return embeddings_; }
  const std::vector<CtrEmbedding>& embeddings() const { return embeddings_; }
  std::vector<CtrLinear>& dnn() { return dnn_; }
  const std::vector<CtrLinear>& dnn() const { return dnn_; }
  std::vector<CtrLinear>& cross() { return cross_; }
  const std::vector<CtrLinear>& cross() const { return cross_; }
  // The layer names of the observer, in forward order.
  std::vector<std::string> layer_names() const;
  // lowrank_config.json of a compressed model (null for an uncompressed one).
  Json& compression() { return compression_; }
  const Json& compression() const { return compression_; }
  // Sets requires_grad on every tensor.
  void requires_grad(bool on);

 private:
  CtrConfig config_;
  std::vector<CtrEmbedding> embeddings_;
  std::vector<at::Tensor> linear_embeddings_;  // [V_f+1, 1]
  at::Tensor linear_dense_;                    // [D, 1]
  std::vector<CtrLinear> dnn_;
  std::vector<CtrLinear> cross_;
  at::Tensor out_weight_;  // dnn_linear.weight [1, n]
  at::Tensor out_bias_;    // out.bias [1]
  Json compression_;

  // The fused lookups of inference (ctr.cpp); rebuilt when an embedding tensor changes.
  struct LookupCache;
  mutable std::shared_ptr<const LookupCache> lookup_;
  std::shared_ptr<const LookupCache> lookup_cache() const;
  // Embeddings [B, F, d] and the linear part's sum over fields [B]: fused without gradients and
  // without an observer, field by field otherwise.
  std::pair<at::Tensor, at::Tensor> embed(const data::CtrData& batch, const Observer& observe) const;
};

}  // namespace lowrank::nn
