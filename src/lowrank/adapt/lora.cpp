// LoRA, DoRA and PiSSA; the equations are in lora.h.
#include "lowrank/adapt/lora.h"

#include <cmath>

#include "lowrank/adapt/methods.h"
#include "lowrank/core/error.h"

namespace lowrank::adapt {

LoraAdapter::LoraAdapter(at::Tensor a, at::Tensor b, double scaling)
    : a_(std::move(a)), b_(std::move(b)), scaling_(scaling) {
  LR_CHECK(a_.dim() == 2 && b_.dim() == 2 && a_.size(0) == b_.size(1), InvalidArgument, "lora: A ",
           a_.sizes(), " and B ", b_.sizes(), " do not form B·A");
}

at::Tensor LoraAdapter::compute_delta(const at::Tensor& x, const at::Tensor&, const nn::BaseOperator&) const {
  return at::linear(at::linear(x, a_), b_) * scaling_;
}

at::Tensor LoraAdapter::delta_weight(const nn::BaseOperator&) const {
  return at::matmul(b_, a_) * scaling_;
}

std::optional<nn::LowRankDelta> LoraAdapter::low_rank_delta() const {
  if (dropout_active()) return std::nullopt;
  return nn::LowRankDelta{a_, b_, scaling_ * weight()};
}

std::shared_ptr<LoraAdapter> load_lora(const LayerSpec& spec, const nn::BaseOperator& base,
                                       const TensorMap& tensors, std::string_view what) {
  at::Tensor a = expect_tensor(tensors, "lora_A.weight", {spec.r, base.in_features()}, spec, what);
  at::Tensor b = expect_tensor(tensors, "lora_B.weight", {base.out_features(), spec.r}, spec, what);
  return std::make_shared<LoraAdapter>(a, b, spec.scaling);
}

namespace {

void check_rank(const LayerSpec& spec, const nn::BaseOperator& base) {
  LR_CHECK(spec.r <= std::min(base.in_features(), base.out_features()), InvalidArgument, "module ",
           spec.module, ": rank ", spec.r,
           " exceeds min(in, out) = ", std::min(base.in_features(), base.out_features()));
}

std::shared_ptr<LoraAdapter> create_lora(const LayerSpec& spec, const nn::BaseOperator& base) {
  check_rank(spec, base);
  at::Generator gen = slot_generator(spec);
  const Json& init = spec.config->init_lora_weights;
  at::Tensor a, b;
  if (init.is_string() && init.get<std::string>() == "gaussian") {
    a = at::empty({spec.r, base.in_features()}, at::kFloat);
    a.normal_(0.0, 1.0 / static_cast<double>(spec.r), gen);
    a = a.to(spec.device, spec.dtype);
    b = at::zeros({base.out_features(), spec.r}, at::TensorOptions(spec.dtype).device(spec.device));
  } else {
    LR_CHECK(init.is_boolean() || (init.is_string() && init.get<std::string>().starts_with("pissa")),
             Unsupported, "init_lora_weights ", init.dump(),
             " is not supported (true, false, \"gaussian\", \"pissa\")");
    a = kaiming_uniform(spec.r, base.in_features(), spec, gen);
    b = init.is_boolean() && !init.get<bool>()
            ? kaiming_uniform(base.out_features(), spec.r, spec, gen)
            : at::zeros({base.out_features(), spec.r}, at::TensorOptions(spec.dtype).device(spec.device));
  }
  return std::make_shared<LoraAdapter>(a, b, spec.scaling);
}

// ---- DoRA -------------------------------------------------------------------------------------

class DoraAdapter final : public TrainableAdapter {
 public:
  DoraAdapter(at::Tensor a, at::Tensor b, at::Tensor magnitude, double scaling)
      : a_(std::move(a)), b_(std::move(b)), m_(std::move(magnitude)), scaling_(scaling) {}
  std::string_view kind() const override { return "dora"; }
  nn::NamedTensors tensors() const override {
    return {{"lora_A.weight", a_}, {"lora_B.weight", b_}, {"lora_magnitude_vector", m_}};
  }
  nn::NamedTensors parameters() const override { return tensors(); }
  at::Tensor merged_weight(const nn::BaseOperator& base) const override {
    const at::Tensor w = base.dense_weight();
    const at::Tensor ba = at::matmul(b_, a_);
    const at::Tensor directional = w + ba * scaling_;
    const at::Tensor merged = (m_ / row_norm(w, ba)).unsqueeze(1) * directional;
    // The combination weight interpolates between the base and the DoRA weight.
    return weight() == 1 ? merged : w + (merged - w) * weight();
  }
  at::Tensor delta_weight(const nn::BaseOperator& base) const override {
    return merged_weight(base) - base.dense_weight();
  }

  // n = ‖W + s·BA‖ per output row, detached (PEFT get_weight_norm).
  at::Tensor row_norm(const at::Tensor& w, const at::Tensor& ba) const {
    return at::linalg_vector_norm(w + ba.detach() * scaling_, 2, {1}).detach();
  }

 protected:
  at::Tensor compute_delta(const at::Tensor& x, const at::Tensor& base_y,
                           const nn::BaseOperator& base) const override {
    const at::Tensor w = base.dense_weight();
    const at::Tensor scale = m_ / row_norm(w, at::matmul(b_, a_));
    // With dropout the base term uses the dropped-out input, as PEFT recomputes it.
    at::Tensor base_result;
    if (dropout_active())
      base_result = at::linear(x, w);
    else
      base_result = base.bias().defined() ? base_y - base.bias() : base_y;
    const at::Tensor lora = at::linear(at::linear(x, a_), b_);
    return (scale - 1) * base_result + scale * lora * scaling_;
  }

 private:
  at::Tensor a_, b_, m_;
  double scaling_;
};

std::shared_ptr<TrainableAdapter> create_dora(const LayerSpec& spec, const nn::BaseOperator& base) {
  std::shared_ptr<LoraAdapter> lora = create_lora(spec, base);
  const at::Tensor w = base.dense_weight();
  at::Tensor m = at::linalg_vector_norm(w + at::matmul(lora->b(), lora->a()) * spec.scaling, 2, {1})
                     .to(spec.dtype)
                     .detach()
                     .clone();
  return std::make_shared<DoraAdapter>(lora->a(), lora->b(), m, spec.scaling);
}

std::shared_ptr<TrainableAdapter> load_dora(const LayerSpec& spec, const nn::BaseOperator& base,
                                            const TensorMap& tensors, std::string_view what) {
  std::shared_ptr<LoraAdapter> lora = load_lora(spec, base, tensors, what);
  at::Tensor m = expect_tensor(tensors, "lora_magnitude_vector", {base.out_features()}, spec, what);
  return std::make_shared<DoraAdapter>(lora->a(), lora->b(), m, spec.scaling);
}

// ---- PiSSA ------------------------------------------------------------------------------------

class PissaAdapter final : public TrainableAdapter {
 public:
  PissaAdapter(at::Tensor a, at::Tensor b, at::Tensor a0, at::Tensor b0, double scaling)
      : a_(std::move(a)), b_(std::move(b)), a0_(std::move(a0)), b0_(std::move(b0)), scaling_(scaling) {}
  std::string_view kind() const override { return "pissa"; }
  nn::NamedTensors tensors() const override { return {{"lora_A.weight", a_}, {"lora_B.weight", b_}}; }
  nn::NamedTensors parameters() const override { return tensors(); }
  at::Tensor delta_weight(const nn::BaseOperator&) const override {
    return (at::matmul(b_, a_) - at::matmul(b0_, a0_)) * scaling_;
  }
  std::shared_ptr<TrainableAdapter> finalize() const override {
    auto out = std::make_shared<LoraAdapter>(at::cat({a_.detach(), a0_}, 0), at::cat({b_.detach(), -b0_}, 1),
                                             scaling_);
    out->set_weight(weight());
    return out;
  }

 protected:
  at::Tensor compute_delta(const at::Tensor& x, const at::Tensor&, const nn::BaseOperator&) const override {
    return (at::linear(at::linear(x, a_), b_) - at::linear(at::linear(x, a0_), b0_)) * scaling_;
  }

 private:
  at::Tensor a_, b_, a0_, b0_;
  double scaling_;
};

// A₀ = diag(√(S_r/s)) V_rᵀ, B₀ = U_r diag(√(S_r/s)) from the exact SVD of the base weight.
std::pair<at::Tensor, at::Tensor> pissa_init(const LayerSpec& spec, const nn::BaseOperator& base) {
  check_rank(spec, base);
  const at::Tensor w = base.dense_weight().detach().to(at::kCPU, at::kFloat);
  auto [u, s, vh] = at::linalg_svd(w, /*full_matrices=*/false);
  const at::Tensor root = at::sqrt(s.slice(0, 0, spec.r) / spec.scaling);
  at::Tensor a0 = (root.unsqueeze(1) * vh.slice(0, 0, spec.r)).to(spec.device, spec.dtype).contiguous();
  at::Tensor b0 = (u.slice(1, 0, spec.r) * root.unsqueeze(0)).to(spec.device, spec.dtype).contiguous();
  return {a0, b0};
}

std::shared_ptr<TrainableAdapter> create_pissa(const LayerSpec& spec, const nn::BaseOperator& base) {
  auto [a0, b0] = pissa_init(spec, base);
  return std::make_shared<PissaAdapter>(a0.clone(), b0.clone(), a0, b0, spec.scaling);
}

std::shared_ptr<TrainableAdapter> load_pissa(const LayerSpec& spec, const nn::BaseOperator& base,
                                             const TensorMap& tensors, std::string_view what) {
  std::shared_ptr<LoraAdapter> lora = load_lora(spec, base, tensors, what);
  auto [a0, b0] = pissa_init(spec, base);
  return std::make_shared<PissaAdapter>(lora->a(), lora->b(), a0, b0, spec.scaling);
}

// PEFT's conversion of a PiSSA adapter to a plain LoRA: rank and alpha doubled (α√2 with rsLoRA,
// which keeps α/√r's scaling), patterns doubled the same way.
AdapterConfig pissa_export_config(const AdapterConfig& c) {
  AdapterConfig out = c;
  const double alpha_factor = c.use_rslora ? std::sqrt(2.0) : 2.0;
  out.r = 2 * c.r;
  out.lora_alpha = c.lora_alpha * alpha_factor;
  for (auto& [k, v] : out.rank_pattern) v *= 2;
  for (auto& [k, v] : out.alpha_pattern) v *= alpha_factor;
  out.init_lora_weights = true;
  out.method = "lora";
  return out;
}

}  // namespace

void register_lora(Registry<AdapterMethod>& registry) {
  registry.add({"lora",
                "Low-rank update s·B(Ax), PEFT's LoRA (rsLoRA scaling with use_rslora)",
                "Hu et al., 2021, arXiv:2106.09685; rsLoRA: Kalajdzievski, 2023, arXiv:2312.03732",
                {{"r", "rank (8)"},
                 {"lora_alpha", "alpha (8); scaling alpha/r, or alpha/sqrt(r) with use_rslora"},
                 {"lora_dropout", "dropout on the adapter input (0)"},
                 {"init_lora_weights", "true (B = 0), false, \"gaussian\""}}},
               {"LORA",
                [](const LayerSpec& s, const nn::BaseOperator& b) -> std::shared_ptr<TrainableAdapter> {
                  return create_lora(s, b);
                },
                [](const LayerSpec& s, const nn::BaseOperator& b, const TensorMap& t,
                   std::string_view w) -> std::shared_ptr<TrainableAdapter> { return load_lora(s, b, t, w); },
                {}});
  registry.add({"dora",
                "Weight-decomposed LoRA: trained magnitude times normalised W + sBA",
                "Liu et al., 2024, arXiv:2402.09353",
                {{"r", "rank (8)"}, {"lora_alpha", "alpha (8)"}}},
               {"LORA", create_dora, load_dora, {}});
  registry.add({"pissa",
                "LoRA initialised from the principal singular triplets of W (saved as a 2r LoRA)",
                "Meng et al., 2024, arXiv:2404.02948",
                {{"r", "rank (8)"}, {"lora_alpha", "alpha (8)"}}},
               {"LORA", create_pissa, load_pissa, pissa_export_config});
}

}  // namespace lowrank::adapt
