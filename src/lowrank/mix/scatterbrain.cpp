// Scatterbrain (sparse + low-rank attention) and the shared code of its halves; see scatterbrain.h.
#include "lowrank/mix/scatterbrain.h"

#include <ATen/CPUGeneratorImpl.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <set>

#include "lowrank/core/error.h"
#include "lowrank/mix/graph_free.h"
#include "lowrank/nn/config.h"
#include "lowrank/nn/linear_slot.h"
#include "lowrank/nn/rope.h"

namespace lowrank::mix {
namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();
// performer-pytorch's causal denominator eps (added to Σ_{j≤i} φ(k_j)).
constexpr double kPerformerCausalEps = 1e-6;
// performer-pytorch's feature eps (softmax_kernel's default).
constexpr double kPerformerFeatureEps = 1e-4;

const char* variant_name(KernelMixerVariant v) {
  switch (v) {
    case KernelMixerVariant::kScatterbrain:
      return "scatterbrain";
    case KernelMixerVariant::kPerformer:
      return "performer";
    case KernelMixerVariant::kLocal:
      return "local";
  }
  return "?";
}

// SplitMix64 of a seed and a stream index: independent streams for the layers and draws.
uint64_t stream_seed(uint64_t seed, uint64_t stream) {
  uint64_t z = seed + 0x9E3779B97F4A7C15ULL * (stream + 1);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}

// LSE of stacked log-values along `dim`, −inf where all are −inf (no NaN, also in the gradient).
at::Tensor safe_logsumexp(const at::Tensor& values, int64_t dim) {
  const at::Tensor mx = at::amax(values, {dim}, /*keepdim=*/true);
  const at::Tensor shift = at::where(mx.isfinite(), mx, at::zeros_like(mx)).detach();
  const at::Tensor sum = at::exp(values - shift).sum(dim, /*keepdim=*/true);
  const at::Tensor any = sum.gt(0);
  return at::where(any, shift + at::log(at::where(any, sum, at::ones_like(sum))), at::full_like(sum, -kInf))
      .squeeze(dim);
}

// Exact softmax terms of query rows over their keys in Ω, laid out in blocks: row lse (−inf if the
// row sees nothing), Σ softmax·v, and (with features) the dots φ'(q)·φ'(k) over Ω, their sum and
// their Σ dots·v, each pair weighted 1/count (LSH duplicates).
struct SparseTerms {
  at::Tensor lse;       // [.., 1]
  at::Tensor weighted;  // [.., d]
  at::Tensor dots_sum;  // [.., 1]
  at::Tensor dots_v;    // [.., d]
};

SparseTerms block_terms(const at::Tensor& qb, const at::Tensor& kb, const at::Tensor& vb,
                        const at::Tensor& allowed, const at::Tensor& count, const at::Tensor& qfb,
                        const at::Tensor& kfb, double scale) {
  // Without a graph to keep, the [.., C, keys] score and dot blocks are updated in place: one read
  // and one write per pass, no new allocation (inference: the drop-in and decode paths).
  const bool in_place = keeps_no_graph({qb, kb, vb, qfb, kfb});
  const at::Tensor outside = allowed.logical_not();
  at::Tensor s = at::matmul(qb, kb.transpose(-1, -2));
  if (in_place) {
    s.mul_(scale);
    if (count.defined()) s.sub_(at::log(count.clamp_min(1)));
    s.masked_fill_(outside, -kInf);
  } else {
    s = s * scale;
    if (count.defined()) s = s - at::log(count.clamp_min(1));
    s = s.masked_fill(outside, -kInf);
  }
  const at::Tensor mx = at::amax(s, {-1}, /*keepdim=*/true);
  const at::Tensor shift = at::where(mx.isfinite(), mx, at::zeros_like(mx)).detach();
  const at::Tensor p = in_place ? s.sub_(shift).exp_() : at::exp(s - shift);
  const at::Tensor row_sum = p.sum(-1, /*keepdim=*/true);
  const at::Tensor any = row_sum.gt(0);
  const at::Tensor safe_sum = at::where(any, row_sum, at::ones_like(row_sum));
  SparseTerms out;
  out.lse = at::where(any, shift + at::log(safe_sum), at::full_like(row_sum, -kInf));
  out.weighted = at::matmul(p, vb) / safe_sum;
  if (qfb.defined()) {
    at::Tensor dots = at::matmul(qfb, kfb.transpose(-1, -2));
    if (in_place) {
      dots.masked_fill_(outside, 0.0);
      if (count.defined()) dots.div_(count.clamp_min(1));
    } else {
      dots = dots.masked_fill(outside, 0.0);
      if (count.defined()) dots = dots / count.clamp_min(1);
    }
    out.dots_sum = dots.sum(-1, /*keepdim=*/true);
    out.dots_v = at::matmul(dots, vb);
  }
  return out;
}

// Scatterbrain's log-space normalisation of the exact terms on Ω and the low-rank terms off it
// (fly's SBLocalAttention.forward): the off-support mass is the low-rank normaliser less the
// feature dots on Ω, clamped at 1e-24.
at::Tensor normalise(const SparseTerms& sparse, const LowRankTerms& lr) {
  const at::Tensor off_support = (lr.normaliser - sparse.dots_sum).clamp_min(1e-24);
  const at::Tensor log_z = at::logaddexp(sparse.lse, at::log(off_support) + lr.log_scale);
  return at::exp(sparse.lse - log_z) * sparse.weighted +
         at::exp(lr.log_scale - log_z) * (lr.numerator - sparse.dots_v);
}

// The keys a block of C queries can see under a window: block b covers positions
// [bC − front, bC − front + width), zero-padded outside [0, T).
struct KeyWindow {
  int64_t front = 0, width = 0;
};

// The local support is computed over chunks of whole query blocks of about this many rows: each
// chunk's score, dot and gathered key tensors ([.., blocks, C, width] and [.., blocks, width, m])
// then stay a few MiB, in cache and reused by the allocator, instead of whole-sequence tensors
// written once and read once from memory (at 16K tokens, 67 MiB of scores and 140 MiB of
// gathered key features).
constexpr int64_t kLocalChunkRows = 1024;

// Blocks [first, first + count) of x [.., T, c] under window kw -> [.., count, width, c].
at::Tensor key_blocks(const at::Tensor& x, int64_t C, int64_t first, int64_t count, KeyWindow kw) {
  const int64_t T = x.size(-2);
  const int64_t start = first * C - kw.front, stop = start + (count - 1) * C + kw.width;
  const int64_t lo = std::clamp<int64_t>(start, 0, T), hi = std::clamp<int64_t>(stop, 0, T);
  at::Tensor rows = x.narrow(-2, lo, hi - lo);
  if (lo != start || hi != stop) rows = at::constant_pad_nd(rows, {0, 0, lo - start, stop - hi});
  return rows.unfold(-2, kw.width, C).transpose(-1, -2);
}

// Query blocks [first, first + count) of x [.., T, c] -> [.., count, C, c], zero-padded past T.
at::Tensor query_blocks(const at::Tensor& x, int64_t C, int64_t first, int64_t count) {
  const int64_t T = x.size(-2);
  const int64_t start = first * C, stop = std::min(T, (first + count) * C);
  at::Tensor rows = x.narrow(-2, start, stop - start);
  if (stop - start < count * C) rows = at::constant_pad_nd(rows, {0, 0, 0, count * C - (stop - start)});
  std::vector<int64_t> shape(x.sizes().begin(), x.sizes().end() - 2);
  shape.insert(shape.end(), {count, C, x.size(-1)});
  return rows.reshape(shape);
}

// [.., nb, C, c] -> [.., T, c].
at::Tensor unblock(const at::Tensor& x, int64_t T) {
  std::vector<int64_t> shape(x.sizes().begin(), x.sizes().end() - 3);
  shape.insert(shape.end(), {x.size(-3) * x.size(-2), x.size(-1)});
  return x.reshape(shape).narrow(-2, 0, T);
}

// Gathers rows `index` [B, H, n] of x [B, H, T + 1, c] (row T is the zero padding row).
at::Tensor gather_rows(const at::Tensor& x, const at::Tensor& index) {
  return x.gather(2, index.unsqueeze(-1).expand({index.size(0), index.size(1), index.size(2), x.size(-1)}));
}

at::Tensor pad_row(const at::Tensor& x) {
  return at::constant_pad_nd(x, {0, 0, 0, 1});
}

}  // namespace

KernelMixerOptions parse_kernel_mixer_options(KernelMixerVariant variant, const Json& options,
                                              int64_t head_dim) {
  const std::string mixer = variant_name(variant);
  const std::string what = str("mixer_config.", mixer);
  LR_CHECK(options.is_object(), InvalidArgument, what, " must be an object");
  std::set<std::string> known = {"causal", "rope"};
  if (variant != KernelMixerVariant::kLocal) known.insert({"n_features", "feature_seed"});
  if (variant != KernelMixerVariant::kPerformer) known.insert("window");
  if (variant == KernelMixerVariant::kScatterbrain) known.insert({"support", "n_hashes", "bucket_size"});
  for (const auto& [key, value] : options.items()) {
    if (known.contains(key)) continue;
    std::string list;
    for (const std::string& k : known) list += str(list.empty() ? "" : ", ", k);
    throw InvalidArgument(str(what, ": unknown option \"", key, "\" (known: ", list, ")"));
  }
  KernelMixerOptions o;
  o.causal = json_get_or<bool>(options, "causal", true, what);
  o.rope = json_get_or<bool>(options, "rope", false, what);
  if (known.contains("window")) {
    o.window = json_get_or<int64_t>(options, "window", 64, what);
    LR_CHECK(o.window >= 1, InvalidArgument, what, ": window ", o.window, " must be at least 1");
  }
  if (known.contains("n_features")) {
    const int64_t minimum = variant == KernelMixerVariant::kScatterbrain ? 2 : 1;
    // ⌊d ln d⌋ (both reference codes' default), at least one feature (pair).
    const auto fallback =
        std::max<int64_t>(minimum, static_cast<int64_t>(std::floor(static_cast<double>(head_dim) *
                                                                   std::log(static_cast<double>(head_dim)))));
    o.n_features = json_get_or<int64_t>(options, "n_features", fallback, what);
    LR_CHECK(o.n_features >= minimum, InvalidArgument, what, ": n_features ", o.n_features,
             " must be at least ", minimum,
             variant == KernelMixerVariant::kScatterbrain ? " (one cosh pair)" : "");
    const int64_t seed = json_get_or<int64_t>(options, "feature_seed", 0, what);
    LR_CHECK(seed >= 0, InvalidArgument, what, ": feature_seed ", seed, " must be non-negative");
    o.feature_seed = static_cast<uint64_t>(seed);
  }
  if (known.contains("support")) {
    const std::string support = json_get_or<std::string>(options, "support", "local", what);
    LR_CHECK(support == "local" || support == "lsh", InvalidArgument, what, ": support \"", support,
             "\" is not one of local, lsh");
    o.support = support == "lsh" ? SparseSupport::kLsh : SparseSupport::kLocal;
    o.n_hashes = json_get_or<int64_t>(options, "n_hashes", 1, what);
    LR_CHECK(o.n_hashes >= 1, InvalidArgument, what, ": n_hashes ", o.n_hashes, " must be at least 1");
    o.bucket_size = json_get_or<int64_t>(options, "bucket_size", 64, what);
    LR_CHECK(o.bucket_size >= 1, InvalidArgument, what, ": bucket_size ", o.bucket_size,
             " must be at least 1");
    LR_CHECK(!(o.causal && o.support == SparseSupport::kLsh), InvalidArgument, what,
             ": support \"lsh\" is bidirectional only (its chunk boundaries depend on later tokens); set "
             "\"causal\": false or use support \"local\"");
    if (o.support == SparseSupport::kLsh)
      for (const char* key : {"window"})
        LR_CHECK(!options.contains(key), InvalidArgument, what, ": option \"", key,
                 "\" applies to support \"local\"");
  }
  return o;
}

struct KernelAttentionMixer::Projected {
  at::Tensor q, k, v;  // [B, H, T, d], k and v repeated over the query heads of their group
};

KernelAttentionMixer::KernelAttentionMixer(const nn::MixerSpec& spec, KernelMixerVariant variant)
    : q_proj(spec.prefix + ".q_proj", spec.projection(spec.prefix + ".q_proj", spec.config.q_size(),
                                                      spec.config.hidden_size, spec.config.qkv_bias)),
      k_proj(spec.prefix + ".k_proj", spec.projection(spec.prefix + ".k_proj", spec.config.kv_size(),
                                                      spec.config.hidden_size, spec.config.qkv_bias)),
      v_proj(spec.prefix + ".v_proj", spec.projection(spec.prefix + ".v_proj", spec.config.kv_size(),
                                                      spec.config.hidden_size, spec.config.qkv_bias)),
      o_proj(spec.prefix + ".o_proj", spec.projection(spec.prefix + ".o_proj", spec.config.hidden_size,
                                                      spec.config.q_size(), spec.config.o_bias)),
      variant_(variant),
      options_(parse_kernel_mixer_options(variant, spec.options, spec.config.head_dim)),
      layer_(spec.layer),
      num_heads_(spec.config.num_attention_heads),
      num_kv_heads_(spec.config.num_key_value_heads),
      head_dim_(spec.config.head_dim),
      scale_(1.0 / std::sqrt(static_cast<double>(spec.config.head_dim))) {
  const uint64_t seed = stream_seed(options_.feature_seed, static_cast<uint64_t>(layer_));
  if (variant == KernelMixerVariant::kScatterbrain)
    features_.emplace(head_dim_, options_.n_features, FeatureKind::kCosh, StabiliseOn::kLogFeature, 0.0,
                      seed);
  else if (variant == KernelMixerVariant::kPerformer)
    features_.emplace(head_dim_, options_.n_features, FeatureKind::kPositive, StabiliseOn::kProjection,
                      kPerformerFeatureEps, seed);
}

std::string KernelAttentionMixer::name() const {
  return variant_name(variant_);
}

void KernelAttentionMixer::set_feature_projection(const at::Tensor& projection) {
  LR_CHECK(features_.has_value(), InvalidArgument, "mixer \"", name(), "\" has no random features");
  features_->set_projection(projection);
}

at::Tensor KernelAttentionMixer::lsh_rotations(int64_t T) const {
  const int64_t half = std::max<int64_t>(1, (T + options_.bucket_size - 1) / options_.bucket_size);
  at::Generator gen = at::detail::createCPUGenerator(
      stream_seed(stream_seed(options_.feature_seed, 1u << 20 | static_cast<uint64_t>(layer_)),
                  static_cast<uint64_t>(T)));
  return at::randn({options_.n_hashes, head_dim_, half}, gen, at::TensorOptions().dtype(at::kDouble));
}

bool KernelAttentionMixer::has_decode_state() const {
  return options_.causal && options_.support == SparseSupport::kLocal;
}

KernelAttentionMixer::Projected KernelAttentionMixer::project(const at::Tensor& x,
                                                              const nn::MixerContext& context) const {
  const int64_t B = x.size(0);
  const int64_t T = x.size(1);
  const int64_t D = head_dim_;
  const nn::LinearSlot* qkv[] = {&q_proj, &k_proj, &v_proj};
  const std::vector<at::Tensor> projected = nn::LinearSlot::forward_shared_input(qkv, x, context.routing);
  at::Tensor q = projected[0].reshape({B, T, num_heads_, D}).transpose(1, 2);
  at::Tensor k = projected[1].reshape({B, T, num_kv_heads_, D}).transpose(1, 2);
  at::Tensor v = projected[2].reshape({B, T, num_kv_heads_, D}).transpose(1, 2);
  if (options_.rope) {
    LR_CHECK(context.cos.defined() && context.sin.defined(), InvalidArgument, "mixer \"", name(),
             "\" with rope: true needs RoPE's cos/sin in its context");
    q = nn::apply_rotary(q, context.cos, context.sin);
    k = nn::apply_rotary(k, context.cos, context.sin);
  }
  const int64_t groups = num_heads_ / num_kv_heads_;
  if (groups > 1) {
    k = k.unsqueeze(2).expand({B, num_kv_heads_, groups, T, D}).reshape({B, num_heads_, T, D});
    v = v.unsqueeze(2).expand({B, num_kv_heads_, groups, T, D}).reshape({B, num_heads_, T, D});
  }
  return {q, k, v};
}

at::Tensor KernelAttentionMixer::forward(const at::Tensor& x, const nn::MixerContext& context) const {
  const int64_t B = x.size(0);
  const int64_t T = x.size(1);
  const Projected p = project(x, context);
  at::Tensor key_mask;
  if (context.valid.defined()) key_mask = context.valid.to(x.scalar_type()).view({B, 1, T, 1});
  const at::Tensor out = mix(p.q, p.k, p.v, key_mask);
  return o_proj.forward(out.transpose(1, 2).reshape({B, T, num_heads_ * head_dim_}), context.routing);
}

at::Tensor KernelAttentionMixer::mix(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                     const at::Tensor& key_mask) const {
  const int64_t T = q.size(2);
  const bool causal = options_.causal;

  // The key side first. Bidirectional, it is two small sums, and the query side is made chunk by
  // chunk of rows below (features, low-rank terms, exact terms, normalisation), so no [.., T, m]
  // query tensor exists whole; causal, the chunked prefix sums need every row's features at once.
  std::optional<KeyFeatures> kf;
  std::optional<KeySums> sums;
  std::optional<QueryFeatures> qf;
  LowRankTerms lr;
  if (features_) {
    kf = features_->keys(k, key_mask);
    if (causal) {
      qf = features_->queries(q);
      lr = features_->attend(*qf, *kf, v, /*causal=*/true);
    } else {
      sums = features_->key_sums(*kf, v);
    }
  }
  // Rows [start, start + rows) of the query features and low-rank terms.
  const auto query_side = [&](int64_t start, int64_t rows) -> std::pair<QueryFeatures, LowRankTerms> {
    if (!causal) {
      QueryFeatures f = features_->queries(q.narrow(-2, start, rows));
      LowRankTerms t = features_->attend(f, *sums);
      return {std::move(f), std::move(t)};
    }
    const auto slice = [&](const at::Tensor& x) { return x.defined() ? x.narrow(-2, start, rows) : x; };
    return {
        QueryFeatures{slice(qf->features), slice(qf->log_scale), slice(qf->row_sum)},
        LowRankTerms{slice(lr.numerator), slice(lr.normaliser), slice(lr.log_scale), slice(lr.query_sum)}};
  };

  if (variant_ == KernelMixerVariant::kPerformer) {
    // performer-pytorch: out = φ(Q)(φ(K)ᵀV) / φ(Q)(φ(K)ᵀ1), causal with eps on the key sums.
    std::vector<at::Tensor> out;
    for (int64_t start = 0; start < T; start += kLocalChunkRows) {
      const int64_t rows = std::min(kLocalChunkRows, T - start);
      const LowRankTerms t = query_side(start, rows).second;
      at::Tensor normaliser = t.normaliser;
      if (causal)
        normaliser = normaliser + kPerformerCausalEps *
                                      std::sqrt(static_cast<double>(features_->n_features())) * t.query_sum;
      // Only a row that sees no key at all (all padding) has a zero normaliser; it outputs 0.
      const at::Tensor some = normaliser.gt(0);
      out.push_back(t.numerator / at::where(some, normaliser, at::ones_like(normaliser)));
    }
    return out.size() == 1 ? out[0] : at::cat(out, -2);
  }

  // The exact terms on Ω.
  const bool with_dots = features_.has_value();
  if (options_.support == SparseSupport::kLocal) {
    const int64_t w = options_.window;
    const int64_t C = std::min(w, T);
    const int64_t nb = (T + C - 1) / C;
    // Query i sees keys i − w < j ≤ i (causal) or i − ⌊w/2⌋ ≤ j < i + ⌈w/2⌉: a block of C queries
    // needs C + w − 1 keys, so blocks of C + w (2C when C = w) starting w (causal) or ⌊w/2⌋ before.
    const KeyWindow kw{causal ? w : w / 2, C + w};
    const auto long_opts = at::TensorOptions().dtype(at::kLong).device(q.device());
    const at::Tensor qpos = at::arange(nb * C, long_opts).view({nb, C, 1});
    const at::Tensor kpos =
        (at::arange(nb, long_opts).view({nb, 1}) * C - kw.front + at::arange(kw.width, long_opts))
            .view({nb, 1, kw.width});
    const at::Tensor offset = kpos - qpos;  // j − i
    at::Tensor allowed = kpos.ge(0).logical_and(kpos.lt(T));
    if (causal)
      allowed = allowed.logical_and(offset.le(0)).logical_and(offset.gt(-w));
    else
      allowed = allowed.logical_and(offset.ge(-(w / 2))).logical_and(offset.lt((w + 1) / 2));
    allowed = allowed.view({1, 1, nb, C, kw.width});
    const int64_t group = std::max<int64_t>(1, kLocalChunkRows / C);
    std::vector<at::Tensor> out;
    for (int64_t first = 0; first < nb; first += group) {
      const int64_t count = std::min(group, nb - first);
      const int64_t start = first * C, rows = std::min(count * C, T - start);
      at::Tensor chunk_allowed = allowed.narrow(2, first, count);
      if (key_mask.defined())  // [B, 1, count, 1, width]
        chunk_allowed =
            chunk_allowed.logical_and(key_blocks(key_mask, C, first, count, kw).transpose(-1, -2).gt(0));
      std::optional<std::pair<QueryFeatures, LowRankTerms>> low_rank;
      if (with_dots) low_rank = query_side(start, rows);
      SparseTerms t =
          block_terms(query_blocks(q, C, first, count), key_blocks(k, C, first, count, kw),
                      key_blocks(v, C, first, count, kw), chunk_allowed, at::Tensor(),
                      with_dots ? query_blocks(low_rank->first.features, C, 0, count) : at::Tensor(),
                      with_dots ? key_blocks(kf->features, C, first, count, kw) : at::Tensor(), scale_);
      const auto rows_of = [&](const at::Tensor& blocked) { return unblock(blocked, rows); };
      t.lse = rows_of(t.lse);
      t.weighted = rows_of(t.weighted);
      if (with_dots) {
        t.dots_sum = rows_of(t.dots_sum);
        t.dots_v = rows_of(t.dots_v);
      }
      out.push_back(variant_ == KernelMixerVariant::kLocal ? t.weighted : normalise(t, low_rank->second));
    }
    return out.size() == 1 ? out[0] : at::cat(out, -2);
  }
  // The LSH support: Scatterbrain only, bidirectional (parse_kernel_mixer_options refuses causal).
  const int64_t B = q.size(0), H = q.size(1);
  const auto [lsh_qf, lsh_lr] = query_side(0, T);
  SparseTerms sparse;
  {
    const int64_t C = std::min(options_.bucket_size, T);
    const int64_t nb = (T + C - 1) / C;
    const int64_t R = options_.n_hashes;
    const at::Tensor rotations = lsh_rotations(T).to(q.options());
    const auto long_opts = at::TensorOptions().dtype(at::kLong).device(q.device());
    const at::Tensor position = at::arange(T, long_opts);
    // Sorted order per round: perm[r] [B, H, T] (positions in (bucket, position) order) and the
    // chunk each position falls in.
    std::vector<at::Tensor> q_perm, k_perm, q_chunk, k_chunk;
    for (int64_t r = 0; r < R; ++r) {
      for (const bool is_query : {true, false}) {
        const at::Tensor& x = is_query ? q : k;
        const at::Tensor projected = at::matmul(x.detach(), rotations[r]);
        const at::Tensor bucket = at::cat({projected, -projected}, -1).argmax(-1);  // [B, H, T]
        const at::Tensor perm = (bucket * T + position).argsort(/*stable=*/true, -1, /*descending=*/false);
        const at::Tensor chunk = perm.argsort(/*stable=*/true, -1, /*descending=*/false).div(C, "floor");
        (is_query ? q_perm : k_perm).push_back(perm);
        (is_query ? q_chunk : k_chunk).push_back(chunk);
      }
    }
    // Chunk ids with a sentinel for the padding row (index T): never equal across q and k.
    const at::Tensor q_chunks = pad_row(at::stack(q_chunk, -1)).index_fill(2, at::tensor({T}, long_opts), -1);
    const at::Tensor k_chunks = pad_row(at::stack(k_chunk, -1)).index_fill(2, at::tensor({T}, long_opts), -2);
    const at::Tensor qp = pad_row(q), kp = pad_row(k), vp = pad_row(v);
    const at::Tensor qfp = with_dots ? pad_row(lsh_qf.features) : at::Tensor();
    const at::Tensor kfp = with_dots ? pad_row(kf->features) : at::Tensor();
    at::Tensor key_ok = at::ones({B, 1, T}, q.options().dtype(at::kBool));
    if (key_mask.defined()) key_ok = key_mask.squeeze(-1).gt(0);
    key_ok = at::constant_pad_nd(key_ok.to(at::kLong), {0, 1}).gt(0).expand({B, H, T + 1}).unsqueeze(-1);
    std::vector<at::Tensor> lse, weighted;
    at::Tensor dots_sum, dots_v;
    for (int64_t r = 0; r < R; ++r) {
      const auto blocks = [&](const at::Tensor& perm) {
        return at::constant_pad_nd(perm, {0, nb * C - T}, static_cast<double>(T));
      };
      const at::Tensor qi = blocks(q_perm[r]), ki = blocks(k_perm[r]);  // [B, H, nb·C]
      const auto in_blocks = [&](const at::Tensor& rows) { return rows.view({B, H, nb, C, rows.size(-1)}); };
      const at::Tensor ok = in_blocks(gather_rows(key_ok.to(at::kLong), ki)).gt(0).squeeze(-1).unsqueeze(-2);
      const at::Tensor count = (in_blocks(gather_rows(q_chunks, qi)).unsqueeze(-2) ==
                                in_blocks(gather_rows(k_chunks, ki)).unsqueeze(-3))
                                   .sum(-1)
                                   .to(q.scalar_type());
      const at::Tensor allowed = ok.expand({B, H, nb, C, C}).logical_and(count.gt(0));
      SparseTerms t = block_terms(in_blocks(gather_rows(qp, qi)), in_blocks(gather_rows(kp, ki)),
                                  in_blocks(gather_rows(vp, ki)), allowed, R > 1 ? count : at::Tensor(),
                                  with_dots ? in_blocks(gather_rows(qfp, qi)) : at::Tensor(),
                                  with_dots ? in_blocks(gather_rows(kfp, ki)) : at::Tensor(), scale_);
      // Back to positions: position i sits at its rank in the sorted order.
      const at::Tensor rank = q_perm[r].argsort(/*stable=*/true, -1, /*descending=*/false);
      const auto unsort = [&](const at::Tensor& blocked) {
        return gather_rows(blocked.reshape({B, H, nb * C, blocked.size(-1)}), rank);
      };
      lse.push_back(unsort(t.lse));
      weighted.push_back(unsort(t.weighted));
      if (with_dots) {
        dots_sum = dots_sum.defined() ? dots_sum + unsort(t.dots_sum) : unsort(t.dots_sum);
        dots_v = dots_v.defined() ? dots_v + unsort(t.dots_v) : unsort(t.dots_v);
      }
    }
    const at::Tensor lse_rounds = at::stack(lse, 0);
    sparse.lse = safe_logsumexp(lse_rounds, 0);
    const at::Tensor seen = sparse.lse.isfinite();
    const at::Tensor weight = at::exp(lse_rounds - at::where(seen, sparse.lse, at::zeros_like(sparse.lse)));
    sparse.weighted = (weight * at::stack(weighted, 0)).sum(0);
    sparse.dots_sum = dots_sum;
    sparse.dots_v = dots_v;
  }
  return normalise(sparse, lsh_lr);
}

namespace {

struct KernelMixerState final : nn::MixerState {
  at::Tensor window_k, window_v;  // [B, H, ≤ w, d]
  std::optional<RunningFeatureSums> sums;
  int64_t batch = 0;
};

}  // namespace

std::unique_ptr<nn::MixerState> KernelAttentionMixer::new_state(int64_t batch) const {
  if (!has_decode_state()) return TokenMixer::new_state(batch);
  auto state = std::make_unique<KernelMixerState>();
  state->batch = batch;  // the sums take the dtype and device of the first step's input
  return state;
}

at::Tensor KernelAttentionMixer::step(const at::Tensor& x, nn::MixerState& state,
                                      const nn::MixerContext& context) const {
  if (!has_decode_state()) return TokenMixer::step(x, state, context);
  auto& s = dynamic_cast<KernelMixerState&>(state);
  LR_CHECK(x.dim() == 3 && x.size(1) == 1, InvalidArgument, "mixer \"", name(),
           "\" step takes one position, got ", x.sizes());
  const int64_t B = x.size(0);
  LR_CHECK(B == s.batch, InvalidArgument, "mixer \"", name(), "\" step: ", B, " rows for a state of ",
           s.batch);
  const Projected p = project(x, context);
  if (features_ && !s.sums) s.sums.emplace(B, num_heads_, features_->n_features(), head_dim_, p.q.options());
  at::Tensor out;
  if (variant_ == KernelMixerVariant::kPerformer) {
    s.sums->add(*features_, p.k, p.v);
    const LowRankTerms lr = s.sums->attend(*features_, features_->queries(p.q));
    const at::Tensor normaliser =
        lr.normaliser +
        kPerformerCausalEps * std::sqrt(static_cast<double>(features_->n_features())) * lr.query_sum;
    out = lr.numerator / normaliser;
  } else {
    s.window_k = s.window_k.defined() ? at::cat({s.window_k, p.k}, 2) : p.k;
    s.window_v = s.window_v.defined() ? at::cat({s.window_v, p.v}, 2) : p.v;
    if (s.window_k.size(2) > options_.window) {
      // The oldest key leaves the window; Scatterbrain keeps it in the low-rank sums.
      if (s.sums) s.sums->add(*features_, s.window_k.narrow(2, 0, 1), s.window_v.narrow(2, 0, 1));
      s.window_k = s.window_k.narrow(2, 1, options_.window).contiguous();
      s.window_v = s.window_v.narrow(2, 1, options_.window).contiguous();
    }
    const at::Tensor scores = at::matmul(p.q, s.window_k.transpose(-1, -2)) * scale_;
    const at::Tensor lse = at::logsumexp(scores, {-1}, /*keepdim=*/true);
    const at::Tensor weighted = at::matmul(at::exp(scores - lse), s.window_v);
    if (!s.sums || s.sums->empty()) {
      out = weighted;  // nothing off the window yet
    } else {
      const LowRankTerms lr = s.sums->attend(*features_, features_->queries(p.q));
      const at::Tensor log_z = at::logaddexp(lse, at::log(lr.normaliser.clamp_min(1e-24)) + lr.log_scale);
      out = at::exp(lse - log_z) * weighted + at::exp(lr.log_scale - log_z) * lr.numerator;
    }
  }
  return o_proj.forward(out.transpose(1, 2).reshape({B, 1, num_heads_ * head_dim_}), context.routing);
}

void register_kernel_mixer(nn::MixerRegistry& registry, KernelMixerVariant variant, MethodInfo info) {
  registry.add(std::move(info), [variant](const nn::MixerSpec& spec) -> std::unique_ptr<nn::TokenMixer> {
    return std::make_unique<KernelAttentionMixer>(spec, variant);
  });
}

void register_scatterbrain(nn::MixerRegistry& registry) {
  register_kernel_mixer(
      registry, KernelMixerVariant::kScatterbrain,
      {"scatterbrain",
       "sparse + low-rank attention: Performer features plus the exact residual on a local window or LSH "
       "buckets",
       "Chen et al., 2021, arXiv:2110.15343",
       {{"causal", "true (default): prefix sums and a trailing window; false: bidirectional"},
        {"window", "local support: keys per query (default 64)"},
        {"support", "local (default) | lsh (bidirectional only)"},
        {"n_hashes", "lsh: hashing rounds (default 1)"},
        {"bucket_size", "lsh: chunk length (default 64)"},
        {"n_features", "random features m (default floor(d ln d), at least 2)"},
        {"feature_seed", "seed of the random features (default 0)"},
        {"rope", "rotate q and k by RoPE first (default false)"}}});
}

}  // namespace lowrank::mix
