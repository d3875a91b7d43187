// Scatterbrain: sparse + low-rank attention (Chen, Dao, Winsor, Song, Rudra, Ré, 2021,
// "Scatterbrain: Unifying Sparse and Low-rank Attention Approximation", arXiv:2110.15343).
//
// The unnormalised attention Ã = exp(QKᵀ/√d) is approximated per head by
//   Â = φ(Q)φ(K)ᵀ + S,   S_ij = exp(q_i·k_j/√d) − φ(q_i)·φ(k_j) for (i, j) ∈ Ω, 0 elsewhere,
// φ the positive "cosh" orthogonal random features of feature_map.h (m = ⌊d ln d⌋ features). On Ω
// the estimate is exact; off Ω it is the Performer estimate, so E[Â_ij] = Ã_ij for every entry
// (E[φ(q)·φ(k)] = exp(q·k/√d)), with zero variance on Ω. Normalised in log space, exactly as the
// authors' code does (per query row i, ls_i the features' log-scale):
//   log Z_i = logaddexp( LSE_{j∈Ω(i)} q_i·k_j/√d ,  log max(φ(q_i)·Σ_j φ(k_j) − Σ_{j∈Ω(i)} φ(q_i)·φ(k_j),
//   1e-24) + ls_i ) y_i = Σ_{j∈Ω(i)} [exp(q_i·k_j/√d − log Z_i) − φ(q_i)·φ(k_j)·e^{ls_i − log Z_i}] v_j
//         + φ(q_i)ᵀ(Σ_j φ(k_j) v_jᵀ)·e^{ls_i − log Z_i}
// with Σ_j over all keys (bidirectional) or j ≤ i (causal: prefix sums).
// The support Ω (option `support`):
//   local (the code's default): a window of w keys; bidirectional j ∈ [i − ⌊w/2⌋, i + ⌈w/2⌉)
//     (fly's `local_context`), causal the last w keys j ∈ (i − w, i] (Mistral's sliding window);
//   lsh (the paper's): angular LSH h(x) = argmax[xR; −xR] (Reformer; R a random d × n_b/2
//     rotation, n_b = 2⌈T/bucket_size⌉ buckets), queries and keys each sorted by (bucket, position)
//     and cut into chunks of bucket_size; query chunk c attends to key chunk c (SMYRF's balanced
//     clusters). With n_hashes rounds Ω is their union; a pair met in r rounds counts 1/r in each
//     (SMYRF's duplicate correction), so it enters Â once.
// Cost O(T(m + w)d) time and memory (local), plus O(T log T) for the sort (lsh).
//
// Multi-head like attention.h: q/k/v/o projections are linear slots `<prefix>.{q,k,v,o}_proj`,
// grouped heads (n_kv key/value heads shared by n_heads / n_kv query heads), scale 1/√d.
// Positions: fly's Scatterbrain module receives q, k, v and applies no positional encoding (its
// models carry absolute position embeddings before the trunk); the window is its only notion of
// position. Here RoPE is off by default (option `rope: true` rotates q and k first, as attention).
//
// Decode (causal, local support): the state holds the last w keys and values and the running
// Σφ(k)vᵀ, Σφ(k) of the keys that have left the window (feature_map.h's RunningFeatureSums):
// constant memory. Its low-rank term is φ(q)·Σ_{left} directly, which the forward computes as the
// difference φ(q)·Σ_all − Σ_{Ω} φ(q)·φ(k) (equal up to rounding).
//
// Reference code: HazyResearch/fly src/models/attention/sblocal_attention.py (local support, the
// normalisation above), sbsmyrf_attention.py (LSH support, duplicate counts), feature_maps_sb.py
// (cosh features, stabilisers), projection_utils.py (orthogonal random matrix).
// Deviations, named:
// - Features are drawn once, from `feature_seed` and the layer index (fly draws once per module
//   too: its redraw counter never fires again); they are not a checkpoint tensor.
// - The stabilisers are detached (no gradient through a maximum whose value cancels).
// - fly's causal local path is unfinished (its mask makes the window's feature dots negative); the
//   causal window here is the last w keys.
// - LSH: SMYRF's asymmetric XBOX+ transform and E2LSH clustering are replaced by the and
//   Reformer's angular hash, and the per-round normalisation of SMYRF by the same log-space
//   normalisation as the local support (LSE over Ω across rounds). LSH is bidirectional only:
//   chunk boundaries depend on later tokens, so a causal LSH output would depend on the future.
// - Padding (context.valid): padded keys have zero features and are outside Ω.
// - Dropout of the attention entries (fly's attention_dropout) is not implemented.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include <ATen/ATen.h>

#include "lowrank/core/json.h"
#include "lowrank/mix/feature_map.h"
#include "lowrank/nn/token_mixer.h"

namespace lowrank::mix {

// Scatterbrain and its two halves as mixers of their own (performer.h, local_attention.h).
enum class KernelMixerVariant {
  kScatterbrain,  // φ(Q)φ(K)ᵀ + S on Ω
  kPerformer,     // φ(Q)φ(K)ᵀ alone (FAVOR+), performer-pytorch's features and normalisation
  kLocal,         // exact softmax on the local window alone
};

enum class SparseSupport { kLocal, kLsh };

struct KernelMixerOptions {
  bool causal = true;
  bool rope = false;
  int64_t window = 64;
  SparseSupport support = SparseSupport::kLocal;
  int64_t n_hashes = 1;
  int64_t bucket_size = 64;
  int64_t n_features = 0;  // resolved: ⌊d ln d⌋ by default
  uint64_t feature_seed = 0;
};

// Reads and checks the options of `variant` (unknown keys, bad values: InvalidArgument naming the
// option and the value).
KernelMixerOptions parse_kernel_mixer_options(KernelMixerVariant variant, const Json& options,
                                              int64_t head_dim);

class KernelAttentionMixer final : public nn::TokenMixer {
 public:
  KernelAttentionMixer(const nn::MixerSpec& spec, KernelMixerVariant variant);

  std::string name() const override;
  at::Tensor forward(const at::Tensor& x, const nn::MixerContext& context) const override;
  bool causal() const override { return options_.causal; }
  bool has_decode_state() const override;
  std::unique_ptr<nn::MixerState> new_state(int64_t batch) const override;
  at::Tensor step(const at::Tensor& x, nn::MixerState& state, const nn::MixerContext& context) const override;
  std::vector<nn::LinearSlot*> slots() override { return {&q_proj, &k_proj, &v_proj, &o_proj}; }
  using nn::TokenMixer::slots;

  const KernelMixerOptions& options() const { return options_; }
  // The random features (null for `local`); set_feature_projection replaces the drawn matrix.
  const RandomFeatures* features() const { return features_ ? &*features_ : nullptr; }
  void set_feature_projection(const at::Tensor& projection);
  // The LSH rotations the forward uses for T positions: [n_hashes, head_dim, n_buckets / 2].
  at::Tensor lsh_rotations(int64_t T) const;

  // The mixing itself on per-head q [B, H, T, d], k, v [B, H, T, d] (heads already repeated;
  // key_mask [B, 1, T, 1] or undefined): [B, H, T, d].
  at::Tensor mix(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                 const at::Tensor& key_mask) const;

  nn::LinearSlot q_proj, k_proj, v_proj, o_proj;

 private:
  struct Projected;
  Projected project(const at::Tensor& x, const nn::MixerContext& context) const;

  KernelMixerVariant variant_;
  KernelMixerOptions options_;
  int64_t layer_;
  int64_t num_heads_, num_kv_heads_, head_dim_;
  double scale_;
  std::optional<RandomFeatures> features_;
};

// The factory of `variant` and its registry entry.
void register_kernel_mixer(nn::MixerRegistry& registry, KernelMixerVariant variant, MethodInfo info);

void register_scatterbrain(nn::MixerRegistry& registry);

}  // namespace lowrank::mix
