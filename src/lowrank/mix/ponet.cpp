// PoNet's pooling token mixer; see ponet.h.
#include "lowrank/mix/ponet.h"

#include <cmath>
#include <limits>

#include "lowrank/core/error.h"
#include "lowrank/nn/config.h"

namespace lowrank::mix {

namespace {

constexpr double kMaskedScore = -10000.0;  // the reference code's fill for padding

int64_t read_segment_num(const Json& options) {
  LR_CHECK(options.is_object(), InvalidArgument, "ponet: options must be an object, got ", options.dump());
  for (const auto& [key, value] : options.items())
    LR_CHECK(key == "segment_num", InvalidArgument, "ponet: unknown option \"", key,
             "\" (known: segment_num)");
  const Json value = options.value("segment_num", Json(64));
  LR_CHECK(value.is_number_integer() && value.get<int64_t>() >= 1, InvalidArgument,
           "ponet: option \"segment_num\" must be an integer >= 1, got ", value.dump());
  return value.get<int64_t>();
}

nn::LinearSlot slot(const nn::MixerSpec& spec, const char* name, int64_t out, int64_t in) {
  const std::string full = spec.prefix + "." + name;
  return nn::LinearSlot(full, spec.projection(full, out, in, /*bias=*/true));
}

}  // namespace

at::Tensor ponet_segment_index(int64_t T, int64_t segment_num, at::Device device) {
  const int64_t segment_len = T / segment_num + 1;
  return at::arange(T, at::TensorOptions().dtype(at::kLong).device(device)).div(segment_len, "floor");
}

at::Tensor ponet_segment_max(const at::Tensor& x, int64_t segment_num) {
  const int64_t B = x.size(0), T = x.size(1), C = x.size(2);
  const int64_t segment_len = T / segment_num + 1;
  const int64_t segments = (T + segment_len - 1) / segment_len;
  // Pad the last segment with −∞ so that every segment is a full row of the reshape.
  const at::Tensor padded =
      at::constant_pad_nd(x, {0, 0, 0, segments * segment_len - T}, -std::numeric_limits<double>::infinity());
  const at::Tensor maxima = padded.view({B, segments, segment_len, C}).amax(2);  // [B, segments, C]
  return maxima.index_select(1, ponet_segment_index(T, segment_num, x.device()));
}

at::Tensor ponet_local_max(const at::Tensor& x) {
  return at::max_pool1d(x.transpose(1, 2), {3}, {1}, {1}).transpose(1, 2);
}

at::Tensor ponet_global_aggregation(const at::Tensor& q, const at::Tensor& k, const at::Tensor& valid) {
  const double scale = 1.0 / std::sqrt(static_cast<double>(q.size(-1)));
  at::Tensor g;
  if (valid.defined()) {
    const at::Tensor real = valid.to(q.scalar_type()).view({valid.size(0), 1, valid.size(1), 1});
    g = (q * real).sum(2) / real.sum(2);
  } else {
    g = q.mean(2);
  }
  at::Tensor scores = at::matmul(k, g.unsqueeze(-1)).squeeze(-1).mul(scale);  // [B, n, T]
  if (valid.defined()) scores = scores.masked_fill(valid.logical_not().unsqueeze(1), kMaskedScore);
  return at::matmul(scores.softmax(-1).unsqueeze(-2), k).squeeze(-2);  // V = K
}

PoNetMixer::PoNetMixer(const nn::MixerSpec& spec)
    : dense_q(slot(spec, "dense_q", spec.config.q_size(), spec.config.hidden_size)),
      dense_k(slot(spec, "dense_k", spec.config.q_size(), spec.config.hidden_size)),
      dense_o(slot(spec, "dense_o", spec.config.q_size(), spec.config.hidden_size)),
      dense_segment(slot(spec, "dense_segment", spec.config.hidden_size, spec.config.hidden_size)),
      dense_local(slot(spec, "dense_local", spec.config.hidden_size, spec.config.hidden_size)),
      dense(slot(spec, "dense", spec.config.hidden_size, spec.config.q_size())),
      heads_(spec.config.num_attention_heads),
      head_dim_(spec.config.head_dim),
      segment_num_(read_segment_num(spec.options)) {
  // The pooled streams (hidden wide) are fused with the per-head ones: the widths must agree.
  LR_CHECK(spec.config.q_size() == spec.config.hidden_size, InvalidArgument,
           "ponet: num_attention_heads × head_dim (", spec.config.q_size(), ") must equal hidden_size (",
           spec.config.hidden_size, ")");
}

at::Tensor PoNetMixer::forward(const at::Tensor& x, const nn::MixerContext& context) const {
  const int64_t B = x.size(0), T = x.size(1);
  const nn::LinearSlot* all[] = {&dense_q, &dense_k, &dense_o, &dense_segment, &dense_local};
  const std::vector<at::Tensor> p = nn::LinearSlot::forward_shared_input(all, x, context.routing);
  auto heads = [&](const at::Tensor& t) { return t.reshape({B, T, heads_, head_dim_}).transpose(1, 2); };
  at::Tensor valid = context.valid;
  if (valid.defined() && valid.all().item<bool>()) valid = at::Tensor();
  const at::Tensor g = ponet_global_aggregation(heads(p[0]), heads(p[1]), valid);  // [B, n, D]
  at::Tensor segment = p[3], local = p[4];
  if (valid.defined()) {
    const at::Tensor pad = valid.logical_not().unsqueeze(-1);
    segment = segment.masked_fill(pad, kMaskedScore);
    local = local.masked_fill(pad, kMaskedScore);
  }
  const at::Tensor s = heads(ponet_segment_max(segment, segment_num_));
  const at::Tensor l = heads(ponet_local_max(local));
  at::Tensor fused = (g.unsqueeze(-2) + s) * heads(p[2]) + l;  // [B, n, T, D]
  fused = fused.transpose(1, 2).reshape({B, T, heads_ * head_dim_});
  if (valid.defined()) fused = fused.masked_fill(valid.logical_not().unsqueeze(-1), 0.0);
  return dense.forward(fused, context.routing);
}

void register_ponet(nn::MixerRegistry& registry) {
  registry.add(
      {"ponet",
       "PoNet: global aggregation plus segment and local max-pooling, fused as (g′ + s) ⊙ O + l; "
       "linear in the sequence length, bidirectional",
       "Tan et al., 2022, ICLR, arXiv:2110.02442",
       {{"segment_num", "the number of equal segments for segment max-pooling (LRA form; default 64)"}}},
      [](const nn::MixerSpec& spec) -> std::unique_ptr<nn::TokenMixer> {
        return std::make_unique<PoNetMixer>(spec);
      });
}

}  // namespace lowrank::mix
