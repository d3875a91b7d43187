#include "lowrank/serve/scheduler.h"

#include <algorithm>
#include <utility>

#include "lowrank/core/error.h"

namespace lowrank::serve {

Scheduler::Scheduler(SchedulerConfig config, PoolConfig pool)
    : config_(config), pool_(std::move(pool)), cache_(pool_), prefix_(pool_) {
  LR_CHECK(config_.max_batch_tokens > 0, InvalidArgument,
           "scheduler: max_batch_tokens must be positive, got ", config_.max_batch_tokens);
  LR_CHECK(config_.max_running > 0, InvalidArgument, "scheduler: max_running must be positive, got ",
           config_.max_running);
  LR_CHECK(config_.max_running <= config_.max_batch_tokens, InvalidArgument, "scheduler: max_running ",
           config_.max_running, " exceeds max_batch_tokens ", config_.max_batch_tokens,
           " (every running request must be able to decode in every step)");
  LR_CHECK(config_.max_queue > 0, InvalidArgument, "scheduler: max_queue must be positive, got ",
           config_.max_queue);
}

int64_t Scheduler::pages_needed(const Request& r) const {
  int64_t pages = pool_.kv_pages(r.prompt_tokens + r.max_new_tokens);
  if (!r.adapter.empty()) pages += cache_.page_count(r.adapter);
  return pages;
}

bool Scheduler::submit(Request request) {
  LR_CHECK(request.prompt_tokens >= 1, InvalidArgument, "request ", request.id,
           ": prompt_tokens must be at least 1, got ", request.prompt_tokens);
  LR_CHECK(request.max_new_tokens >= 1, InvalidArgument, "request ", request.id,
           ": max_new_tokens must be at least 1, got ", request.max_new_tokens);
  LR_CHECK(
      request.token_ids.empty() || static_cast<int64_t>(request.token_ids.size()) == request.prompt_tokens,
      InvalidArgument, "request ", request.id, ": ", request.token_ids.size(), " token ids for a prompt of ",
      request.prompt_tokens, " tokens");
  LR_CHECK(!live_ids_.count(request.id), InvalidArgument, "request id ", request.id,
           " is already waiting or running");
  LR_CHECK(request.adapter.empty() || cache_.is_registered(request.adapter), NotFound, "request ", request.id,
           ": adapter '", request.adapter, "' is not registered");
  LR_CHECK(config_.chunked_prefill || request.prompt_tokens <= config_.max_batch_tokens, InvalidArgument,
           "request ", request.id, ": prompt of ", request.prompt_tokens,
           " tokens exceeds max_batch_tokens = ", config_.max_batch_tokens, " (chunked prefill is off)");
  const int64_t need = pages_needed(request);
  LR_CHECK(need <= pool_.num_pages(), InvalidArgument, "request ", request.id, ": ", request.prompt_tokens,
           " prompt + ", request.max_new_tokens, " new tokens",
           request.adapter.empty() ? std::string() : " with adapter '" + request.adapter + "'", " need ",
           need, " pages but the memory pool has only ", pool_.num_pages(),
           "; lower max_tokens or the prompt");
  if (num_waiting() >= config_.max_queue) {
    ++stats_.queue_full;
    return false;
  }
  live_ids_.insert(request.id);
  waiting_.push_back(std::move(request));
  ++stats_.submitted;
  return true;
}

bool Scheduler::cancel(RequestId id) {
  auto w = std::find_if(waiting_.begin(), waiting_.end(), [&](const Request& r) { return r.id == id; });
  if (w != waiting_.end()) {
    finished_.push_back({id, FinishReason::kCancelled, 0, {}});
    ++stats_.cancelled;
    live_ids_.erase(id);
    waiting_.erase(w);
    return true;
  }
  auto r = running_index_.find(id);
  if (r == running_index_.end() || r->second->cancel_requested) return false;
  if (in_flight_ && r->second->scheduled_tokens > 0) {
    r->second->cancel_requested = true;  // the engine is using its pages: free at complete_step
  } else {
    finish(r->second, FinishReason::kCancelled);
  }
  return true;
}

void Scheduler::finish(std::list<Sequence>::iterator it, FinishReason reason) {
  Sequence& seq = *it;
  prefix_.release(seq.block_table);  // private pages to the pool, cached ones (unreferenced) to the LRU
  pool_.unreserve(seq.reserved_left);
  if (!seq.request.adapter.empty()) cache_.release(seq.request.adapter);
  finished_.push_back({seq.request.id, reason, seq.generated, {}});
  if (reason == FinishReason::kCancelled) {
    ++stats_.cancelled;
  } else {
    ++stats_.finished;
  }
  live_ids_.erase(seq.request.id);
  running_index_.erase(seq.request.id);
  running_.erase(it);
}

void Scheduler::reject_waiting_head(const std::string& message) {
  const Request& r = waiting_.front();
  finished_.push_back({r.id, FinishReason::kRejected, 0, message});
  ++stats_.rejected;
  live_ids_.erase(r.id);
  waiting_.pop_front();
}

void Scheduler::cache_full_pages(Sequence& seq) {
  if (!config_.prefix_caching || seq.tokens.empty()) return;
  const int64_t page_tokens = pool_.page_tokens();
  // Only full pages whose every position is computed and whose every token id is known.
  const int64_t full = std::min(seq.computed, static_cast<int64_t>(seq.tokens.size())) / page_tokens;
  const std::string extra = page_extra_key(seq.request.adapter, seq.request.cache_salt);
  for (auto i = static_cast<int64_t>(seq.page_hashes.size()); i < full; ++i) {
    const PageHash parent = i == 0 ? kRootPageHash : seq.page_hashes[static_cast<size_t>(i - 1)];
    const std::span<const int64_t> ids(seq.tokens.data() + i * page_tokens, static_cast<size_t>(page_tokens));
    // A page equal to one cached already (computed concurrently) stays private.
    prefix_.insert(seq.block_table[static_cast<size_t>(i)], parent, ids, extra);
    seq.page_hashes.push_back(hash_page(parent, ids, extra));
  }
}

void Scheduler::schedule(Sequence& seq, int64_t tokens, StepPlan& plan) {
  const int64_t end = seq.computed + tokens;
  // A cached page is read-only: the positions written now must lie in pages of this sequence's own.
  for (int64_t i = seq.computed / pool_.page_tokens();
       i < std::min<int64_t>(pool_.kv_pages(end), static_cast<int64_t>(seq.block_table.size())); ++i)
    LR_CHECK(!prefix_.is_cached(seq.block_table[static_cast<size_t>(i)]), InternalError,
             "scheduler: request ", seq.request.id, " would write positions [", seq.computed, ", ", end,
             ") into cached page ", seq.block_table[static_cast<size_t>(i)]);
  const int64_t grow = pool_.kv_pages(end) - static_cast<int64_t>(seq.block_table.size());
  if (grow > 0) {
    LR_CHECK(grow <= seq.reserved_left, InternalError, "scheduler: request ", seq.request.id, " needs ", grow,
             " more pages but has ", seq.reserved_left, " reserved");
    std::vector<int32_t> pages = pool_.allocate_reserved(grow);
    seq.block_table.insert(seq.block_table.end(), pages.begin(), pages.end());
    seq.reserved_left -= grow;
  }
  const bool prefill = seq.computed < seq.request.prompt_tokens;
  seq.scheduled_tokens = tokens;
  seq.scheduled_samples = !prefill || end == seq.request.prompt_tokens;
  plan.requests.push_back({seq.request.id, seq.request.adapter, seq.computed, tokens, prefill,
                           seq.scheduled_samples, seq.block_table});
  plan.num_tokens += tokens;
}

StepPlan Scheduler::next_step() {
  LR_CHECK(!in_flight_, InvalidArgument, "scheduler: next_step() called before complete_step() of step ",
           stats_.steps);
  StepPlan plan;
  int64_t budget = config_.max_batch_tokens;
  // 1. Running requests that decode: one token each (always fits: running ≤ max_running ≤ budget).
  for (Sequence& seq : running_) {
    if (seq.computed >= seq.request.prompt_tokens) {
      schedule(seq, 1, plan);
      budget -= 1;
    }
  }
  // 2. Running requests still in (chunked) prefill, oldest first.
  for (Sequence& seq : running_) {
    if (budget == 0) break;
    if (seq.computed < seq.request.prompt_tokens) {
      const int64_t n = std::min(seq.request.prompt_tokens - seq.computed, budget);
      schedule(seq, n, plan);
      budget -= n;
    }
  }
  // 3. Admission, strict FCFS: stop at the first waiting request that cannot be admitted.
  while (!waiting_.empty() && num_running() < config_.max_running && budget > 0) {
    const Request& head = waiting_.front();
    if (!config_.chunked_prefill && head.prompt_tokens > budget) break;
    if (!head.adapter.empty() && !cache_.is_registered(head.adapter)) {
      reject_waiting_head(str("adapter '", head.adapter, "' was unregistered while the request waited"));
      continue;
    }
    if (pages_needed(head) > pool_.num_pages()) {  // possible after re-registering at a higher rank
      reject_waiting_head(str("request needs ", pages_needed(head), " pages but the memory pool has only ",
                              pool_.num_pages()));
      continue;
    }
    // The longest cached prefix (full pages, at least one prompt token left to compute): those
    // pages are shared, not reserved.
    const bool caching = config_.prefix_caching && !head.token_ids.empty();
    const bool lookup = caching && !head.skip_prefix_cache_read;
    PrefixCache::Match hit;
    if (lookup)
      hit = prefix_.match(head.token_ids, page_extra_key(head.adapter, head.cache_salt),
                          (head.prompt_tokens - 1) / pool_.page_tokens());
    const auto hit_pages = static_cast<int64_t>(hit.pages.size());
    const int64_t kv = pool_.kv_pages(head.prompt_tokens + head.max_new_tokens) - hit_pages;
    // Evictable cached pages are reclaimable too, except the ones this request is about to share.
    const int64_t prefix_reclaimable = prefix_.evictable_pages() - prefix_.unreferenced_among(hit.pages);
    int64_t adapter_load = 0;
    int64_t reclaimable = cache_.evictable_pages();
    if (!head.adapter.empty()) {
      adapter_load = cache_.pages_to_load(head.adapter);
      // A cached unpinned adapter stops being reclaimable once this request pins it.
      if (cache_.is_resident(head.adapter) && cache_.pin_count(head.adapter) == 0) {
        reclaimable -= static_cast<int64_t>(cache_.pages(head.adapter).size());
      }
    }
    if (pool_.available_pages() + reclaimable + prefix_reclaimable < kv + adapter_load) break;

    prefix_.touch(hit.pages);
    // Unpinned adapters go first (the adapter cache evicts them below as before); cached prefix
    // pages only for what those cannot cover.
    const int64_t shortfall = kv + adapter_load - (pool_.available_pages() + reclaimable);
    if (shortfall > 0) prefix_.evict(shortfall);
    if (lookup) prefix_.record_query(head.prompt_tokens, hit_pages * pool_.page_tokens());

    if (!head.adapter.empty()) {
      const AcquireStatus status = cache_.acquire(head.adapter);
      LR_CHECK(status != AcquireStatus::kNoRoom, InternalError, "scheduler: adapter '", head.adapter,
               "' found no room after the admission check");
      if (status == AcquireStatus::kLoaded) {
        auto pages = cache_.pages(head.adapter);
        plan.adapter_loads.push_back({head.adapter, std::vector<int32_t>(pages.begin(), pages.end())});
      }
    }
    const bool room = cache_.make_room(kv) && pool_.reserve(kv);
    LR_CHECK(room, InternalError, "scheduler: request ", head.id, " found no room for ", kv,
             " KV pages after the admission check");
    Sequence seq;
    seq.request = std::move(waiting_.front());
    seq.reserved_left = kv;
    seq.block_table = std::move(hit.pages);
    seq.page_hashes = std::move(hit.hashes);
    seq.computed = hit_pages * pool_.page_tokens();  // their prefill is skipped
    if (caching) seq.tokens = std::move(seq.request.token_ids);
    waiting_.pop_front();
    auto it = running_.insert(running_.end(), std::move(seq));
    running_index_[it->request.id] = it;
    const int64_t n = std::min(it->request.prompt_tokens - it->computed, budget);
    schedule(*it, n, plan);
    budget -= n;
  }
  if (!plan.empty()) {
    in_flight_ = true;
    plan.step = ++stats_.steps;
    stats_.tokens_processed += plan.num_tokens;
  }
  return plan;
}

void Scheduler::complete_step(std::span<const StepResult> results) {
  LR_CHECK(in_flight_, InvalidArgument, "scheduler: complete_step() without a step in flight");
  // Validate everything before changing anything.
  std::unordered_set<RequestId> seen;
  for (const StepResult& r : results) {
    auto it = running_index_.find(r.id);
    LR_CHECK(it != running_index_.end() && it->second->scheduled_tokens > 0, InvalidArgument,
             "scheduler: result for request ", r.id, ", which is not in step ", stats_.steps);
    LR_CHECK(seen.insert(r.id).second, InvalidArgument, "scheduler: two results for request ", r.id);
    LR_CHECK(r.finish != FinishReason::kRejected, InvalidArgument, "scheduler: request ", r.id,
             ": the engine cannot reject a running request; report kCancelled");
    const Sequence& seq = *it->second;
    const int64_t expected = seq.scheduled_samples ? 1 : 0;
    const bool cancelling = seq.cancel_requested || r.finish == FinishReason::kCancelled;
    LR_CHECK(r.new_tokens == expected || (cancelling && r.new_tokens >= 0 && r.new_tokens <= expected),
             InvalidArgument, "scheduler: request ", r.id, " reported ", r.new_tokens,
             " new tokens but step ", stats_.steps, " samples ", expected);
    LR_CHECK(expected == 1 || (r.finish != FinishReason::kStop && r.finish != FinishReason::kLength),
             InvalidArgument, "scheduler: request ", r.id, " reported finish '", finish_reason_name(r.finish),
             "' on a prompt chunk that samples nothing");
  }
  for (const Sequence& seq : running_) {
    LR_CHECK(seq.scheduled_tokens == 0 || seen.count(seq.request.id), InvalidArgument,
             "scheduler: no result for request ", seq.request.id, " of step ", stats_.steps);
  }
  for (const StepResult& r : results) {
    auto it = running_index_.at(r.id);
    Sequence& seq = *it;
    seq.computed += seq.scheduled_tokens;
    seq.generated += r.new_tokens;
    stats_.tokens_generated += r.new_tokens;
    if (r.new_tokens == 1 && !seq.tokens.empty()) {  // a request that fills the cache
      if (r.token < 0) seq.tokens_known = false;
      if (seq.tokens_known) seq.tokens.push_back(r.token);
    }
    seq.scheduled_tokens = 0;
    seq.scheduled_samples = false;
    FinishReason reason = FinishReason::kNone;
    if (seq.cancel_requested || r.finish == FinishReason::kCancelled) {
      reason = FinishReason::kCancelled;
    } else if (r.finish == FinishReason::kStop || r.finish == FinishReason::kLength) {
      reason = r.finish;
    } else if (seq.generated >= seq.request.max_new_tokens) {
      reason = FinishReason::kLength;
    }
    // A cancelled step's KV may be incomplete (a failed pass): nothing of it is cached.
    if (reason != FinishReason::kCancelled) cache_full_pages(seq);
    if (reason != FinishReason::kNone) finish(it, reason);
  }
  in_flight_ = false;
}

std::vector<FinishedRequest> Scheduler::take_finished() {
  return std::exchange(finished_, {});
}

SchedulerStats Scheduler::stats() const {
  SchedulerStats s = stats_;
  s.waiting = num_waiting();
  s.running = num_running();
  s.pool_pages = pool_.num_pages();
  s.pool_used_pages = pool_.used_pages();
  s.pool_reserved_pages = pool_.reserved_pages();
  s.pool_available_pages = pool_.available_pages();
  s.adapters = cache_.stats();
  s.prefix_cache = prefix_.stats();
  return s;
}

}  // namespace lowrank::serve
