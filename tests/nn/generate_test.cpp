// nn/generate: greedy tokens of the transformers fixture, batched == one at a time, the logits
// processors against hand-computed transformers semantics, stop conditions, streaming, seeds.
#include "lowrank/nn/generate.h"

#include <gtest/gtest.h>

#include <ATen/CPUGeneratorImpl.h>

#include <cmath>

#include "lowrank/core/error.h"
#include "lowrank/core/safetensors.h"
#include "tests/testing.h"

namespace lowrank::nn {
namespace {

using testing::fixture;

const Model& fixture_model() {
  static const Model model = Model::load(fixture("hf/llama-tiny/model"));
  return model;
}

std::vector<int64_t> to_vector(const at::Tensor& t) {
  const at::Tensor c = t.contiguous();
  return {c.data_ptr<int64_t>(), c.data_ptr<int64_t>() + c.numel()};
}

TEST(GenerateTest, GreedyMatchesTransformers) {
  const SafetensorsFile e = SafetensorsFile::open(fixture("hf/llama-tiny/expected.safetensors"));
  const std::vector<int64_t> prompt = to_vector(e.load("greedy_prompt"));
  const std::vector<int64_t> want = to_vector(e.load("greedy_output"));
  GenerateOptions o;
  o.max_new_tokens = 16;
  const auto out = generate(fixture_model(), {prompt}, o);
  std::vector<int64_t> got = prompt;
  got.insert(got.end(), out[0].tokens.begin(), out[0].tokens.end());
  EXPECT_EQ(got, want);
  EXPECT_EQ(out[0].finish_reason, FinishReason::kLength);
}

TEST(GenerateTest, BatchedGreedyEqualsOneAtATime) {
  const std::vector<std::vector<int64_t>> prompts = {{180, 496, 430, 186, 81, 236, 121, 267},
                                                     {5},
                                                     {124, 286, 295},
                                                     {7, 99, 310, 45, 12, 500, 3, 8, 77, 64, 1}};
  GenerateOptions o;
  o.max_new_tokens = 12;
  o.repetition_penalty = 1.3;
  const auto batched = generate(fixture_model(), prompts, o);
  for (size_t b = 0; b < prompts.size(); ++b) {
    const auto single = generate(fixture_model(), {prompts[b]}, o);
    EXPECT_EQ(batched[b].tokens, single[0].tokens) << "prompt " << b;
  }
}

TEST(GenerateTest, RepetitionPenaltyFollowsTransformers) {
  at::Tensor scores = at::tensor({2.0f, -2.0f, 1.0f, -0.5f});
  scores = scores.view({1, 4}).clone();
  const std::vector<std::vector<int64_t>> seen = {{0, 1, 1}};  // id 1 twice: penalised once
  apply_repetition_penalty(scores, seen, 2.0);
  // Seen positive scores are divided, seen negative ones multiplied, others untouched.
  EXPECT_TRUE(at::equal(scores, at::tensor({1.0f, -4.0f, 1.0f, -0.5f}).view({1, 4})));
}

TEST(GenerateTest, TopKAndTopPFollowTransformers) {
  const float inf = std::numeric_limits<float>::infinity();
  at::Tensor s = at::tensor({1.0f, 3.0f, 2.0f, 3.0f, 0.0f}).view({1, 5});
  at::Tensor k = s.clone();
  apply_top_k(k, 2);  // keeps everything >= the 2nd largest (the tie at 3)
  EXPECT_TRUE(at::equal(k, at::tensor({-inf, 3.0f, -inf, 3.0f, -inf}).view({1, 5})));
  k = s.clone();
  apply_top_k(k, 3);
  EXPECT_TRUE(at::equal(k, at::tensor({-inf, 3.0f, 2.0f, 3.0f, -inf}).view({1, 5})));

  // probabilities 0.5, 0.3, 0.15, 0.05: top_p 0.75 removes the tail whose mass is <= 0.25.
  at::Tensor p = at::log(at::tensor({0.15f, 0.5f, 0.05f, 0.3f})).view({1, 4});
  at::Tensor q = p.clone();
  apply_top_p(q, 0.75);
  EXPECT_TRUE(std::isinf(q[0][0].item<float>()) && std::isinf(q[0][2].item<float>()));
  EXPECT_FALSE(std::isinf(q[0][1].item<float>()) || std::isinf(q[0][3].item<float>()));
  q = p.clone();
  apply_top_p(q, 0.9);  // removes only the 0.05 (cumulative 0.05 <= 0.1); 0.15 pushes it to 0.2
  EXPECT_EQ(at::isinf(q).sum().item<int64_t>(), 1);
  q = p.clone();
  apply_top_p(q, 0.01);  // always keeps the most likely token
  EXPECT_EQ(at::isinf(q).sum().item<int64_t>(), 3);
  EXPECT_FALSE(std::isinf(q[0][1].item<float>()));
}

TEST(GenerateTest, SamplingIsSeededAndRespectsTopK) {
  GenerateOptions o;
  o.max_new_tokens = 10;
  o.do_sample = true;
  o.temperature = 1.5;
  o.seed = 42;
  const std::vector<int64_t> prompt = {180, 496, 430};
  const auto a = generate(fixture_model(), {prompt}, o);
  const auto b = generate(fixture_model(), {prompt}, o);
  EXPECT_EQ(a[0].tokens, b[0].tokens);
  o.seed = 43;
  EXPECT_NE(generate(fixture_model(), {prompt}, o)[0].tokens, a[0].tokens);

  // top_k = 1 is greedy whatever the temperature.
  o.top_k = 1;
  GenerateOptions greedy;
  greedy.max_new_tokens = 10;
  EXPECT_EQ(generate(fixture_model(), {prompt}, o)[0].tokens,
            generate(fixture_model(), {prompt}, greedy)[0].tokens);

  // select_next_tokens samples only among the survivors of top-k.
  at::Generator gen = at::detail::createCPUGenerator(7);
  GenerateOptions k2;
  k2.do_sample = true;
  k2.top_k = 2;
  const std::vector<std::vector<int64_t>> no_history(1);
  for (int i = 0; i < 50; ++i) {
    const int64_t t =
        select_next_tokens(at::tensor({0.0f, 5.0f, 4.9f, 1.0f}).view({1, 4}), no_history, k2, gen)[0]
            .item<int64_t>();
    EXPECT_TRUE(t == 1 || t == 2) << t;
  }
}

TEST(GenerateTest, StopTokensStopStringsAndStreaming) {
  const std::vector<int64_t> prompt = {180, 496, 430, 186, 81, 236, 121, 267};
  // Greedy continuation: 108 350 483 483 ... (from the fixture).
  GenerateOptions o;
  o.max_new_tokens = 16;
  o.stop_token_ids = {483};
  std::vector<std::pair<size_t, int64_t>> streamed;
  o.on_token = [&](size_t row, int64_t token) {
    streamed.emplace_back(row, token);
    return true;
  };
  auto out = generate(fixture_model(), {prompt}, o);
  EXPECT_EQ(out[0].tokens, (std::vector<int64_t>{108, 350, 483}));
  EXPECT_EQ(out[0].finish_reason, FinishReason::kStop);  // a stop token
  ASSERT_EQ(streamed.size(), 3u);
  EXPECT_EQ(streamed[2], (std::pair<size_t, int64_t>{0, 483}));

  // Stop strings through a decode callback ("<id>" per token): "350><4" spans two tokens.
  o.stop_token_ids.clear();
  o.on_token = nullptr;
  o.stop_strings = {"350><4"};
  o.decode = [](std::span<const int64_t> ids) {
    std::string s;
    for (int64_t id : ids) s += "<" + std::to_string(id) + ">";
    return s;
  };
  std::string texts;
  o.on_text = [&](size_t, std::string_view text) { texts += text; };
  out = generate(fixture_model(), {prompt}, o);
  EXPECT_EQ(out[0].tokens, (std::vector<int64_t>{108, 350, 483}));  // the completing token is kept
  EXPECT_EQ(out[0].finish_reason, FinishReason::kStop);             // a stop string
  EXPECT_EQ(out[0].text, "<108><");  // the stop string and what follows are not (the OpenAI API's rule)
  EXPECT_EQ(texts, out[0].text);     // released as it grew
  o.on_text = nullptr;

  // The callback cancels a row.
  o.stop_strings.clear();
  o.on_token = [](size_t, int64_t) { return false; };
  out = generate(fixture_model(), {prompt, {5, 6}}, o);
  EXPECT_EQ(out[0].tokens.size(), 1u);
  EXPECT_EQ(out[1].finish_reason, FinishReason::kCancelled);
}

TEST(GenerateTest, RejectsBadOptions) {
  GenerateOptions o;
  o.stop_strings = {"x"};
  EXPECT_THROW(generate(fixture_model(), {{1, 2}}, o), InvalidArgument);  // no decode
  o = GenerateOptions{};
  o.do_sample = true;
  o.top_p = 0;
  EXPECT_THROW(generate(fixture_model(), {{1, 2}}, o), InvalidArgument);
  o = GenerateOptions{};
  EXPECT_THROW(generate(fixture_model(), {{}}, o), InvalidArgument);
  EXPECT_THROW(generate(fixture_model(), {}, o), InvalidArgument);
}

TEST(GenerateTest, DefaultStopIdsComeFromGenerationConfig) {
  const auto dir = fixture("hf/llama-tiny/model");
  EXPECT_EQ(default_stop_token_ids(dir, ModelConfig::load(dir)), std::vector<int64_t>{2});
}

}  // namespace
}  // namespace lowrank::nn
