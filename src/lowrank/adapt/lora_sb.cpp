// LoRA-SB: LoRA-XS's adapter initialised from the first full fine-tuning update; see lora_sb.h.
#include "lowrank/adapt/lora_sb.h"

#include "lowrank/adapt/methods.h"
#include "lowrank/core/error.h"

namespace lowrank::adapt {
namespace {

std::shared_ptr<TrainableAdapter> create_lora_sb(const LayerSpec& spec, const nn::BaseOperator& base) {
  LR_CHECK(spec.r <= std::min(base.in_features(), base.out_features()), InvalidArgument, "module ",
           spec.module, ": rank ", spec.r,
           " exceeds min(in, out) = ", std::min(base.in_features(), base.out_features()));
  LR_CHECK(spec.gradient.defined(), InvalidArgument, "lora_sb: module ", spec.module,
           " has no gradient for its initialisation");
  LR_CHECK(spec.gradient.dim() == 2 && spec.gradient.size(0) == base.out_features() &&
               spec.gradient.size(1) == base.in_features(),
           InvalidArgument, "lora_sb: the gradient of ", spec.module, " has shape ", spec.gradient.sizes(),
           ", expected [", base.out_features(), ", ", base.in_features(), "]");
  const AdapterConfig& c = *spec.config;
  const double lr = c.option<double>("init_lr", 5e-5);
  LR_CHECK(lr > 0, InvalidArgument, "lora_sb: option init_lr must be > 0, got ", lr);
  const std::string update = c.option<std::string>("update", "sign");
  LR_CHECK(update == "sign" || update == "gradient", InvalidArgument,
           "lora_sb: option update must be \"sign\" (-init_lr * sign(G), official) or \"gradient\" "
           "(-init_lr * G), got \"",
           update, "\"");

  const at::Tensor g = spec.gradient.detach().to(at::kCPU, at::kFloat);
  const at::Tensor delta = (update == "sign" ? at::sign(g) : g) * -lr;
  auto [u, s, vh] = at::linalg_svd(delta, /*full_matrices=*/false);
  at::Tensor b = u.slice(1, 0, spec.r);
  at::Tensor a = vh.slice(0, 0, spec.r);
  // R = diag(S_r) without a 1/s factor, and the base is not compensated (initialization_utils.py).
  at::Tensor r = at::diag(s.slice(0, 0, spec.r));
  return std::make_shared<BraAdapter>("lora_sb", a.to(spec.device, spec.dtype).contiguous(),
                                      b.to(spec.device, spec.dtype).contiguous(),
                                      r.to(spec.device, spec.dtype).contiguous(), spec.scaling);
}

std::shared_ptr<TrainableAdapter> load_lora_sb(const LayerSpec& spec, const nn::BaseOperator& base,
                                               const TensorMap& tensors, std::string_view what) {
  return load_bra("lora_sb", spec, base, tensors, what);
}

}  // namespace

void register_lora_sb(Registry<AdapterMethod>& registry) {
  AdapterMethod method{"LOWRANK_LORA_SB", create_lora_sb, load_lora_sb, {}};
  method.needs_gradient = true;
  registry.add({"lora_sb",
                "LoRA-XS form initialised from the SVD of full fine-tuning's first update",
                "Ponkshe et al., 2024, arXiv:2411.19557",
                {{"r", "rank (8); r*r trained parameters per slot"},
                 {"lora_alpha",
                  "alpha (8); s = alpha/r and R = diag(S_r), so the adapter starts at s times the "
                  "truncated first step (the official scripts set alpha = r)"},
                 {"update",
                  "\"sign\": dW = -init_lr*sign(G) (AdamW's first step, official), \"gradient\": -init_lr*G"},
                 {"init_lr", "the first step's learning rate in dW (5e-5)"},
                 {"init_batches", "batches whose gradients are summed into G (8; finetune)"}}},
               std::move(method));
}

}  // namespace lowrank::adapt
