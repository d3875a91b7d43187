// VQ-TTT: the spectral filter, LoRA on the shallow layers, entropy minimisation; see vq_ttt.h.
#include "lowrank/adapt/vq_ttt.h"

#include <ATen/CPUGeneratorImpl.h>

#include <charconv>
#include <cmath>
#include <string_view>

#include "lowrank/core/error.h"
#include "lowrank/nn/image_classifier.h"
#include "lowrank/optim/adamw.h"

namespace lowrank::adapt {

namespace {

// Whether a slot belongs to one of the first `layers` layers: its name is "model.layers.<i>.…"
// with i < layers.
bool in_first_layers(std::string_view name, int64_t layers) {
  constexpr std::string_view kPrefix = "model.layers.";
  if (!name.starts_with(kPrefix)) return false;
  const char* end = name.data() + name.size();
  int64_t i = 0;
  const auto [p, ec] = std::from_chars(name.data() + kPrefix.size(), end, i);
  return ec == std::errc() && p != end && *p == '.' && i < layers;
}

constexpr const char* kAdapterName = "vq_ttt";

}  // namespace

std::pair<at::Tensor, at::Tensor> SpectralFilter::identity_factors(int64_t height, int64_t width,
                                                                   int64_t rank, uint64_t seed) {
  LR_CHECK(height >= 1 && width >= 1 && rank >= 1, InvalidArgument,
           "vq_ttt filter: need a positive size and rank, got ", height, "x", width, " and rank ", rank);
  at::Generator gen = at::detail::createCPUGenerator(seed);
  at::Tensor u = at::randn({rank, height / 2 + 1}, gen, at::kFloat).mul_(0.01);
  at::Tensor v = at::zeros({rank, width / 2 + 1}, at::kFloat);
  u[0].fill_(1.0);
  v[0].fill_(1.0);
  return {u, v};
}

SpectralFilter::SpectralFilter(int64_t height, int64_t width, int64_t rank, uint64_t seed)
    : SpectralFilter(height, width, identity_factors(height, width, rank, seed)) {}

SpectralFilter::SpectralFilter(int64_t height, int64_t width, std::pair<at::Tensor, at::Tensor> uv)
    : SpectralFilter(height, width, std::move(uv.first), std::move(uv.second)) {}

SpectralFilter::SpectralFilter(int64_t height, int64_t width, at::Tensor u, at::Tensor v)
    : height_(height), width_(width) {
  LR_CHECK(u.dim() == 2 && v.dim() == 2 && u.size(0) == v.size(0) && u.size(0) >= 1 &&
               u.size(1) == height / 2 + 1 && v.size(1) == width / 2 + 1,
           InvalidArgument, "vq_ttt filter: u must be [r, ", height / 2 + 1, "] and v [r, ", width / 2 + 1,
           "] for ", height, "x", width, " images, got ", u.sizes(), " and ", v.sizes());
  u_ = u.detach().clone().requires_grad_(true);
  v_ = v.detach().clone().requires_grad_(true);
  const at::Tensor k = at::arange(height, at::kLong);
  row_index_ = at::minimum(k, height - k);
}

at::Tensor SpectralFilter::response() const {
  // [r, H] (each u_i read at |k|) ᵀ· [r, W/2 + 1]: Σ_i u_i[|k|] v_i[l].
  return at::matmul(u_.index_select(1, row_index_).t(), v_);
}

at::Tensor SpectralFilter::forward(const at::Tensor& images) const {
  LR_CHECK(images.dim() == 4 && images.size(2) == height_ && images.size(3) == width_, InvalidArgument,
           "vq_ttt filter: built for [B, C, ", height_, ", ", width_, "] images, got ", images.sizes());
  const at::Tensor x = images.to(u_.scalar_type());
  const at::Tensor spectrum = at::fft_rfft2(x);
  const at::Tensor y = at::fft_irfft2(spectrum * response(), std::vector<int64_t>{height_, width_});
  return y.to(images.scalar_type());
}

at::Tensor mean_prediction_entropy(const at::Tensor& logits) {
  const at::Tensor log_p = at::log_softmax(logits.to(at::kFloat), -1);
  return -(log_p.exp() * log_p).sum(-1).mean();
}

at::Tensor information_maximisation_loss(const at::Tensor& logits) {
  const at::Tensor mean_p = at::softmax(logits.to(at::kFloat), -1).mean(0);
  const at::Tensor marginal_entropy = -(mean_p * at::log(mean_p.clamp_min(1e-12))).sum();
  return mean_prediction_entropy(logits) - marginal_entropy;
}

VqTtt::VqTtt(nn::ImageClassifier& model, VqTttConfig config)
    : model_(model),
      config_(config),
      filter_(model.config().image_height, model.config().image_width, config.filter_rank, config.seed) {
  const int64_t layers = model.config().num_layers();
  LR_CHECK(config.lora_layers >= 1 && config.lora_layers <= layers, InvalidArgument,
           "vq_ttt: lora_layers must be 1..", layers, " (the model's layers), got ", config.lora_layers);
  LR_CHECK(config.lora_rank >= 1 && config.lora_alpha > 0, InvalidArgument,
           "vq_ttt: lora_rank must be >= 1 and lora_alpha > 0, got ", config.lora_rank, " and ",
           config.lora_alpha);
  LR_CHECK(config.steps >= 0 && config.batch_size >= 1 && config.lr > 0 && std::isfinite(config.lr),
           InvalidArgument, "vq_ttt: need steps >= 0, batch_size >= 1 and lr > 0, got ", config.steps, ", ",
           config.batch_size, " and ", config.lr);
  LR_CHECK(config.objective == "entropy" || config.objective == "infomax", InvalidArgument,
           "vq_ttt: objective must be entropy or infomax, got \"", config.objective, "\"");
  at::Generator gen = at::detail::createCPUGenerator(config.seed + 1);
  std::vector<std::pair<nn::LinearSlot*, std::shared_ptr<LoraAdapter>>> planned;
  for (nn::LinearSlot* slot : model.slots()) {
    LR_CHECK(slot->adapter(kAdapterName) == nullptr, InvalidArgument, "vq_ttt: slot ", slot->name(),
             " already holds an adapter \"", kAdapterName, "\"");
    if (!in_first_layers(slot->name(), config.lora_layers)) continue;
    const int64_t in = slot->in_features(), out = slot->out_features();
    const double bound = 1.0 / std::sqrt(static_cast<double>(in));  // PEFT: kaiming_uniform(a = √5)
    at::Tensor a =
        at::empty({config.lora_rank, in}, at::kFloat).uniform_(-bound, bound, gen).requires_grad_(true);
    at::Tensor b = at::zeros({out, config.lora_rank}, at::kFloat).requires_grad_(true);
    planned.emplace_back(
        slot, std::make_shared<LoraAdapter>(a, b, config.lora_alpha / static_cast<double>(config.lora_rank)));
  }
  LR_CHECK(!planned.empty(), InvalidArgument, "vq_ttt: the first ", config.lora_layers,
           " layers hold no linear slots (model.layers.<i>.*)");
  for (auto& [slot, lora] : planned) {
    slot->add_adapter(kAdapterName, lora);
    lora_slots_.push_back(slot->name());
    loras_.push_back(lora);
  }
}

VqTtt::~VqTtt() {
  for (nn::LinearSlot* slot : model_.slots())
    if (slot->adapter(kAdapterName) != nullptr) slot->remove_adapter(kAdapterName);
}

std::vector<at::Tensor> VqTtt::parameters() const {
  std::vector<at::Tensor> out = filter_.parameters();
  for (const auto& lora : loras_)
    for (const auto& [name, t] : lora->parameters()) out.push_back(t);
  return out;
}

at::Tensor VqTtt::logits(const at::Tensor& images) const {
  return model_.forward(filter_.forward(images));
}

std::vector<double> VqTtt::adapt(const at::Tensor& images) {
  LR_CHECK(images.dim() == 4 && images.size(0) >= 1, InvalidArgument,
           "vq_ttt: adapt takes unlabeled images [N, C, H, W], got ", images.sizes());
  std::vector<at::Tensor> params = parameters();
  std::vector<optim::AdamState> states(params.size());
  optim::AdamConfig adam;
  adam.beta2 = 0.999;  // torch.optim.Adam's default, as TENT uses
  adam.weight_decay = 0;
  at::Generator gen = at::detail::createCPUGenerator(config_.seed + 2);
  const int64_t N = images.size(0), batch = std::min(config_.batch_size, N);
  std::vector<double> losses;
  for (int64_t step = 0; step < config_.steps; ++step) {
    const at::Tensor rows = at::randperm(N, gen, at::kLong).narrow(0, 0, batch);
    for (at::Tensor& p : params)
      if (p.grad().defined()) p.mutable_grad().zero_();
    const at::Tensor batch_logits = logits(images.index_select(0, rows));
    const at::Tensor loss = config_.objective == "infomax" ? information_maximisation_loss(batch_logits)
                                                           : mean_prediction_entropy(batch_logits);
    loss.backward();
    for (size_t i = 0; i < params.size(); ++i)
      if (params[i].grad().defined())
        optim::adam_update(params[i], params[i].grad(), states[i], adam, config_.lr);
    losses.push_back(loss.item<double>());
  }
  return losses;
}

}  // namespace lowrank::adapt
