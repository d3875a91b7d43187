// Automatic prefix caching of full KV pages; see prefix_cache.h.
#include "lowrank/serve/prefix_cache.h"

#include <algorithm>
#include <functional>

#include "lowrank/core/error.h"

namespace lowrank::serve {
namespace {

// splitmix64's finaliser: every input bit reaches every output bit.
uint64_t mix64(uint64_t x) {
  x ^= x >> 30;
  x *= 0xbf58476d1ce4e5b9ULL;
  x ^= x >> 27;
  x *= 0x94d049bb133111ebULL;
  x ^= x >> 31;
  return x;
}

// Order-dependent: (a, b) and (b, a) differ.
uint64_t combine(uint64_t seed, uint64_t value) {
  return mix64(seed ^ (mix64(value) + 0x9e3779b97f4a7c15ULL + (seed << 6) + (seed >> 2)));
}

}  // namespace

PageHash hash_page(PageHash parent, std::span<const int64_t> tokens, std::string_view extra) {
  uint64_t h = combine(parent, std::hash<std::string_view>{}(extra));
  h = combine(h, tokens.size());
  for (int64_t t : tokens) h = combine(h, static_cast<uint64_t>(t));
  return h;
}

std::string page_extra_key(std::string_view adapter, std::string_view salt) {
  // A separator the engine's salts (decimal serials) never contain keeps ("ab", "c") apart from
  // ("a", "bc").
  std::string key(adapter);
  key += '\x1f';
  key += salt;
  return key;
}

PrefixCache::PrefixCache(MemoryPool& pool) : pool_(pool) {}

int32_t PrefixCache::find(PageHash hash, PageHash parent, std::span<const int64_t> tokens,
                          std::string_view extra) const {
  const auto it = by_hash_.find(hash);
  if (it == by_hash_.end()) return -1;
  const Entry& e = entries_.at(it->second);
  if (e.parent != parent || e.extra != extra || !std::ranges::equal(e.tokens, tokens)) return -1;
  return it->second;
}

PrefixCache::Match PrefixCache::match(std::span<const int64_t> tokens, std::string_view extra,
                                      int64_t max_pages) const {
  Match m;
  const int64_t page_tokens = pool_.page_tokens();
  const int64_t full = std::min(static_cast<int64_t>(tokens.size()) / page_tokens, max_pages);
  PageHash parent = kRootPageHash;
  for (int64_t i = 0; i < full; ++i) {
    const auto page_ids =
        tokens.subspan(static_cast<size_t>(i * page_tokens), static_cast<size_t>(page_tokens));
    const PageHash h = hash_page(parent, page_ids, extra);
    const int32_t page = find(h, parent, page_ids, extra);
    if (page < 0) break;  // the chain stops at the first miss
    m.pages.push_back(page);
    m.hashes.push_back(h);
    parent = h;
  }
  return m;
}

int64_t PrefixCache::unreferenced_among(std::span<const int32_t> pages) const {
  int64_t n = 0;
  for (int32_t p : pages) n += ref_count(p) == 0 ? 1 : 0;
  return n;
}

void PrefixCache::touch(std::span<const int32_t> pages) {
  for (int32_t p : pages) {
    auto it = entries_.find(p);
    LR_CHECK(it != entries_.end(), InternalError, "prefix cache: touch of page ", p, ", which is not cached");
    if (it->second.refs == 0) lru_.erase(it->second.lru_pos);
    ++it->second.refs;
  }
}

bool PrefixCache::insert(int32_t page, PageHash parent, std::span<const int64_t> tokens,
                         std::string_view extra) {
  LR_CHECK(static_cast<int64_t>(tokens.size()) == pool_.page_tokens(), InternalError, "prefix cache: page ",
           page, " offered with ", tokens.size(), " tokens; only full pages of ", pool_.page_tokens(),
           " are cached");
  LR_CHECK(!entries_.count(page), InternalError, "prefix cache: page ", page, " is cached already");
  const PageHash h = hash_page(parent, tokens, extra);
  if (by_hash_.count(h)) return false;
  by_hash_.emplace(h, page);
  Entry e;
  e.hash = h;
  e.parent = parent;
  e.tokens.assign(tokens.begin(), tokens.end());
  e.extra = std::string(extra);
  e.refs = 1;  // the sequence that computed it
  entries_.emplace(page, std::move(e));
  return true;
}

void PrefixCache::release(std::span<const int32_t> block_table) {
  std::vector<int32_t> private_pages;
  for (auto p = block_table.rbegin(); p != block_table.rend(); ++p) {
    auto it = entries_.find(*p);
    if (it == entries_.end()) {
      private_pages.push_back(*p);
      continue;
    }
    Entry& e = it->second;
    LR_CHECK(e.refs > 0, InternalError, "prefix cache: page ", *p, " released more often than it was held");
    if (--e.refs == 0) e.lru_pos = lru_.insert(lru_.end(), *p);
  }
  pool_.release(private_pages);
}

int64_t PrefixCache::evict(int64_t pages) {
  int64_t freed = 0;
  while (freed < pages && !lru_.empty()) {
    const int32_t page = lru_.front();
    lru_.pop_front();
    by_hash_.erase(entries_.at(page).hash);
    entries_.erase(page);
    const int32_t ids[] = {page};
    pool_.release(ids);
    ++freed;
  }
  stats_.evictions += freed;
  return freed;
}

int64_t PrefixCache::drop_adapter(std::string_view adapter) {
  const std::string prefix = page_extra_key(adapter, "");
  std::vector<int32_t> dropped;
  for (auto it = lru_.begin(); it != lru_.end();) {
    const Entry& e = entries_.at(*it);
    if (e.extra.starts_with(prefix)) {
      by_hash_.erase(e.hash);
      entries_.erase(*it);
      dropped.push_back(*it);
      it = lru_.erase(it);
    } else {
      ++it;
    }
  }
  pool_.release(dropped);
  return static_cast<int64_t>(dropped.size());
}

void PrefixCache::record_query(int64_t query_tokens, int64_t hit_tokens) {
  stats_.queries += query_tokens;
  stats_.hits += hit_tokens;
}

int64_t PrefixCache::ref_count(int32_t page) const {
  const auto it = entries_.find(page);
  LR_CHECK(it != entries_.end(), InternalError, "prefix cache: page ", page, " is not cached");
  return it->second.refs;
}

std::vector<int32_t> PrefixCache::pages() const {
  std::vector<int32_t> out;
  out.reserve(entries_.size());
  for (const auto& [page, entry] : entries_) out.push_back(page);
  std::sort(out.begin(), out.end());
  return out;
}

PrefixCacheStats PrefixCache::stats() const {
  PrefixCacheStats s = stats_;
  s.cached_pages = cached_pages();
  s.evictable_pages = evictable_pages();
  return s;
}

}  // namespace lowrank::serve
