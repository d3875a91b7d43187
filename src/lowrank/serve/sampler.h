// RequestSampler — one serving request's choice of its next token and the log-probabilities it
// reports, after vLLM's V1 sampler (vllm-project/vllm, vllm/v1/sample/sampler.py; penalties in
// vllm/model_executor/layers/utils.py apply_penalties) and the OpenAI API's parameters:
//   0. structured output (token_constraint.h): constrain() sets every token the request's
//      automaton does not allow in its current state to -inf; the stop ids (eos unless
//      ignore_eos, and the request's stop_token_ids) are allowed exactly in accepting states and
//      only end the output there. This comes before everything below, as vLLM V1 applies the
//      grammar bitmask to the logits before its sampler (vllm/v1/worker/gpu_model_runner.py,
//      apply_grammar_bitmask, then self.sampler): so under a constraint the reported logprobs
//      are of the masked distribution, the model's renormalised over the allowed tokens.
//   1. logprobs: log_softmax of the model's raw logits (float32), before any processing below.
//      This is vLLM V1's default (`logprobs_mode = "raw_logprobs"`: "Use the original logits
//      (before any penalties or temperature scaling) for the top-k logprobs"), so a reported
//      distribution does not depend on the request's temperature, penalties or logit_bias.
//   2. min_tokens: while fewer than min_tokens tokens were generated, the stop token ids (the
//      request's, and the model's eos unless ignore_eos) get -inf (vLLM's MinTokensLogitsProcessor).
//   3. logit_bias: bias[id] is added to the logit of id (OpenAI; vLLM's LogitBiasLogitsProcessor).
//   4. penalties, as vLLM's apply_penalties: the repetition penalty over prompt and output tokens
//      (score / p if score > 0 else score · p, CTRL); then OpenAI's frequency and presence
//      penalties over the output tokens only: score[j] -= c[j] · frequency + (c[j] > 0) · presence,
//      c[j] the count of j in the output so far.
//   5. temperature (0: argmax), top-k, top-p and the draw: nn::select_next_tokens, with the
//      request's own CPU generator (seeded per request, so that its tokens do not depend on its
//      batch neighbours).
// Deviation: stop strings are not held back by min_tokens (vLLM's detokenizer skips them until
// min_tokens); only stop token ids are. Under a constraint, min_tokens does not hold back a stop id
// when the automaton allows nothing else (the output is complete).
#pragma once

#include <cstdint>
#include <span>
#include <unordered_map>
#include <utility>
#include <vector>

#include <ATen/ATen.h>

#include "lowrank/nn/generate.h"
#include "lowrank/serve/token_constraint.h"

namespace lowrank::serve {

struct SamplingParams;  // engine.h

// The most alternatives a request may ask for per token (vLLM's --max-logprobs default; OpenAI
// allows 20 for chat's top_logprobs).
inline constexpr int64_t kMaxLogprobs = 20;

struct TokenLogprob {
  int64_t token = 0;
  float logprob = 0;
};
// One position's report: the chosen (or prompt) token's log-probability and the `top` most
// likely tokens, most likely first.
struct LogprobEntry {
  int64_t token = 0;
  float logprob = 0;
  std::vector<TokenLogprob> top;
};

// The entry of `token` under `logits` ([V], any float dtype; log_softmax in float32) with the
// `top` most likely tokens (0: none).
LogprobEntry logprob_entry(const at::Tensor& logits, int64_t token, int64_t top);

class RequestSampler {
 public:
  // `stop_ids`: the ids min_tokens holds back (the request's stop ids and the eos ids it stops on).
  RequestSampler(const SamplingParams& sampling, std::vector<int64_t> stop_ids, uint64_t seed);

  // Structured output: `logits` ([V] or [1, V] float32 on the CPU) with the tokens the
  // constraint does not allow now at -inf (a new tensor), or `logits` itself without a
  // constraint. The reported logprobs and next() take this.
  at::Tensor constrain(const at::Tensor& logits);
  // The next token from `logits` ([1, V] float32 on the CPU, as constrain() returned them;
  // changed in place); `seen` is the prompt and the tokens generated so far (the repetition
  // penalty's history).
  int64_t next(at::Tensor logits, const std::vector<int64_t>& seen);
  // Records a generated token (the frequency and presence penalties' counts, min_tokens, the
  // constraint's state). Throws InternalError for a token the constraint does not allow.
  void accept(int64_t token);
  bool constrained() const { return constraint_ != nullptr; }

 private:
  nn::GenerateOptions options_;  // temperature, top-k, top-p (select_next_tokens)
  at::Generator generator_;
  double repetition_penalty_ = 1.0;
  double presence_penalty_ = 0;
  double frequency_penalty_ = 0;
  std::vector<std::pair<int64_t, double>> logit_bias_;
  int64_t min_tokens_ = 0;
  std::vector<int64_t> stop_ids_;
  int64_t generated_ = 0;
  std::unordered_map<int64_t, int64_t> output_counts_;
  std::shared_ptr<TokenConstraint> constraint_;  // structured output, or none
  TokenConstraint::State state_ = 0;             // the constraint's state after the output so far
  bool complete_ = false;                        // a stop id was accepted in an accepting state
};

}  // namespace lowrank::serve
