// Adapter weights in the serving engine's memory pool (S-LoRA's Unified Paging): a pool with room
// for the running batch's KV and only K adapters serves requests for 10·K distinct adapters,
// copying each into the pool when admitted and evicting the least recently used; every request's
// tokens are held to nn::generate on a fresh model carrying only its adapter.
#include <gtest/gtest.h>

#include <utility>

#include "lowrank/serve/engine.h"
#include "lowrank/serve/openai_api.h"
#include "tests/serve/engine_testing.h"
#include "tests/testing.h"

namespace lowrank::serve {
namespace {

using namespace testing_support;

constexpr int64_t kRank = 4;
constexpr int64_t kPageTokens = 4;
constexpr int64_t kPrompt = 5, kNewTokens = 6;
constexpr int64_t kRunning = 2;   // requests in the running batch
constexpr int64_t kResident = 2;  // K: adapters the pool holds besides the batch's KV
constexpr int64_t kAdapters = 10 * kResident;

uint64_t seed_of(int64_t i) {
  return 100 + static_cast<uint64_t>(i);
}

std::string name_of(int64_t i) {
  return "adapter" + std::to_string(i);
}

// The oracle: nn::generate on a fresh model with only adapter i attached.
std::vector<int64_t> reference_of(int64_t i, const std::vector<int64_t>& prompt) {
  nn::Model model = testing::tiny_llama(shape(), kModelSeed);
  adapt::create_adapter(model, name_of(i), lora(kRank), seed_of(i));
  nn::GenerateOptions options;
  options.max_new_tokens = kNewTokens;
  return nn::generate(model, {prompt}, options)[0].tokens;
}

// Pages one rank-kRank adapter of lora() takes on shape(): per layer, slots of W = n_kv·head_dim
// = 16 elements; q, o (32 -> 32), k, v (32 -> 16) take 2 slots per rank index, up (32 -> 48) and
// down (48 -> 32) 3: 14 slots per rank index.
int64_t adapter_pages() {
  return (14 * kRank + kPageTokens - 1) / kPageTokens;
}

TEST(AdapterPagingTest, PoolOfKAdaptersServesTenKAdapters) {
  const int64_t kv_pages = kRunning * ((kPrompt + kNewTokens + kPageTokens - 1) / kPageTokens);
  EngineConfig config;
  config.page_tokens = kPageTokens;
  config.num_pages = kv_pages + kResident * adapter_pages();
  config.scheduler.max_running = kRunning;
  auto model = std::make_shared<nn::Model>(testing::tiny_llama(shape(), kModelSeed));
  Engine engine(model, nullptr, {}, config);
  for (int64_t i = 0; i < kAdapters; ++i) engine.create_adapter(name_of(i), lora(kRank), seed_of(i));
  EXPECT_EQ(engine.adapters().front().rank, kRank);

  // Adapters are never attached to the model: the pool is their only copy besides the host's.
  for (const nn::LinearSlot* slot : std::as_const(*model).slots())
    EXPECT_FALSE(slot->has_adapters()) << slot->name();

  // One request per adapter, all queued at once: kRunning run at a time.
  std::vector<std::shared_ptr<RequestStream>> streams;
  for (int64_t i = 0; i < kAdapters; ++i) {
    SubmitResult r = engine.submit(greedy(name_of(i), prompt_of(kPrompt, i), kNewTokens));
    ASSERT_TRUE(r.stream);
    streams.push_back(r.stream);
  }
  const EngineStats first = engine.stats();
  while (engine.step()) {
    const EngineStats s = engine.stats();
    EXPECT_LE(s.scheduler.adapters.resident, kResident);
    EXPECT_LE(s.adapter_bytes_resident, s.pool_bytes);
    EXPECT_LE(s.scheduler.adapters.resident_pages + s.scheduler.pool_reserved_pages, s.scheduler.pool_pages);
  }
  engine.run_until_idle();
  for (int64_t i = 0; i < kAdapters; ++i)
    EXPECT_EQ(tokens_of(*streams[static_cast<size_t>(i)]), reference_of(i, prompt_of(kPrompt, i)))
        << "adapter " << i;
  // Adapters change the output (else the comparison above would prove little).
  nn::Model base = testing::tiny_llama(shape(), kModelSeed);
  nn::GenerateOptions options;
  options.max_new_tokens = kNewTokens;
  EXPECT_NE(nn::generate(base, {prompt_of(kPrompt, 0)}, options)[0].tokens,
            reference_of(0, prompt_of(kPrompt, 0)));

  const EngineStats s = engine.stats();
  EXPECT_EQ(first.scheduler.adapters.loads, 0);
  // Every adapter was copied in once; each load beyond the first K evicted the least recently used.
  EXPECT_EQ(s.scheduler.adapters.loads, kAdapters);
  EXPECT_EQ(s.scheduler.adapters.evictions, kAdapters - kResident);
  EXPECT_EQ(s.adapter_copies, s.scheduler.adapters.loads);
  EXPECT_GT(s.adapter_bytes_copied, 0);
  EXPECT_EQ(s.adapter_bytes_copied % kAdapters, 0);  // all adapters are the same size
  const std::string metrics = prometheus_metrics(s, {});
  EXPECT_NE(metrics.find("lowrank_adapter_loads_total " + std::to_string(kAdapters) + "\n"),
            std::string::npos);
  EXPECT_NE(metrics.find("lowrank_adapter_evictions_total " + std::to_string(kAdapters - kResident) + "\n"),
            std::string::npos);
  EXPECT_NE(
      metrics.find("lowrank_adapter_copied_bytes_total " + std::to_string(s.adapter_bytes_copied) + "\n"),
      std::string::npos);
}

// An adapter evicted and loaded again gets its pages anew (here the pages the other adapter just
// left, in another order); what the engine copies there is what the next request reads (a stale
// slot table or a skipped copy would read the other adapter's weights).
TEST(AdapterPagingTest, ReloadedAdapterInNewPagesMatchesGenerate) {
  EngineConfig config;
  config.page_tokens = kPageTokens;
  config.num_pages = 3 + adapter_pages();  // one request and one adapter at a time
  config.scheduler.max_running = 1;
  Engine engine(std::make_shared<nn::Model>(testing::tiny_llama(shape(), kModelSeed)), nullptr, {}, config);
  for (int64_t i = 0; i < 2; ++i) engine.create_adapter(name_of(i), lora(kRank), seed_of(i));
  for (int64_t i : {0, 1, 0}) {
    auto stream = engine.submit(greedy(name_of(i), prompt_of(kPrompt, 7), kNewTokens)).stream;
    engine.run_until_idle();
    EXPECT_EQ(tokens_of(*stream), reference_of(i, prompt_of(kPrompt, 7))) << "adapter " << i;
  }
  EXPECT_EQ(engine.stats().scheduler.adapters.loads, 3);
}

}  // namespace
}  // namespace lowrank::serve
