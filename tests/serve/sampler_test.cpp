// The serving sampler (sampler.h): logits processing by hand-derived cases, and the reported
// log-probabilities against log_softmax of the model's logits computed independently through
// nn::Model in float64 (the raw distribution, vLLM V1's default), through the engine with chunked
// prefill, penalties and a batch of neighbours.
#include "lowrank/serve/sampler.h"

#include <cmath>

#include <c10/core/InferenceMode.h>
#include <gtest/gtest.h>

#include "lowrank/nn/model.h"
#include "lowrank/serve/engine.h"
#include "tests/serve/engine_testing.h"

namespace lowrank::serve {
namespace {

using namespace testing_support;

SamplingParams greedy_params() {
  SamplingParams s;
  s.temperature = 0;
  s.max_new_tokens = 8;
  return s;
}

at::Tensor row(std::vector<float> values) {
  return at::tensor(values, at::kFloat).reshape({1, -1});
}

// Argmax after the processing, for scores [2.0, 1.7, 0, 0, 0] unless given.
int64_t pick(const SamplingParams& s, const std::vector<int64_t>& generated,
             std::vector<int64_t> stop_ids = {}, std::vector<float> scores = {2.0F, 1.7F, 0.F, 0.F, 0.F}) {
  RequestSampler sampler(s, std::move(stop_ids), 0);
  std::vector<int64_t> seen = {4};  // the prompt
  for (int64_t t : generated) {
    sampler.accept(t);
    seen.push_back(t);
  }
  return sampler.next(row(scores), seen);
}

TEST(SamplerTest, PenaltiesBiasAndMinTokensByHand) {
  SamplingParams s = greedy_params();
  EXPECT_EQ(pick(s, {0, 0}), 0);
  // Presence: 2.0 - 0.2 = 1.8 > 1.7 whatever the count (it is not per occurrence).
  s.presence_penalty = 0.2;
  EXPECT_EQ(pick(s, {0, 0}), 0);
  s.presence_penalty = 0.4;  // 1.6 < 1.7
  EXPECT_EQ(pick(s, {0}), 1);
  // Frequency: per occurrence, 2.0 - 2 · 0.1 = 1.8 > 1.7.
  s = greedy_params();
  s.frequency_penalty = 0.1;
  EXPECT_EQ(pick(s, {0, 0}), 0);
  s.frequency_penalty = 0.2;
  EXPECT_EQ(pick(s, {0, 0}), 1);  // 2.0 - 0.4 = 1.6
  // Both count the output only, not the prompt (token 4 is in the prompt; a negative penalty would
  // raise it from 0 to 2.5 were the prompt counted).
  s = greedy_params();
  s.presence_penalty = -2.0;
  s.frequency_penalty = -0.5;
  EXPECT_EQ(pick(s, {}, {}, {2.0F, 1.7F, 0.F, 0.F, 0.F}), 0);
  EXPECT_EQ(pick(s, {1}), 1);  // 1.7 + 2 + 0.5 = 4.2
  // The repetition penalty counts the prompt too: 2.0 / 2 = 1.0 < 1.7 for a generated 0; the
  // prompt token 4 at 3.0 becomes 1.5 < 2.0.
  s = greedy_params();
  s.repetition_penalty = 2.0;
  EXPECT_EQ(pick(s, {0}), 1);
  EXPECT_EQ(pick(s, {}, {}, {2.0F, 1.7F, 0.F, 0.F, 3.0F}), 0);
  // logit_bias adds: 0 + 2.5 > 2.0.
  s = greedy_params();
  s.logit_bias = {{3, 2.5}};
  EXPECT_EQ(pick(s, {}), 3);
  s.logit_bias = {{3, 1.5}};
  EXPECT_EQ(pick(s, {}), 0);
  // min_tokens: the stop ids are held back while fewer tokens were generated.
  s = greedy_params();
  s.min_tokens = 2;
  EXPECT_EQ(pick(s, {}, {0}), 1);
  EXPECT_EQ(pick(s, {1}, {0}), 1);
  EXPECT_EQ(pick(s, {1, 1}, {0}), 0);
}

// The float64 log-softmax of the model's logits at every position of `ids` (base model, alone).
at::Tensor reference_logprobs(const std::vector<int64_t>& ids) {
  c10::InferenceMode guard;
  const nn::Model model = testing::tiny_llama(shape(), kModelSeed);
  const at::Tensor input = at::tensor(ids, at::kLong).reshape({1, -1});
  return model.forward(input).to(at::kDouble)[0].log_softmax(-1);
}

void expect_entry(const LogprobEntry& got, const at::Tensor& expected_row, int64_t token, int64_t top,
                  const std::string& where) {
  EXPECT_EQ(got.token, token) << where;
  EXPECT_NEAR(got.logprob, expected_row[token].item<double>(), 1e-4) << where;
  ASSERT_EQ(static_cast<int64_t>(got.top.size()), top) << where;
  const auto [values, ids] = at::topk(expected_row, top);
  for (int64_t k = 0; k < top; ++k) {
    EXPECT_NEAR(got.top[k].logprob, values[k].item<double>(), 1e-4) << where << " top " << k;
    EXPECT_NEAR(expected_row[got.top[k].token].item<double>(), values[k].item<double>(), 1e-4) << where;
  }
}

TEST(SamplerTest, LogprobsAreTheRawModelDistribution) {
  // A sampled request with temperature, penalties and a bias, beside a neighbour, its 7-token
  // prompt prefilled in chunks: the reported values are still log_softmax of the raw logits.
  EngineConfig config;
  config.num_pages = 64;
  config.page_tokens = 4;
  config.scheduler.max_batch_tokens = 4;  // chunked prefill: the prompt spans several steps
  config.scheduler.max_running = 2;
  auto model = std::make_shared<nn::Model>(testing::tiny_llama(shape(), kModelSeed));
  Engine engine(model, nullptr, {}, config);
  const std::vector<int64_t> prompt = prompt_of(7, 3);
  GenerationRequest r;
  r.prompt = prompt;
  r.sampling.max_new_tokens = 6;
  r.sampling.temperature = 0.7;
  r.sampling.seed = 5;
  r.sampling.presence_penalty = 0.5;
  r.sampling.frequency_penalty = 0.3;
  r.sampling.repetition_penalty = 1.3;
  r.sampling.logit_bias = {{7, 3.0}};
  r.sampling.logprobs = 3;
  r.sampling.prompt_logprobs = 2;
  // The neighbour's longer prompt is queued first, so that a chunk of this one shares a pass with
  // a longer chunk of it: left-padded, its columns are offset.
  GenerationRequest neighbour = greedy("", prompt_of(11, 9), 6);
  auto other = engine.submit(neighbour).stream;
  auto stream = engine.submit(r).stream;
  engine.run_until_idle();
  std::vector<LogprobEntry> prompt_entries, entries;
  std::vector<int64_t> tokens;
  StreamEvent e;
  bool first = true;
  while (stream->next(e, std::chrono::milliseconds(0)) && e.kind == StreamEvent::Kind::kToken) {
    if (first) prompt_entries = e.prompt_logprobs;
    first = false;
    ASSERT_TRUE(e.logprobs.has_value());
    entries.push_back(*e.logprobs);
    tokens.push_back(e.token);
  }
  ASSERT_EQ(tokens.size(), 6u);
  std::vector<int64_t> ids = prompt;
  ids.insert(ids.end(), tokens.begin(), tokens.end());
  const at::Tensor expected = reference_logprobs(ids);
  ASSERT_EQ(prompt_entries.size(), prompt.size() - 1);
  for (size_t j = 1; j < prompt.size(); ++j)
    expect_entry(prompt_entries[j - 1], expected[static_cast<int64_t>(j) - 1], prompt[j], 2,
                 str("prompt token ", j));
  for (size_t t = 0; t < tokens.size(); ++t) {
    const auto position = static_cast<int64_t>(prompt.size() + t) - 1;
    expect_entry(entries[t], expected[position], tokens[t], 3, str("generated token ", t));
  }
}

TEST(SamplerTest, SeededPenalisedRequestDoesNotDependOnTheBatch) {
  auto sample = [](bool crowded) {
    EngineConfig config;
    config.num_pages = 64;
    config.page_tokens = 4;
    Engine engine(std::make_shared<nn::Model>(testing::tiny_llama(shape(), kModelSeed)), nullptr, {}, config);
    GenerationRequest r = greedy("", prompt_of(6, 1), 12);
    r.sampling.temperature = 1.2;
    r.sampling.seed = 99;
    r.sampling.presence_penalty = 0.7;
    r.sampling.frequency_penalty = 0.4;
    r.sampling.logit_bias = {{3, 1.0}, {8, -5.0}};
    r.sampling.min_tokens = 4;
    std::vector<std::shared_ptr<RequestStream>> others;
    if (crowded)
      for (int i = 0; i < 3; ++i) {
        GenerationRequest o = greedy("", prompt_of(4 + i, 7 + i), 12);
        o.sampling.temperature = 1.0;
        o.sampling.frequency_penalty = -0.5;
        others.push_back(engine.submit(o).stream);
      }
    auto stream = engine.submit(r).stream;
    engine.run_until_idle();
    return tokens_of(*stream);
  };
  const std::vector<int64_t> alone = sample(false);
  EXPECT_EQ(alone.size(), 12u);
  EXPECT_EQ(sample(true), alone);
}

}  // namespace
}  // namespace lowrank::serve
