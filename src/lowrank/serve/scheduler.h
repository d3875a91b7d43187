// Scheduler — iteration-level (continuous) batching for multi-LoRA serving, deciding each step
// which requests run, with no model. After Orca's iteration-level scheduling (Yu et al., OSDI
// 2022, "Orca: A Distributed Serving System for Transformer-Based Generative Models": requests
// join and leave the batch at every step), vLLM's paged KV cache (Kwon et al., 2023,
// arXiv:2309.06180) and S-LoRA's unified memory pool and admission control (Sheng et al., 2023,
// arXiv:2311.03285, §4-5; LightLLM-style router `slora/server/router/req_queue.py`).
//
// A step. next_step() returns a StepPlan: first every running request that is decoding (one
// token each), then running requests still in prefill (their next prompt chunk), then newly
// admitted requests (their first prompt chunk, or the whole prompt), under three limits:
//   - the token budget: Σ tokens processed ≤ max_batch_tokens (decode = 1, prefill = its chunk);
//   - max_running requests in the batch (max_running ≤ max_batch_tokens is required, so every
//     running decode fits in every step and a running request is never skipped while decoding);
//   - memory: see admission control.
// The engine runs the plan (copying the listed adapter loads in first), then reports per request
// the tokens it sampled and whether it stopped (eos/stop string) or was cancelled, through
// complete_step(). A step that finishes a prompt samples the first new token; each decode step
// feeds the last sampled token and samples the next.
//
// Admission control (S-LoRA §5, `need_max_token_num < max_total_tokens - adapter_size`): a
// request is admitted only if the pool can hold the KV of prompt + max_new_tokens tokens plus the
// pages of its adapter if that is not resident, counting pages of cached-but-unpinned adapters as
// reclaimable. On admission those KV pages are reserved (MemoryPool::reserve) and the adapter is
// pinned; the block table then grows from the reservation one page every page_tokens tokens. So a
// running request can never run out of memory and nothing is ever preempted. Deviation from
// vLLM, which allocates lazily and preempts (recompute or swap) under pressure: the reservation
// trades some capacity (requests that stop early held pages they never used) for no preemption
// machinery; vLLM-style lazy growth with preemption is a possible later refinement.
//
// Automatic prefix caching (prefix_cache.h; vLLM V1's KVCacheManager.get_computed_blocks and
// BlockPool, `vllm/v1/core/kv_cache_manager.py`, `vllm/v1/core/block_pool.py`). A request that
// brings its token ids is looked up at admission: the longest run of cached full pages of its
// prompt under its adapter and cache salt, at most ⌊(prompt − 1) / page_tokens⌋ pages so that at
// least one prompt token is computed and yields the logits of the first new token (vLLM's
// max_cache_hit_length = num_tokens − 1). Those pages open its block table, shared and
// read-only (one reference each); its computed length starts after them, so their prefill is
// skipped, and only kv_pages(prompt + max_new_tokens) − hits pages are reserved. Every page it
// fills completely (prompt, and generated tokens when the engine reports their ids) is offered to
// the cache once computed. At finish its pages are released last-first: cached ones stay, when
// unreferenced, as LRU-evictable pages. Admission counts those as reclaimable and evicts them
// (after the unpinned adapters the adapter cache would evict anyway) before it ever holds a
// request back for memory. A request with skip_prefix_cache_read (prompt logprobs: every prompt
// position's logits are needed) computes its whole prompt but still offers its pages.
//
// Fairness: strict FCFS with head-of-line blocking. Requests are admitted in arrival order; when
// the oldest waiting request cannot be admitted (batch full, budget spent, or memory), no later
// request is admitted in that step, even a smaller one that would fit. This forbids starvation: a
// request that fits an empty pool (checked at submit; a request that could never fit is refused
// there with InvalidArgument) waits only for running requests, each of which finishes within
// ⌈prompt / chunk⌉ + max_new_tokens steps, and nothing overtakes it. The price is some idle
// capacity behind a large head request; S-LoRA's adapter-clustering or deadline queues would be
// alternative policies behind the same interface.
//
// The engine (engine.h) does the rest: it copies each adapter of a plan's adapter_loads from host
// memory into the listed pages before running the step's passes (paged_lora.h), runs the model
// (attention over paged KV through the block tables; each row's LoRA product reading its adapter
// through the adapter's slot table in the pool), samples and applies stop strings; the HTTP layer
// maps submit false to 429 with Retry-After, the errors thrown here to 400/404, a client
// disconnect to cancel, and stats() to /metrics.
//
// Thread safety: none. One engine thread owns the Scheduler and calls next_step/complete_step;
// HTTP threads reach submit/cancel only through the serve queue layer, which holds all locking.
#pragma once

#include <cstdint>
#include <deque>
#include <list>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "lowrank/data/finish_reason.h"
#include "lowrank/serve/adapter_cache.h"
#include "lowrank/serve/memory_pool.h"
#include "lowrank/serve/prefix_cache.h"

namespace lowrank::serve {

using RequestId = int64_t;

struct Request {
  RequestId id = 0;
  std::string adapter;  // a registered adapter; empty = the base model
  int64_t prompt_tokens = 0;
  int64_t max_new_tokens = 0;
  // For prefix caching: the prompt's token ids (empty: the request neither reads nor fills the
  // cache; else exactly prompt_tokens of them), a salt that keeps apart KV computed under
  // different weights of the same adapter name (or tenants), and whether to skip the lookup.
  std::vector<int64_t> token_ids;
  std::string cache_salt;
  bool skip_prefix_cache_read = false;
};

struct SchedulerConfig {
  int64_t max_batch_tokens = 2048;  // tokens processed per step (decode 1 each, prefill chunks)
  int64_t max_running = 64;         // requests in the running batch; ≤ max_batch_tokens
  int64_t max_queue = 256;          // waiting requests; submit() returns false beyond
  bool chunked_prefill = true;      // split prompts across steps to fit the budget
  bool prefix_caching = true;       // reuse cached full KV pages of equal prefixes (vLLM V1's default)
};

// One request's work in a step.
struct ScheduledRequest {
  RequestId id = 0;
  std::string adapter;     // empty = base model
  int64_t start = 0;       // tokens already in its KV cache = first position processed
  int64_t num_tokens = 0;  // positions [start, start + num_tokens) processed this step
  bool prefill = false;    // prompt tokens (else: the last sampled token)
  bool samples = false;    // this step samples a new token for it (decode, or the last prompt chunk)
  std::vector<int32_t> block_table;  // pages covering positions [0, start + num_tokens)
};

// An adapter made resident this step (acquired with kLoaded): the engine copies its host weights
// into `pages` before it runs the step. Pages of adapters evicted to make room are not listed:
// they are free, and whatever is copied there next overwrites them.
struct AdapterLoad {
  std::string name;
  std::vector<int32_t> pages;
};

struct StepPlan {
  int64_t step = 0;                        // 1, 2, ... (0 for an empty plan)
  std::vector<ScheduledRequest> requests;  // decodes, ongoing prefills, then new admissions
  std::vector<AdapterLoad> adapter_loads;
  int64_t num_tokens = 0;  // Σ num_tokens ≤ max_batch_tokens
  bool empty() const { return requests.empty(); }
};

// Why a request left: the library's one FinishReason (data/finish_reason.h).
using data::finish_reason_name;
using data::FinishReason;

// What the engine reports for one scheduled request after running a step.
struct StepResult {
  RequestId id = 0;
  int64_t new_tokens = 0;                     // tokens sampled: 1 when the plan said `samples`, else 0
  FinishReason finish = FinishReason::kNone;  // kNone, kStop, kLength or kCancelled
  int64_t token = -1;  // the sampled id, when new_tokens is 1 (else or unknown: -1); pages of
                       // generated tokens are cached only while their ids are known
};

// A request that left the scheduler, with how.
struct FinishedRequest {
  RequestId id = 0;
  FinishReason reason = FinishReason::kNone;
  int64_t generated_tokens = 0;
  std::string message;  // why, for kRejected
};

// The numbers /metrics reports.
struct SchedulerStats {
  int64_t waiting = 0;  // queue length
  int64_t running = 0;  // requests in the running batch
  int64_t pool_pages = 0;
  int64_t pool_used_pages = 0;       // allocated: KV blocks and resident adapters
  int64_t pool_reserved_pages = 0;   // promised to running requests, not yet allocated
  int64_t pool_available_pages = 0;  // neither
  AdapterCacheStats adapters;
  int64_t submitted = 0;   // accepted by submit()
  int64_t queue_full = 0;  // submit() returned false (HTTP 429)
  int64_t finished = 0;    // kStop or kLength
  int64_t cancelled = 0;
  int64_t rejected = 0;
  int64_t steps = 0;
  int64_t tokens_processed = 0;  // Σ over steps of StepPlan::num_tokens
  int64_t tokens_generated = 0;  // Σ StepResult::new_tokens
  PrefixCacheStats prefix_cache;
};

class Scheduler {
 public:
  // Throws InvalidArgument naming the field for a non-positive limit or max_running >
  // max_batch_tokens, and whatever MemoryPool throws for `pool`.
  Scheduler(SchedulerConfig config, PoolConfig pool);
  Scheduler(const Scheduler&) = delete;
  Scheduler& operator=(const Scheduler&) = delete;

  // Queues `request` (arrival order = call order). Returns false, changing nothing, when max_queue
  // requests are waiting (→ HTTP 429). Throws InvalidArgument for prompt_tokens or max_new_tokens
  // < 1, an id already waiting or running, or a request that could never fit (its KV pages plus
  // its adapter's pages exceed the whole pool, or without chunked prefill a prompt longer than
  // max_batch_tokens); NotFound for an unregistered adapter. Checks come before the queue limit.
  bool submit(Request request);
  // Cancels a waiting or running request: it leaves with kCancelled, its pages and adapter pin
  // are freed. A request in the step now in flight is freed at complete_step (the engine is still
  // writing its pages) and leaves as kCancelled whatever its result says. Returns false for an unknown or
  // already finished id, or a second cancel.
  bool cancel(RequestId id);

  // Plans the next step (see the file comment) and marks it in flight. An empty plan needs no
  // complete_step. Throws InvalidArgument while a step is in flight.
  StepPlan next_step();
  // Applies the engine's results for the step in flight: exactly one result per scheduled
  // request. Validates everything first (an unknown or missing id, a duplicate, a new_tokens other
  // than the plan's sample count, or finish = kRejected throw InvalidArgument and change nothing).
  // Requests that stop, reach max_new_tokens or are cancelled free their pages and unpin their
  // adapter.
  void complete_step(std::span<const StepResult> results);

  // Requests that left since the last call (finished, cancelled, rejected), in that order.
  std::vector<FinishedRequest> take_finished();

  // Register and unregister adapters here (acquire/release belong to the scheduler alone). Unregistering one
  // that waiting requests name makes them leave as kRejected when they reach the head of the queue.
  AdapterCache& adapters() { return cache_; }
  const AdapterCache& adapters() const { return cache_; }
  const MemoryPool& pool() const { return pool_; }
  const PrefixCache& prefix_cache() const { return prefix_; }
  // Frees the cached prefix pages computed under `adapter` (call when it is unregistered).
  int64_t forget_prefixes(const std::string& adapter) { return prefix_.drop_adapter(adapter); }
  const SchedulerConfig& config() const { return config_; }

  int64_t num_waiting() const { return static_cast<int64_t>(waiting_.size()); }
  int64_t num_running() const { return static_cast<int64_t>(running_.size()); }
  bool idle() const { return waiting_.empty() && running_.empty(); }
  bool step_in_flight() const { return in_flight_; }
  SchedulerStats stats() const;

 private:
  struct Sequence {
    Request request;
    int64_t computed = 0;       // tokens whose KV is in the cache
    int64_t generated = 0;      // tokens sampled so far
    int64_t reserved_left = 0;  // reserved pages not yet in block_table
    std::vector<int32_t> block_table;
    int64_t scheduled_tokens = 0;  // in the step in flight (0: not scheduled)
    bool scheduled_samples = false;
    bool cancel_requested = false;
    // Prefix caching: the ids of the tokens so far (prompt, then sampled), the chain hashes of
    // the leading pages offered to the cache, and whether every sampled id is known.
    std::vector<int64_t> tokens;
    std::vector<PageHash> page_hashes;
    bool tokens_known = true;
  };

  int64_t pages_needed(const Request& request) const;  // KV + adapter, for the never-fits check
  void schedule(Sequence& seq, int64_t tokens, StepPlan& plan);
  void finish(std::list<Sequence>::iterator it, FinishReason reason);
  void reject_waiting_head(const std::string& message);
  // Offers the pages `seq` has filled since the last call to the prefix cache.
  void cache_full_pages(Sequence& seq);

  SchedulerConfig config_;
  MemoryPool pool_;
  AdapterCache cache_;
  PrefixCache prefix_;
  std::deque<Request> waiting_;
  std::list<Sequence> running_;  // admission order
  std::unordered_map<RequestId, std::list<Sequence>::iterator> running_index_;
  std::unordered_set<RequestId> live_ids_;  // waiting or running
  std::vector<FinishedRequest> finished_;
  bool in_flight_ = false;
  SchedulerStats stats_;
};

}  // namespace lowrank::serve
