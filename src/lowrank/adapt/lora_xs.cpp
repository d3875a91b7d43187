// LoRA-XS and the B·R·A adapter LoRA-SB shares; the equations are in lora_xs.h.
#include "lowrank/adapt/lora_xs.h"

#include "lowrank/adapt/methods.h"
#include "lowrank/core/error.h"

namespace lowrank::adapt {

BraAdapter::BraAdapter(std::string_view kind, at::Tensor a, at::Tensor b, at::Tensor r, double scaling)
    : kind_(kind), a_(std::move(a)), b_(std::move(b)), r_(std::move(r)), scaling_(scaling) {
  LR_CHECK(
      a_.dim() == 2 && b_.dim() == 2 && r_.dim() == 2 && r_.size(0) == b_.size(1) && r_.size(1) == a_.size(0),
      InvalidArgument, kind_, ": B ", b_.sizes(), ", R ", r_.sizes(), " and A ", a_.sizes(),
      " do not form B·R·A");
}

at::Tensor BraAdapter::compute_delta(const at::Tensor& x, const at::Tensor&, const nn::BaseOperator&) const {
  return at::linear(at::linear(at::linear(x, a_), r_), b_) * scaling_;
}

at::Tensor BraAdapter::delta_weight(const nn::BaseOperator&) const {
  return at::matmul(b_, at::matmul(r_, a_)) * scaling_;
}

std::optional<nn::LowRankDelta> BraAdapter::low_rank_delta() const {
  if (dropout_active()) return std::nullopt;
  return nn::LowRankDelta{at::matmul(r_, a_), b_, scaling_ * weight()};
}

std::shared_ptr<BraAdapter> load_bra(std::string_view kind, const LayerSpec& spec,
                                     const nn::BaseOperator& base, const TensorMap& tensors,
                                     std::string_view what) {
  at::Tensor a = expect_tensor(tensors, "lora_A.weight", {spec.r, base.in_features()}, spec, what);
  at::Tensor b = expect_tensor(tensors, "lora_B.weight", {base.out_features(), spec.r}, spec, what);
  at::Tensor r = expect_tensor(tensors, "lora_R.weight", {spec.r, spec.r}, spec, what);
  return std::make_shared<BraAdapter>(kind, a, b, r, spec.scaling);
}

namespace {

std::shared_ptr<TrainableAdapter> create_lora_xs(const LayerSpec& spec, const nn::BaseOperator& base) {
  LR_CHECK(spec.r <= std::min(base.in_features(), base.out_features()), InvalidArgument, "module ",
           spec.module, ": rank ", spec.r,
           " exceeds min(in, out) = ", std::min(base.in_features(), base.out_features()));
  const AdapterConfig& c = *spec.config;
  const std::string where = c.option<std::string>("singular_values", "input");
  LR_CHECK(where == "input" || where == "output" || where == "none", InvalidArgument,
           "lora_xs: option singular_values must be \"input\" (on A), \"output\" (on B) or \"none\", got \"",
           where, "\"");
  const std::string r_init = c.option<std::string>("r_init", "gaussian");
  LR_CHECK(r_init == "gaussian" || r_init == "zeros", InvalidArgument,
           "lora_xs: option r_init must be \"gaussian\" or \"zeros\", got \"", r_init, "\"");
  const double sigma = c.option<double>("r_init_std", 1e-5);
  LR_CHECK(sigma >= 0, InvalidArgument, "lora_xs: option r_init_std must be >= 0, got ", sigma);

  const at::Tensor w = base.dense_weight().detach().to(at::kCPU, at::kFloat);
  auto [u, s, vh] = at::linalg_svd(w, /*full_matrices=*/false);
  const at::Tensor s_r = s.slice(0, 0, spec.r);
  at::Tensor b = u.slice(1, 0, spec.r);
  at::Tensor a = vh.slice(0, 0, spec.r);
  if (where == "input") a = s_r.unsqueeze(1) * a;
  if (where == "output") b = b * s_r.unsqueeze(0);
  at::Tensor r = at::zeros({spec.r, spec.r}, at::kFloat);
  if (r_init == "gaussian") {
    at::Generator gen = slot_generator(spec);
    r.normal_(0.0, sigma, gen);
  }
  return std::make_shared<BraAdapter>("lora_xs", a.to(spec.device, spec.dtype).contiguous(),
                                      b.to(spec.device, spec.dtype).contiguous(),
                                      r.to(spec.device, spec.dtype), spec.scaling);
}

std::shared_ptr<TrainableAdapter> load_lora_xs(const LayerSpec& spec, const nn::BaseOperator& base,
                                               const TensorMap& tensors, std::string_view what) {
  return load_bra("lora_xs", spec, base, tensors, what);
}

}  // namespace

void register_lora_xs(Registry<AdapterMethod>& registry) {
  registry.add(
      {"lora_xs",
       "Frozen SVD factors of W around a trained r x r matrix: s*B R A",
       "Bałazy et al., 2024, arXiv:2405.17604",
       {{"r", "rank (8); r*r trained parameters per slot"},
        {"lora_alpha", "alpha (8); scaling alpha/r"},
        {"singular_values", "\"input\": A = S_r V_r^T (official), \"output\": B = U_r S_r, \"none\""},
        {"r_init", "\"gaussian\" N(0, r_init_std^2) (official), \"zeros\""},
        {"r_init_std", "std of R's Gaussian initialisation (1e-5)"}}},
      {"LOWRANK_LORA_XS", create_lora_xs, load_lora_xs, {}});
}

}  // namespace lowrank::adapt
