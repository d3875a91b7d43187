// The serving engine against independent oracles: nn::generate on a model carrying one adapter
// (contiguous KV cache, no routing, no paging), the same request alone vs in a mixed batch, the
// tokenizer's decode for the streamed text.
#include "lowrank/serve/engine.h"

#include <gtest/gtest.h>

#include <chrono>
#include <map>
#include <thread>
#include <utility>

#include "lowrank/data/tokenizer.h"
#include "lowrank/nn/generate.h"
#include "tests/nn/test_mixers.h"
#include "tests/serve/engine_testing.h"
#include "tests/testing.h"

namespace lowrank::serve {
namespace {

using namespace testing_support;
using testing::error_of;

std::shared_ptr<nn::Model> model_with_adapters() {
  auto model = std::make_shared<nn::Model>(testing::tiny_llama(shape(), kModelSeed));
  return model;
}

std::unique_ptr<Engine> make_engine(EngineConfig config = {}) {
  if (config.num_pages == 0) config.num_pages = 64;
  config.page_tokens = 4;  // small pages: sequences span several, non-contiguous ones
  auto engine = std::make_unique<Engine>(model_with_adapters(), nullptr, std::vector<int64_t>{}, config);
  for (const AdapterSpec& a : kAdapters) engine->create_adapter(a.name, lora(a.rank), a.seed);
  return engine;
}

TEST(EngineTest, MixedAdapterBatchMatchesEachRequestGeneratedAlone) {
  // Requests for three adapters of ranks 2, 8, 4 and the base, with prompts of different lengths,
  // share decode steps; each must produce exactly the tokens nn::generate gives for it alone.
  auto engine = make_engine();
  struct Case {
    std::string adapter;
    int64_t length, salt;
  };
  const std::vector<Case> cases = {{"a2", 5, 1},  {"", 9, 2},   {"b8", 3, 3},
                                   {"c4", 12, 4}, {"a2", 7, 5}, {"b8", 1, 6}};
  std::vector<std::shared_ptr<RequestStream>> streams;
  for (const Case& c : cases) {
    SubmitResult r = engine->submit(greedy(c.adapter, prompt_of(c.length, c.salt), 10));
    ASSERT_TRUE(r.stream);
    streams.push_back(r.stream);
  }
  engine->run_until_idle();
  for (size_t i = 0; i < cases.size(); ++i) {
    StreamEvent finish;
    const std::vector<int64_t> got = tokens_of(*streams[i], &finish);
    EXPECT_EQ(finish.finish, FinishReason::kLength);
    EXPECT_EQ(finish.completion_tokens, 10);
    EXPECT_EQ(finish.prompt_tokens, cases[i].length);
    EXPECT_EQ(got, reference(cases[i].adapter, prompt_of(cases[i].length, cases[i].salt), 10))
        << "request " << i << " (adapter '" << cases[i].adapter << "')";
  }
  // The adapters change the output (else the comparison above would prove little).
  EXPECT_NE(reference("a2", prompt_of(5, 1), 10), reference("", prompt_of(5, 1), 10));
  const EngineStats stats = engine->stats();
  EXPECT_EQ(stats.scheduler.finished, 6);
  // KV all freed, but for pages the prefix cache keeps (unreferenced, evictable).
  EXPECT_EQ(stats.scheduler.prefix_cache.evictable_pages, stats.scheduler.prefix_cache.cached_pages);
  EXPECT_EQ(stats.scheduler.pool_used_pages - stats.scheduler.adapters.resident_pages,
            stats.scheduler.prefix_cache.cached_pages);
  EXPECT_EQ(stats.ttft_count, 6);
  EXPECT_EQ(stats.ttft_counts.back(), 6);  // cumulative: +Inf holds all
}

TEST(EngineTest, RepetitionPenaltyMatchesGenerate) {
  // The engine penalises from each request's own history, batched with a request without it.
  auto engine = make_engine();
  GenerationRequest penalised = greedy("b8", prompt_of(6, 2), 16);
  penalised.sampling.repetition_penalty = 1.8;
  SubmitResult a = engine->submit(penalised);
  SubmitResult b = engine->submit(greedy("", prompt_of(4, 3), 16));
  ASSERT_TRUE(a.stream && b.stream);
  engine->run_until_idle();
  const std::vector<int64_t> expected = reference("b8", prompt_of(6, 2), 16, 1.8);
  EXPECT_EQ(tokens_of(*a.stream), expected);
  EXPECT_EQ(tokens_of(*b.stream), reference("", prompt_of(4, 3), 16));
  EXPECT_NE(expected, reference("b8", prompt_of(6, 2), 16));  // the penalty changes the output
}

TEST(EngineTest, ChunkedPrefillMatchesWholePrompt) {
  // A token budget of 6 splits a 17-token prompt into chunks of at most 6 positions, each
  // attending to the earlier chunks through the page table.
  EngineConfig config;
  config.scheduler.max_batch_tokens = 6;
  config.scheduler.max_running = 4;
  auto engine = make_engine(config);
  auto a = engine->submit(greedy("c4", prompt_of(17, 9), 8)).stream;
  auto b = engine->submit(greedy("", prompt_of(11, 3), 8)).stream;
  engine->run_until_idle();
  EXPECT_EQ(tokens_of(*a), reference("c4", prompt_of(17, 9), 8));
  EXPECT_EQ(tokens_of(*b), reference("", prompt_of(11, 3), 8));
  EXPECT_GT(engine->stats().scheduler.steps, 8 + 17 / 6);
}

TEST(EngineTest, SeededSamplingDoesNotDependOnTheBatch) {
  auto sample = [](bool crowded) {
    auto engine = make_engine();
    GenerationRequest r = greedy("b8", prompt_of(6, 1), 12);
    r.sampling.temperature = 0.9;
    r.sampling.top_p = 0.9;
    r.sampling.seed = 1234;
    std::vector<std::shared_ptr<RequestStream>> others;
    if (crowded)
      for (int i = 0; i < 3; ++i) {
        GenerationRequest o = greedy(i == 0 ? "" : "a2", prompt_of(4 + i, 7 + i), 12);
        o.sampling.temperature = 1.0;
        others.push_back(engine->submit(o).stream);
      }
    auto stream = engine->submit(r).stream;
    engine->run_until_idle();
    return tokens_of(*stream);
  };
  const std::vector<int64_t> alone = sample(false);
  EXPECT_EQ(alone.size(), 12u);
  EXPECT_EQ(sample(true), alone);
}

TEST(EngineTest, StopTokensEndTheRequestUnlessIgnored) {
  auto engine = make_engine();
  const std::vector<int64_t> full = reference("a2", prompt_of(5, 1), 10);
  GenerationRequest r = greedy("a2", prompt_of(5, 1), 10);
  r.sampling.stop_token_ids = {full[3]};
  auto s = engine->submit(r).stream;
  engine->run_until_idle();
  StreamEvent finish;
  const std::vector<int64_t> got = tokens_of(*s, &finish);
  EXPECT_EQ(finish.finish, FinishReason::kStop);
  const auto first = std::find(full.begin(), full.end(), full[3]) - full.begin();
  EXPECT_EQ(got, std::vector<int64_t>(full.begin(), full.begin() + first + 1));
}

TEST(EngineTest, TextStreamsAndStopStringsFollowOpenAI) {
  testing::TempDir dir;
  const auto model_dir = testing::tiny_hf_model(dir.path());
  auto model = std::make_shared<nn::Model>(nn::Model::load(model_dir));
  auto tokenizer =
      std::make_shared<const data::Tokenizer>(data::Tokenizer::load(model_dir / "tokenizer.json"));
  EngineConfig config;
  config.num_pages = 32;
  Engine engine(model, tokenizer, {}, config);
  const std::vector<int32_t> ids32 = tokenizer->encode("The quick brown fox");
  const std::vector<int64_t> prompt(ids32.begin(), ids32.end());

  auto whole = engine.submit(greedy("", prompt, 24)).stream;
  engine.run_until_idle();
  std::string text;
  std::vector<int64_t> tokens;
  whole->wait(&text, &tokens);
  const std::vector<int32_t> t32(tokens.begin(), tokens.end());
  EXPECT_EQ(text, tokenizer->decode(t32, true));  // the deltas add up to the decoded text
  ASSERT_GE(text.size(), 8u);

  // A stop string from the middle of that text: the text ends right before it.
  const std::string stop = text.substr(text.size() / 2, 3);
  GenerationRequest r = greedy("", prompt, 24);
  r.sampling.stop = {"never appears \x01", stop};
  auto stopped = engine.submit(r).stream;
  engine.run_until_idle();
  std::string cut;
  const StreamEvent finish = stopped->wait(&cut);
  EXPECT_EQ(finish.finish, FinishReason::kStop);
  EXPECT_EQ(cut, text.substr(0, text.find(stop)));
}

// Text is decoded incrementally (each token decodes only the tokens since the last whole
// character): the deltas of sampled requests, whose random tokens split multi-byte characters and
// form invalid sequences, still add up to the decode of all their tokens, and no delta ends in
// an incomplete character (U+FFFD) unless the request ends there.
TEST(EngineTest, IncrementalTextEqualsTheWholeDecode) {
  testing::TempDir dir;
  const auto model_dir = testing::tiny_hf_model(dir.path());
  auto model = std::make_shared<nn::Model>(nn::Model::load(model_dir));
  auto tokenizer =
      std::make_shared<const data::Tokenizer>(data::Tokenizer::load(model_dir / "tokenizer.json"));
  EngineConfig config;
  config.num_pages = 64;
  Engine engine(model, tokenizer, {}, config);
  const std::vector<int32_t> ids32 = tokenizer->encode("naïve café — ünïcödé");
  std::vector<std::shared_ptr<RequestStream>> streams;
  for (uint64_t seed = 1; seed <= 4; ++seed) {
    GenerationRequest r;
    r.prompt.assign(ids32.begin(), ids32.end());
    r.sampling.max_new_tokens = 40;
    r.sampling.temperature = 1.5;
    r.sampling.seed = seed;
    r.sampling.ignore_eos = true;
    streams.push_back(engine.submit(r).stream);
  }
  engine.run_until_idle();
  const std::string replacement = "\xEF\xBF\xBD";
  int multibyte = 0;
  for (const auto& stream : streams) {
    std::string text;
    std::vector<int64_t> tokens;
    StreamEvent event;
    while (stream->next(event, std::chrono::milliseconds(0))) {
      if (event.kind == StreamEvent::Kind::kFinish) {
        text += event.text;
        break;
      }
      tokens.push_back(event.token);
      EXPECT_FALSE(event.text.ends_with(replacement)) << "a delta ends in an incomplete character";
      text += event.text;
    }
    ASSERT_EQ(event.kind, StreamEvent::Kind::kFinish);
    const std::vector<int32_t> t32(tokens.begin(), tokens.end());
    EXPECT_EQ(text, tokenizer->decode(t32, true));
    for (unsigned char c : text) multibyte += c >= 0x80;
  }
  EXPECT_GT(multibyte, 0);  // the check saw bytes beyond ASCII
}

TEST(EngineTest, BackgroundThreadServesConcurrentRequests) {
  auto engine = make_engine();
  engine->start();
  std::vector<std::shared_ptr<RequestStream>> streams;
  for (int i = 0; i < 5; ++i)
    streams.push_back(engine->submit(greedy(kAdapters[i % 3].name, prompt_of(3 + i, i), 6)).stream);
  for (int i = 0; i < 5; ++i)
    EXPECT_EQ(tokens_of(*streams[static_cast<size_t>(i)]),
              reference(kAdapters[i % 3].name, prompt_of(3 + i, i), 6));
  engine->shutdown(true);
  EXPECT_TRUE(engine->submit(greedy("", prompt_of(3, 0), 2)).queue_full);  // no new work after shutdown
}

TEST(EngineTest, CancelQueueLimitAndShutdown) {
  EngineConfig config;
  config.scheduler.max_queue = 2;
  auto engine = make_engine(config);
  auto a = engine->submit(greedy("", prompt_of(4, 0), 5)).stream;
  auto b = engine->submit(greedy("a2", prompt_of(4, 1), 5)).stream;
  const SubmitResult full = engine->submit(greedy("", prompt_of(4, 2), 5));
  EXPECT_TRUE(full.queue_full);
  EXPECT_FALSE(full.stream);
  EXPECT_GE(full.retry_after_s, 1);
  EXPECT_TRUE(engine->cancel(a->id()));
  EXPECT_FALSE(engine->cancel(a->id()));
  StreamEvent finish;
  EXPECT_TRUE(tokens_of(*a, &finish).empty());
  EXPECT_EQ(finish.finish, FinishReason::kCancelled);
  engine->step();  // b is admitted and prefilled
  engine->shutdown(false);
  tokens_of(*b, &finish);
  EXPECT_EQ(finish.finish, FinishReason::kCancelled);
  EXPECT_EQ(engine->stats().scheduler.running, 0);
}

// --request-timeout: a request past its deadline ends at the next step with the tokens it had
// (the oracle's prefix), finish kLength (llama.cpp's report of its time limit), and its pages are
// back in the pool when that step returns.
TEST(EngineTest, RequestTimeoutEndsItWithItsTokensAndFreesItsPages) {
  EngineConfig config;
  config.request_timeout = std::chrono::milliseconds(250);
  auto engine = make_engine(config);
  const int64_t free_at_start = engine->stats().scheduler.pool_available_pages;
  GenerationRequest request = greedy("", prompt_of(9, 3), 40);
  request.sampling.ignore_eos = true;
  auto stream = engine->submit(request).stream;
  engine->step();  // prefill and the first token
  engine->step();  // a second token
  EXPECT_LT(engine->stats().scheduler.pool_available_pages, free_at_start);
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  engine->step();  // the deadline has passed: ended before anything else runs
  // Its pages are free again: back in the pool, or its full pages kept by the prefix cache as
  // evictable ones (reclaimable at once).
  const SchedulerStats after = engine->stats().scheduler;
  EXPECT_EQ(after.pool_available_pages + after.prefix_cache.evictable_pages, free_at_start);
  EXPECT_EQ(after.prefix_cache.evictable_pages, after.prefix_cache.cached_pages);
  EXPECT_EQ(engine->stats().scheduler.running, 0);
  ASSERT_TRUE(stream->finished());  // (else the wait below would never return)
  StreamEvent finish;
  const std::vector<int64_t> tokens = tokens_of(*stream, &finish);
  EXPECT_EQ(finish.finish, FinishReason::kLength);
  EXPECT_EQ(finish.ended_by, EndedBy::kTimeout);
  ASSERT_EQ(tokens.size(), 2u);
  const std::vector<int64_t> whole = reference("", prompt_of(9, 3), 2);
  EXPECT_EQ(tokens, whole);
  EXPECT_GE(finish.timings.decode_s, 0.3);  // first token to the end: the sleep at least
  // A request inside its deadline is not touched.
  auto quick = engine->submit(greedy("", prompt_of(5, 1), 3)).stream;
  engine->run_until_idle();
  tokens_of(*quick, &finish);
  EXPECT_EQ(finish.ended_by, EndedBy::kRequest);
}

// A drain with a time limit: what still runs when it is up ends as kCancelled by the shutdown
// (the API's "abort"), with its tokens so far; a drain with time to spare lets requests finish.
TEST(EngineTest, DrainLimitEndsWhatStillRuns) {
  auto engine = make_engine();
  GenerationRequest long_one = greedy("a2", prompt_of(6, 2), 40);
  long_one.sampling.ignore_eos = true;
  auto cut = engine->submit(long_one).stream;
  engine->step();
  engine->shutdown(/*drain=*/true, std::chrono::milliseconds(0));
  StreamEvent finish;
  const std::vector<int64_t> tokens = tokens_of(*cut, &finish);
  EXPECT_EQ(finish.finish, FinishReason::kCancelled);
  EXPECT_EQ(finish.ended_by, EndedBy::kShutdown);
  EXPECT_LT(tokens.size(), 40u);
  EXPECT_EQ(tokens, reference("a2", prompt_of(6, 2), static_cast<int64_t>(tokens.size())));
  EXPECT_EQ(engine->stats().scheduler.running, 0);

  auto patient = make_engine();
  auto whole = patient->submit(greedy("b8", prompt_of(4, 1), 6)).stream;
  patient->step();
  patient->shutdown(/*drain=*/true, std::chrono::minutes(1));
  EXPECT_EQ(tokens_of(*whole, &finish), reference("b8", prompt_of(4, 1), 6));
  EXPECT_EQ(finish.ended_by, EndedBy::kRequest);
}

// /metrics' per-adapter counts and queue-time histogram count what was submitted.
TEST(EngineTest, RequestsPerAdapterAndQueueTimes) {
  auto engine = make_engine();
  for (const char* adapter : {"a2", "", "a2", "c4"}) engine->submit(greedy(adapter, prompt_of(3, 0), 2));
  engine->run_until_idle();
  const EngineStats stats = engine->stats();
  const std::map<std::string, int64_t> expected = {{"", 1}, {"a2", 2}, {"c4", 1}};
  EXPECT_EQ(stats.adapter_requests, expected);
  EXPECT_EQ(stats.queue_time.count, 4);
  ASSERT_EQ(stats.queue_time.cumulative.size(), stats.queue_time.bounds.size() + 1);
  EXPECT_EQ(stats.queue_time.cumulative.back(), 4);
  EXPECT_GE(stats.queue_time.sum, 0.0);
}

TEST(EngineTest, AdaptersLoadUnloadAndBusy) {
  auto engine = make_engine();
  EXPECT_EQ(engine->adapters().size(), 3u);
  EXPECT_EQ(engine->adapters()[1].rank, 8);
  auto running = engine->submit(greedy("b8", prompt_of(4, 0), 4)).stream;
  engine->step();  // admitted: b8 is pinned
  EXPECT_NE(error_of([&] { engine->unload_adapter("b8"); }).find("busy"), std::string::npos);
  auto waiting_for_a2 = engine->submit(greedy("a2", prompt_of(4, 1), 4)).stream;
  engine->unload_adapter("a2");  // unpinned: goes; the waiting request is rejected
  engine->run_until_idle();
  StreamEvent finish;
  tokens_of(*waiting_for_a2, &finish);
  EXPECT_EQ(finish.finish, FinishReason::kRejected);
  EXPECT_EQ(tokens_of(*running), reference("b8", prompt_of(4, 0), 4));
  engine->unload_adapter("b8");
  EXPECT_FALSE(engine->has_adapter("b8"));
  EXPECT_NE(error_of([&] { engine->unload_adapter("b8"); }).find("not loaded"), std::string::npos);
  // After unloading, the model is the base again for everyone.
  auto base = engine->submit(greedy("", prompt_of(5, 1), 6)).stream;
  engine->run_until_idle();
  EXPECT_EQ(tokens_of(*base), reference("", prompt_of(5, 1), 6));
  // The PEFT fixture loads from its directory under a new name.
  EXPECT_NE(error_of([&] {
              engine->load_adapter("c4", testing::fixture("hf/llama-tiny/adapter-lora"));
            }).find("already loaded"),
            std::string::npos);
}

TEST(EngineTest, BadRequestsAreRefusedBeforeQueueing) {
  auto engine = make_engine();
  EXPECT_NE(error_of([&] { engine->submit(greedy("", {}, 4)); }).find("empty"), std::string::npos);
  EXPECT_NE(error_of([&] {
              engine->submit(greedy("", {1, 40}, 4));
            }).find("outside the vocabulary"),
            std::string::npos);
  EXPECT_NE(error_of([&] { engine->submit(greedy("nope", {1}, 4)); }).find("nope"), std::string::npos);
  GenerationRequest r = greedy("", {1, 2}, 4);
  r.sampling.top_p = 0;
  EXPECT_NE(error_of([&] { engine->submit(r); }).find("top_p"), std::string::npos);
  r = greedy("", {1, 2}, 95);
  EXPECT_NE(error_of([&] { engine->submit(r); }).find("context"), std::string::npos);
  r = greedy("", {1, 2}, 4);
  r.sampling.stop = {"x"};
  EXPECT_NE(error_of([&] { engine->submit(r); }).find("tokenizer"), std::string::npos);
  EXPECT_EQ(engine->stats().scheduler.submitted, 0);
}

TEST(EngineTest, RequestsTheApiWouldRefuseAreInternalErrors) {
  // The API edge checks the bounds (sampling_violation, the OpenAI API's); the engine asserts
  // them: a request past them is a caller's bug, not a user error.
  auto engine = make_engine();
  GenerationRequest r = greedy("", {1, 2}, 4);
  r.sampling.temperature = 2.5;  // over the API's bound of 2
  ASSERT_TRUE(sampling_violation(r.sampling));
  EXPECT_EQ(sampling_violation(r.sampling)->param, "temperature");
  EXPECT_THROW(engine->submit(r), InternalError);
  EXPECT_THROW(engine->submit(greedy("", {}, 4)), InternalError);
  EXPECT_THROW(engine->submit(greedy("", {1, 2}, 95)), InternalError);  // over the context
  // An adapter can go away after the API's checks: that stays a user error (404 at the edge).
  EXPECT_THROW(engine->submit(greedy("nope", {1}, 4)), NotFound);
  EXPECT_FALSE(sampling_violation(greedy("", {1, 2}, 4).sampling));
  EXPECT_EQ(engine->stats().scheduler.submitted, 0);
}

TEST(EngineTest, AModelWithARecurrentLayerIsRefusedAtConstructionNamingTheLayerAndMixer) {
  // The paged store keeps keys and values only; nn::generate decodes such a model
  // (tests/nn/mixer_decode_test.cpp).
  nn::testing_mixers::register_test_mixers();
  for (const auto& [mixer, keeps] : {std::pair{"test_mean", "keeps a recurrent state"},
                                     std::pair{"test_stateless", "keeps no KV store"}}) {
    const Json config =
        nn::testing_mixers::mixer_config(nn::testing_mixers::tiny_spec(), Json::array({"attention", mixer}));
    auto model = std::make_shared<nn::Model>(
        nn::Model::random(nn::ModelConfig::from_json(config, "hybrid"), kModelSeed));
    EngineConfig engine_config;
    engine_config.num_pages = 8;
    const std::string message =
        error_of([&] { Engine engine(model, nullptr, std::vector<int64_t>{}, engine_config); });
    EXPECT_EQ(message, str("serve: layer 1's mixer ", mixer, " ", keeps,
                           "; the paged engine serves attention-only models"));
  }
}

}  // namespace
}  // namespace lowrank::serve
