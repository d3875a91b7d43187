// SNNK adapter — Sehanobish, Choromanski et al., 2024, "Scalable Neural Network Kernels", ICLR,
// arXiv:2310.13225, the SNNK-ReLU layer (reference code NNK_Relu) used as an adapter:
//   Φ(x) = ReLU(G x) / √m,   G [m, in] fixed Gaussian (seeded, stored in the file)
//   Δ(x) = s · Ψ Φ(x),       Ψ [out, m] trained
// Φ are random features of the arc-cosine kernel of degree 1 (Cho & Saul, 2009):
//   E_g[ReLU(gᵀw) ReLU(gᵀx)] = ‖w‖‖x‖ (sin θ + (π − θ) cos θ) / (2π),
// so Ψ = ReLU(G Wᵀ)ᵀ/√m makes ΨΦ(x) estimate that kernel between x and the rows of W (the
// paper's initialisation that imitates a given layer; option init = "kernel" with W = the base
// weight). Default init Ψ = 0, so the adapter starts as the identity update like LoRA.
// Trainable parameters out·m instead of LoRA's r·(in + out). s = lora_alpha / m.
// peft_type "LOWRANK_SNNK"; tensors "snnk_G.weight" (frozen), "snnk_Psi.weight"; option
// "features" (m, default: r). The feature map is linalg/random_features.h's relu_features, shared
// with the kernel methods.
#include <cmath>

#include "lowrank/adapt/methods.h"
#include "lowrank/core/error.h"
#include "lowrank/linalg/random_features.h"

namespace lowrank::adapt {
namespace {

class SnnkAdapter final : public TrainableAdapter {
 public:
  SnnkAdapter(at::Tensor g, at::Tensor psi, double scaling)
      : g_(std::move(g)), psi_(std::move(psi)), scaling_(scaling) {}
  std::string_view kind() const override { return "snnk"; }
  nn::NamedTensors tensors() const override { return {{"snnk_G.weight", g_}, {"snnk_Psi.weight", psi_}}; }
  nn::NamedTensors parameters() const override { return {{"snnk_Psi.weight", psi_}}; }
  at::Tensor delta_weight(const nn::BaseOperator&) const override {
    throw Unsupported("snnk: the update ReLU(Gx) is not linear in x, so it cannot be merged into W");
  }

 protected:
  at::Tensor compute_delta(const at::Tensor& x, const at::Tensor&, const nn::BaseOperator&) const override {
    return at::linear(linalg::relu_features(x, g_), psi_) * scaling_;
  }

 private:
  at::Tensor g_, psi_;
  double scaling_;
};

int64_t features(const LayerSpec& spec) {
  const int64_t m = spec.config->option<int64_t>("features", spec.r);
  LR_CHECK(m >= 1, InvalidArgument, "snnk: option \"features\" must be >= 1, got ", m);
  return m;
}

std::shared_ptr<TrainableAdapter> create_snnk(const LayerSpec& spec, const nn::BaseOperator& base) {
  const int64_t m = features(spec);
  at::Generator gen = slot_generator(spec);
  at::Tensor g = at::empty({m, base.in_features()}, at::kFloat);
  g.normal_(0, 1, gen);
  g = g.to(spec.device, spec.dtype);
  const std::string init = spec.config->option<std::string>("init", "zeros");
  at::Tensor psi;
  if (init == "kernel") {
    psi = linalg::relu_features(base.dense_weight().detach(), g).contiguous();  // [out, m]
  } else {
    LR_CHECK(init == "zeros", InvalidArgument,
             "snnk: option \"init\" must be \"zeros\" or \"kernel\", got \"", init, "\"");
    psi = at::zeros({base.out_features(), m}, at::TensorOptions(spec.dtype).device(spec.device));
  }
  return std::make_shared<SnnkAdapter>(g, psi, spec.alpha / static_cast<double>(m));
}

std::shared_ptr<TrainableAdapter> load_snnk(const LayerSpec& spec, const nn::BaseOperator& base,
                                            const TensorMap& tensors, std::string_view what) {
  const int64_t m = features(spec);
  return std::make_shared<SnnkAdapter>(
      expect_tensor(tensors, "snnk_G.weight", {m, base.in_features()}, spec, what),
      expect_tensor(tensors, "snnk_Psi.weight", {base.out_features(), m}, spec, what),
      spec.alpha / static_cast<double>(m));
}

}  // namespace

void register_snnk(Registry<AdapterMethod>& registry) {
  registry.add({"snnk",
                "Random-feature adapter: s·Ψ·ReLU(Gx)/√m with G fixed, Ψ trained (SNNK-ReLU)",
                "Sehanobish et al., 2024, ICLR, arXiv:2310.13225",
                {{"features", "number of random features m (default: r)"},
                 {"lora_alpha", "scale numerator: s = lora_alpha / m"},
                 {"init", "\"zeros\" (Ψ = 0) or \"kernel\" (Ψ = ReLU(G Wᵀ)ᵀ/√m)"}}},
               {"LOWRANK_SNNK", create_snnk, load_snnk, {}, false});
}

}  // namespace lowrank::adapt
