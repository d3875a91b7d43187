// Neighborhood attention as a token mixer; see neighborhood.h.
#include "lowrank/mix/neighborhood.h"

#include <cmath>
#include <limits>

#include "lowrank/core/error.h"
#include "lowrank/nn/config.h"

namespace lowrank::mix {

namespace {

const std::vector<std::pair<std::string, std::string>> kOptions = {
    {"dims", "1 (a sequence, default) or 2 (MixerContext's grid, row-major)"},
    {"kernel_size", "odd window size per axis: an integer or one per axis (default 7)"},
    {"dilation",
     "per-axis dilation, an integer or one per axis (default 1); a window that is not causal "
     "needs kernel_size × dilation <= the axis length"},
    {"causal",
     "causal masking, a bool or one per axis (default: true in 1-D, false in 2-D); a causal 1-D "
     "mixer decodes with step()"},
    {"rpb", "learn a relative position bias per head, tensor `rpb` (default true)"},
};

// An option given as one value for every axis or as a list of one per axis.
template <typename T>
std::vector<T> per_axis(const Json& options, const std::string& key, T fallback, int64_t dims) {
  if (!options.contains(key)) return std::vector<T>(dims, fallback);
  const Json& value = options.at(key);
  try {
    if (!value.is_array()) return std::vector<T>(dims, value.get<T>());
    LR_CHECK(static_cast<int64_t>(value.size()) == dims, InvalidArgument, "neighborhood: option \"", key,
             "\" lists ", value.size(), " values for ", dims, " axes: ", value.dump());
    return value.get<std::vector<T>>();
  } catch (const Json::exception&) {
    throw InvalidArgument(str("neighborhood: option \"", key, "\" has the wrong type: ", value.dump()));
  }
}

std::vector<ops::NeighborhoodAxis> parse_axes(const Json& options) {
  LR_CHECK(options.is_object(), InvalidArgument, "neighborhood: options must be an object, got ",
           options.dump());
  for (const auto& [key, value] : options.items()) {
    bool known = false;
    for (const auto& option : kOptions) known = known || option.first == key;
    std::string names;
    for (const auto& option : kOptions) names += (names.empty() ? "" : ", ") + option.first;
    LR_CHECK(known, InvalidArgument, "neighborhood: unknown option \"", key, "\" (known: ", names, ")");
  }
  const Json dims_json = options.value("dims", Json(1));
  LR_CHECK(dims_json.is_number_integer() && (dims_json.get<int64_t>() == 1 || dims_json.get<int64_t>() == 2),
           InvalidArgument, "neighborhood: option \"dims\" must be 1 or 2, got ", dims_json.dump());
  const int64_t dims = dims_json.get<int64_t>();
  const std::vector<int64_t> kernel = per_axis<int64_t>(options, "kernel_size", 7, dims);
  const std::vector<int64_t> dilation = per_axis<int64_t>(options, "dilation", 1, dims);
  const std::vector<bool> causal = per_axis<bool>(options, "causal", dims == 1, dims);
  std::vector<ops::NeighborhoodAxis> axes;
  for (int64_t a = 0; a < dims; ++a) {
    LR_CHECK(kernel[a] >= 1 && kernel[a] % 2 == 1, InvalidArgument,
             "neighborhood: option \"kernel_size\" must be odd and >= 1, got ", kernel[a]);
    LR_CHECK(dilation[a] >= 1, InvalidArgument, "neighborhood: option \"dilation\" must be >= 1, got ",
             dilation[a]);
    axes.push_back({kernel[a], dilation[a], causal[a]});
  }
  return axes;
}

// Heads of a sequence [B, T, n·D] -> [B, n, T, D].
at::Tensor split_heads(const at::Tensor& x, int64_t heads, int64_t head_dim) {
  return x.reshape({x.size(0), x.size(1), heads, head_dim}).transpose(1, 2);
}

}  // namespace

NeighborhoodMixer::NeighborhoodMixer(const nn::MixerSpec& spec)
    : q_proj(spec.prefix + ".q_proj", spec.projection(spec.prefix + ".q_proj", spec.config.q_size(),
                                                      spec.config.hidden_size, spec.config.qkv_bias)),
      k_proj(spec.prefix + ".k_proj", spec.projection(spec.prefix + ".k_proj", spec.config.q_size(),
                                                      spec.config.hidden_size, spec.config.qkv_bias)),
      v_proj(spec.prefix + ".v_proj", spec.projection(spec.prefix + ".v_proj", spec.config.q_size(),
                                                      spec.config.hidden_size, spec.config.qkv_bias)),
      o_proj(spec.prefix + ".o_proj", spec.projection(spec.prefix + ".o_proj", spec.config.hidden_size,
                                                      spec.config.q_size(), spec.config.o_bias)),
      axes_(parse_axes(spec.options)),
      heads_(spec.config.num_attention_heads),
      head_dim_(spec.config.head_dim),
      scale_(1.0 / std::sqrt(static_cast<double>(spec.config.head_dim))),
      rpb_name_(spec.prefix + ".rpb") {
  if (spec.options.value("rpb", true)) {
    std::vector<int64_t> shape = {heads_};
    for (const ops::NeighborhoodAxis& a : axes_) shape.push_back(2 * a.kernel - 1);
    // NATTEN draws the table from trunc_normal(std 0.02); here N(0, initializer_range), the model's 0.02.
    rpb_ = spec.tensor(rpb_name_, shape, nn::ParamInit::kNormal, at::Tensor());
  }
}

bool NeighborhoodMixer::causal() const {
  for (const ops::NeighborhoodAxis& a : axes_)
    if (!a.causal) return false;
  return true;
}

nn::NamedTensors NeighborhoodMixer::tensors() const {
  if (!rpb_.defined()) return {};
  return {{rpb_name_, rpb_}};
}

// A padded batch: each row attends within its own real tokens, exactly as it would alone, so a
// window clamps at the row's first and last real token and never reaches padding (NATTEN has no
// mask; running each sequence unpadded is its semantics). The real tokens of a row must be one
// contiguous run (left or right padding); padding positions get zero output.
at::Tensor NeighborhoodMixer::per_row_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                                const at::Tensor& bias, const at::Tensor& valid) const {
  const int64_t B = q.size(0), T = q.size(2);
  LR_CHECK(valid.dim() == 2 && valid.size(0) == B && valid.size(1) == T, InvalidArgument,
           "neighborhood: padding mask of shape ", valid.sizes(), " for ", B, " rows of ", T, " positions");
  const at::Tensor mask = valid.to(at::kCPU).to(at::kBool).contiguous();
  std::vector<at::Tensor> rows;
  rows.reserve(static_cast<size_t>(B));
  for (int64_t b = 0; b < B; ++b) {
    const at::Tensor row = mask[b];
    const int64_t n = row.sum().item<int64_t>();
    LR_CHECK(n > 0, InvalidArgument, "neighborhood: row ", b, " of the batch has no real token");
    const int64_t first = row.to(at::kInt).argmax().item<int64_t>();
    LR_CHECK(row.slice(0, first, first + n).all().item<bool>(), InvalidArgument, "neighborhood: row ", b,
             "'s real tokens are not one contiguous run (padding must be on the left or the right)");
    const auto real = [&](const at::Tensor& t) { return t.slice(0, b, b + 1).slice(2, first, first + n); };
    const at::Tensor o = ops::neighborhood_attention(real(q), real(k), real(v), bias, axes_, scale_);
    rows.push_back(at::constant_pad_nd(o, {0, 0, first, T - first - n}));
  }
  return at::cat(rows, 0);
}

at::Tensor NeighborhoodMixer::forward(const at::Tensor& x, const nn::MixerContext& context) const {
  const int64_t B = x.size(0), T = x.size(1);
  const bool padded = context.valid.defined() && !context.valid.all().item<bool>();
  LR_CHECK(!padded || axes_.size() == 1, Unsupported,
           "neighborhood: padded rows are supported in 1-D only (a 2-D grid has no padding rule)");
  const nn::LinearSlot* qkv[] = {&q_proj, &k_proj, &v_proj};
  const std::vector<at::Tensor> p = nn::LinearSlot::forward_shared_input(qkv, x, context.routing);
  at::Tensor q = split_heads(p[0], heads_, head_dim_);
  at::Tensor k = split_heads(p[1], heads_, head_dim_);
  at::Tensor v = split_heads(p[2], heads_, head_dim_);
  if (axes_.size() == 2) {
    LR_CHECK(context.grid.has_value(), InvalidArgument,
             "neighborhood: dims 2 needs the 2-D grid of the positions (an image model), and none was given");
    const int64_t Hg = context.grid->height, Wg = context.grid->width;
    LR_CHECK(Hg * Wg == T, InvalidArgument, "neighborhood: grid ", Hg, "×", Wg, " does not hold ", T,
             " positions");
    q = q.reshape({B, heads_, Hg, Wg, head_dim_});
    k = k.reshape({B, heads_, Hg, Wg, head_dim_});
    v = v.reshape({B, heads_, Hg, Wg, head_dim_});
  }
  const at::Tensor bias = rpb_.defined() ? rpb_.to(q.scalar_type()) : rpb_;
  const at::Tensor o = padded ? per_row_attention(q, k, v, bias, context.valid)
                              : ops::neighborhood_attention(q, k, v, bias, axes_, scale_);
  // (B, n, [H, W,] D) -> (B, T, n·D)
  const at::Tensor rows =
      o.reshape({B, heads_, T, head_dim_}).transpose(1, 2).reshape({B, T, heads_ * head_dim_});
  return o_proj.forward(rows, context.routing);
}

namespace {

// The last (k − 1)·d + 1 keys and values of the sequence (fewer at the start).
struct WindowState final : nn::MixerState {
  at::Tensor keys, values;  // [B, n, ≤ span, D]; undefined before the first step
};

}  // namespace

std::unique_ptr<nn::MixerState> NeighborhoodMixer::new_state(int64_t batch) const {
  LR_CHECK(has_decode_state(), Unsupported, "neighborhood: only a causal 1-D mixer decodes with step()");
  (void)batch;  // the first step sizes the window
  return std::make_unique<WindowState>();
}

at::Tensor NeighborhoodMixer::step(const at::Tensor& x, nn::MixerState& state,
                                   const nn::MixerContext& context) const {
  LR_CHECK(has_decode_state(), Unsupported, "neighborhood: only a causal 1-D mixer decodes with step()");
  LR_CHECK(x.dim() == 3 && x.size(1) == 1, InvalidArgument,
           "neighborhood step: one position [B, 1, hidden], got ", x.sizes());
  auto& s = dynamic_cast<WindowState&>(state);
  const ops::NeighborhoodAxis& a = axes_[0];
  const int64_t B = x.size(0);
  const int64_t span = (a.kernel - 1) * a.dilation + 1;
  const nn::LinearSlot* qkv[] = {&q_proj, &k_proj, &v_proj};
  const std::vector<at::Tensor> p = nn::LinearSlot::forward_shared_input(qkv, x, context.routing);
  const at::Tensor q = split_heads(p[0], heads_, head_dim_);  // [B, n, 1, D]
  const at::Tensor k = split_heads(p[1], heads_, head_dim_), v = split_heads(p[2], heads_, head_dim_);
  s.keys = s.keys.defined() ? at::cat({s.keys, k}, 2) : k;
  s.values = s.values.defined() ? at::cat({s.values, v}, 2) : v;
  if (s.keys.size(2) > span) {
    s.keys = s.keys.narrow(2, s.keys.size(2) - span, span);
    s.values = s.values.narrow(2, s.values.size(2) - span, span);
  }
  // The window of the newest position: t, t − d, …, t − (k − 1)·d (those that exist), newest first.
  const int64_t held = s.keys.size(2);
  const int64_t count = std::min<int64_t>(a.kernel, (held - 1) / a.dilation + 1);
  const at::Tensor index = at::arange(0, count, at::kLong).mul(-a.dilation).add(held - 1).to(s.keys.device());
  const at::Tensor kw = s.keys.index_select(2, index);
  const at::Tensor vw = s.values.index_select(2, index);
  at::Tensor scores = at::matmul(q, kw.transpose(-2, -1)).mul(scale_);  // [B, n, 1, count]
  if (rpb_.defined()) {
    // offset −t/d for slot t: table index k − 1 − t
    const at::Tensor slots = at::arange(a.kernel - 1, a.kernel - 1 - count, -1, at::kLong).to(rpb_.device());
    scores = scores + rpb_.to(scores.scalar_type()).index_select(1, slots).view({1, heads_, 1, count});
  }
  const at::Tensor o = at::matmul(scores.softmax(-1), vw);  // [B, n, 1, D]
  return o_proj.forward(o.transpose(1, 2).reshape({B, 1, heads_ * head_dim_}), context.routing);
}

void register_neighborhood(nn::MixerRegistry& registry) {
  registry.add({"neighborhood",
                "neighborhood attention, 1-D or 2-D: each query attends to its k nearest keys per axis "
                "(clamped windows), with dilation, per-axis causal masking and a relative position bias",
                "Hassani et al., 2023, arXiv:2204.07143; DiNA: arXiv:2209.15001; fused NA: arXiv:2403.04690",
                kOptions},
               [](const nn::MixerSpec& spec) -> std::unique_ptr<nn::TokenMixer> {
                 return std::make_unique<NeighborhoodMixer>(spec);
               });
}

}  // namespace lowrank::mix
