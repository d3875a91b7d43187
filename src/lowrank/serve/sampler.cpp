// One request's next token and its log-probabilities; see sampler.h for the order and references.
#include "lowrank/serve/sampler.h"

#include <algorithm>
#include <limits>

#include <ATen/CPUGeneratorImpl.h>

#include "lowrank/core/error.h"
#include "lowrank/serve/engine.h"

namespace lowrank::serve {

LogprobEntry logprob_entry(const at::Tensor& logits, int64_t token, int64_t top) {
  const at::Tensor logprobs = logits.to(at::kFloat).reshape({-1}).log_softmax(0);
  LogprobEntry entry{.token = token, .logprob = logprobs[token].item<float>(), .top = {}};
  if (top > 0) {
    const auto [values, ids] = at::topk(logprobs, std::min(top, logprobs.size(0)));
    const float* v = values.data_ptr<float>();
    const int64_t* i = ids.data_ptr<int64_t>();
    for (int64_t k = 0; k < values.size(0); ++k) entry.top.push_back({.token = i[k], .logprob = v[k]});
  }
  return entry;
}

RequestSampler::RequestSampler(const SamplingParams& s, std::vector<int64_t> stop_ids, uint64_t seed)
    : generator_(at::detail::createCPUGenerator(seed)),
      repetition_penalty_(s.repetition_penalty),
      presence_penalty_(s.presence_penalty),
      frequency_penalty_(s.frequency_penalty),
      logit_bias_(s.logit_bias),
      min_tokens_(s.min_tokens),
      stop_ids_(std::move(stop_ids)),
      constraint_(s.constraint) {
  if (constraint_) state_ = constraint_->start();
  options_.do_sample = s.temperature > 0;
  options_.temperature = s.temperature > 0 ? s.temperature : 1.0;
  options_.top_k = s.top_k;
  options_.top_p = s.top_p;
}

at::Tensor RequestSampler::constrain(const at::Tensor& logits) {
  if (!constraint_) return logits;
  const at::Tensor in = logits.contiguous();
  at::Tensor out = at::full_like(in, -std::numeric_limits<float>::infinity());
  const float* from = in.data_ptr<float>();
  float* to = out.data_ptr<float>();
  const int64_t vocab = in.size(-1);
  const AllowedTokens& allowed = constraint_->allowed(complete_ ? TokenConstraint::kDead : state_);
  for (int32_t id : allowed.ids)
    if (id < vocab) to[id] = from[id];
  if (allowed.accepting || complete_)
    for (int64_t id : stop_ids_)
      if (id >= 0 && id < vocab) to[id] = from[id];
  return out;
}

int64_t RequestSampler::next(at::Tensor logits, const std::vector<int64_t>& seen) {
  float* row = logits.data_ptr<float>();
  const int64_t vocab = logits.size(-1);
  if (generated_ < min_tokens_) {
    std::vector<float> held;  // the stop ids' logits, restored if nothing else is left
    for (int64_t id : stop_ids_)
      if (id >= 0 && id < vocab) {
        held.push_back(row[id]);
        row[id] = -std::numeric_limits<float>::infinity();
      }
    if (constraint_ &&
        !std::any_of(row, row + vocab, [](float x) { return x > -std::numeric_limits<float>::infinity(); })) {
      size_t k = 0;
      for (int64_t id : stop_ids_)
        if (id >= 0 && id < vocab) row[id] = held[k++];
    }
  }
  for (const auto& [id, bias] : logit_bias_) row[id] += static_cast<float>(bias);
  if (repetition_penalty_ != 1.0)
    nn::apply_repetition_penalty(logits, std::span(&seen, 1), repetition_penalty_);
  if (presence_penalty_ != 0 || frequency_penalty_ != 0)
    for (const auto& [id, count] : output_counts_)
      row[id] -= static_cast<float>(static_cast<double>(count) * frequency_penalty_ + presence_penalty_);
  // The penalty is applied above; select_next_tokens applies the rest.
  return nn::select_next_tokens(logits, {}, options_, generator_).item<int64_t>();
}

void RequestSampler::accept(int64_t token) {
  ++generated_;
  ++output_counts_[token];
  if (!constraint_) return;
  const bool stop = std::find(stop_ids_.begin(), stop_ids_.end(), token) != stop_ids_.end();
  if (stop && (complete_ || constraint_->accepting(state_))) {
    complete_ = true;
    return;
  }
  const TokenConstraint::State next =
      complete_ ? TokenConstraint::kDead : constraint_->advance(state_, token);
  LR_CHECK(next != TokenConstraint::kDead, InternalError, "structured output: token ", token,
           " is not allowed in the constraint's state ", state_);
  state_ = next;
}

}  // namespace lowrank::serve
