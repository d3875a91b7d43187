// Compressing a CTR model (nn/ctr.h) layer by layer: its embedding tables, DNN layers and cross
// layers, by AFM (compress/afm.h: the top-k eigenvectors of each layer's output covariance on the
// training data) or, as the baseline at the same size, by the truncated SVD of each weight
// (E ≈ (U_k Σ_k) V_kᵀ for a table; W ≈ (U_k Σ_k^½)(Σ_k^½ V_kᵀ) for a linear layer, the bias kept).
// Statistics come from one pass of the *original* model over the calibration rows (the authors'
// afm_mlp.py / afm_emb.py `step2`), and every layer is then replaced at once.
// Ranks: each layer gets the largest k whose factored form (with its biases) keeps at most
// (1 − ratio) of the layer's parameters; with `factor` F instead, ratio is chosen so that the whole
// model (uncompressed parts included) shrinks F-fold. A layer where no k ≥ 1 saves parameters stays
// dense and is reported so.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "lowrank/core/json.h"
#include "lowrank/data/ctr_data.h"
#include "lowrank/nn/ctr.h"

namespace lowrank::compress {

struct CtrCompressOptions {
  std::string method = "afm";  // afm | svd
  double ratio = 0;            // parameter reduction of the compressed layers, in (0, 1)
  double factor = 0;           // or: the whole model's parameters divided by `factor` (> 1)
  bool relu = false;           // AFM: a ReLU between the two layers (then fine-tune)
  bool centred = true;         // AFM: C = E[yyᵀ] − μμᵀ (false: E[yyᵀ], b₂ = 0)
  bool embeddings = true, dnn = true, cross = true;  // which layers
  int64_t calibration_rows = 0;                      // rows of the calibration data used (0: all)
  int64_t batch_size = 8192;
  // Throws InvalidArgument naming the option.
  void check() const;
};

struct CtrLayerReport {
  std::string name;
  int64_t width = 0;  // output features
  int64_t rank = -1;  // -1: left dense
  int64_t params_before = 0, params_after = 0;
  double tail = -1;    // AFM: Σ_{i>k} λ_i of the output covariance (expected squared output error)
  double energy = -1;  // AFM: Σ_{i≤k} λ_i / Σ λ_i
};

struct CtrCompressReport {
  std::string method;
  double ratio = 0;
  std::vector<CtrLayerReport> layers;
  int64_t model_params_before = 0, model_params_after = 0;
  int64_t calibration_rows = 0;
  double seconds = 0;
  OrderedJson to_json() const;
};

// The largest k with k·(in + 1) + out·(k + 1) <= (1 − ratio)(out·in + out) for a linear layer, and
// (rows + d)·k + d <= (1 − ratio)·rows·d for an embedding table of `rows` rows: 0 when none saves.
int64_t ctr_linear_rank(int64_t out, int64_t in, double ratio);
int64_t ctr_embedding_rank(int64_t rows, int64_t dim, double ratio);

// Compresses `model` in place and records the choices in model.compression() (lowrank_config.json).
// Throws InvalidArgument for bad options, an already compressed model, or empty calibration data.
CtrCompressReport compress_ctr_model(nn::CtrModel& model, const data::CtrData& calibration,
                                     const CtrCompressOptions& options);

}  // namespace lowrank::compress
