// Scheduler: prefill/decode steps and chunking, the token budget, the queue limit (429), requests
// that can never fit, FCFS with head-of-line blocking and no starvation, cancellation in every
// state, mixed-rank adapters sharing the pool with KV, and a randomised workload checked against
// the test's own model of every request.
#include "lowrank/serve/scheduler.h"

#include <gtest/gtest.h>

#include <deque>
#include <map>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "lowrank/core/error.h"
#include "tests/testing.h"

namespace lowrank::serve {
namespace {

using testing::error_of;

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

// page_tokens 4 and H = 8 with q/k/v/o at H x H: a rank-r adapter takes 4r slots = r pages, and
// the KV of n tokens takes ⌈n / 4⌉ pages.
constexpr int64_t kPageTokens = 4;
int64_t kv(int64_t tokens) {
  return (tokens + kPageTokens - 1) / kPageTokens;
}

PoolConfig pool_config(int64_t num_pages) {
  PoolConfig c;
  c.num_pages = num_pages;
  c.page_tokens = kPageTokens;
  c.hidden_size = 8;
  return c;
}

SchedulerConfig sched_config(int64_t max_batch_tokens, int64_t max_running, int64_t max_queue,
                             bool chunked_prefill = true) {
  SchedulerConfig c;
  c.max_batch_tokens = max_batch_tokens;
  c.max_running = max_running;
  c.max_queue = max_queue;
  c.chunked_prefill = chunked_prefill;
  return c;
}

Request req(RequestId id, std::string adapter, int64_t prompt, int64_t max_new) {
  return Request{id, std::move(adapter), prompt, max_new};
}

// The engine's answer when every scheduled request just runs: one token where the plan samples.
std::vector<StepResult> run_all(const StepPlan& plan) {
  std::vector<StepResult> out;
  for (const auto& r : plan.requests) out.push_back({r.id, r.samples ? 1 : 0, FinishReason::kNone});
  return out;
}

std::vector<RequestId> ids(const StepPlan& plan) {
  std::vector<RequestId> out;
  for (const auto& r : plan.requests) out.push_back(r.id);
  return out;
}

// Runs steps until `id` has left; returns the steps taken.
int run_until_finished(Scheduler& s, RequestId id, std::vector<FinishedRequest>* finished = nullptr) {
  for (int steps = 1; steps < 1000; ++steps) {
    StepPlan plan = s.next_step();
    if (!plan.empty()) s.complete_step(run_all(plan));
    for (auto& f : s.take_finished()) {
      const bool hit = f.id == id;
      if (finished) finished->push_back(std::move(f));
      if (hit) return steps;
    }
  }
  ADD_FAILURE() << "request " << id << " never finished";
  return -1;
}

TEST(SchedulerTest, PrefillThenDecodeUntilMaxTokens) {
  Scheduler s(sched_config(16, 4, 8), pool_config(32));
  ASSERT_TRUE(s.submit(req(1, "", 10, 3)));
  StepPlan p = s.next_step();
  ASSERT_EQ(p.requests.size(), 1u);
  EXPECT_EQ(p.step, 1);
  EXPECT_EQ(p.num_tokens, 10);
  EXPECT_EQ(p.requests[0].start, 0);
  EXPECT_EQ(p.requests[0].num_tokens, 10);
  EXPECT_TRUE(p.requests[0].prefill);
  EXPECT_TRUE(p.requests[0].samples);
  EXPECT_EQ(p.requests[0].block_table.size(), 3u);
  // kv(10 + 3) = 4 pages reserved on admission: 3 allocated, 1 still reserved.
  EXPECT_EQ(s.pool().used_pages(), 3);
  EXPECT_EQ(s.pool().reserved_pages(), 1);
  s.complete_step(run_all(p));
  for (int64_t start : {10, 11}) {
    p = s.next_step();
    ASSERT_EQ(p.requests.size(), 1u);
    EXPECT_EQ(p.requests[0].start, start);
    EXPECT_EQ(p.requests[0].num_tokens, 1);
    EXPECT_FALSE(p.requests[0].prefill);
    EXPECT_TRUE(p.requests[0].samples);
    EXPECT_EQ(p.requests[0].block_table.size(), static_cast<size_t>(kv(start + 1)));
    s.complete_step(run_all(p));
  }
  auto finished = s.take_finished();
  ASSERT_EQ(finished.size(), 1u);
  EXPECT_EQ(finished[0].id, 1);
  EXPECT_EQ(finished[0].reason, FinishReason::kLength);
  EXPECT_EQ(finished[0].generated_tokens, 3);
  EXPECT_TRUE(s.idle());
  EXPECT_EQ(s.pool().used_pages(), 0);
  EXPECT_EQ(s.pool().reserved_pages(), 0);
  EXPECT_TRUE(s.next_step().empty());
  EXPECT_FALSE(s.step_in_flight());
  const SchedulerStats st = s.stats();
  EXPECT_EQ(st.steps, 3);
  EXPECT_EQ(st.tokens_processed, 12);
  EXPECT_EQ(st.tokens_generated, 3);
  EXPECT_EQ(st.finished, 1);
}

TEST(SchedulerTest, ChunkedPrefillSharesTheBudgetWithDecodes) {
  Scheduler s(sched_config(8, 4, 8), pool_config(32));
  ASSERT_TRUE(s.submit(req(1, "", 4, 5)));
  ASSERT_TRUE(s.submit(req(2, "", 20, 1)));
  struct Expect {
    int64_t start2, n2;
    bool samples2;
  };
  // Step 1: A's whole prompt (4) and a 4-token chunk of B. Then A decodes (1) and B gets 7.
  const Expect expect[] = {{0, 4, false}, {4, 7, false}, {11, 7, false}, {18, 2, true}};
  for (const Expect& e : expect) {
    StepPlan p = s.next_step();
    ASSERT_EQ(ids(p), (std::vector<RequestId>{1, 2}));
    EXPECT_EQ(p.num_tokens, p.requests[0].num_tokens + e.n2);
    EXPECT_LE(p.num_tokens, 8);
    EXPECT_EQ(p.requests[1].start, e.start2);
    EXPECT_EQ(p.requests[1].num_tokens, e.n2);
    EXPECT_TRUE(p.requests[1].prefill);
    EXPECT_EQ(p.requests[1].samples, e.samples2);
    EXPECT_EQ(p.requests[1].block_table.size(), static_cast<size_t>(kv(e.start2 + e.n2)));
    // A chunk that samples nothing must report no token.
    if (!e.samples2) {
      std::vector<StepResult> bad = run_all(p);
      bad[1].new_tokens = 1;
      EXPECT_TRUE(contains(error_of([&] { s.complete_step(bad); }), "reported 1 new tokens"));
    }
    s.complete_step(run_all(p));
  }
  auto finished = s.take_finished();
  ASSERT_EQ(finished.size(), 1u);  // B: max_new_tokens = 1, sampled by its last chunk
  EXPECT_EQ(finished[0].id, 2);
  EXPECT_EQ(finished[0].reason, FinishReason::kLength);
}

TEST(SchedulerTest, WithoutChunkingAWholePromptMustFitTheBudget) {
  Scheduler s(sched_config(8, 4, 8, /*chunked_prefill=*/false), pool_config(32));
  EXPECT_TRUE(contains(error_of([&] { s.submit(req(1, "", 9, 1)); }),
                       "prompt of 9 tokens exceeds max_batch_tokens = 8"));
  ASSERT_TRUE(s.submit(req(1, "", 6, 3)));
  ASSERT_TRUE(s.submit(req(2, "", 4, 3)));
  StepPlan p = s.next_step();
  EXPECT_EQ(ids(p), (std::vector<RequestId>{1}));  // 2 needs 4 tokens, 2 left
  s.complete_step(run_all(p));
  p = s.next_step();
  EXPECT_EQ(ids(p), (std::vector<RequestId>{1, 2}));  // decode 1 + prompt 4
  EXPECT_EQ(p.requests[1].num_tokens, 4);
  EXPECT_EQ(p.num_tokens, 5);
}

TEST(SchedulerTest, FullQueueRefusesSubmitUntilRequestsLeaveIt) {
  Scheduler s(sched_config(64, 4, 2), pool_config(32));
  EXPECT_TRUE(s.submit(req(1, "", 4, 4)));
  EXPECT_TRUE(s.submit(req(2, "", 4, 4)));
  EXPECT_FALSE(s.submit(req(3, "", 4, 4)));
  EXPECT_EQ(s.num_waiting(), 2);
  EXPECT_EQ(s.stats().queue_full, 1);
  EXPECT_EQ(s.stats().submitted, 2);
  StepPlan p = s.next_step();
  EXPECT_EQ(p.requests.size(), 2u);
  EXPECT_EQ(s.stats().waiting, 0);
  EXPECT_EQ(s.stats().running, 2);
  EXPECT_TRUE(s.submit(req(3, "", 4, 4)));
}

TEST(SchedulerTest, RequestsThatCanNeverFitAreRejectedAtSubmit) {
  Scheduler s(sched_config(64, 4, 8), pool_config(8));  // 8 pages = 32 token slots
  s.adapters().register_adapter("r4", 4);
  EXPECT_TRUE(contains(error_of([&] { s.submit(req(1, "", 30, 10)); }),
                       "request 1: 30 prompt + 10 new tokens need 10 pages but the memory pool has only 8"));
  EXPECT_TRUE(contains(error_of([&] { s.submit(req(2, "r4", 20, 8)); }), "with adapter 'r4' need 11 pages"));
  EXPECT_THROW(s.submit(req(3, "", 0, 1)), InvalidArgument);
  EXPECT_THROW(s.submit(req(3, "", 1, 0)), InvalidArgument);
  EXPECT_TRUE(
      contains(error_of([&] { s.submit(req(3, "nope", 1, 1)); }), "adapter 'nope' is not registered"));
  EXPECT_THROW(s.submit(req(3, "nope", 1, 1)), NotFound);
  // Exactly the whole pool is fine, and runs.
  ASSERT_TRUE(s.submit(req(4, "r4", 10, 6)));
  EXPECT_TRUE(contains(error_of([&] { s.submit(req(4, "", 1, 1)); }), "request id 4 is already waiting"));
  EXPECT_GT(run_until_finished(s, 4), 0);
  EXPECT_EQ(s.stats().submitted, 1);
}

TEST(SchedulerTest, RejectsInconsistentConfig) {
  EXPECT_TRUE(contains(error_of([] { Scheduler(sched_config(4, 8, 8), pool_config(8)); }),
                       "max_running 8 exceeds max_batch_tokens 4"));
  EXPECT_THROW(Scheduler(sched_config(0, 0, 8), pool_config(8)), InvalidArgument);
  EXPECT_THROW(Scheduler(sched_config(8, 4, 0), pool_config(8)), InvalidArgument);
  EXPECT_THROW(Scheduler(sched_config(8, 4, 8), pool_config(0)), InvalidArgument);
}

TEST(SchedulerTest, FcfsHeadOfLineBlocksSmallerLaterRequests) {
  Scheduler s(sched_config(64, 8, 8), pool_config(10));
  ASSERT_TRUE(s.submit(req(1, "", 28, 4)));  // 8 pages
  ASSERT_TRUE(s.submit(req(2, "", 12, 4)));  // 4 pages: does not fit beside 1
  ASSERT_TRUE(s.submit(req(3, "", 2, 2)));   // 1 page: would fit, but 2 is older
  StepPlan p = s.next_step();
  EXPECT_EQ(ids(p), (std::vector<RequestId>{1}));
  s.complete_step(run_all(p));
  for (int i = 0; i < 3; ++i) {  // 1 decodes its remaining 3 tokens alone
    p = s.next_step();
    EXPECT_EQ(ids(p), (std::vector<RequestId>{1}));
    s.complete_step(run_all(p));
  }
  p = s.next_step();
  EXPECT_EQ(ids(p), (std::vector<RequestId>{2, 3}));
}

TEST(SchedulerTest, LargeRequestIsNotStarvedBySmallOnes) {
  Scheduler s(sched_config(64, 8, 64), pool_config(12));
  RequestId next = 1;
  RequestId large = 0;
  int submitted_at = -1;
  int admitted_at = -1;
  std::set<RequestId> running;
  for (int step = 0; step < 60 && admitted_at < 0; ++step) {
    ASSERT_TRUE(s.submit(req(next++, "", 4, 4)));  // 2 pages each, a steady stream
    if (step == 10) {
      large = next++;
      ASSERT_TRUE(s.submit(req(large, "", 36, 4)));  // 10 pages of 12
      submitted_at = step;
    }
    StepPlan p = s.next_step();
    for (const auto& r : p.requests) {
      if (r.start == 0) {
        EXPECT_TRUE(large == 0 || r.id < large || r.id == large)
            << "request " << r.id << " overtook " << large;
        if (r.id == large) admitted_at = step;
      }
    }
    s.complete_step(run_all(p));
  }
  ASSERT_GE(admitted_at, 0);
  // Running small requests need at most 4 more steps each; nothing newer is admitted meanwhile.
  EXPECT_LE(admitted_at - submitted_at, 5);
}

TEST(SchedulerTest, CancelFreesWaitingAndRunningRequests) {
  Scheduler s(sched_config(64, 1, 8), pool_config(32));
  s.adapters().register_adapter("a", 2);
  ASSERT_TRUE(s.submit(req(1, "a", 6, 10)));
  ASSERT_TRUE(s.submit(req(2, "", 4, 4)));  // waits: max_running = 1
  StepPlan p = s.next_step();
  ASSERT_EQ(ids(p), (std::vector<RequestId>{1}));
  // Waiting: leaves at once.
  EXPECT_TRUE(s.cancel(2));
  EXPECT_FALSE(s.cancel(2));
  EXPECT_FALSE(s.cancel(99));
  auto f = s.take_finished();
  ASSERT_EQ(f.size(), 1u);
  EXPECT_EQ(f[0].id, 2);
  EXPECT_EQ(f[0].reason, FinishReason::kCancelled);
  // Running and in flight: pages stay until the engine is done with the step.
  EXPECT_TRUE(s.cancel(1));
  EXPECT_FALSE(s.cancel(1));
  EXPECT_EQ(s.pool().used_pages(), kv(6) + 2);
  EXPECT_EQ(s.adapters().pin_count("a"), 1);
  EXPECT_TRUE(s.take_finished().empty());
  s.complete_step(run_all(p));
  f = s.take_finished();
  ASSERT_EQ(f.size(), 1u);
  EXPECT_EQ(f[0].reason, FinishReason::kCancelled);
  EXPECT_EQ(f[0].generated_tokens, 1);
  EXPECT_EQ(s.adapters().pin_count("a"), 0);
  EXPECT_EQ(s.pool().used_pages(), 2);  // only the cached adapter
  EXPECT_EQ(s.pool().reserved_pages(), 0);
  // Running between steps: freed immediately.
  ASSERT_TRUE(s.submit(req(3, "a", 6, 10)));
  p = s.next_step();
  EXPECT_TRUE(p.adapter_loads.empty());  // still cached
  s.complete_step(run_all(p));
  EXPECT_TRUE(s.cancel(3));
  EXPECT_EQ(s.pool().used_pages(), 2);
  EXPECT_EQ(s.pool().reserved_pages(), 0);
  EXPECT_EQ(s.adapters().pin_count("a"), 0);
  EXPECT_TRUE(s.idle());
  EXPECT_EQ(s.stats().cancelled, 3);
}

TEST(SchedulerTest, EngineStopAndEngineCancelEndRequestsEarly) {
  Scheduler s(sched_config(64, 4, 8), pool_config(32));
  ASSERT_TRUE(s.submit(req(1, "", 4, 10)));
  ASSERT_TRUE(s.submit(req(2, "", 4, 10)));
  StepPlan p = s.next_step();
  s.complete_step(run_all(p));
  p = s.next_step();
  std::vector<StepResult> results = run_all(p);
  results[0].finish = FinishReason::kStop;        // eos
  results[1] = {2, 0, FinishReason::kCancelled};  // client gone before sampling
  s.complete_step(results);
  auto f = s.take_finished();
  ASSERT_EQ(f.size(), 2u);
  EXPECT_EQ(f[0].id, 1);
  EXPECT_EQ(f[0].reason, FinishReason::kStop);
  EXPECT_EQ(f[0].generated_tokens, 2);
  EXPECT_EQ(f[1].reason, FinishReason::kCancelled);
  EXPECT_EQ(f[1].generated_tokens, 1);
  EXPECT_EQ(s.pool().used_pages(), 0);
}

TEST(SchedulerTest, CompleteStepValidatesEverythingBeforeApplying) {
  Scheduler s(sched_config(64, 4, 8), pool_config(32));
  EXPECT_TRUE(contains(error_of([&] { s.complete_step({}); }), "without a step in flight"));
  ASSERT_TRUE(s.submit(req(1, "", 4, 3)));
  ASSERT_TRUE(s.submit(req(2, "", 4, 3)));
  StepPlan p = s.next_step();
  EXPECT_TRUE(contains(error_of([&] { s.next_step(); }), "before complete_step"));
  std::vector<StepResult> good = run_all(p);
  std::vector<StepResult> missing = {good[0]};
  EXPECT_TRUE(contains(error_of([&] { s.complete_step(missing); }), "no result for request 2"));
  std::vector<StepResult> unknown = good;
  unknown.push_back({7, 1, FinishReason::kNone});
  EXPECT_TRUE(contains(error_of([&] { s.complete_step(unknown); }), "result for request 7"));
  std::vector<StepResult> twice = {good[0], good[0], good[1]};
  EXPECT_TRUE(contains(error_of([&] { s.complete_step(twice); }), "two results for request 1"));
  std::vector<StepResult> wrong = good;
  wrong[1].new_tokens = 2;
  EXPECT_TRUE(contains(error_of([&] { s.complete_step(wrong); }), "request 2 reported 2 new tokens"));
  std::vector<StepResult> rejected = good;
  rejected[0].finish = FinishReason::kRejected;
  EXPECT_THROW(s.complete_step(rejected), InvalidArgument);
  // Nothing was applied: the good results still complete the step, and decoding starts at 4.
  s.complete_step(good);
  p = s.next_step();
  ASSERT_EQ(p.requests.size(), 2u);
  EXPECT_EQ(p.requests[0].start, 4);
  EXPECT_EQ(s.stats().tokens_generated, 2);
}

// Adapters of ranks 8, 4 and 2 share the 16-page pool with KV; loads are listed once, cached
// adapters are hits, and an unpinned cached adapter is evicted when KV needs its pages.
TEST(SchedulerTest, MixedRankAdaptersShareThePoolWithKv) {
  Scheduler s(sched_config(64, 8, 16), pool_config(16));
  s.adapters().register_adapter("a", 8);
  s.adapters().register_adapter("b", 4);
  s.adapters().register_adapter("c", 2);
  ASSERT_TRUE(s.submit(req(1, "a", 8, 8)));  // 4 KV pages + 8 adapter pages
  ASSERT_TRUE(s.submit(req(2, "b", 2, 6)));  // 2 + 4 > 4 left: waits
  ASSERT_TRUE(s.submit(req(3, "a", 4, 4)));  // 2, a resident: would fit, but 2 is older
  StepPlan p = s.next_step();
  EXPECT_EQ(ids(p), (std::vector<RequestId>{1}));
  ASSERT_EQ(p.adapter_loads.size(), 1u);
  EXPECT_EQ(p.adapter_loads[0].name, "a");
  EXPECT_EQ(p.adapter_loads[0].pages.size(), 8u);
  EXPECT_EQ(s.pool().used_pages() + s.pool().reserved_pages(), 12);
  s.complete_step(run_all(p));
  std::vector<FinishedRequest> finished;
  run_until_finished(s, 1, &finished);  // the step that frees 1 plans nothing else
  // Now a is cached (8 pages, unpinned). 2 loads b (2 KV + 4) and 3 hits a (2 KV): 8 + 6 + 2 = 16
  // pages, the whole pool, with nothing evicted.
  p = s.next_step();
  EXPECT_EQ(ids(p), (std::vector<RequestId>{2, 3}));
  ASSERT_EQ(p.adapter_loads.size(), 1u);
  EXPECT_EQ(p.adapter_loads[0].name, "b");
  EXPECT_EQ(s.adapters().stats().hits, 1);
  EXPECT_EQ(s.adapters().stats().evictions, 0);
  EXPECT_EQ(s.pool().used_pages() + s.pool().reserved_pages(), 16);
  s.complete_step(run_all(p));
  // c with 12 + 4 tokens needs 4 KV + 2 adapter pages; none is available and nothing can be
  // evicted while a and b are pinned.
  ASSERT_TRUE(s.submit(req(4, "c", 12, 4)));
  p = s.next_step();
  EXPECT_EQ(ids(p), (std::vector<RequestId>{2, 3}));
  s.complete_step(run_all(p));
  // 3 finishes first (max 4 tokens): a becomes evictable and is evicted for c (6 > 2 free).
  run_until_finished(s, 3);
  EXPECT_EQ(s.adapters().pin_count("a"), 0);
  p = s.next_step();
  EXPECT_EQ(ids(p), (std::vector<RequestId>{2, 4}));
  ASSERT_EQ(p.adapter_loads.size(), 1u);
  EXPECT_EQ(p.adapter_loads[0].name, "c");
  EXPECT_EQ(p.adapter_loads[0].pages.size(), 2u);
  EXPECT_FALSE(s.adapters().is_resident("a"));
  EXPECT_EQ(s.stats().adapters.evictions, 1);
  EXPECT_EQ(s.stats().adapters.resident, 2);
}

TEST(SchedulerTest, WaitingRequestForAnUnregisteredAdapterIsRejected) {
  Scheduler s(sched_config(64, 1, 8), pool_config(32));
  s.adapters().register_adapter("a", 2);
  ASSERT_TRUE(s.submit(req(1, "", 4, 2)));
  ASSERT_TRUE(s.submit(req(2, "a", 4, 2)));
  StepPlan p = s.next_step();
  ASSERT_EQ(ids(p), (std::vector<RequestId>{1}));
  s.adapters().unregister("a");  // not pinned: 2 only waits for it
  s.complete_step(run_all(p));
  run_until_finished(s, 1);
  p = s.next_step();
  EXPECT_TRUE(p.empty());
  auto f = s.take_finished();
  ASSERT_EQ(f.size(), 1u);
  EXPECT_EQ(f[0].id, 2);
  EXPECT_EQ(f[0].reason, FinishReason::kRejected);
  EXPECT_TRUE(contains(f[0].message, "adapter 'a' was unregistered"));
  EXPECT_TRUE(s.idle());
  EXPECT_EQ(s.stats().rejected, 1);
}

// A randomised workload (fixed seed) of mixed adapters, prompt and output lengths, engine stops,
// cancellations between and during steps, checked each step against the test's own model.
TEST(SchedulerTest, RandomisedWorkloadKeepsEveryInvariant) {
  constexpr int64_t kPages = 48, kBudget = 24, kRunning = 6, kQueue = 8;
  Scheduler s(sched_config(kBudget, kRunning, kQueue), pool_config(kPages));
  const std::map<std::string, int64_t> ranks = {{"r1", 1}, {"r2", 2},  {"r4", 4},
                                                {"r8", 8}, {"r8b", 8}, {"r16", 16}};
  std::vector<std::string> adapters = {""};
  for (const auto& [name, rank] : ranks) {
    s.adapters().register_adapter(name, rank);
    adapters.push_back(name);
  }
  struct Track {
    Request request;
    int64_t computed = 0;
    int64_t generated = 0;
    bool admitted = false;
    bool done = false;
    FinishReason engine_finish = FinishReason::kNone;
  };
  std::map<RequestId, Track> tracks;
  std::deque<RequestId> waiting;  // the test's FCFS queue
  std::map<RequestId, FinishReason> finished;
  std::mt19937 rng(12345);
  auto uniform = [&](int64_t lo, int64_t hi) { return std::uniform_int_distribution<int64_t>(lo, hi)(rng); };
  int64_t next_id = 1, never_fit = 0, refused = 0, chunks = 0, cancels_in_flight = 0;

  auto drain = [&] {
    for (const FinishedRequest& f : s.take_finished()) {
      ASSERT_TRUE(finished.emplace(f.id, f.reason).second) << "request " << f.id << " finished twice";
      Track& t = tracks.at(f.id);
      t.done = true;
      ASSERT_EQ(f.generated_tokens, t.generated);
      ASSERT_LE(t.generated, t.request.max_new_tokens);
      if (f.reason == FinishReason::kLength) {
        ASSERT_EQ(t.generated, t.request.max_new_tokens);
      }
      if (f.reason == FinishReason::kStop) {
        ASSERT_EQ(t.engine_finish, FinishReason::kStop);
      }
      ASSERT_NE(f.reason, FinishReason::kRejected);  // no adapter is unregistered here
      if (!t.admitted) std::erase(waiting, f.id);
    }
  };
  auto live_ids = [&] {
    std::vector<RequestId> out;
    for (const auto& [id, t] : tracks) {
      if (!t.done) out.push_back(id);
    }
    return out;
  };

  const int kSubmitSteps = 2000;
  int it = 0;
  for (; it < 20000 && (it < kSubmitSteps || !s.idle()); ++it) {
    if (it < kSubmitSteps && uniform(0, 2) == 0) {
      for (int64_t k = uniform(1, 3); k > 0; --k) {
        Request r =
            req(next_id++, adapters[static_cast<size_t>(uniform(0, 6))], uniform(1, 120), uniform(1, 24));
        const int64_t need =
            kv(r.prompt_tokens + r.max_new_tokens) + (r.adapter.empty() ? 0 : ranks.at(r.adapter));
        if (need > kPages) {
          ASSERT_THROW(s.submit(r), InvalidArgument);
          ++never_fit;
          continue;
        }
        const bool full = static_cast<int64_t>(waiting.size()) >= kQueue;
        ASSERT_EQ(s.submit(r), !full) << "request " << r.id;
        if (full) {
          ++refused;
          continue;
        }
        waiting.push_back(r.id);
        tracks[r.id] = Track{r};
      }
    }
    if (uniform(0, 19) == 0) {  // a cancel between steps
      auto live = live_ids();
      if (!live.empty()) {
        ASSERT_TRUE(s.cancel(live[static_cast<size_t>(uniform(0, int64_t(live.size()) - 1))]));
      }
      drain();
    }

    StepPlan plan = s.next_step();
    drain();
    // The token budget, the batch size, and the plan's own total.
    int64_t total = 0;
    for (const auto& r : plan.requests) total += r.num_tokens;
    ASSERT_EQ(total, plan.num_tokens);
    ASSERT_LE(plan.num_tokens, kBudget);
    ASSERT_LE(s.num_running(), kRunning);
    // Each scheduled request against the model; pages never shared.
    std::set<int32_t> pages;
    std::set<RequestId> scheduled;
    for (const auto& r : plan.requests) {
      Track& t = tracks.at(r.id);
      ASSERT_FALSE(t.done);
      scheduled.insert(r.id);
      if (!t.admitted) {  // FCFS: only the head of the test's queue can be admitted
        ASSERT_FALSE(waiting.empty());
        ASSERT_EQ(waiting.front(), r.id) << "admission out of arrival order";
        waiting.pop_front();
        t.admitted = true;
      }
      ASSERT_EQ(r.start, t.computed);
      ASSERT_GE(r.num_tokens, 1);
      if (t.computed < t.request.prompt_tokens) {
        ASSERT_TRUE(r.prefill);
        ASSERT_LE(r.start + r.num_tokens, t.request.prompt_tokens);
        ASSERT_EQ(r.samples, r.start + r.num_tokens == t.request.prompt_tokens);
        if (!r.samples) ++chunks;
      } else {
        ASSERT_FALSE(r.prefill);
        ASSERT_EQ(r.num_tokens, 1);
        ASSERT_TRUE(r.samples);
      }
      ASSERT_EQ(static_cast<int64_t>(r.block_table.size()), kv(r.start + r.num_tokens));
      for (int32_t page : r.block_table) {
        ASSERT_TRUE(pages.insert(page).second) << "page " << page << " in two block tables";
        ASSERT_TRUE(s.pool().is_allocated(page));
      }
      if (!r.adapter.empty()) {
        ASSERT_TRUE(s.adapters().is_resident(r.adapter));
      }
    }
    int64_t resident_pages = 0;
    for (const std::string& name : s.adapters().resident_adapters()) {
      resident_pages += ranks.at(name);
      for (int32_t page : s.adapters().pages(name)) {
        ASSERT_TRUE(pages.insert(page).second) << "adapter " << name << " page " << page << " shared";
      }
    }
    for (const auto& load : plan.adapter_loads) {
      ASSERT_EQ(static_cast<int64_t>(load.pages.size()), ranks.at(load.name));
    }
    // Every running request that decodes runs every step; memory is never over-committed: the
    // reservations of admitted requests plus resident adapters are exactly what the pool holds.
    int64_t committed = resident_pages;
    for (const auto& [id, t] : tracks) {
      if (!t.admitted || t.done) continue;
      committed += kv(t.request.prompt_tokens + t.request.max_new_tokens);
      if (t.computed >= t.request.prompt_tokens) {
        ASSERT_TRUE(scheduled.count(id)) << "decode of " << id << " skipped";
      }
      ASSERT_LT(t.generated, t.request.max_new_tokens);
    }
    ASSERT_EQ(s.pool().used_pages() + s.pool().reserved_pages(), committed);
    ASSERT_LE(committed, kPages);
    ASSERT_EQ(s.num_waiting(), static_cast<int64_t>(waiting.size()));

    if (plan.empty()) continue;
    // The engine: one token where the plan samples; sometimes eos, sometimes a client is gone.
    std::vector<StepResult> results;
    for (const auto& r : plan.requests) {
      StepResult x{r.id, r.samples ? 1 : 0, FinishReason::kNone};
      const int64_t roll = uniform(0, 99);
      if (r.samples && roll < 4) x.finish = FinishReason::kStop;
      if (roll == 99) x = {r.id, r.samples ? uniform(0, 1) : 0, FinishReason::kCancelled};
      tracks.at(r.id).engine_finish = x.finish;
      results.push_back(x);
    }
    if (uniform(0, 9) == 0) {  // a cancel while the step is in flight
      const auto& victim = plan.requests[static_cast<size_t>(uniform(0, int64_t(plan.requests.size()) - 1))];
      ASSERT_TRUE(s.cancel(victim.id));
      ++cancels_in_flight;
      ASSERT_TRUE(s.take_finished().empty());  // freed only at complete_step
    }
    s.complete_step(results);
    for (size_t i = 0; i < plan.requests.size(); ++i) {
      Track& t = tracks.at(plan.requests[i].id);
      t.computed += plan.requests[i].num_tokens;
      t.generated += results[i].new_tokens;
    }
    drain();
  }
  ASSERT_TRUE(s.idle()) << "not drained after " << it << " iterations";
  for (const auto& [id, t] : tracks) EXPECT_TRUE(finished.count(id)) << "request " << id << " lost";
  EXPECT_EQ(finished.size(), tracks.size());
  const SchedulerStats st = s.stats();
  EXPECT_EQ(st.submitted, static_cast<int64_t>(tracks.size()));
  EXPECT_EQ(st.finished + st.cancelled + st.rejected, st.submitted);
  EXPECT_EQ(st.queue_full, refused);
  EXPECT_EQ(st.pool_reserved_pages, 0);
  EXPECT_EQ(st.adapters.pinned, 0);
  EXPECT_EQ(st.pool_used_pages, st.adapters.resident_pages);  // only cached adapters remain
  // The run exercised what it claims to.
  EXPECT_GT(tracks.size(), 400u);
  EXPECT_GT(never_fit, 0);
  EXPECT_GT(refused, 0);
  EXPECT_GT(chunks, 0);
  EXPECT_GT(cancels_in_flight, 0);
  EXPECT_GT(st.cancelled, cancels_in_flight);
  EXPECT_GT(st.adapters.evictions, 0);
  EXPECT_GT(st.adapters.hits, 0);
  int64_t stops = 0;
  for (const auto& [id, reason] : finished) stops += reason == FinishReason::kStop;
  EXPECT_GT(stops, 0);
}

}  // namespace
}  // namespace lowrank::serve
