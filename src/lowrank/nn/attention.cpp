// Grouped-query causal attention with RoPE and a KV cache; see attention.h.
#include "lowrank/nn/attention.h"

#include <cmath>

#include "lowrank/core/error.h"
#include "lowrank/nn/attending_kv_store.h"
#include "lowrank/nn/rope.h"

namespace lowrank::nn {

AttentionMask make_attention_mask(const at::Tensor& key_valid, bool padded, int64_t past,
                                  int64_t new_positions, int64_t window, at::Device device) {
  const int64_t T = new_positions;
  const int64_t S = past + T;
  // The farthest key a query can reach is S - 1 positions back; a window of W only bites when
  // that distance reaches W.
  const bool windowed = window > 0 && S > window;
  if (!padded && !windowed) {
    if (T == 1) return {};  // one query at the end: it sees every key
    if (past == 0) return {at::Tensor(), true};
  }
  const auto long_opts = at::TensorOptions().dtype(at::kLong).device(device);
  const at::Tensor q_idx = at::arange(past, S, long_opts).unsqueeze(1);  // [T, 1]
  const at::Tensor k_idx = at::arange(S, long_opts).unsqueeze(0);        // [1, S]
  at::Tensor allowed = k_idx.le(q_idx);                                  // [T, S]
  if (windowed) allowed = allowed.logical_and(q_idx.sub(k_idx).lt(window));
  allowed = allowed.view({1, 1, T, S});
  if (padded) {
    LR_CHECK(key_valid.defined() && key_valid.size(1) == S, InternalError,
             "attention mask: key validity of shape ", key_valid.sizes(), " for ", S, " keys");
    allowed = allowed.logical_and(key_valid.to(at::kBool).view({key_valid.size(0), 1, 1, S}));
    // A query that sees nothing (padding before the row's first token) sees itself instead.
    const at::Tensor blind = allowed.any(-1, /*keepdim=*/true).logical_not();
    allowed = allowed.logical_or(blind.logical_and(k_idx.eq(q_idx).view({1, 1, T, S})));
  }
  return {allowed, false};
}

Attention::Attention(const ModelConfig& config, int64_t layer, const std::string& prefix,
                     std::shared_ptr<const BaseOperator> q, std::shared_ptr<const BaseOperator> k,
                     std::shared_ptr<const BaseOperator> v, std::shared_ptr<const BaseOperator> o,
                     bool causal)
    : q_proj(prefix + ".q_proj", std::move(q)),
      k_proj(prefix + ".k_proj", std::move(k)),
      v_proj(prefix + ".v_proj", std::move(v)),
      o_proj(prefix + ".o_proj", std::move(o)),
      layer_(layer),
      num_heads_(config.num_attention_heads),
      num_kv_heads_(config.num_key_value_heads),
      head_dim_(config.head_dim),
      scale_(1.0 / std::sqrt(static_cast<double>(config.head_dim))),
      causal_(causal) {}

AttentionMask make_padding_mask(const at::Tensor& valid) {
  if (!valid.defined() || valid.all().item<bool>()) return {};
  const at::Tensor real = valid.to(at::kBool);  // [B, T]
  // A row with no real token at all sees every position instead (finite output, never read).
  const at::Tensor empty = real.any(-1, /*keepdim=*/true).logical_not();
  return {real.logical_or(empty).view({real.size(0), 1, 1, real.size(1)}), false};
}

at::Tensor Attention::forward(const at::Tensor& x, const MixerContext& context) const {
  LR_CHECK(causal_ || context.cache == nullptr, Unsupported,
           "bidirectional attention (option causal: false) cannot decode with a KV cache");
  LR_CHECK(!causal_ || context.mask != nullptr, InternalError, "attention forward without an attention mask");
  const at::Tensor& cos = context.cos;
  const at::Tensor& sin = context.sin;
  // Bidirectional: the padding alone decides which keys a query sees (the trunk's mask is causal).
  const AttentionMask padding_mask = causal_ ? AttentionMask{} : make_padding_mask(context.valid);
  const AttentionMask& mask = causal_ ? *context.mask : padding_mask;
  KVStore* cache = context.cache;
  const AdapterRouting* routing = context.routing;
  const int64_t B = x.size(0);
  const int64_t T = x.size(1);
  const int64_t D = head_dim_;
  const int64_t groups = num_heads_ / num_kv_heads_;
  // (B, T, n·D) -> (B, n, T, D)
  const LinearSlot* qkv[] = {&q_proj, &k_proj, &v_proj};
  const std::vector<at::Tensor> projected = LinearSlot::forward_shared_input(qkv, x, routing);
  at::Tensor q = projected[0].reshape({B, T, num_heads_, D}).transpose(1, 2);
  at::Tensor k = projected[1].reshape({B, T, num_kv_heads_, D}).transpose(1, 2);
  at::Tensor v = projected[2].reshape({B, T, num_kv_heads_, D}).transpose(1, 2);
  q = apply_rotary(q, cos, sin);
  k = apply_rotary(k, cos, sin);
  if (kv_compression_) {
    // MatryoshkaKV: project into each KV head's basis, cache and attend there, lift the output back.
    const KVCompression& c = *kv_compression_;
    const int64_t rk = c.key_basis.size(2);
    const int64_t rv = c.value_basis.size(2);
    const at::Tensor key_basis = c.key_basis.unsqueeze(0);  // [1, n_kv, D, r_k]
    at::Tensor ck = at::matmul(k - c.key_mean.view({1, num_kv_heads_, 1, D}), key_basis);
    at::Tensor cv = at::matmul(v - c.value_mean.view({1, num_kv_heads_, 1, D}), c.value_basis.unsqueeze(0));
    // Query heads h·groups … h·groups + groups − 1 read KV head h: one product per KV head.
    const at::Tensor cq =
        at::matmul(q.reshape({B, num_kv_heads_, groups * T, D}), key_basis).reshape({B, num_heads_, T, rk});
    // co [B, n, T, r_v] -> U_V co + μ_V [B, n, T, D] -> o_proj.
    auto lift = [&](const at::Tensor& co) {
      const at::Tensor out = at::matmul(co.reshape({B, num_kv_heads_, groups * T, rv}),
                                        c.value_basis.transpose(1, 2).unsqueeze(0))
                                 .add(c.value_mean.view({1, num_kv_heads_, 1, D}))
                                 .reshape({B, num_heads_, T, D});
      return o_proj.forward(out.transpose(1, 2).reshape({B, T, num_heads_ * D}), routing);
    };
    // The serving engine's pages hold the compressed coordinates too; a decode step reads them in
    // place (the pool's value width is r_v), as in the uncompressed path below.
    if (T == 1 && cache)
      if (auto* attending = dynamic_cast<AttendingKVStore*>(cache))
        if (std::optional<at::Tensor> co = attending->attend(layer_, cq, ck, cv, scale_)) return lift(*co);
    if (cache) std::tie(ck, cv) = cache->update(layer_, ck, cv);
    return lift(attend(cq, ck, cv, mask));
  }
  // A decode step over a store that attends in place (the serving engine's pages) skips the
  // gathered [B, n_kv, S, D] and the mask: the store knows each row's keys and window.
  if (T == 1 && cache)
    if (auto* attending = dynamic_cast<AttendingKVStore*>(cache))
      if (std::optional<at::Tensor> out = attending->attend(layer_, q, k, v, scale_))
        return o_proj.forward(out->transpose(1, 2).reshape({B, T, num_heads_ * D}), routing);
  if (cache) std::tie(k, v) = cache->update(layer_, k, v);
  const at::Tensor out = attend(q, k, v, mask);
  // (B, n, T, D) -> (B, T, n·D)
  return o_proj.forward(out.transpose(1, 2).reshape({B, T, num_heads_ * D}), routing);
}

at::Tensor Attention::attend(const at::Tensor& q, at::Tensor k, at::Tensor v,
                             const AttentionMask& mask) const {
  const int64_t B = q.size(0);
  const int64_t T = q.size(2);
  const int64_t S = k.size(2);
  const int64_t E = k.size(3);
  const int64_t Ev = v.size(3);
  const int64_t groups = num_heads_ / num_kv_heads_;
  std::optional<at::Tensor> allowed;
  if (mask.allowed.defined()) allowed = mask.allowed;
  if (T == 1 && groups > 1) {
    // Decode: the `groups` query heads that share a KV head become the query rows of one
    // attention over that head's keys, so the cache is read in place (no repeat of K, V). The
    // mask [B, 1, 1, S] depends on the key only and broadcasts over the rows.
    const at::Tensor qg = q.reshape({B, num_kv_heads_, groups, E});
    return at::scaled_dot_product_attention(qg, k, v, allowed, 0.0, false, scale_)
        .reshape({B, num_heads_, 1, Ev});
  }
  if (groups > 1) {
    // transformers' repeat_kv: (B, n_kv, S, D) -> (B, n_kv·groups, S, D), head h uses kv head h / groups.
    k = k.unsqueeze(2).expand({B, num_kv_heads_, groups, S, E}).reshape({B, num_heads_, S, E});
    v = v.unsqueeze(2).expand({B, num_kv_heads_, groups, S, Ev}).reshape({B, num_heads_, S, Ev});
  }
  return at::scaled_dot_product_attention(q, k, v, allowed, 0.0, mask.is_causal, scale_);
}

std::vector<std::pair<std::string, std::string>> attention_options() {
  return {{"causal",
           "true (default): each position attends to itself and the positions before it; false: to every "
           "real (non-padding) position, bidirectional, for classification models only"}};
}

Json with_bidirectional_attention(Json keys) {
  const Json& layer_mixers = keys.at("layer_mixers");
  bool uses_attention = layer_mixers == "attention";
  if (layer_mixers.is_array())
    for (const Json& name : layer_mixers) uses_attention = uses_attention || name == "attention";
  Json& options = keys["mixer_config"]["attention"];
  if (uses_attention && !options.contains("causal")) options["causal"] = false;
  if (options.is_null()) keys["mixer_config"].erase("attention");
  return keys;
}

namespace {

// Attention's options: `causal` only, a bool; false only in a model without a language-model head.
bool read_causal_option(const MixerSpec& spec) {
  const Json& options = spec.options;
  const auto known = attention_options();
  LR_CHECK(options.is_object(), InvalidArgument, "mixer attention: options must be a JSON object, got ",
           options.dump());
  std::string names;
  for (const auto& [k, _] : known) names += (names.empty() ? "" : ", ") + k;
  for (const auto& [key, _] : options.items())
    LR_CHECK(key == "causal", InvalidArgument, "mixer attention: unknown option \"", key,
             "\" (known: ", names, ")");
  if (!options.contains("causal")) return true;
  const Json& value = options.at("causal");
  LR_CHECK(value.is_boolean(), InvalidArgument,
           "mixer attention: option \"causal\" must be true or false, got ", value.dump());
  const bool causal = value.get<bool>();
  LR_CHECK(causal || !spec.config.has_lm_head(), InvalidArgument,
           "mixer attention: option \"causal\": false makes attention bidirectional, which ",
           architecture_name(spec.config.architecture),
           " cannot use (a language model must not see later tokens); use it in a classification model");
  return causal;
}

}  // namespace

void register_attention_mixer(MixerRegistry& registry) {
  registry.add(
      {"attention",
       "softmax attention of the Llama family: grouped-query, RoPE, optional sliding window, KV cache; "
       "bidirectional in classifiers with causal: false",
       "Vaswani et al., 2017, arXiv:1706.03762; GQA: Ainslie et al., 2023, arXiv:2305.13245",
       attention_options()},
      [](const MixerSpec& spec) -> std::unique_ptr<TokenMixer> {
        const bool causal = read_causal_option(spec);
        const ModelConfig& c = spec.config;
        const std::string& a = spec.prefix;
        const int64_t H = c.hidden_size;
        // Built in this order (q, k, v, o): a fresh model draws its weights so.
        auto q = spec.projection(a + ".q_proj", c.q_size(), H, c.qkv_bias);
        auto k = spec.projection(a + ".k_proj", c.kv_size(), H, c.qkv_bias);
        auto v = spec.projection(a + ".v_proj", c.kv_size(), H, c.qkv_bias);
        auto o = spec.projection(a + ".o_proj", H, c.q_size(), c.o_bias);
        return std::make_unique<Attention>(c, spec.layer, a, q, k, v, o, causal);
      });
}

}  // namespace lowrank::nn
