// SOFT's softmax-free attention; see soft.h.
#include "lowrank/mix/soft.h"

#include <torch/csrc/autograd/custom_function.h>

#include <cmath>

#include "lowrank/core/error.h"
#include "lowrank/mix/graph_free.h"
#include "lowrank/mix/mixer_options.h"
#include "lowrank/nn/config.h"

namespace lowrank::mix {

namespace {

const OptionHelp& soft_option_help() {
  static const OptionHelp help = {
      {"sr_ratio",
       "s: landmarks by an s x s stride-s conv of the query grid, m = n / s^2; the grid's sides must be "
       "divisible by s (default 2)"},
      {"use_conv", "add a depthwise 3x3 conv of V, one kernel per head (default true)"},
      {"normalize", "symmetric normalisation D NR(Bm) D, D = diag(Bm 1)^-1/2 (default false)"},
      {"newton_iters", "Newton-Raphson iterations of the landmark kernel's inverse (default 20)"}};
  return help;
}

// ‖a_i − b_j‖² as ‖a_i‖² + ‖b_j‖² − 2 a_i·b_j (the authors' "torch" kernel path): [..., n, m].
at::Tensor squared_distances(const at::Tensor& a, const at::Tensor& b) {
  const at::Tensor a2 = a.pow(2).sum(-1, /*keepdim=*/true);
  const at::Tensor b2 = b.pow(2).sum(-1).unsqueeze(-2);
  return a2 + b2 - 2 * at::matmul(a, b.transpose(-1, -2));
}

at::Tensor gaussian_kernel(const at::Tensor& a, const at::Tensor& b) {
  if (!keeps_no_graph({a, b})) return at::exp(squared_distances(a, b) * -0.5);
  // No graph to keep: exp(a·b − ‖a‖²/2 − ‖b‖²/2) with the [..., n, m] tensor updated in place.
  at::Tensor k = at::matmul(a, b.transpose(-1, -2));
  k.sub_(a.square().sum(-1, /*keepdim=*/true).mul_(0.5));
  k.sub_(b.square().sum(-1).unsqueeze(-2).mul_(0.5));
  return k.exp_();
}

at::Tensor newton_iterate(const at::Tensor& mat, int64_t iters, double ridge, bool backoff) {
  const int64_t m = mat.size(-1);
  const at::Tensor eye = at::eye(m, mat.options());
  const at::Tensor p = ridge != 0 ? mat + ridge * eye : mat;
  at::Tensor v;
  if (!backoff) {
    // α per matrix: 0.9 · 2 / (largest row sum)² (newton_inv).
    const at::Tensor alpha = 1.8 / std::get<0>(mat.sum(-1).max(-1)).pow(2);
    v = alpha.unsqueeze(-1).unsqueeze(-1) * p;
  } else {
    // The normalised variant: one α for the whole batch, halved until ‖I − P V₀‖₁ ≤ 1.01 (at most
    // 10 times), the 1-norm being the largest absolute column sum.
    double alpha = 2.0 / std::pow(mat.sum(-1).max().item<double>(), 2);
    v = alpha * p;
    for (int tries = 0; tries < 10; ++tries) {
      const double norm = (eye - at::matmul(p, v)).abs().sum(-2).max().item<double>();
      if (norm <= 1.01) break;
      alpha *= 0.5;
      v = alpha * p;
    }
  }
  for (int64_t i = 0; i < iters; ++i) v = 2 * v - at::matmul(at::matmul(v, p), v);
  return v;
}

// The inverse with its one-step analytic backward (_NewtonInverseKernel).
struct NewtonInverseFunction : torch::autograd::Function<NewtonInverseFunction> {
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& mat, int64_t iters,
                            double ridge, bool backoff) {
    at::Tensor v;
    {
      at::NoGradGuard no_grad;
      // Half-precision iterations lose the inverse; they run in float32.
      const bool reduced = mat.scalar_type() == at::kHalf || mat.scalar_type() == at::kBFloat16;
      v = newton_iterate(reduced ? mat.to(at::kFloat) : mat, iters, ridge, backoff).to(mat.scalar_type());
    }
    ctx->save_for_backward({v});
    return v;
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const at::Tensor vt = ctx->get_saved_variables()[0].transpose(-1, -2);
    return {-at::matmul(at::matmul(vt, grads[0]), vt), at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

}  // namespace

at::Tensor newton_inverse(const at::Tensor& mat, int64_t iters, double ridge, bool backoff) {
  LR_CHECK(mat.dim() >= 2 && mat.size(-1) == mat.size(-2), InvalidArgument,
           "newton_inverse: need square matrices [..., m, m], got ", mat.sizes());
  return NewtonInverseFunction::apply(mat, iters, ridge, backoff);
}

at::Tensor soft_nystrom(const at::Tensor& q, const at::Tensor& landmarks, const at::Tensor& v, int64_t iters,
                        bool normalize, double ridge) {
  const at::Tensor a = gaussian_kernel(q, landmarks);           // [..., n, m]
  const at::Tensor bm = gaussian_kernel(landmarks, landmarks);  // [..., m, m]
  at::Tensor inv;
  if (normalize) {
    const at::Tensor d = bm.sum(-1, /*keepdim=*/true).rsqrt();  // [..., m, 1]
    inv = d * newton_inverse(bm, iters, 0.0, /*backoff=*/true) * d.transpose(-1, -2);
  } else {
    inv = newton_inverse(bm, iters, ridge);
  }
  // A (B⁺ (Aᵀ V)): the same product as the reference's (A B⁺)(Aᵀ V), associated so that no n×m×m
  // product is formed (2·n·m·d + m²·d multiply-adds instead of n·m² + 2·n·m·d).
  return at::matmul(a, at::matmul(inv, at::matmul(a.transpose(-1, -2), v)));
}

SoftOptions soft_options(const nn::MixerSpec& spec) {
  const Json& o = spec.options;
  check_option_keys("soft", o, soft_option_help());
  const std::string what = "mixer soft";
  SoftOptions out;
  out.sr_ratio = json_get_or<int64_t>(o, "sr_ratio", out.sr_ratio, what);
  out.use_conv = json_get_or<bool>(o, "use_conv", out.use_conv, what);
  out.normalize = json_get_or<bool>(o, "normalize", out.normalize, what);
  out.newton_iters = json_get_or<int64_t>(o, "newton_iters", out.newton_iters, what);
  LR_CHECK(out.sr_ratio >= 1, InvalidArgument, what, ": sr_ratio must be >= 1, got ", out.sr_ratio);
  LR_CHECK(out.newton_iters >= 1, InvalidArgument, what, ": newton_iters must be >= 1, got ",
           out.newton_iters);
  return out;
}

Soft::Soft(const nn::MixerSpec& spec)
    : options_(soft_options(spec)),
      prefix_(spec.prefix),
      num_heads_(spec.config.num_attention_heads),
      head_dim_(spec.config.head_dim),
      q_proj_(spec.prefix + ".q_proj", spec.projection(spec.prefix + ".q_proj", num_heads_ * head_dim_,
                                                       spec.config.hidden_size, true)),
      v_proj_(spec.prefix + ".v_proj", spec.projection(spec.prefix + ".v_proj", num_heads_ * head_dim_,
                                                       spec.config.hidden_size, true)),
      o_proj_(spec.prefix + ".o_proj", spec.projection(spec.prefix + ".o_proj", spec.config.hidden_size,
                                                       num_heads_ * head_dim_, true)) {
  const int64_t d = head_dim_, s = options_.sr_ratio;
  landmark_conv_ = spec.tensor(prefix_ + ".landmark_conv.weight", {d, d, s, s}, nn::ParamInit::kNormal, {});
  landmark_norm_w_ = spec.tensor(prefix_ + ".landmark_norm.weight", {d}, nn::ParamInit::kOnes, {});
  landmark_norm_b_ = spec.tensor(prefix_ + ".landmark_norm.bias", {d}, nn::ParamInit::kZeros, {});
  if (options_.use_conv)
    v_conv_ = spec.tensor(prefix_ + ".v_conv.weight", {num_heads_, 1, 3, 3}, nn::ParamInit::kNormal, {});
}

nn::NamedTensors Soft::tensors() const {
  nn::NamedTensors out{{prefix_ + ".landmark_conv.weight", landmark_conv_},
                       {prefix_ + ".landmark_norm.weight", landmark_norm_w_},
                       {prefix_ + ".landmark_norm.bias", landmark_norm_b_}};
  if (v_conv_.defined()) out.emplace_back(prefix_ + ".v_conv.weight", v_conv_);
  return out;
}

at::Tensor Soft::forward(const at::Tensor& x, const nn::MixerContext& context) const {
  const int64_t B = x.size(0), T = x.size(1), d = head_dim_, h = num_heads_, s = options_.sr_ratio;
  LR_CHECK(context.grid.has_value(), InvalidArgument,
           "mixer soft needs the 2-D grid of its positions (an image model); this input has none");
  const int64_t gh = context.grid->height, gw = context.grid->width;
  LR_CHECK(gh * gw == T, InvalidArgument, "mixer soft: grid ", gh, "x", gw, " does not hold the ", T,
           " positions");
  LR_CHECK(gh % s == 0 && gw % s == 0, InvalidArgument, "mixer soft: grid ", gh, "x", gw,
           " is not divisible by sr_ratio = ", s);
  LR_CHECK(!context.valid.defined() || context.valid.all().item<bool>(), InvalidArgument,
           "mixer soft: padded positions are not supported (the grid must be full)");
  const nn::LinearSlot* qv[] = {&q_proj_, &v_proj_};
  const std::vector<at::Tensor> p = nn::LinearSlot::forward_shared_input(qv, x, context.routing);
  // [B, T, h·d] -> [B, h, T, d]; Q = K scaled by d^{-1/4}.
  const at::Tensor q = p[0].reshape({B, T, h, d}).transpose(1, 2) / std::pow(static_cast<double>(d), 0.25);
  const at::Tensor v = p[1].reshape({B, T, h, d}).transpose(1, 2);
  // Landmarks: each head's queries as a d-channel image, one conv for all heads.
  const at::Tensor image = q.reshape({B * h, gh, gw, d}).permute({0, 3, 1, 2});
  at::Tensor landmarks = at::conv2d(image, landmark_conv_, {}, {s, s});  // [B·h, d, gh/s, gw/s]
  landmarks = landmarks.flatten(2).transpose(1, 2).reshape({B, h, -1, d});
  landmarks = at::gelu(at::layer_norm(landmarks, {d}, landmark_norm_w_, landmark_norm_b_, 1e-5));
  at::Tensor out = soft_nystrom(q, landmarks, v, options_.newton_iters, options_.normalize);
  if (v_conv_.defined()) {
    // Depthwise over heads: [B, h, T, d] -> [B·d, h, gh, gw], one 3×3 kernel per head.
    const at::Tensor vi = v.reshape({B, h, gh, gw, d}).permute({0, 4, 1, 2, 3}).reshape({B * d, h, gh, gw});
    const at::Tensor conv = at::conv2d(vi, v_conv_, {}, 1, 1, 1, h);
    out = out + conv.reshape({B, d, h, gh, gw}).flatten(3).permute({0, 2, 3, 1});
  }
  return o_proj_.forward(out.transpose(1, 2).reshape({B, T, h * d}), context.routing);
}

void register_soft(nn::MixerRegistry& registry) {
  registry.add({"soft",
                "SOFT: softmax-free attention, a Gaussian kernel of tied queries and keys by Nystrom over "
                "conv landmarks with a Newton-Raphson inverse; 2-D grids, bidirectional",
                "Lu et al., 2021, NeurIPS, arXiv:2110.11945", soft_option_help()},
               [](const nn::MixerSpec& spec) -> std::unique_ptr<nn::TokenMixer> {
                 return std::make_unique<Soft>(spec);
               });
}

}  // namespace lowrank::mix
