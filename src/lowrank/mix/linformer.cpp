// Linformer's sequence-projected attention; see linformer.h.
#include "lowrank/mix/linformer.h"

#include <algorithm>
#include <cmath>

#include "lowrank/core/error.h"
#include "lowrank/mix/mixer_options.h"
#include "lowrank/nn/config.h"

namespace lowrank::mix {

namespace {

const OptionHelp& linformer_option_help() {
  static const OptionHelp help = {
      {"max_seq_len",
       "n, the fixed sequence length E and F cover; shorter inputs use their first T columns, longer ones "
       "are refused (default: max_position_embeddings)"},
      {"k", "projected length of keys and values (default min(256, max_seq_len))"},
      {"sharing",
       "headwise (one E, F per layer), kv (one E = F per layer) or layerwise (one E = F for all layers, "
       "stored once as model.linformer.proj_e) (default headwise)"}};
  return help;
}

constexpr const char* kLayerwiseName = "model.linformer.proj_e";

}  // namespace

LinformerOptions linformer_options(const nn::MixerSpec& spec) {
  const Json& o = spec.options;
  check_option_keys("linformer", o, linformer_option_help());
  const std::string what = "mixer linformer";
  LinformerOptions out;
  out.max_seq_len = json_get_or<int64_t>(o, "max_seq_len", spec.config.max_position_embeddings, what);
  LR_CHECK(out.max_seq_len >= 1, InvalidArgument, what, ": max_seq_len must be >= 1, got ", out.max_seq_len,
           o.contains("max_seq_len") ? "" : " (from max_position_embeddings)");
  out.k = json_get_or<int64_t>(o, "k", std::min<int64_t>(256, out.max_seq_len), what);
  LR_CHECK(out.k >= 1 && out.k <= out.max_seq_len, InvalidArgument, what,
           ": k must be in [1, max_seq_len = ", out.max_seq_len, "], got ", out.k);
  const std::string sharing = json_get_or<std::string>(o, "sharing", "headwise", what);
  if (sharing == "headwise")
    out.sharing = LinformerSharing::kHeadwise;
  else if (sharing == "kv")
    out.sharing = LinformerSharing::kKeyValue;
  else if (sharing == "layerwise")
    out.sharing = LinformerSharing::kLayerwise;
  else
    throw InvalidArgument(str(what, ": sharing must be headwise, kv or layerwise, got \"", sharing, "\""));
  return out;
}

Linformer::Linformer(const nn::MixerSpec& spec)
    : options_(linformer_options(spec)),
      num_heads_(spec.config.num_attention_heads),
      head_dim_(spec.config.head_dim),
      q_proj_(spec.prefix + ".q_proj", spec.projection(spec.prefix + ".q_proj", num_heads_ * head_dim_,
                                                       spec.config.hidden_size, false)),
      k_proj_(spec.prefix + ".k_proj", spec.projection(spec.prefix + ".k_proj", num_heads_ * head_dim_,
                                                       spec.config.hidden_size, false)),
      v_proj_(spec.prefix + ".v_proj", spec.projection(spec.prefix + ".v_proj", num_heads_ * head_dim_,
                                                       spec.config.hidden_size, false)),
      o_proj_(spec.prefix + ".o_proj", spec.projection(spec.prefix + ".o_proj", spec.config.hidden_size,
                                                       num_heads_ * head_dim_, spec.config.o_bias)) {
  const int64_t k = options_.k, n = options_.max_seq_len;
  const double bound = 1.0 / std::sqrt(static_cast<double>(k));
  auto make = [&](const std::string& name) {
    return spec.tensor(name, {k, n}, nn::ParamInit::kValue, uniform_by_name(name, {k, n}, bound));
  };
  e_name_ = options_.sharing == LinformerSharing::kLayerwise ? kLayerwiseName : spec.prefix + ".proj_e";
  e_ = make(e_name_);
  if (options_.sharing == LinformerSharing::kHeadwise) {
    f_name_ = spec.prefix + ".proj_f";
    f_ = make(f_name_);
  } else {
    f_ = e_;
  }
}

nn::NamedTensors Linformer::tensors() const {
  nn::NamedTensors out{{e_name_, e_}};
  if (!f_name_.empty()) out.emplace_back(f_name_, f_);
  return out;
}

at::Tensor Linformer::forward(const at::Tensor& x, const nn::MixerContext& context) const {
  const int64_t B = x.size(0), T = x.size(1), D = head_dim_;
  LR_CHECK(T <= options_.max_seq_len, InvalidArgument, "mixer linformer: the sequence has ", T,
           " positions, more than max_seq_len = ", options_.max_seq_len, " (E and F are [k, ",
           options_.max_seq_len, "])");
  const nn::LinearSlot* qkv[] = {&q_proj_, &k_proj_, &v_proj_};
  const std::vector<at::Tensor> p = nn::LinearSlot::forward_shared_input(qkv, x, context.routing);
  at::Tensor q = p[0].reshape({B, T, num_heads_, D}).transpose(1, 2);  // [B, h, T, D]
  at::Tensor k = p[1];
  at::Tensor v = p[2];
  if (context.valid.defined()) {
    // Padding adds nothing to E·K and F·V.
    const at::Tensor keep = context.valid.to(x.scalar_type()).unsqueeze(-1);
    k = k * keep;
    v = v * keep;
  }
  // A shorter sequence uses the first T columns (lucidrains slices its [n, k] proj_k to kv_len rows).
  const at::Tensor e = e_.narrow(1, 0, T);
  const at::Tensor f = f_.narrow(1, 0, T);
  // [k, T] · [B, T, h·D] -> [B, k, h·D] -> [B, h, k, D]: one E for every head (headwise sharing).
  const int64_t kk = options_.k;
  const at::Tensor k_short = at::matmul(e, k).reshape({B, kk, num_heads_, D}).transpose(1, 2);
  const at::Tensor v_short = at::matmul(f, v).reshape({B, kk, num_heads_, D}).transpose(1, 2);
  const at::Tensor scores = at::matmul(q, k_short.transpose(-1, -2)) / std::sqrt(static_cast<double>(D));
  const at::Tensor out = at::matmul(at::softmax(scores, -1), v_short);  // [B, h, T, D]
  return o_proj_.forward(out.transpose(1, 2).reshape({B, T, num_heads_ * D}), context.routing);
}

void register_linformer(nn::MixerRegistry& registry) {
  registry.add({"linformer",
                "Linformer: softmax attention over keys and values projected along the sequence to length k "
                "(E, F in R^{k x n}); bidirectional",
                "Wang et al., 2020, arXiv:2006.04768", linformer_option_help()},
               [](const nn::MixerSpec& spec) -> std::unique_ptr<nn::TokenMixer> {
                 return std::make_unique<Linformer>(spec);
               });
}

}  // namespace lowrank::mix
