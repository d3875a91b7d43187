// SoRA; the equations and the deviations from the official code are in sora.h.
#include "lowrank/adapt/sora.h"

#include "lowrank/adapt/methods.h"
#include "lowrank/core/error.h"

namespace lowrank::adapt {

SoraAdapter::SoraAdapter(at::Tensor a, at::Tensor b, at::Tensor gate, double scaling, double sparse_lambda,
                         bool threshold_by_lr)
    : a_(std::move(a)),
      b_(std::move(b)),
      gate_(std::move(gate)),
      scaling_(scaling),
      lambda_(sparse_lambda),
      threshold_by_lr_(threshold_by_lr) {
  LR_CHECK(a_.dim() == 2 && b_.dim() == 2 && a_.size(0) == b_.size(1), InvalidArgument, "sora: A ",
           a_.sizes(), " and B ", b_.sizes(), " do not form B·A");
  LR_CHECK(gate_.dim() == 1 && gate_.size(0) == a_.size(0), InvalidArgument, "sora: gate ", gate_.sizes(),
           " does not match rank ", a_.size(0));
}

at::Tensor SoraAdapter::compute_delta(const at::Tensor& x, const at::Tensor&, const nn::BaseOperator&) const {
  return at::linear(at::linear(x, a_) * gate_, b_) * scaling_;
}

at::Tensor SoraAdapter::delta_weight(const nn::BaseOperator&) const {
  return at::matmul(b_ * gate_.unsqueeze(0), a_) * scaling_;
}

std::optional<nn::LowRankDelta> SoraAdapter::low_rank_delta() const {
  if (dropout_active()) return std::nullopt;
  return nn::LowRankDelta{gate_.unsqueeze(1) * a_, b_, scaling_ * weight()};
}

at::Tensor SoraAdapter::soft_threshold(const at::Tensor& v, double t) {
  return at::sign(v) * at::clamp_min(at::abs(v) - t, 0.0);
}

void SoraAdapter::after_step(int64_t, double lr) {
  const double t = threshold_by_lr_ ? lr * lambda_ : lambda_;
  if (t <= 0) return;
  at::NoGradGuard no_grad;
  gate_.copy_(soft_threshold(gate_, t));
}

int64_t SoraAdapter::active_ranks() const {
  return at::count_nonzero(gate_).item<int64_t>();
}

std::shared_ptr<TrainableAdapter> SoraAdapter::finalize() const {
  at::NoGradGuard no_grad;
  at::Tensor keep = at::nonzero(gate_.detach().ne(0)).squeeze(1).to(a_.device());
  // A LoRA file cannot hold rank 0: an all-zero gate keeps its first rank, whose B column
  // becomes zero once the gate is folded in.
  if (keep.numel() == 0) keep = at::zeros({1}, at::TensorOptions(at::kLong).device(a_.device()));
  const at::Tensor g = gate_.detach().index_select(0, keep);
  at::Tensor a = a_.detach().index_select(0, keep).contiguous();
  at::Tensor b = (b_.detach().index_select(1, keep) * g.unsqueeze(0)).contiguous();
  auto out = std::make_shared<LoraAdapter>(a, b, scaling_);
  out->set_weight(weight());
  return out;
}

namespace {

struct SoraOptions {
  double lambda;
  bool by_lr;
};

SoraOptions sora_options(const AdapterConfig& c) {
  const double lambda = c.option<double>("sparse_lambda", 1e-3);
  LR_CHECK(lambda >= 0, InvalidArgument, "sora: option sparse_lambda must be >= 0, got ", lambda);
  const std::string mode = c.option<std::string>("sparse_threshold", "constant");
  LR_CHECK(mode == "lr" || mode == "constant", InvalidArgument,
           "sora: option sparse_threshold must be \"constant\" (t = sparse_lambda, official) or \"lr\" (t = "
           "lr * sparse_lambda, paper eq. 3), got \"",
           mode, "\"");
  return {lambda, mode == "lr"};
}

std::shared_ptr<TrainableAdapter> create_sora(const LayerSpec& spec, const nn::BaseOperator& base) {
  LR_CHECK(spec.r <= std::min(base.in_features(), base.out_features()), InvalidArgument, "module ",
           spec.module, ": rank ", spec.r,
           " exceeds min(in, out) = ", std::min(base.in_features(), base.out_features()));
  const SoraOptions o = sora_options(*spec.config);
  at::Generator gen = slot_generator(spec);
  at::Tensor a = kaiming_uniform(spec.r, base.in_features(), spec, gen);
  at::Tensor b = at::zeros({base.out_features(), spec.r}, at::TensorOptions(spec.dtype).device(spec.device));
  at::Tensor gate = at::empty({spec.r}, at::kFloat);
  gate.normal_(0.0, 1.0, gen);
  return std::make_shared<SoraAdapter>(a, b, gate.to(spec.device, spec.dtype), spec.scaling, o.lambda,
                                       o.by_lr);
}

std::shared_ptr<TrainableAdapter> load_sora(const LayerSpec& spec, const nn::BaseOperator& base,
                                            const TensorMap& tensors, std::string_view what) {
  const SoraOptions o = sora_options(*spec.config);
  std::shared_ptr<LoraAdapter> lora = load_lora(spec, base, tensors, what);
  at::Tensor gate = expect_tensor(tensors, "lora_gate", {spec.r}, spec, what);
  return std::make_shared<SoraAdapter>(lora->a(), lora->b(), gate, spec.scaling, o.lambda, o.by_lr);
}

// Finalized SoRA layers are plain LoRAs: the file is PEFT's LORA, without SoRA's options.
AdapterConfig sora_export_config(const AdapterConfig& c) {
  AdapterConfig out = c;
  out.peft_type = "LORA";
  out.method = "lora";
  out.options = Json::object();
  out.init_lora_weights = true;
  return out;
}

}  // namespace

void register_sora(Registry<AdapterMethod>& registry) {
  registry.add({"sora",
                "LoRA with an L1-sparsified gate on its ranks; saved pruned as a plain LoRA",
                "Ding et al., 2023, EMNLP, arXiv:2311.11696",
                {{"r", "initial (largest) rank (8)"},
                 {"lora_alpha", "alpha (8); scaling alpha/r of the initial r, kept after pruning"},
                 {"sparse_lambda",
                  "lambda of the gate's proximal step (1e-3, the official --sparse_lambda_2 default)"},
                 {"sparse_threshold",
                  "\"constant\": threshold lambda every step (official SparseAdamW, default); "
                  "\"lr\": lr*lambda (paper eq. 3)"}}},
               {"LOWRANK_SORA", create_sora, load_sora, sora_export_config});
}

}  // namespace lowrank::adapt
