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
  at::Tensor a_hi = kaiming_uniform(spec.r, base.in_features(), spec, gen);
  at::Tensor a_lo = kaiming_uniform(spec.r, base.in_features(), spec, gen);
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

void register_petal(Registry<AdapterMethod>& registry) {
  registry.add({"petal",
                "PETALface: two LoRAs mixed per input by a quality score q (q·hi + (1−q)·lo)",
                "Narayan et al., 2025, WACV, arXiv:2412.07771",
                {{"r", "rank of each LoRA (8)"}, {"lora_alpha", "alpha (8)"}}},
               {"LOWRANK_PETAL", create_petal, load_petal, {}, false});
}

}  // namespace lowrank::adapt
