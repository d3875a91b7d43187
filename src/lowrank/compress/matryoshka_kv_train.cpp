// MatryoshkaKV's Cayley-parametrised Matryoshka distillation; see matryoshka_kv_train.h.
#include "lowrank/compress/matryoshka_kv_train.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <utility>

#include "lowrank/core/error.h"
#include "lowrank/core/log.h"
#include "lowrank/core/random.h"
#include "lowrank/nn/attention.h"

namespace lowrank::compress {

namespace {

at::Tensor identity_like(const at::Tensor& x) {
  return at::eye(x.size(-1), x.options()).expand(x.sizes());
}

void remove_kv_compression(nn::Model& model) {
  for (int64_t l = 0; l < model.config().num_hidden_layers; ++l)
    model.attention(l)->set_kv_compression(nullptr);
}

// kl_weight · Σ_v p_T (log p_T − log p_S) + ce_weight · CE, both averaged over positions.
at::Tensor objective(const at::Tensor& student_logits, const at::Tensor& teacher_log_probs,
                     const at::Tensor& labels, const MatryoshkaTrainOptions& o) {
  const at::Tensor log_probs = at::log_softmax(student_logits.to(at::kFloat), -1);
  const int64_t positions = log_probs.size(0) * log_probs.size(1);
  const at::Tensor kl =
      (teacher_log_probs.exp() * (teacher_log_probs - log_probs)).sum() / static_cast<double>(positions);
  const at::Tensor ce =
      at::nll_loss(log_probs.reshape({positions, log_probs.size(2)}), labels.reshape({positions}));
  return kl * o.kl_weight + ce * o.ce_weight;
}

at::Tensor teacher_log_probs(nn::Model& model, const at::Tensor& input) {
  remove_kv_compression(model);
  at::NoGradGuard no_grad;
  return at::log_softmax(model.forward(input).to(at::kFloat), -1);
}

}  // namespace

at::Tensor cayley(const at::Tensor& x) {
  const at::Tensor a = x - x.transpose(-2, -1);
  const at::Tensor i = identity_like(a);
  return at::linalg_solve(i - a * 0.5, i + a * 0.5);
}

at::Tensor inverse_cayley(const at::Tensor& u) {
  const at::Tensor i = identity_like(u);
  // (U − I)(U + I)⁻¹ = ((U + I)⁻ᵀ (U − I)ᵀ)ᵀ
  const at::Tensor plus = u + i;
  const double smallest = at::linalg_svdvals(plus).min().item<double>();
  LR_CHECK(
      smallest > 1e-8, InvalidArgument,
      "matryoshka_kv: an initial basis has eigenvalue -1, outside the Cayley map's range (smallest singular "
      "value of U + I: ",
      smallest, ")");
  return at::linalg_solve(plus.transpose(-2, -1), (u - i).transpose(-2, -1)).transpose(-2, -1);
}

MatryoshkaTrainOptions matryoshka_train_options(const Json& method_options) {
  MatryoshkaTrainOptions o;
  LR_CHECK(method_options.is_object(), InvalidArgument, "--method-options ", method_options.dump(),
           " must be a JSON object");
  static const char* kKeys[] = {"train_steps", "lr",   "batch_size", "kl_weight",
                                "ce_weight",   "seed", "rank_search"};
  for (const auto& [key, value] : method_options.items()) {
    bool known = false;
    for (const char* k : kKeys) known = known || key == k;
    LR_CHECK(known, InvalidArgument, "--method-options: method matryoshka_kv has no option \"", key,
             "\" (it takes: train_steps, lr, batch_size, kl_weight, ce_weight, seed, rank_search)");
  }
  try {
    o.steps = method_options.value("train_steps", o.steps);
    o.lr = method_options.value("lr", o.lr);
    o.batch_size = method_options.value("batch_size", o.batch_size);
    o.kl_weight = method_options.value("kl_weight", o.kl_weight);
    o.ce_weight = method_options.value("ce_weight", o.ce_weight);
    o.seed = method_options.value("seed", o.seed);
    o.rank_search = method_options.value("rank_search", o.rank_search);
  } catch (const std::exception& e) {
    throw InvalidArgument(str("--method-options ", method_options.dump(), ": ", e.what()));
  }
  LR_CHECK(o.steps >= 0, InvalidArgument, "--method-options: train_steps ", o.steps, " must be >= 0");
  LR_CHECK(std::isfinite(o.lr) && o.lr > 0, InvalidArgument, "--method-options: lr ", o.lr, " must be > 0");
  LR_CHECK(o.batch_size >= 1, InvalidArgument, "--method-options: batch_size ", o.batch_size,
           " must be >= 1");
  LR_CHECK(o.kl_weight >= 0 && o.ce_weight >= 0 && o.kl_weight + o.ce_weight > 0, InvalidArgument,
           "--method-options: kl_weight ", o.kl_weight, " and ce_weight ", o.ce_weight,
           " must be >= 0, not both 0");
  return o;
}

std::vector<MatryoshkaKVLayer> greedy_rank_search(
    std::vector<MatryoshkaKVLayer> layers, int64_t budget, int64_t step,
    const std::function<double(const std::vector<MatryoshkaKVLayer>&)>& objective) {
  LR_CHECK(step >= 1, InvalidArgument, "matryoshka_kv rank search: step ", step, " must be >= 1");
  int64_t total = 0, heads = 0;
  for (MatryoshkaKVLayer& l : layers) {
    const int64_t D = l.key_basis.size(-1);
    std::fill(l.key_ranks.begin(), l.key_ranks.end(), D);
    std::fill(l.value_ranks.begin(), l.value_ranks.end(), D);
    total += D * static_cast<int64_t>(l.key_ranks.size() + l.value_ranks.size());
    heads += static_cast<int64_t>(l.key_ranks.size() + l.value_ranks.size());
  }
  LR_CHECK(budget >= heads, InvalidArgument, "matryoshka_kv rank search: a budget of ", budget,
           " ranks is below one per head and K/V (", heads, ")");
  while (total > budget) {
    double best = std::numeric_limits<double>::infinity();
    int64_t* chosen = nullptr;
    int64_t lowered = 0;
    for (MatryoshkaKVLayer& l : layers)
      for (size_t h = 0; h < l.key_ranks.size(); ++h)
        for (int64_t* rank : {&l.key_ranks[h], &l.value_ranks[h]}) {
          if (*rank <= 1) continue;
          const int64_t kept = *rank;
          *rank = std::max<int64_t>(1, kept - step);
          const double value = objective(layers);
          if (value < best) {
            best = value;
            chosen = rank;
            lowered = *rank;
          }
          *rank = kept;
        }
    total -= *chosen - lowered;
    *chosen = lowered;
  }
  return layers;
}

double matryoshka_kv_loss(nn::Model& model, const std::vector<MatryoshkaKVLayer>& layers,
                          const at::Tensor& windows, const MatryoshkaTrainOptions& options) {
  const at::Tensor input = windows.narrow(1, 0, windows.size(1) - 1).to(model.device());
  const at::Tensor labels = windows.narrow(1, 1, windows.size(1) - 1).to(model.device());
  const at::Tensor teacher = teacher_log_probs(model, input);
  install_kv_compression(model, layers);
  at::NoGradGuard no_grad;
  const double loss = objective(model.forward(input), teacher, labels, options).item<double>();
  remove_kv_compression(model);
  return loss;
}

std::vector<MatryoshkaKVLayer> train_matryoshka_kv(nn::Model& model,
                                                   const std::vector<MatryoshkaKVLayer>& layers,
                                                   const at::Tensor& windows,
                                                   const MatryoshkaTrainOptions& options,
                                                   std::vector<double>* losses) {
  LR_CHECK(windows.dim() == 2 && windows.size(0) >= 1 && windows.size(1) >= 2, InvalidArgument,
           "matryoshka_kv training: windows of shape ", windows.sizes(),
           ", expected [N >= 1, seq_len + 1 >= 2]");
  const int64_t D = model.config().head_dim;
  const int64_t n_kv = model.config().num_key_value_heads;
  // The trained tensors: per layer X_K, X_V (Cayley), μ_K, μ_V.
  std::vector<at::Tensor> params;
  for (const MatryoshkaKVLayer& l : layers)
    for (const at::Tensor& t :
         {inverse_cayley(l.key_basis.to(at::kDouble)), inverse_cayley(l.value_basis.to(at::kDouble)),
          l.key_mean.to(at::kDouble), l.value_mean.to(at::kDouble)})
      params.push_back(t.detach().clone().set_requires_grad(true));
  std::vector<at::Tensor> first, second;
  for (const at::Tensor& p : params) {
    first.push_back(at::zeros_like(p));
    second.push_back(at::zeros_like(p));
  }
  auto current = [&](bool draw, int64_t step) {
    std::vector<MatryoshkaKVLayer> out;
    for (size_t l = 0; l < layers.size(); ++l) {
      MatryoshkaKVLayer layer;
      layer.key_basis = cayley(params[4 * l]);
      layer.value_basis = cayley(params[4 * l + 1]);
      layer.key_mean = params[4 * l + 2];
      layer.value_mean = params[4 * l + 3];
      layer.key_ranks = layers[l].key_ranks;
      layer.value_ranks = layers[l].value_ranks;
      if (draw)  // a rank per (layer, head, K/V): one of D/8, 2D/8, …, D
        for (int64_t h = 0; h < n_kv; ++h)
          for (int kv = 0; kv < 2; ++kv) {
            const uint64_t counter = ((static_cast<uint64_t>(step) * layers.size() + l) * n_kv + h) * 2 + kv;
            const auto eighth = static_cast<int64_t>(splitmix64(options.seed ^ splitmix64(counter)) % 8) + 1;
            (kv == 0 ? layer.key_ranks : layer.value_ranks)[h] = std::max<int64_t>(1, eighth * D / 8);
          }
      out.push_back(std::move(layer));
    }
    return out;
  };
  const double beta1 = 0.9, beta2 = 0.999, eps = 1e-8;
  for (int64_t step = 0; step < options.steps; ++step) {
    std::vector<at::Tensor> rows;
    for (int64_t i = 0; i < options.batch_size; ++i)
      rows.push_back(windows[(step * options.batch_size + i) % windows.size(0)]);
    const at::Tensor batch = at::stack(rows).to(model.device());
    const at::Tensor input = batch.narrow(1, 0, batch.size(1) - 1);
    const at::Tensor labels = batch.narrow(1, 1, batch.size(1) - 1);
    const at::Tensor teacher = teacher_log_probs(model, input);
    install_kv_compression(model, current(true, step));
    const at::Tensor loss = objective(model.forward(input), teacher, labels, options);
    loss.backward();
    if (losses) losses->push_back(loss.item<double>());
    at::NoGradGuard no_grad;
    std::vector<at::Tensor> grads;
    for (at::Tensor& p : params) grads.push_back(std::exchange(p.mutable_grad(), at::Tensor()));
    const double t = static_cast<double>(step + 1);
    for (size_t i = 0; i < params.size(); ++i) {
      first[i].mul_(beta1).add_(grads[i], 1 - beta1);
      second[i].mul_(beta2).addcmul_(grads[i], grads[i], 1 - beta2);
      const at::Tensor m = first[i] / (1 - std::pow(beta1, t));
      const at::Tensor v = second[i] / (1 - std::pow(beta2, t));
      params[i].sub_(m / (v.sqrt() + eps) * options.lr);
    }
  }
  remove_kv_compression(model);
  std::vector<MatryoshkaKVLayer> trained;
  at::NoGradGuard no_grad;
  for (MatryoshkaKVLayer& l : current(false, 0)) {
    l.key_basis = l.key_basis.detach();
    l.value_basis = l.value_basis.detach();
    l.key_mean = l.key_mean.detach().clone();
    l.value_mean = l.value_mean.detach().clone();
    trained.push_back(std::move(l));
  }
  return trained;
}

}  // namespace lowrank::compress
