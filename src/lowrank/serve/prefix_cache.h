// PrefixCache — automatic prefix caching of full KV pages, after vLLM V1's hash-based prefix
// caching (vLLM's design note "Automatic Prefix Caching"; code: vllm-project/vllm
// `vllm/v1/core/kv_cache_utils.py` (hash_block_tokens, BlockHashType, generate_block_hash_extra_keys)
// and `vllm/v1/core/block_pool.py` (cache_full_blocks, touch, free_blocks, _maybe_evict_cached_block)).
//
// A page holding the keys and values of tokens [i·P, (i+1)·P) of a sequence (P = page_tokens) is
// determined by every token before its end and by what else shapes the KV: the adapter (its LoRA
// deltas change k and v) and a cache salt (the engine's adapter-registration serial, and a tenant
// if the server ever isolates tenants). So it is named by a chained hash, as in vLLM:
//     h_0 = ROOT,   h_{i+1} = H(h_i, tokens[i·P, (i+1)·P), extra),   extra = (adapter, salt),
// and two sequences whose first i+1 pages carry the same h_{i+1} hold identical KV there. Only
// full pages are hashed and cached: the last, partial page of a sequence is always private.
// As vLLM's BlockHashType keeps (hash value, token ids, extra keys) to guard against collisions of
// the hash value, an entry here keeps its parent hash, its P token ids and its extra key, and a
// lookup compares all three; what remains is a collision of two parents' 64-bit chain values.
//
// Reference counts. A cached page is referenced by every running sequence whose block table holds
// it (a sequence that computed it, or one that hit it). touch() (vLLM's BlockPool.touch) adds a
// reference; release() drops one, and a cached page left without references is not freed: it
// stays in the pool, valid, at the tail of an LRU list of evictable pages. evict() frees pages
// from the head of that list (least recently released first) when the pool needs them. A
// sequence releases its pages last-first (vLLM's free_blocks of the reversed block list), so a
// prefix's tail pages, which fewer requests share, are evicted before its head. Pages that were
// never cached (private) go straight back to the MemoryPool.
//
// Invariant the scheduler keeps: a cached page is read-only. A sequence writes only positions at
// or after its computed length, and only pages it allocated itself; a page is cached only once
// every one of its P positions is computed.
//
// Deviations from vLLM: one page per hash (vLLM keeps duplicate blocks computed concurrently
// under the same hash; here a duplicate stays private to its sequence and is freed with it); the
// hash is a 64-bit mix, not SHA-256 (a differing page's token ids or extra key are caught by the
// comparison above); eviction is driven by the scheduler's
// admission (before a request is refused), not by every allocation.
//
// Thread safety: none; owned by the Scheduler (see scheduler.h).
#pragma once

#include <cstdint>
#include <list>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "lowrank/serve/memory_pool.h"

namespace lowrank::serve {

using PageHash = uint64_t;

// The chain's start (vLLM's NONE_HASH), a fixed value so that hashes are reproducible.
inline constexpr PageHash kRootPageHash = 0x6c6f7772616e6b31ULL;

// h_{i+1} = H(parent = h_i, the page's token ids, extra key).
PageHash hash_page(PageHash parent, std::span<const int64_t> tokens, std::string_view extra);

// The extra key of a page: what besides its tokens shapes its KV. The adapter name ("" = base
// model) and a salt (the engine's adapter-registration serial; a tenant id if there were tenants).
std::string page_extra_key(std::string_view adapter, std::string_view salt);

// The numbers /metrics reports, in vLLM's terms (prefix_cache_queries / prefix_cache_hits count
// prompt tokens).
struct PrefixCacheStats {
  int64_t queries = 0;          // prompt tokens of the requests looked up
  int64_t hits = 0;             // of those, tokens found cached (their prefill skipped)
  int64_t cached_pages = 0;     // pages in the table now (referenced or evictable)
  int64_t evictable_pages = 0;  // cached pages no running request holds
  int64_t evictions = 0;        // cached pages evicted to free pool pages
};

class PrefixCache {
 public:
  // `pool` must outlive the cache; evicted and private released pages go back to it.
  explicit PrefixCache(MemoryPool& pool);

  struct Match {
    std::vector<int32_t> pages;    // the cached pages of the longest matching prefix
    std::vector<PageHash> hashes;  // their chain hashes h_1 .. h_n
  };
  // The longest run of cached pages covering full pages of `tokens` from the start under `extra`,
  // at most `max_pages` of them. Changes nothing (touch() the pages to use them).
  Match match(std::span<const int64_t> tokens, std::string_view extra, int64_t max_pages) const;
  // Pages among `pages` (cached ones) that no sequence references: evictable now.
  int64_t unreferenced_among(std::span<const int32_t> pages) const;
  // One more reference to each cached page of `pages` (taking unreferenced ones off the LRU).
  // Throws InternalError for a page that is not cached.
  void touch(std::span<const int32_t> pages);
  // Caches `page`, which its sequence computed and holds (one reference), under the key (parent,
  // tokens, extra); `tokens` must be a full page. Returns false and changes nothing when another
  // page is cached under that hash already (the page then stays private).
  bool insert(int32_t page, PageHash parent, std::span<const int64_t> tokens, std::string_view extra);
  // Drops one sequence's hold on `block_table`, last page first: cached pages lose a reference (at
  // zero they become evictable), private pages go back to the pool.
  void release(std::span<const int32_t> block_table);
  // Frees up to `pages` evictable pages to the pool, least recently released first; returns how
  // many it freed.
  int64_t evict(int64_t pages);
  // Frees every unreferenced cached page computed under `adapter` (any salt); returns how many.
  // For an adapter unloaded: a request queued for it before a new adapter took its name must not
  // find the old weights' pages.
  int64_t drop_adapter(std::string_view adapter);
  // Records one lookup of `query_tokens` prompt tokens, `hit_tokens` of them found.
  void record_query(int64_t query_tokens, int64_t hit_tokens);

  bool is_cached(int32_t page) const { return entries_.count(page) != 0; }
  // References to a cached page; 0 for an evictable one. Throws InternalError if not cached.
  int64_t ref_count(int32_t page) const;
  int64_t cached_pages() const { return static_cast<int64_t>(entries_.size()); }
  // The ids of the cached pages, ascending.
  std::vector<int32_t> pages() const;
  int64_t evictable_pages() const { return static_cast<int64_t>(lru_.size()); }
  PrefixCacheStats stats() const;

 private:
  struct Entry {
    PageHash hash = 0;
    PageHash parent = 0;
    std::vector<int64_t> tokens;
    std::string extra;
    int64_t refs = 0;
    std::list<int32_t>::iterator lru_pos;  // valid iff refs == 0
  };
  // The page cached under the key, or -1.
  int32_t find(PageHash hash, PageHash parent, std::span<const int64_t> tokens, std::string_view extra) const;

  MemoryPool& pool_;
  std::unordered_map<PageHash, int32_t> by_hash_;
  std::unordered_map<int32_t, Entry> entries_;  // by page id
  std::list<int32_t> lru_;                      // unreferenced cached pages, next victim first
  PrefixCacheStats stats_;
};

}  // namespace lowrank::serve
