// The compression methods and the model-level driver. Each method turns one slot's dense weight
// (with the slot's calibration statistics where it needs them) into a compressed base operator
// (compress/operators.h); `compress_model` validates everything first, then replaces the bases of
// the targeted slots, optionally adds a low-rank compensation of what the compression lost (EoRA
// or plain SVD), and reports parameters, bytes and errors per slot.
//
// Methods (registry(); `lowrank methods` lists them):
//   svd        truncated SVD, W ≈ U_k Σ_k V_kᵀ (LoRD's one-shot decomposition)    compress/truncated_svd.cpp
//   asvd       activation-aware SVD, S = diag(mean|x|^α)                          compress/truncated_svd.cpp
//   fwsvd      Fisher-weighted SVD, S = diag(fisher^α)                            compress/truncated_svd.cpp
//   svd_llm    SVD-LLM truncation-aware whitening, S = chol(X Xᵀ), and optionally compress/truncated_svd.cpp
//              its closed-form update of U on each layer's inputs in the compressed model
//   afm        AFM: top-k eigenvectors of the output covariance, U_k U_kᵀ(y − μ) + μ   compress/afm.cpp
//   pela       PELA: svd's factors, then intermediate pre-training (feature distillation from the
//   compress/pela.cpp
//              original, weight perturbation); run by compress/pipeline.cpp
//   welore     WeLore: non-uniform ranks from the normalised spectrum            compress/welore.cpp
//   rtn        group-wise round-to-nearest INT4/INT8                              compress/rtn.cpp
//   svdquant   SVDQuant: smoothing + 16-bit low-rank branch + 4-bit residual      compress/svdquant.cpp
//   prune24    2:4 magnitude pruning                                              compress/prune24.cpp
//   rpca       sparse + low-rank split by robust PCA                              compress/rpca.cpp
//   matryoshka_kv  orthogonal PCA projections of the KV cache (not of a slot)     compress/matryoshka_kv.cpp
// Compensation (any method): eora (eigenspace of X Xᵀ) or svd, compress/compensation.cpp.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <ATen/ATen.h>

#include "lowrank/compress/calibration.h"
#include "lowrank/compress/operators.h"
#include "lowrank/core/json.h"
#include "lowrank/core/registry.h"
#include "lowrank/nn/model.h"

namespace lowrank::compress {

struct CompressOptions {
  std::string method = "svd_llm";
  double ratio = 0;      // parameter reduction in (0, 1) for the low-rank methods (0: use rank)
  int64_t rank = 0;      // uniform rank (low-rank methods; SVDQuant's branch rank, default 32)
  double kv_ratio = -1;  // matryoshka_kv: fraction of the KV cache removed, in [0, 1) (-1: unset)
  int bits = 4;          // rtn, svdquant
  int act_bits = 16;     // rtn, svdquant: 16 (float activations) or 4 (INT4 per token and group: W4A4)
  int64_t group_size = 64;
  double alpha = -1;              // asvd (0.5) / fwsvd (1.0) exponent, pela's distillation weight (1.0);
                                  // -1: the method's default
  double beta = -1;               // pela: weight-perturbation weight (1.0); -1: the default
  double tau = -1;                // welore threshold; -1: searched to meet --ratio
  std::string compensation;       // "", "eora" or "svd"
  int64_t compensation_rank = 0;  // required with a compensation
  bool share_inputs = true;       // svdquant: one branch (smoothing, down projection) for q/k/v and gate/up
  std::vector<std::string> targets;  // slot names or module suffixes ("q_proj"); empty: every decoder slot
  // Extra per-method options: svd_llm: update (bool, default false); svdquant: grid, max_iters;
  // rpca: lambda, max_iters. validate() refuses other keys.
  Json method_options = Json::object();
};

// SVD-LLM's closed-form parameter update (`{"update": true}`), read from the method options.
bool svd_llm_update(const CompressOptions& options);

struct SlotReport {
  std::string name;
  std::string kind;  // the new operator's kind
  int64_t out_features = 0, in_features = 0;
  int64_t rank = -1;  // low-rank part's rank (-1: none)
  int64_t params_before = 0, params_after = 0;
  int64_t bytes_before = 0, bytes_after = 0;  // 16-bit floating storage
  double weight_error = 0;                    // ||W − Ŵ||_F / ||W||_F
  double output_error = -1;                   // sqrt(tr(ΔW H ΔWᵀ) / tr(W H Wᵀ)); -1 without a Gram
};

struct CompressReport {
  std::string method, compensation;
  std::vector<SlotReport> slots;
  int64_t params_before = 0, params_after = 0;  // of the compressed slots
  int64_t model_params_before = 0, model_params_after = 0;
  int64_t bytes_before = 0, bytes_after = 0;
  double seconds = 0;
  OrderedJson to_json() const;
};

// The input of one slot's compression.
struct SlotInput {
  std::string name;
  at::Tensor weight;  // [out, in] float32, detached
  at::Tensor bias;    // [out] or undefined
  const SlotStatistics* stats = nullptr;
  int64_t rank = 0;  // resolved rank for rank-taking methods (rpca: --rank, 0 for none)
  // svd_llm with the update: H' = Σ_t x'_t x'_tᵀ of the slot's inputs x' in the model whose
  // earlier layers are already compressed (undefined: no update).
  at::Tensor update_gram;
};

using SlotCompressor =
    std::function<std::shared_ptr<StoredOperator>(const SlotInput&, const CompressOptions&)>;

// A compression method's registry entry: what it needs, how it picks ranks, and its compressor.
// Its name, summary, paper and option help are the entry's lowrank::MethodInfo.
struct Method {
  enum class Ranks { kNone, kUniform, kSpectrum } ranks = Ranks::kNone;
  bool needs_gram = false;
  bool needs_activations = false;  // absmax / mean |x|
  bool needs_fisher = false;
  bool quantizes = false;  // reads --bits and --group-size
  SlotCompressor compress;
  bool needs_calibration() const { return needs_gram || needs_activations || needs_fisher; }
};

// The built-in methods (registered on first use). Thread-safe.
const Registry<Method>& registry();
void register_builtin_methods(Registry<Method>& registry);
// registry().factory(name): throws NotFound listing the known names.
const Method& find_method(const std::string& name);

// The slots `options.targets` selects. Throws InvalidArgument when a target matches nothing.
std::vector<nn::LinearSlot*> target_slots(nn::Model& model, const CompressOptions& options);
// Every check that can fail before work starts: method, ratio/rank ranges against every targeted
// slot, bits, group size, compensation, and calibration present when needed (`stats` may be null;
// with `stats_pending` the calibration checks are left for later, as before calibrating).
// Throws InvalidArgument / NotFound naming the value.
void validate(nn::Model& model, const CompressOptions& options, const CalibrationStatistics* stats,
              bool stats_pending = false);
// What the calibration pass must collect for these options.
struct CalibrationNeeds {
  bool any = false, gram = false, fisher = false;
  int64_t inputs = 0;  // calibration tokens to keep per slot (SVDQuant W4A4's objective)
};
CalibrationNeeds calibration_needs(const CompressOptions& options);
// The calibration data itself, for a method that calibrates again while it compresses: SVD-LLM's
// update reads the inputs of layer l after layers 0..l−1 have been compressed.
struct CalibrationSource {
  at::Tensor tokens;  // 1-D int64, as calibrate()
  CalibrationOptions options;
};
// Compresses the targeted slots of `model` in place (validate() first). `stats` holds calibration
// statistics for the targeted slots or is null; `source` is required by svd_llm with the update.
// Throws as validate().
CompressReport compress_model(nn::Model& model, const CompressOptions& options,
                              const CalibrationStatistics* stats, const CalibrationSource* source = nullptr);

// The uniform rank that removes `ratio` of an [m, n] matrix's parameters, as SVD-LLM:
// floor(m n (1 − ratio) / (m + n)), at least 1.
int64_t rank_for_ratio(int64_t m, int64_t n, double ratio);

// SVD-LLM's closed-form update of the left factor: for the kept right factor R [k, n] (√Σ_k V_kᵀ S⁻¹)
// the L [m, k] minimising ||W X' − L R X'||_F, from H' = X' X'ᵀ alone (normal equations
// L (R H' Rᵀ) = W H' Rᵀ, solved in float64 as a least-squares problem, so a singular R H' Rᵀ gets
// the minimum-norm solution). Returns float64.
at::Tensor svd_llm_updated_left(const at::Tensor& weight, const at::Tensor& right, const at::Tensor& gram);

// Method implementations (one per file; see the table above).
std::shared_ptr<StoredOperator> compress_truncated_svd(const SlotInput& in, const CompressOptions& options);
std::shared_ptr<StoredOperator> compress_rtn(const SlotInput& in, const CompressOptions& options);
std::shared_ptr<StoredOperator> compress_prune24(const SlotInput& in, const CompressOptions& options);
std::shared_ptr<StoredOperator> compress_rpca(const SlotInput& in, const CompressOptions& options);
std::shared_ptr<StoredOperator> compress_svdquant(const SlotInput& in, const CompressOptions& options);
// WeLore's global threshold search: the ranks (one per spectrum) that keep each matrix's
// normalised singular values >= tau, with tau chosen so that the parameters removed reach
// `ratio` of the total (the smallest such tau); matrices where the rank would not save
// parameters stay dense (rank -1). `spectra[i]` are singular values of an [m_i, n_i] matrix.
struct WeLoreChoice {
  double tau = 0;
  std::vector<int64_t> ranks;
};
WeLoreChoice welore_ranks(const std::vector<at::Tensor>& spectra,
                          const std::vector<std::pair<int64_t, int64_t>>& shapes, double ratio,
                          double tau = -1);
// Low-rank compensation of `compressed` for the original `weight`: EoRA in the eigenspace of
// `gram` ("eora", needs gram) or a plain truncated SVD of the difference ("svd").
std::shared_ptr<StoredOperator> compensate(std::shared_ptr<const StoredOperator> compressed,
                                           const at::Tensor& weight, const at::Tensor& gram, int64_t rank,
                                           const std::string& method);

}  // namespace lowrank::compress
