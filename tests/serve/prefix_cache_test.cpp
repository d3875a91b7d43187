// Automatic prefix caching (serve/prefix_cache.h, the scheduler's admission, the engine's partial
// prefill), against oracles that do not use it: hand-counted pages, hits and eviction orders; the
// tokens nn::generate gives each request alone, and the same engine with the cache off; checksums
// of every cached page taken when it is first seen cached and compared at every later step.
#include "lowrank/serve/prefix_cache.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <memory>
#include <utility>
#include <vector>

#include "lowrank/nn/generate.h"
#include "lowrank/serve/engine.h"
#include "lowrank/serve/openai_api.h"
#include "lowrank/serve/paged_kv.h"
#include "lowrank/serve/scheduler.h"
#include "tests/serve/engine_testing.h"
#include "tests/testing.h"

namespace lowrank::serve {
namespace {

using namespace testing_support;
using testing::error_of;

constexpr int64_t kPage = 4;

std::vector<int64_t> ids(int64_t n, int64_t salt) {
  std::vector<int64_t> out;
  for (int64_t i = 0; i < n; ++i) out.push_back(1000 * salt + i);
  return out;
}

// ---------------------------------------------------------------------------------------------
// PrefixCache alone

TEST(PrefixCacheTest, ChainedHashMatchesOnlyTheSamePrefixUnderTheSameExtraKey) {
  MemoryPool pool({.num_pages = 8, .page_tokens = kPage, .hidden_size = 8, .lora_modules = {}});
  PrefixCache cache(pool);
  const std::vector<int64_t> t = ids(12, 1);  // three full pages
  const std::vector<int32_t> pages = *pool.allocate(3);
  const std::string x = page_extra_key("x", "1");
  PageHash parent = kRootPageHash;
  for (int i = 0; i < 3; ++i) {
    const std::span<const int64_t> page(t.data() + i * kPage, kPage);
    ASSERT_TRUE(cache.insert(pages[static_cast<size_t>(i)], parent, page, x));
    parent = hash_page(parent, page, x);
  }
  EXPECT_EQ(cache.match(t, x, 10).pages, pages);
  EXPECT_EQ(cache.match(t, x, 2).pages, std::vector<int32_t>(pages.begin(), pages.begin() + 2));  // capped
  // 11 tokens: two full pages only.
  EXPECT_EQ(cache.match(std::span(t).first(11), x, 10).pages.size(), 2u);
  // Another adapter, another salt: nothing.
  EXPECT_TRUE(cache.match(t, page_extra_key("y", "1"), 10).pages.empty());
  EXPECT_TRUE(cache.match(t, page_extra_key("x", "2"), 10).pages.empty());
  // The second page's tokens after another first page: the chain stops at the first miss, even
  // though pages 2 and 3 hold the same tokens.
  std::vector<int64_t> other = t;
  other[0] = 7;
  EXPECT_TRUE(cache.match(other, x, 10).pages.empty());
  std::vector<int64_t> middle = t;
  middle[5] = 7;
  EXPECT_EQ(cache.match(middle, x, 10).pages, std::vector<int32_t>{pages[0]});
  // A second copy of a cached page is refused (it stays private).
  const std::vector<int32_t> copy = *pool.allocate(1);
  EXPECT_FALSE(cache.insert(copy[0], kRootPageHash, std::span(t).first(kPage), x));
  EXPECT_FALSE(cache.is_cached(copy[0]));
  // A partial page is never cached.
  EXPECT_THROW(cache.insert(copy[0], kRootPageHash, std::span(t).first(kPage - 1), x), InternalError);
}

TEST(PrefixCacheTest, ReferenceCountsAndLeastRecentlyReleasedEviction) {
  MemoryPool pool({.num_pages = 8, .page_tokens = kPage, .hidden_size = 8, .lora_modules = {}});
  PrefixCache cache(pool);
  const std::string x = page_extra_key("", "");
  // Sequence A: pages a0, a1 cached, a2 private (partial). Sequence B: b0 cached.
  const std::vector<int32_t> a = *pool.allocate(3);
  const std::vector<int32_t> b = *pool.allocate(1);
  const std::vector<int64_t> ta = ids(8, 1), tb = ids(4, 2);
  ASSERT_TRUE(cache.insert(a[0], kRootPageHash, std::span(ta).first(kPage), x));
  ASSERT_TRUE(cache.insert(a[1], hash_page(kRootPageHash, std::span(ta).first(kPage), x),
                           std::span(ta).last(kPage), x));
  ASSERT_TRUE(cache.insert(b[0], kRootPageHash, tb, x));
  // A second sequence shares a0 and a1.
  cache.touch(std::span(a).first(2));
  EXPECT_EQ(cache.ref_count(a[0]), 2);
  cache.release(a);  // A leaves: a2 back to the pool, a0 and a1 still held once
  EXPECT_FALSE(pool.is_allocated(a[2]));
  EXPECT_EQ(cache.ref_count(a[1]), 1);
  EXPECT_EQ(cache.evictable_pages(), 0);
  cache.release(b);                      // b0 evictable first
  cache.release(std::span(a).first(2));  // then a1 (released first: the tail), then a0
  EXPECT_EQ(cache.evictable_pages(), 3);
  EXPECT_EQ(cache.ref_count(a[0]), 0);
  EXPECT_EQ(pool.used_pages(), 3);  // evictable pages stay allocated, valid
  EXPECT_EQ(cache.unreferenced_among(std::span(a).first(2)), 2);
  // A hit takes a0 off the evictable list again.
  cache.touch(std::span(a).first(1));
  EXPECT_EQ(cache.evictable_pages(), 2);
  EXPECT_EQ(cache.evict(1), 1);  // b0
  EXPECT_FALSE(cache.is_cached(b[0]));
  EXPECT_FALSE(pool.is_allocated(b[0]));
  EXPECT_EQ(cache.evict(5), 1);  // a1 only: a0 is held
  EXPECT_FALSE(cache.is_cached(a[1]));
  EXPECT_TRUE(cache.is_cached(a[0]));
  EXPECT_EQ(cache.stats().evictions, 2);
  // The evicted page is no longer found: the chain stops at a0.
  EXPECT_EQ(cache.match(ta, x, 10).pages, std::vector<int32_t>{a[0]});
}

// ---------------------------------------------------------------------------------------------
// The scheduler's admission

SchedulerConfig sched(bool caching = true) {
  SchedulerConfig c;
  c.max_batch_tokens = 64;
  c.max_running = 8;
  c.max_queue = 16;
  c.prefix_caching = caching;
  return c;
}

PoolConfig pool_of(int64_t pages) {
  return {.num_pages = pages, .page_tokens = kPage, .hidden_size = 8, .lora_modules = {}};
}

Request cached_req(RequestId id, std::string adapter, std::vector<int64_t> prompt, int64_t new_tokens,
                   std::string salt = "") {
  Request r;
  r.id = id;
  r.adapter = std::move(adapter);
  r.prompt_tokens = static_cast<int64_t>(prompt.size());
  r.max_new_tokens = new_tokens;
  r.token_ids = std::move(prompt);
  r.cache_salt = std::move(salt);
  return r;
}

// Runs steps until idle, sampling token 5 everywhere; returns the first plan entry of each request.
std::map<RequestId, ScheduledRequest> run(Scheduler& s) {
  std::map<RequestId, ScheduledRequest> first;
  while (!s.idle()) {
    StepPlan p = s.next_step();
    if (p.empty()) break;
    std::vector<StepResult> results;
    for (const ScheduledRequest& r : p.requests) {
      first.emplace(r.id, r);
      results.push_back({.id = r.id, .new_tokens = r.samples ? 1 : 0, .token = r.samples ? 5 : -1});
    }
    s.complete_step(results);
  }
  s.take_finished();
  return first;
}

TEST(PrefixCacheSchedulerTest, HitSkipsFullPagesOfTheSameAdapterAndLeavesOneTokenToCompute) {
  Scheduler s(sched(), pool_of(32));
  s.adapters().register_adapter("x", 2, 2);
  s.adapters().register_adapter("y", 2, 2);
  const std::vector<int64_t> shared = ids(10, 1);  // two full pages and a partial one
  ASSERT_TRUE(s.submit(cached_req(1, "x", shared, 3)));
  run(s);
  // 10 + 3 tokens: positions 0..11 computed (the last sampled token's KV never is): 3 full pages.
  EXPECT_EQ(s.prefix_cache().cached_pages(), 3);

  std::vector<int64_t> longer = shared;
  longer.insert(longer.end(), {77, 78, 79});
  ASSERT_TRUE(s.submit(cached_req(2, "x", longer, 2)));              // shares pages 0, 1 (page 2 holds 5s)
  ASSERT_TRUE(s.submit(cached_req(3, "y", shared, 2)));              // another adapter: nothing
  ASSERT_TRUE(s.submit(cached_req(4, "", shared, 2)));               // the base model: nothing
  ASSERT_TRUE(s.submit(cached_req(5, "x", ids(8, 1), 2)));           // 8 tokens = 2 pages: only 1 hit
  ASSERT_TRUE(s.submit(cached_req(6, "x", shared, 2, "reloaded")));  // another salt: nothing
  std::map<RequestId, ScheduledRequest> first = run(s);
  EXPECT_EQ(first.at(2).start, 8);
  EXPECT_EQ(first.at(2).num_tokens, 5);
  EXPECT_EQ(first.at(3).start, 0);
  EXPECT_EQ(first.at(4).start, 0);
  EXPECT_EQ(first.at(5).start, 4);
  EXPECT_EQ(first.at(5).num_tokens, 4);
  EXPECT_EQ(first.at(6).start, 0);
  const PrefixCacheStats st = s.prefix_cache().stats();
  EXPECT_EQ(st.queries, 10 + 13 + 10 + 10 + 8 + 10);
  EXPECT_EQ(st.hits, 8 + 4);
}

TEST(PrefixCacheSchedulerTest, ReferenceCountsReturnToZeroWhenEveryRequestFinishes) {
  Scheduler s(sched(), pool_of(32));
  const std::vector<int64_t> prompt = ids(9, 3);
  for (RequestId id = 1; id <= 4; ++id) ASSERT_TRUE(s.submit(cached_req(id, "", prompt, 4)));
  // Admitted together, none can hit the others' pages yet; then three more that share them.
  run(s);
  for (RequestId id = 5; id <= 7; ++id) ASSERT_TRUE(s.submit(cached_req(id, "", prompt, 4)));
  StepPlan p = s.next_step();
  ASSERT_EQ(p.requests.size(), 3u);
  for (const ScheduledRequest& r : p.requests) EXPECT_EQ(r.start, 8);
  const int32_t shared_page = p.requests[0].block_table[0];
  EXPECT_EQ(s.prefix_cache().ref_count(shared_page), 3);
  std::vector<StepResult> results;
  for (const ScheduledRequest& r : p.requests) results.push_back({.id = r.id, .new_tokens = 1, .token = 5});
  s.complete_step(results);
  run(s);
  for (int32_t page : s.prefix_cache().pages()) EXPECT_EQ(s.prefix_cache().ref_count(page), 0) << page;
  EXPECT_EQ(s.prefix_cache().evictable_pages(), s.prefix_cache().cached_pages());
  EXPECT_EQ(s.pool().used_pages(), s.prefix_cache().cached_pages());
  EXPECT_EQ(s.pool().reserved_pages(), 0);
}

TEST(PrefixCacheSchedulerTest, EvictsUnreferencedPagesBeforeHoldingARequestBack) {
  // 8 pages. Each request: 9 prompt + 3 new tokens = 3 pages; 11 positions are computed, so it
  // leaves its 2 full pages cached and frees the third. Three requests leave 6 cached pages and 2
  // free; the fourth needs 3: one cached page is evicted, the least recently released, which is
  // request 1's second page (a sequence releases its pages last first).
  Scheduler s(sched(), pool_of(8));
  for (RequestId id = 1; id <= 4; ++id) {
    ASSERT_TRUE(s.submit(cached_req(id, "", ids(9, id), 3)));
    EXPECT_EQ(run(s).at(id).start, 0);  // distinct prompts: no hits, and none held back
  }
  EXPECT_EQ(s.prefix_cache().stats().evictions, 1);
  EXPECT_EQ(s.pool().used_pages(), 7);
  // Request 1's prompt: its first page still hits, its evicted second page (reused since by
  // request 4) does not. Request 4's prompt hits both.
  ASSERT_TRUE(s.submit(cached_req(5, "", ids(9, 1), 3)));
  EXPECT_EQ(run(s).at(5).start, 4);
  ASSERT_TRUE(s.submit(cached_req(6, "", ids(9, 4), 3)));
  EXPECT_EQ(run(s).at(6).start, 8);
  // With caching off nothing stays behind.
  Scheduler off(sched(false), pool_of(8));
  ASSERT_TRUE(off.submit(cached_req(1, "", ids(9, 1), 3)));
  run(off);
  EXPECT_EQ(off.pool().used_pages(), 0);
  EXPECT_EQ(off.prefix_cache().cached_pages(), 0);
}

TEST(PrefixCacheSchedulerTest, TokenIdsThatDoNotMatchThePromptAreRefused) {
  Scheduler s(sched(), pool_of(8));
  Request r = cached_req(1, "", ids(6, 1), 2);
  r.prompt_tokens = 5;
  EXPECT_THROW(s.submit(r), InvalidArgument);
  EXPECT_NE(error_of([&] { s.submit(r); }).find("6 token ids for a prompt of 5"), std::string::npos);
}

// ---------------------------------------------------------------------------------------------
// The engine

// An engine over pages of kPage tokens with the adapters of engine_testing.h (or those named).
std::unique_ptr<Engine> engine_with(bool caching, int64_t pages = 96, int64_t max_batch_tokens = 2048,
                                    const std::vector<std::string>& adapters = {"a2", "b8", "c4"}) {
  EngineConfig config;
  config.num_pages = pages;
  config.page_tokens = kPage;
  config.scheduler.prefix_caching = caching;
  config.scheduler.max_batch_tokens = max_batch_tokens;
  config.scheduler.max_running = std::min<int64_t>(64, max_batch_tokens);
  auto engine =
      std::make_unique<Engine>(std::make_shared<nn::Model>(testing::tiny_llama(shape(), kModelSeed)), nullptr,
                               std::vector<int64_t>{}, config);
  for (const AdapterSpec& a : kAdapters)
    if (std::ranges::find(adapters, a.name) != adapters.end())
      engine->create_adapter(a.name, lora(a.rank), a.seed);
  return engine;
}

std::vector<int64_t> concat(std::vector<int64_t> a, const std::vector<int64_t>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

// Runs `request` alone on `engine` to the end; its tokens.
std::vector<int64_t> run_alone(Engine& engine, GenerationRequest request) {
  auto stream = engine.submit(std::move(request)).stream;
  engine.run_until_idle();
  return tokens_of(*stream);
}

// Steps `engine` until idle; after every step, every page cached now must hold what it held when
// first seen cached (pages that leave the cache are forgotten). Returns the number of pages checked.
int64_t run_checking_cached_pages(Engine& engine) {
  const PagedKV& kv = engine.kv_pool();
  std::map<int32_t, std::vector<at::Tensor>> seen;
  int64_t checked = 0;
  auto page_of = [&](int32_t page) {
    std::vector<at::Tensor> out;
    for (size_t l = 0; l < kv.keys.size(); ++l) {
      out.push_back(kv.keys[l].narrow(0, int64_t{page} * kPage, kPage).clone());
      out.push_back(kv.values[l].narrow(0, int64_t{page} * kPage, kPage).clone());
    }
    return out;
  };
  while (engine.step()) {
    const std::vector<int32_t> cached = engine.prefix_cached_pages();
    std::erase_if(seen,
                  [&](const auto& e) { return !std::binary_search(cached.begin(), cached.end(), e.first); });
    for (int32_t page : cached) {
      const std::vector<at::Tensor> now = page_of(page);
      auto [it, fresh] = seen.emplace(page, now);
      if (fresh) continue;
      for (size_t i = 0; i < now.size(); ++i)
        EXPECT_TRUE(at::equal(now[i], it->second[i])) << "cached page " << page << " was written";
      ++checked;
    }
  }
  return checked;
}

TEST(PrefixCacheEngineTest, GreedyOutputsEqualWithoutTheCacheAndAloneOverMixedAdapters) {
  // A 13-token "system prompt" shared by requests of three adapters and the base, each with its
  // own question; the second wave reuses the first wave's pages.
  const std::vector<int64_t> system = prompt_of(13, 1);
  struct Case {
    std::string adapter;
    std::vector<int64_t> prompt;
  };
  std::vector<Case> cases;
  for (const char* adapter : {"a2", "b8", "", "c4", "c4", "", "a2", "b8"})
    cases.push_back({adapter, concat(system, prompt_of(3 + static_cast<int64_t>(cases.size()) % 3,
                                                       10 + static_cast<int64_t>(cases.size())))});
  std::map<bool, std::vector<std::vector<int64_t>>> outputs;
  std::map<bool, EngineStats> stats;
  for (bool caching : {false, true}) {
    auto engine = engine_with(caching);
    for (size_t wave = 0; wave < 2; ++wave) {
      std::vector<std::shared_ptr<RequestStream>> streams;
      for (size_t i = wave * cases.size() / 2; i < (wave + 1) * cases.size() / 2; ++i)
        streams.push_back(engine->submit(greedy(cases[i].adapter, cases[i].prompt, 6)).stream);
      engine->run_until_idle();
      for (auto& s : streams) outputs[caching].push_back(tokens_of(*s));
    }
    stats[caching] = engine->stats();
  }
  EXPECT_EQ(outputs[true], outputs[false]);
  for (size_t i = 4; i < cases.size(); i += 1)  // the oracle, on the second wave (which hits)
    EXPECT_EQ(outputs[true][i], reference(cases[i].adapter, cases[i].prompt, 6)) << "request " << i;
  // The cache did work: fewer prompt tokens computed, hits in whole pages.
  EXPECT_EQ(stats[false].scheduler.prefix_cache.hits, 0);
  EXPECT_GT(stats[true].scheduler.prefix_cache.hits, 0);
  EXPECT_EQ(stats[true].scheduler.prefix_cache.hits % kPage, 0);
  EXPECT_EQ(stats[true].prompt_tokens, stats[false].prompt_tokens - stats[true].scheduler.prefix_cache.hits);
}

TEST(PrefixCacheEngineTest, SharedPagesAreNeverWrittenWhileCached) {
  // Concurrent requests sharing cached pages, generating across page boundaries.
  auto engine = engine_with(true, 64, 16, {"c4"});  // small budget: chunked prefills beside decodes
  const std::vector<int64_t> prefix = prompt_of(11, 2);
  auto warm = engine->submit(greedy("c4", prefix, 9)).stream;
  run_checking_cached_pages(*engine);
  std::vector<std::shared_ptr<RequestStream>> streams;
  for (int64_t i = 0; i < 4; ++i)
    streams.push_back(
        engine->submit(greedy(i % 2 ? "c4" : "", concat(prefix, prompt_of(i + 1, i)), 9)).stream);
  EXPECT_GT(run_checking_cached_pages(*engine), 0);
  EXPECT_GT(engine->stats().scheduler.prefix_cache.hits, 0);
  for (int64_t i = 0; i < 4; i += 3)  // the oracle on two of them, one per adapter
    EXPECT_EQ(tokens_of(*streams[static_cast<size_t>(i)]),
              reference(i % 2 ? "c4" : "", concat(prefix, prompt_of(i + 1, i)), 9));
}

TEST(PrefixCacheEngineTest, SmallPoolEvictsAndEvictedPagesAreNotReusedStale) {
  // 12 pages of 4 tokens beside a2's 7; each request takes 4 (12 prompt + 4 new). Distinct
  // prompts fill the cache; later ones evict; earlier prompts come back after their pages were
  // reused.
  auto engine = engine_with(true, 12 + 7, 2048, {"a2"});
  std::map<int64_t, std::vector<int64_t>> expected;
  for (int64_t round = 0; round < 2; ++round)
    for (int64_t salt = 0; salt < 4; ++salt) {
      const std::string adapter = salt % 2 ? "a2" : "";
      if (round == 0) expected[salt] = reference(adapter, prompt_of(12, salt), 4);
      auto stream = engine->submit(greedy(adapter, prompt_of(12, salt), 4)).stream;
      run_checking_cached_pages(*engine);
      StreamEvent finish;
      EXPECT_EQ(tokens_of(*stream, &finish), expected[salt]) << "round " << round << ", prompt " << salt;
      EXPECT_EQ(finish.finish, FinishReason::kLength);
    }
  const EngineStats st = engine->stats();
  EXPECT_GT(st.scheduler.prefix_cache.evictions, 0);
  EXPECT_EQ(st.scheduler.finished, 8);
  EXPECT_EQ(st.scheduler.pool_used_pages - st.scheduler.adapters.resident_pages,
            st.scheduler.prefix_cache.cached_pages);
}

TEST(PrefixCacheEngineTest, AnotherAdapterOrAReloadedOneNeverHits) {
  auto engine = engine_with(true);
  const std::vector<int64_t> prompt = prompt_of(14, 4);
  run_alone(*engine, greedy("a2", prompt, 3));
  const int64_t hits = engine->stats().scheduler.prefix_cache.hits;
  for (const char* other : {"b8", "", "c4"})
    EXPECT_EQ(run_alone(*engine, greedy(other, prompt, 3)), reference(other, prompt, 3)) << other;
  // a2 unloaded and loaded again with other weights: its old pages must not serve the new one.
  engine->unload_adapter("a2");
  engine->create_adapter("a2", lora(2), 99);
  const std::vector<int64_t> reloaded = run_alone(*engine, greedy("a2", prompt, 3));
  nn::Model model = testing::tiny_llama(shape(), kModelSeed);
  adapt::create_adapter(model, "a2", lora(2), 99);
  nn::GenerateOptions options;
  options.max_new_tokens = 3;
  EXPECT_EQ(reloaded, nn::generate(model, {prompt}, options)[0].tokens);
  EXPECT_EQ(engine->stats().scheduler.prefix_cache.hits, hits);  // nothing of the above hit
  // The same adapter does hit (else the checks above would prove little).
  run_alone(*engine, greedy("a2", prompt, 3));
  EXPECT_GT(engine->stats().scheduler.prefix_cache.hits, hits);
}

TEST(PrefixCacheEngineTest, ARequestQueuedBeforeAnAdapterIsReplacedFindsNoneOfItsPages) {
  // Queued for a2, which is then unloaded and created again with other weights before the request
  // runs: it runs with the new weights, so the old weights' pages must be gone.
  auto engine = engine_with(true, 96, 2048, {"a2"});
  const std::vector<int64_t> prompt = prompt_of(14, 6);
  run_alone(*engine, greedy("a2", prompt, 3));
  EXPECT_GT(engine->stats().scheduler.prefix_cache.cached_pages, 0);
  auto queued = engine->submit(greedy("a2", prompt, 3)).stream;
  engine->unload_adapter("a2");
  EXPECT_EQ(engine->stats().scheduler.prefix_cache.cached_pages, 0);
  engine->create_adapter("a2", lora(2), 99);
  engine->run_until_idle();
  nn::Model model = testing::tiny_llama(shape(), kModelSeed);
  adapt::create_adapter(model, "a2", lora(2), 99);
  nn::GenerateOptions options;
  options.max_new_tokens = 3;
  EXPECT_EQ(tokens_of(*queued), nn::generate(model, {prompt}, options)[0].tokens);
  EXPECT_EQ(engine->stats().scheduler.prefix_cache.hits, 0);
}

TEST(PrefixCacheEngineTest, PromptLogprobsComputeTheWholePrompt) {
  auto engine = engine_with(true);
  const std::vector<int64_t> prompt = prompt_of(12, 5);
  run_alone(*engine, greedy("", prompt, 2));
  GenerationRequest r = greedy("", prompt, 2);
  r.sampling.prompt_logprobs = 1;
  auto second = engine->submit(r).stream;
  engine->run_until_idle();
  StreamEvent first_event;
  ASSERT_TRUE(second->next(first_event, std::chrono::milliseconds(1000)));
  EXPECT_EQ(first_event.prompt_logprobs.size(), prompt.size() - 1);  // every prompt position
  EXPECT_EQ(engine->stats().scheduler.prefix_cache.hits, 0);
}

TEST(PrefixCacheEngineTest, MetricsReportQueriesHitsAndTheHitRate) {
  EngineStats stats;
  stats.scheduler.prefix_cache = {
      .queries = 40, .hits = 10, .cached_pages = 6, .evictable_pages = 2, .evictions = 3};
  const std::string text = prometheus_metrics(stats, {});
  for (const char* line :
       {"lowrank_prefix_cache_queries_total 40\n", "lowrank_prefix_cache_hits_total 10\n",
        "lowrank_prefix_cache_hit_rate 0.25\n", "lowrank_prefix_cache_pages 6\n",
        "lowrank_prefix_cache_evictable_pages 2\n", "lowrank_prefix_cache_evictions_total 3\n",
        "# TYPE lowrank_prefix_cache_hits_total counter\n"})
    EXPECT_NE(text.find(line), std::string::npos) << line;
}

}  // namespace
}  // namespace lowrank::serve
