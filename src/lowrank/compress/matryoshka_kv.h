// MatryoshkaKV (Lin et al., 2024, "MatryoshkaKV: Adaptive KV Compression via Trainable Orthogonal
// Projection", arXiv:2410.14731): the KV cache, not the weights, is compressed. Per layer ℓ and KV
// head h, orthogonal U_K, U_V ∈ ℝ^{D×D} and means μ_K, μ_V ∈ ℝ^D act on the rotated keys and the
// values; the cache keeps their first r_k, r_v coordinates,
//   c_k = U_K[:, :r_k]ᵀ (k_rope − μ_K),   c_v = U_V[:, :r_v]ᵀ (v − μ_V),
// and attention runs in that space (nn/attention.h, KVCompression):
//   scores = (U_K[:, :r_k]ᵀ q_rope) · c_k / √D  (+ q_rope · μ_K, constant over keys),
//   out = U_V[:, :r_v] Σ_j p_j c_v,j + μ_V.
// Initialisation (paper §3.2, "PCA init"): μ and the covariance of each head's rotated keys and of
// its values over calibration windows; U = the covariance's eigenvectors by descending eigenvalue,
// the first column negated when det U < 0 (so U is a rotation, as the Cayley map needs).
// `--kv-ratio ρ` is the paper's "average KV compression": every head keeps r = round(D (1 − ρ))
// columns of keys and of values (uniform ranks).
//
// Reference code followed: The-kamisato/MatryoshkaKV-cache,
// LLaMA-Factory/src/llamafactory/model/custom_model/modeling_pcallama_trial.py (`unitary_transform`:
// (x − μ) U[..., :r]; the score with the query·mean term; the output U_Vᵀ lift plus μ_V; heads of a
// layer padded to the largest rank with masks: here zero basis columns).
// `--method-options {"train_steps": N, ...}` then trains U (Cayley-parametrised) and μ by Matryoshka
// distillation, and `"rank_search": true` picks a rank per (layer, head, K/V) under the --kv-ratio
// budget by a greedy, loss-guided search: compress/matryoshka_kv_train.h.
#pragma once

#include <cstdint>
#include <filesystem>
#include <vector>

#include <ATen/ATen.h>

#include "lowrank/compress/calibration.h"
#include "lowrank/compress/pipeline.h"
#include "lowrank/core/json.h"
#include "lowrank/nn/model.h"

namespace lowrank::compress {

// Streaming sums of one layer's rotated keys and values per KV head, over `tokens` positions.
struct KVStatistics {
  at::Tensor key_sum, value_sum;      // [n_kv, D] float64: Σ_t x_t
  at::Tensor key_outer, value_outer;  // [n_kv, D, D] float64: Σ_t x_t x_tᵀ
  int64_t tokens = 0;
  at::Tensor key_mean() const;  // Σ x / n
  // Σ (x − μ)(x − μ)ᵀ / n
  at::Tensor key_covariance() const;
  at::Tensor value_mean() const;
  at::Tensor value_covariance() const;
};

// The windows calibrate() draws, spread evenly over `tokens`: [samples, seq_len + 1] (the last
// column is the next-token target of the one before). Throws InvalidArgument for too few tokens.
at::Tensor calibration_windows(const at::Tensor& tokens, const CalibrationOptions& options);

// Runs `options.samples` windows of `options.seq_len` tokens (the windows calibrate() draws) through
// the model and returns per layer the statistics of the keys after RoPE and of the values, as the
// cache would receive them. Every layer must be attention. Throws InvalidArgument as calibrate().
std::vector<KVStatistics> collect_kv_statistics(const nn::Model& model, const at::Tensor& tokens,
                                                const CalibrationOptions& options);

// The PCA basis of covariances [..., D, D]: eigenvectors as columns by descending eigenvalue, the
// first column negated where the determinant is negative. float64.
at::Tensor pca_basis(const at::Tensor& covariance);

// One layer's projections, full width (float64), and the ranks kept per KV head.
struct MatryoshkaKVLayer {
  at::Tensor key_basis, value_basis;  // [n_kv, D, D], orthogonal
  at::Tensor key_mean, value_mean;    // [n_kv, D]
  std::vector<int64_t> key_ranks, value_ranks;
};

// PCA initialisation from the statistics, every head at rank `rank` (1 ≤ rank ≤ D).
std::vector<MatryoshkaKVLayer> pca_init(const std::vector<KVStatistics>& stats, int64_t rank);

// The uniform rank of a KV compression ratio ρ ∈ [0, 1): round(D (1 − ρ)), at least 1. Throws
// InvalidArgument naming --kv-ratio.
int64_t kv_rank_for_ratio(int64_t head_dim, double kv_ratio);

// Installs the layers' projections into the model's attention (truncated to each head's ranks,
// the layer padded to its largest rank, in the model's dtype and device). Throws InvalidArgument
// for a rank out of [1, D] (naming the layer and head) or a layer count/shape mismatch.
void install_kv_compression(nn::Model& model, const std::vector<MatryoshkaKVLayer>& layers);

// The cache bytes of `positions` positions of `batch` sequences at `element_size` bytes a number:
// `full` uncompressed (2 · n_kv · D per layer), `stored` as the compressed model's cache holds them
// (each layer's heads padded to its largest rank) and `exact` at each head's own ranks.
struct KVBytes {
  int64_t full = 0, stored = 0, exact = 0;
};
KVBytes kv_cache_bytes(nn::Model& model, int64_t batch, int64_t positions, int64_t element_size);

// The side file of a compressed model directory holding U and μ of every layer.
inline constexpr const char* kMatryoshkaKVFile = "matryoshka_kv.safetensors";
// Writes the layers (full bases, means) into dir/kMatryoshkaKVFile and returns their description
// for lowrank_config.json's "matryoshka_kv" entry (per layer the key and value ranks per head).
OrderedJson save_kv_compression(const std::vector<MatryoshkaKVLayer>& layers,
                                const std::filesystem::path& dir);
// Reads them back (the description from lowrank_config.json) and installs them. Throws Corruption
// naming the file and tensor for a missing or misshapen tensor or a bad rank.
std::vector<MatryoshkaKVLayer> load_kv_compression(nn::Model& model, const std::filesystem::path& dir,
                                                   const Json& description);

// `lowrank compress --method matryoshka_kv`: PCA-initialised projections at --kv-ratio, written as a
// compressed directory (model weights unchanged, lowrank_config.json + kMatryoshkaKVFile).
RunResult run_matryoshka_kv(const RunOptions& options);

}  // namespace lowrank::compress
