// The fused single-token decode step; see decode_step.h for the equations, the conditions and why.
#include "lowrank/nn/decode_step.h"

#include <ATen/Parallel.h>
#include <ATen/core/grad_mode.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <mutex>
#include <optional>
#include <vector>

#include "lowrank/core/error.h"
#include "lowrank/core/parallel_region.h"
#include "lowrank/nn/decoder_layer.h"
#include "lowrank/nn/model.h"
#include "lowrank/nn/routed_adapter_source.h"
#include "lowrank/ops/gemv.h"

namespace lowrank::nn {
namespace {

using ops::ElementType;

ElementType element_type(at::ScalarType t) {
  return t == at::kFloat ? ElementType::kF32 : ElementType::kBF16;
}

bool row_dtype(at::ScalarType t) {
  return t == at::kFloat || t == at::kBFloat16;
}

// One slot as the step runs it: the base operator's row product plus its LoRA-form adapters.
struct Projection {
  const BaseOperator* base = nullptr;
  int64_t in = 0, out = 0;
  struct Delta {
    at::Tensor a, b;  // [r, in], [out, r], contiguous, float32 or bfloat16; kept alive for the step
    ElementType type;
    int64_t rank;
    float scale;
  };
  std::vector<Delta> deltas;
  int64_t rank_total = 0;  // scratch floats a member needs for the A·x of every delta
};

// The adapters LinearSlot::forward(x, routing) would apply to the step's one row, as projections;
// or the reason they cannot run here.
std::string plan_projection(const LinearSlot& slot, const AdapterRouting* routing, Projection& p) {
  p.base = &slot.base();
  p.in = slot.in_features();
  p.out = slot.out_features();
  if (!p.base->has_row_product())
    return str("slot ", slot.name(), ": its ", p.base->kind(), " operator has no row product");
  if (!slot.adapters_enabled() || !slot.has_adapters()) return {};
  std::vector<std::pair<std::string, const Adapter*>> active;
  if (routing == nullptr) {
    for (const std::string& n : slot.adapter_names()) active.emplace_back(n, slot.adapter(n));
  } else {
    const int64_t pick = routing->row_adapter.empty() ? -1 : routing->row_adapter.front();
    if (pick >= 0 && pick < static_cast<int64_t>(routing->adapters.size()))
      if (const Adapter* a = slot.adapter(routing->adapters[static_cast<size_t>(pick)]))
        active.emplace_back(routing->adapters[static_cast<size_t>(pick)], a);
  }
  for (const auto& [name, adapter] : active) {
    std::optional<LowRankDelta> d = adapter->low_rank_delta();
    if (!d)
      return str("slot ", slot.name(), ": adapter \"", name, "\" (", adapter->kind(),
                 ") is not of the LoRA form");
    const at::ScalarType t = d->a.scalar_type();
    if (!row_dtype(t) || d->b.scalar_type() != t || !d->a.is_contiguous() || !d->b.is_contiguous() ||
        !d->a.device().is_cpu() || !d->b.device().is_cpu())
      return ::lowrank::str("slot ", slot.name(), ": adapter \"", name,
                            "\" has factors that are not contiguous float32/bfloat16 CPU tensors");
    const int64_t r = d->a.size(0);
    p.deltas.push_back({d->a, d->b, element_type(t), r, static_cast<float>(d->scale)});
    p.rank_total += r;
  }
  return {};
}

// Rows [begin, end) of a product of `rows` outputs for member m of n: equal shares, multiples of 4
// (the GEMV's row block) except the last.
std::pair<int64_t, int64_t> share(int64_t rows, int m, int n) {
  const int64_t per = ((rows + n - 1) / n + 3) / 4 * 4;
  const int64_t begin = std::min(rows, per * m);
  return {begin, std::min(rows, begin + per)};
}

// Items [begin, end) of `count` (attention heads) for member m of n.
std::pair<int64_t, int64_t> share_items(int64_t count, int m, int n) {
  return {count * m / n, count * (m + 1) / n};
}

// y[begin, end) = p(x)[begin, end): base rows, then each adapter's s·B(Ax) on the same rows. The
// member computes all of Ax itself (r·in, small) so that no barrier is needed; `scratch` holds
// rank_total + (end - begin) floats.
void project(const Projection& p, const float* x, int64_t begin, int64_t end, float* y, float* scratch) {
  if (begin >= end) return;
  p.base->row_product(x, begin, end, y);
  float* ax = scratch;
  float* by = scratch + p.rank_total;
  for (const Projection::Delta& d : p.deltas) {
    ops::gemv_rows(d.type, d.a.const_data_ptr(), p.in, x, nullptr, 0, d.rank, ax);
    const int64_t elem = d.type == ElementType::kF32 ? 4 : 2;
    const char* b_rows = static_cast<const char*>(d.b.const_data_ptr()) + begin * d.rank * elem;
    ops::gemv_rows(d.type, b_rows, d.rank, ax, nullptr, 0, end - begin, by);
    for (int64_t o = begin; o < end; ++o) y[o] += d.scale * by[o - begin];
    ax += d.rank;
  }
}

// out = RMSNorm(h) ⊙ w in float32 (w float32 or bfloat16).
void rms_norm_row(const float* h, const at::Tensor& w, double eps, int64_t n, float* out) {
  double ss = 0;
  for (int64_t i = 0; i < n; ++i) ss += static_cast<double>(h[i]) * h[i];
  const float inv = static_cast<float>(1.0 / std::sqrt(ss / static_cast<double>(n) + eps));
  if (w.scalar_type() == at::kFloat) {
    const float* wp = w.const_data_ptr<float>();
    for (int64_t i = 0; i < n; ++i) out[i] = wp[i] * (h[i] * inv);
  } else {
    const auto* wp = static_cast<const uint16_t*>(w.const_data_ptr());
    for (int64_t i = 0; i < n; ++i) out[i] = ops::bf16_to_float(wp[i]) * (h[i] * inv);
  }
}

// "Rotate half" RoPE of one head in place: x' = x cos + rotate_half(x) sin.
void rotate_half(float* x, const float* cos, const float* sin, int64_t d) {
  const int64_t half = d / 2;
  for (int64_t i = 0; i < half; ++i) {
    const float a = x[i];
    const float b = x[i + half];
    x[i] = a * cos[i] - b * sin[i];
    x[i + half] = b * cos[i + half] + a * sin[i + half];
  }
}

void store_row(const float* src, ElementType type, void* dst, int64_t n) {
  if (type == ElementType::kF32) {
    std::copy(src, src + n, static_cast<float*>(dst));
  } else {
    auto* d = static_cast<uint16_t*>(dst);
    for (int64_t i = 0; i < n; ++i) d[i] = ops::float_to_bf16(src[i]);
  }
}

float activation(float x, int kind) {
  switch (kind) {
    case 0:  // silu
      return x / (1.0f + std::exp(-x));
    case 1:  // gelu (erf)
      return 0.5f * x * (1.0f + std::erf(x * 0.70710678118654752f));
    default:  // gelu_pytorch_tanh
      return 0.5f * x * (1.0f + std::tanh(0.79788456080286536f * (x + 0.044715f * x * x * x)));
  }
}

}  // namespace

std::string Model::fused_decode_obstacle(const AdapterRouting* routing) const {
  if (!device_.is_cpu()) return str("the model is on ", device_.str(), ", the fused step runs on the CPU");
  if (!row_dtype(dtype_))
    return str("the model computes in ", c10::toString(dtype_), " (float32 or bfloat16 only)");
  if (config_.head_dim % 2 != 0) return str("head_dim ", config_.head_dim, " is odd");
  for (size_t l = 0; l < layers_.size(); ++l)
    if (layers_[l]->attention == nullptr)
      return str("layer ", l, "'s mixer is \"", layers_[l]->mixer->name(),
                 "\", the fused step runs attention only");
  for (size_t l = 0; l < layers_.size(); ++l)
    if (layers_[l]->attention->kv_compression())
      return str("layer ", l, " stores a compressed KV cache (matryoshka_kv)");
  for (const LinearSlot* s : slots()) {
    Projection p;
    if (std::string why = plan_projection(*s, routing, p); !why.empty()) return why;
  }
  return {};
}

std::optional<at::Tensor> Model::decode_step(const at::Tensor& input_ids,
                                             const ForwardOptions& options) const {
  const bool required = options.fused_decode == FusedDecode::kRequire;
  auto decline = [&](const std::string& why) -> std::optional<at::Tensor> {
    LR_CHECK(!required, InvalidArgument, "the fused decode step does not apply: ", why);
    return std::nullopt;
  };
  auto* cache = dynamic_cast<KVCache*>(options.cache);
  if (cache == nullptr) return decline("it needs a contiguous KV cache (nn::KVCache)");
  if (input_ids.dim() != 2 || input_ids.size(0) != 1 || input_ids.size(1) != 1)
    return decline(::lowrank::str("it takes one token of one sequence, got input_ids ", input_ids.sizes()));
  if (input_ids.scalar_type() != at::kLong || !input_ids.device().is_cpu())
    return decline("input_ids must be int64 on the CPU");
  if (options.attention_mask.defined() || options.position_ids.defined())
    return decline("an explicit attention mask or position ids");
  if (cache->has_padding() || cache->batch() != 1 || cache->num_layers() != config_.num_hidden_layers)
    return decline("the cache has padding or belongs to another batch or model");
  if (at::GradMode::is_enabled()) return decline("gradients are being recorded");
  if (options.routing != nullptr && options.routing->row_adapter.size() != 1)
    return decline("the routing must have exactly one row");
  if (options.routing != nullptr && RoutedAdapterScope::current() != nullptr)
    return decline("the routed adapters live outside the slots (a RoutedAdapterScope is open)");
  const int64_t id = input_ids.const_data_ptr<int64_t>()[0];
  LR_CHECK(id >= 0 && id < config_.vocab_size, InvalidArgument, "input_ids hold token ", id,
           ", outside the vocabulary [0, ", config_.vocab_size, ")");

  // The plan: every projection of every layer, in the order the layers run them.
  if (!device_.is_cpu() || !row_dtype(dtype_) || config_.head_dim % 2 != 0 || !config_.all_attention())
    return decline(fused_decode_obstacle(options.routing));
  for (const auto& layer : layers_)
    if (layer->attention->kv_compression()) return decline(fused_decode_obstacle(options.routing));
  const size_t L = layers_.size();
  std::vector<Projection> proj(L * 7 + 1);
  int64_t scratch_floats = 0;
  for (size_t l = 0; l < L; ++l) {
    const DecoderLayer& layer = *layers_[l];
    const Attention& attention = *layer.attention;  // every layer's mixer is attention (checked above)
    const LinearSlot* slots_of_layer[] = {&attention.q_proj, &attention.k_proj, &attention.v_proj,
                                          &attention.o_proj, &layer.gate_proj,  &layer.up_proj,
                                          &layer.down_proj};
    for (size_t j = 0; j < 7; ++j) {
      Projection& p = proj[l * 7 + j];
      if (std::string why = plan_projection(*slots_of_layer[j], options.routing, p); !why.empty())
        return decline(why);
      scratch_floats = std::max(scratch_floats, p.rank_total + p.out);
    }
  }
  Projection& head = proj.back();
  if (std::string why = plan_projection(*lm_head_, options.routing, head); !why.empty()) return decline(why);
  scratch_floats = std::max(scratch_floats, head.rank_total + head.out);

  const int64_t H = config_.hidden_size;
  const int64_t D = config_.head_dim;
  const int64_t n_heads = config_.num_attention_heads;
  const int64_t n_kv = config_.num_key_value_heads;
  const int64_t groups = n_heads / n_kv;
  const int64_t I = config_.intermediate_size;
  const int64_t V = config_.vocab_size;
  const double eps = config_.rms_norm_eps;
  const int act = config_.hidden_act == "silu" || config_.hidden_act == "swish" ? 0
                  : config_.hidden_act == "gelu"                                ? 1
                                                                                : 2;
  const ElementType cache_type = element_type(dtype_);
  const int64_t cache_elem = dtype_ == at::kFloat ? 4 : 2;

  // The position: the cache holds no padding, so it is the number of tokens before this one.
  const int64_t pos = cache->append_position();
  const int64_t S = pos + 1;
  const int64_t capacity = cache->capacity();

  // cos/sin of the position (transformers: freqs = p · inv_freq in float32, emb = [freqs, freqs]).
  std::vector<float> cos(static_cast<size_t>(D)), sin(static_cast<size_t>(D));
  if (config_.rope.type == "dynamic") {
    const auto [c, s] = rope_.cos_sin(at::full({1, 1}, pos, at::kLong), at::kFloat);
    std::copy_n(c.contiguous().const_data_ptr<float>(), D, cos.data());
    std::copy_n(s.contiguous().const_data_ptr<float>(), D, sin.data());
  } else {
    const at::Tensor inv_freq = rope_.inv_freq().to(at::kFloat).contiguous();
    const float* f = inv_freq.const_data_ptr<float>();
    const auto scaling = static_cast<float>(rope_.attention_scaling());
    for (int64_t i = 0; i < D / 2; ++i) {
      const float angle = static_cast<float>(pos) * f[i];
      cos[i] = cos[i + D / 2] = std::cos(angle) * scaling;
      sin[i] = sin[i + D / 2] = std::sin(angle) * scaling;
    }
  }

  // Shared buffers, then each member's own: its normed input, attention scores and product scratch.
  // Kept per calling thread between steps (no allocation, no zeroing per token); members reach it
  // through `h`, never by its name (a thread_local names each thread's own).
  const int64_t shared_floats = H + n_heads * D + 2 * n_kv * D + n_heads * D + H + 2 * I;
  const int64_t member_floats = H + capacity + scratch_floats;
  const int64_t max_members = std::max(1, at::get_num_threads());
  static thread_local std::vector<float> buffer;
  if (buffer.size() < static_cast<size_t>(shared_floats + max_members * member_floats))
    buffer.resize(static_cast<size_t>(shared_floats + max_members * member_floats));
  float* h = buffer.data();
  float* q = h + H;
  float* k = q + n_heads * D;
  float* v = k + n_kv * D;
  float* attn = v + n_kv * D;
  float* o = attn + n_heads * D;
  float* gate = o + H;
  float* up = gate + I;
  at::Tensor logits = at::empty({1, 1, V}, at::kFloat);
  float* out_logits = logits.mutable_data_ptr<float>();

  // h = E[id]
  const at::Tensor embedding_row = embed_tokens_[id].contiguous();
  if (dtype_ == at::kFloat) {
    std::copy_n(embedding_row.const_data_ptr<float>(), H, h);
  } else {
    const auto* e = static_cast<const uint16_t*>(embedding_row.const_data_ptr());
    for (int64_t i = 0; i < H; ++i) h[i] = ops::bf16_to_float(e[i]);
  }

  const float scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(D)));
  parallel_region([&](int m, int n, SpinBarrier& sync) {
    auto barrier = [&sync] { sync.arrive_and_wait(); };
    float* own = h + shared_floats + m * member_floats;
    float* x = own;
    float* scores = own + H;
    float* scratch = scores + capacity;
    auto run = [&](const Projection& p, const float* in, float* y) {
      const auto [b, e] = share(p.out, m, n);
      project(p, in, b, e, y, scratch);
      return std::pair{b, e};
    };
    for (size_t l = 0; l < L; ++l) {
      const DecoderLayer& layer = *layers_[l];
      const Projection* p = &proj[l * 7];
      // Attention: x = RMSNorm(h); q, k, v.
      rms_norm_row(h, layer.input_layernorm, eps, H, x);
      run(p[0], x, q);
      run(p[1], x, k);
      run(p[2], x, v);
      barrier();
      // Per KV head: rotate and store k, v at `pos`; rotate and attend with its query heads.
      char* keys = static_cast<char*>(cache->keys(static_cast<int64_t>(l)).data_ptr());
      char* values = static_cast<char*>(cache->values(static_cast<int64_t>(l)).data_ptr());
      const int64_t first = layer.window > 0 ? std::max<int64_t>(0, S - layer.window) : 0;
      const auto [g0, g1] = share_items(n_kv, m, n);
      for (int64_t g = g0; g < g1; ++g) {
        char* kg = keys + g * capacity * D * cache_elem;
        char* vg = values + g * capacity * D * cache_elem;
        rotate_half(k + g * D, cos.data(), sin.data(), D);
        store_row(k + g * D, cache_type, kg + pos * D * cache_elem, D);
        store_row(v + g * D, cache_type, vg + pos * D * cache_elem, D);
        for (int64_t j = 0; j < groups; ++j) {
          const int64_t head = g * groups + j;
          float* qh = q + head * D;
          rotate_half(qh, cos.data(), sin.data(), D);
          float top = -std::numeric_limits<float>::infinity();
          for (int64_t s = first; s < S; ++s) {
            scores[s] = ops::dot(qh, cache_type, kg + s * D * cache_elem, D) * scale;
            top = std::max(top, scores[s]);
          }
          float total = 0;
          for (int64_t s = first; s < S; ++s) total += scores[s] = std::exp(scores[s] - top);
          float* ah = attn + head * D;
          std::fill(ah, ah + D, 0.0f);
          for (int64_t s = first; s < S; ++s)
            ops::axpy(scores[s] / total, cache_type, vg + s * D * cache_elem, ah, D);
        }
      }
      barrier();
      // h += W_o a
      {
        const auto [b, e] = run(p[3], attn, o);
        for (int64_t i = b; i < e; ++i) h[i] += o[i];
      }
      barrier();
      // MLP: x = RMSNorm(h); gate, up on the same rows, act(gate) ⊙ up in place.
      rms_norm_row(h, layer.post_attention_layernorm, eps, H, x);
      {
        const auto [b, e] = run(p[4], x, gate);
        run(p[5], x, up);
        for (int64_t i = b; i < e; ++i) gate[i] = activation(gate[i], act) * up[i];
      }
      barrier();
      {
        const auto [b, e] = run(p[6], gate, o);
        for (int64_t i = b; i < e; ++i) h[i] += o[i];
      }
      barrier();
    }
    rms_norm_row(h, norm_, eps, H, x);
    run(head, x, out_logits);
  });
  return dtype_ == at::kFloat ? logits : logits.to(dtype_);
}

}  // namespace lowrank::nn
