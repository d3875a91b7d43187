#include "lowrank/compress/pela.h"

#include <ATen/core/grad_mode.h>

#include <cmath>
#include <set>
#include <utility>

#include "lowrank/compress/operators.h"
#include "lowrank/core/error.h"
#include "lowrank/core/log.h"

namespace lowrank::compress {

namespace fs = std::filesystem;

void PelaOptions::check() const {
  LR_CHECK(alpha >= 0 && std::isfinite(alpha), InvalidArgument, "pela: --alpha ", alpha, " must be >= 0");
  LR_CHECK(beta >= 0 && std::isfinite(beta), InvalidArgument, "pela: --beta ", beta, " must be >= 0");
  LR_CHECK(epsilon >= 0 && std::isfinite(epsilon), InvalidArgument, "pela: epsilon ", epsilon,
           " must be >= 0");
  trainer.validate();
}

const std::set<std::string>& pela_option_keys() {
  static const std::set<std::string> keys = {"epsilon",    "lr",      "min_lr", "warmup_steps",
                                             "batch_size", "seq_len", "seed",   "checkpoint_every",
                                             "stop_after", "run_dir"};
  return keys;
}

PelaOptions PelaOptions::from(double alpha, double beta, int64_t steps, const Json& mo) {
  PelaOptions o;
  o.trainer.steps = 300;
  o.trainer.batch_size = 8;
  o.trainer.seq_len = 128;
  o.trainer.lr = 1e-4;  // ALBEF's configs/Pretrain.yaml
  o.trainer.min_lr = 1e-5;
  o.trainer.warmup_steps = 10;
  o.trainer.adam.weight_decay = 0.02;
  if (alpha >= 0) o.alpha = alpha;
  if (beta >= 0) o.beta = beta;
  if (steps > 0) o.trainer.steps = steps;
  LR_CHECK(mo.is_object(), InvalidArgument, "--method-options ", mo.dump(), " must be a JSON object");
  for (const auto& [key, value] : mo.items()) {
    std::string takes;
    for (const std::string& k : pela_option_keys()) takes += (takes.empty() ? "" : ", ") + k;
    LR_CHECK(pela_option_keys().contains(key), InvalidArgument, "--method-options: pela has no option \"",
             key, "\" (it takes: ", takes, ")");
  }
  const std::string what = "--method-options";
  o.epsilon = json_get_or<double>(mo, "epsilon", o.epsilon, what);
  o.trainer.lr = json_get_or<double>(mo, "lr", o.trainer.lr, what);
  o.trainer.min_lr = json_get_or<double>(mo, "min_lr", std::min(o.trainer.min_lr, o.trainer.lr), what);
  o.trainer.warmup_steps = json_get_or<int64_t>(mo, "warmup_steps", o.trainer.warmup_steps, what);
  o.trainer.batch_size = json_get_or<int64_t>(mo, "batch_size", o.trainer.batch_size, what);
  o.trainer.seq_len = json_get_or<int64_t>(mo, "seq_len", o.trainer.seq_len, what);
  o.trainer.seed = json_get_or<uint64_t>(mo, "seed", o.trainer.seed, what);
  o.trainer.checkpoint_every = json_get_or<int64_t>(mo, "checkpoint_every", o.trainer.checkpoint_every, what);
  o.trainer.stop_after = json_get_or<int64_t>(mo, "stop_after", o.trainer.stop_after, what);
  o.run_dir = json_get_or<std::string>(mo, "run_dir", "", what);
  o.check();
  return o;
}

at::Tensor PelaTerms::total(const PelaOptions& o) const {
  return task + o.alpha * distill + o.beta * perturb;
}

PelaTerms pela_terms(const nn::Model& student, const nn::Model& teacher, const at::Tensor& windows,
                     const std::map<std::string, at::Tensor>& originals, const PelaOptions& options) {
  const int64_t T = windows.size(1) - 1;
  const at::Tensor inputs = windows.slice(1, 0, T).to(student.device());
  const at::Tensor targets = windows.slice(1, 1, T + 1).to(student.device());
  PelaTerms terms;
  std::vector<at::Tensor> hs, ht;
  nn::ForwardOptions fs;
  fs.layer_outputs = &hs;
  const at::Tensor logits = student.forward(inputs, fs);
  terms.task =
      at::cross_entropy_loss(logits.reshape({-1, logits.size(-1)}).to(at::kFloat), targets.reshape({-1}));
  {
    at::NoGradGuard no_grad;
    nn::ForwardOptions ft;
    ft.layer_outputs = &ht;
    teacher.hidden_states(inputs, ft);
  }
  LR_CHECK(hs.size() == ht.size() && !hs.empty(), InvalidArgument, "pela: the student has ", hs.size(),
           " layers, the teacher ", ht.size());
  terms.distill = at::zeros({}, at::kFloat);
  for (size_t l = 0; l < hs.size(); ++l)
    terms.distill = terms.distill + at::mse_loss(hs[l].to(at::kFloat), ht[l].to(at::kFloat));
  terms.distill = terms.distill / static_cast<double>(hs.size());
  terms.perturb = at::zeros({}, at::kFloat);
  int64_t factored = 0;
  for (const nn::LinearSlot* s : student.slots()) {
    const auto* op = dynamic_cast<const LowRankOperator*>(&s->base());
    if (op == nullptr) continue;
    auto it = originals.find(s->name());
    LR_CHECK(it != originals.end(), InvalidArgument, "pela: no original weight for slot ", s->name());
    const at::Tensor diff = at::matmul(op->u(), op->v()).to(at::kFloat) - it->second;
    terms.perturb = terms.perturb + (diff.abs().max() - options.epsilon).pow(2);
    ++factored;
  }
  if (factored > 0) terms.perturb = terms.perturb / static_cast<double>(factored);
  return terms;
}

OrderedJson PelaResult::to_json() const {
  return OrderedJson{
      {"steps", steps}, {"finished", finished}, {"first_loss", first_loss}, {"last_loss", last_loss}};
}

PelaResult pela_pretrain(nn::Model& student, const nn::Model& teacher, const train::TokenStream& data,
                         const PelaOptions& options, const fs::path& run_dir) {
  options.check();
  std::map<std::string, const nn::LinearSlot*> teacher_slots;
  for (const nn::LinearSlot* s : teacher.slots()) teacher_slots.emplace(s->name(), s);
  std::map<std::string, at::Tensor> originals;
  for (const nn::LinearSlot* s : std::as_const(student).slots()) {
    if (dynamic_cast<const LowRankOperator*>(&s->base()) == nullptr) continue;
    auto it = teacher_slots.find(s->name());
    LR_CHECK(it != teacher_slots.end(), InvalidArgument, "pela: the teacher has no slot ", s->name());
    const at::Tensor w = it->second->base().dense_weight().detach().to(at::kFloat);
    LR_CHECK(w.sizes() == s->base().dense_weight().sizes(), InvalidArgument, "pela: slot ", s->name(), " is ",
             s->base().dense_weight().sizes(), " in the student and ", w.sizes(), " in the teacher");
    originals.emplace(s->name(), w);
  }
  LR_CHECK(!originals.empty(), InvalidArgument, "pela: the student has no factored (lowrank) slot");
  // Every tensor of the student trains (the authors' optimiser takes the whole student); the default
  // checkpoint writer keeps them under their names.
  train::TrainTarget target = train::TrainTarget::whole_model(student);
  target.save = nullptr;
  target.weights_file = "pela_state.safetensors";
  target.loss = [&](const at::Tensor& windows) {
    return pela_terms(student, teacher, windows, originals, options).total(options);
  };
  const train::TrainResult r = train::train(student, target, data, options.trainer, run_dir, /*resume=*/true);
  for (auto& [name, t] : target.params) t.requires_grad_(false);
  PelaResult out;
  out.steps = r.step;
  out.finished = r.finished;
  if (!r.steps.empty()) {
    out.first_loss = r.steps.front().loss;
    out.last_loss = r.steps.back().loss;
  }
  return out;
}

}  // namespace lowrank::compress
