// PETALface's quality-gated adapter pair; see petal.h.
#include "lowrank/adapt/petal.h"

#include "lowrank/adapt/lora.h"
#include "lowrank/adapt/methods.h"
#include "lowrank/core/error.h"

namespace lowrank::adapt {
namespace {

class PetalAdapter final : public TrainableAdapter {
 public:
  PetalAdapter(at::Tensor a_hi, at::Tensor b_hi, at::Tensor a_lo, at::Tensor b_lo, double scaling)
      : a_hi_(std::move(a_hi)),
        b_hi_(std::move(b_hi)),
        a_lo_(std::move(a_lo)),
        b_lo_(std::move(b_lo)),
        scaling_(scaling) {}
  std::string_view kind() const override { return "petal"; }
  nn::NamedTensors tensors() const override {
    return {{"lora_A_hi.weight", a_hi_},
            {"lora_B_hi.weight", b_hi_},
            {"lora_A_lo.weight", a_lo_},
            {"lora_B_lo.weight", b_lo_}};
  }
  nn::NamedTensors parameters() const override { return tensors(); }
  at::Tensor delta_weight(const nn::BaseOperator&) const override {
    throw Unsupported("petal: the update depends on each input's quality score, so it cannot be merged");
  }
  void set_scores(at::Tensor q) { scores_ = std::move(q); }

 protected:
  at::Tensor compute_delta(const at::Tensor& x, const at::Tensor&, const nn::BaseOperator&) const override {
    LR_CHECK(scores_.defined(), InvalidArgument,
             "petal: no quality scores set for this forward (call set_quality_scores first)");
    LR_CHECK(scores_.size(0) == x.size(0), InvalidArgument, "petal: ", scores_.size(0),
             " quality scores for a batch of ", x.size(0), " rows");
    std::vector<int64_t> shape(static_cast<size_t>(x.dim()), 1);
    shape[0] = x.size(0);
    const at::Tensor q = scores_.to(x.device(), x.scalar_type()).reshape(shape);
    const at::Tensor hi = at::linear(at::linear(x, a_hi_), b_hi_);
    const at::Tensor lo = at::linear(at::linear(x, a_lo_), b_lo_);
    return (q * hi + (1 - q) * lo) * scaling_;
  }

 private:
  at::Tensor a_hi_, b_hi_, a_lo_, b_lo_;
  double scaling_;
  at::Tensor scores_;
};

std::shared_ptr<TrainableAdapter> create_petal(const LayerSpec& spec, const nn::BaseOperator& base) {
  at::Generator gen = slot_generator(spec);
  const auto zeros = at::TensorOptions(spec.dtype).device(spec.device);
  // The authors' LoRALinearTwo: nn.init.normal_(down.weight, std=1/r) for both LoRAs.
  const auto normal_a = [&] {
    at::Tensor a = at::empty({spec.r, base.in_features()}, at::kFloat);
    a.normal_(0.0, 1.0 / static_cast<double>(spec.r), gen);
    return a.to(spec.device, spec.dtype);
  };
  at::Tensor a_hi = normal_a();
  at::Tensor a_lo = normal_a();
  return std::make_shared<PetalAdapter>(a_hi, at::zeros({base.out_features(), spec.r}, zeros), a_lo,
                                        at::zeros({base.out_features(), spec.r}, zeros), spec.scaling);
}

std::shared_ptr<TrainableAdapter> load_petal(const LayerSpec& spec, const nn::BaseOperator& base,
                                             const TensorMap& tensors, std::string_view what) {
  const int64_t in = base.in_features(), out = base.out_features();
  return std::make_shared<PetalAdapter>(expect_tensor(tensors, "lora_A_hi.weight", {spec.r, in}, spec, what),
                                        expect_tensor(tensors, "lora_B_hi.weight", {out, spec.r}, spec, what),
                                        expect_tensor(tensors, "lora_A_lo.weight", {spec.r, in}, spec, what),
                                        expect_tensor(tensors, "lora_B_lo.weight", {out, spec.r}, spec, what),
                                        spec.scaling);
}

}  // namespace

void set_quality_scores(const AttachedAdapter& adapter, const at::Tensor& scores) {
  LR_CHECK(scores.dim() == 1, InvalidArgument, "petal: quality scores must be 1-D [batch], got ",
           scores.sizes());
  LR_CHECK(scores.numel() == 0 || (scores.min().item<double>() >= 0 && scores.max().item<double>() <= 1),
           InvalidArgument, "petal: quality scores must lie in [0, 1]");
  int64_t n = 0;
  for (const auto& [module, layer] : adapter.layers)
    if (auto* p = dynamic_cast<PetalAdapter*>(layer.get())) {
      p->set_scores(scores);
      ++n;
    }
  LR_CHECK(n > 0, InvalidArgument, "petal: adapter \"", adapter.name, "\" has no PETAL layers");
}

at::Tensor window_losses(const nn::Model& model, const at::Tensor& windows) {
  at::NoGradGuard no_grad;
  const int64_t T = windows.size(1) - 1;
  const at::Tensor inputs = windows.slice(1, 0, T).to(model.device());
  const at::Tensor targets = windows.slice(1, 1, T + 1).to(model.device());
  const at::Tensor logits = model.forward(inputs).to(at::kDouble);  // [B, T, V]
  const at::Tensor nll = at::cross_entropy_loss(logits.reshape({-1, logits.size(-1)}), targets.reshape({-1}),
                                                {}, at::Reduction::None);
  return nll.reshape({windows.size(0), T}).mean(1).to(at::kCPU);
}

at::Tensor reference_losses(nn::Model& model, const AttachedAdapter& adapter, const at::Tensor& windows) {
  for (const auto& [module, layer] : adapter.layers) (void)model.slot(module).remove_adapter(adapter.name);
  at::Tensor losses;
  try {
    losses = window_losses(model, windows);
  } catch (...) {
    for (const auto& [module, layer] : adapter.layers) model.slot(module).add_adapter(adapter.name, layer);
    throw;
  }
  for (const auto& [module, layer] : adapter.layers) model.slot(module).add_adapter(adapter.name, layer);
  return losses;
}

at::Tensor quality_from_losses(const at::Tensor& losses, const QualityCalibration& c) {
  const double span = c.loss_max - c.loss_min;
  const at::Tensor l = losses.to(at::kDouble);
  const at::Tensor score = span > 0 ? at::clamp((c.loss_max - l) / span, 0.0, 1.0) : at::ones_like(l);
  return at::clamp(0.5 + (score - c.threshold), 0.0, 1.0).to(at::kFloat);
}

QualityCalibration calibrate_quality(const at::Tensor& reference_losses, double threshold) {
  LR_CHECK(threshold >= 0 && threshold <= 1, InvalidArgument,
           "petal: option quality_threshold must be in [0, 1], got ", threshold);
  LR_CHECK(reference_losses.numel() > 0, InvalidArgument, "petal: no calibration windows");
  return {reference_losses.min().item<double>(), reference_losses.max().item<double>(), threshold};
}

void score_windows(nn::Model& model, const AttachedAdapter& adapter, const at::Tensor& windows,
                   const QualityCalibration& calibration) {
  set_quality_scores(adapter, quality_from_losses(reference_losses(model, adapter, windows), calibration));
}

double petal_threshold(const AdapterConfig& config) {
  return config.option<double>("quality_threshold", 0.5);
}

int64_t petal_calibration_windows(const AdapterConfig& config) {
  const int64_t n = config.option<int64_t>("quality_windows", 64);
  LR_CHECK(n >= 1, InvalidArgument, "petal: option quality_windows must be >= 1, got ", n);
  return n;
}

void register_petal(Registry<AdapterMethod>& registry) {
  registry.add(
      {"petal",
       "PETALface: two LoRAs mixed per input by a quality weight q (q·hi + (1−q)·lo); "
       "finetune's q: the base model's loss on the window, min-max normalised",
       "Narayan et al., 2025, WACV, arXiv:2412.07771",
       {{"r", "rank of each LoRA (8)"},
        {"lora_alpha", "alpha (8)"},
        {"quality_threshold", "q = clamp(0.5 + score - threshold, 0, 1), as the authors' code (0.5)"},
        {"quality_windows", "training windows whose base-model losses fix L_min, L_max (64)"}}},
      {"LOWRANK_PETAL", create_petal, load_petal, {}, false});
}

}  // namespace lowrank::adapt
