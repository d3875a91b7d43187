#include "lowrank/serve/adapter_cache.h"

#include <algorithm>

#include "lowrank/core/error.h"

namespace lowrank::serve {

AdapterCache::AdapterCache(MemoryPool& pool) : pool_(pool) {}

AdapterCache::Entry& AdapterCache::entry(const std::string& name) {
  auto it = entries_.find(name);
  LR_CHECK(it != entries_.end(), NotFound, "adapter '", name, "' is not registered");
  return it->second;
}

const AdapterCache::Entry& AdapterCache::entry(const std::string& name) const {
  auto it = entries_.find(name);
  LR_CHECK(it != entries_.end(), NotFound, "adapter '", name, "' is not registered");
  return it->second;
}

void AdapterCache::register_adapter(const std::string& name, int64_t rank, int64_t pages) {
  LR_CHECK(!name.empty(), InvalidArgument, "adapter name must not be empty (empty means the base model)");
  LR_CHECK(rank >= 1, InvalidArgument, "adapter '", name, "': rank must be at least 1, got ", rank);
  LR_CHECK(!is_registered(name), InvalidArgument, "adapter '", name, "' is already registered");
  if (pages < 0) pages = pool_.adapter_pages(rank);
  LR_CHECK(pages >= 1, InvalidArgument, "adapter '", name, "': it must take at least one page, got ", pages);
  LR_CHECK(pages <= pool_.num_pages(), InvalidArgument, "adapter '", name, "' of rank ", rank, " needs ",
           pages, " pages but the memory pool has only ", pool_.num_pages());
  Entry& e = entries_[name];
  e.rank = rank;
  e.page_count = pages;
  ++stats_.registered;
}

void AdapterCache::unregister(const std::string& name) {
  Entry& e = entry(name);
  LR_CHECK(e.pins == 0, InvalidArgument, "adapter '", name, "' is busy: ", e.pins,
           " running request(s) use it");
  if (e.resident) {
    lru_.erase(e.lru_pos);
    evictable_pages_ -= static_cast<int64_t>(e.pages.size());
    stats_.resident_pages -= static_cast<int64_t>(e.pages.size());
    --stats_.resident;
    pool_.release(e.pages);
  }
  entries_.erase(name);
  --stats_.registered;
}

int64_t AdapterCache::rank(const std::string& name) const {
  return entry(name).rank;
}

int64_t AdapterCache::page_count(const std::string& name) const {
  return entry(name).page_count;
}

bool AdapterCache::is_resident(const std::string& name) const {
  return entry(name).resident;
}

int64_t AdapterCache::pin_count(const std::string& name) const {
  return entry(name).pins;
}

int64_t AdapterCache::pages_to_load(const std::string& name) const {
  const Entry& e = entry(name);
  return e.resident ? 0 : e.page_count;
}

std::span<const int32_t> AdapterCache::pages(const std::string& name) const {
  return entry(name).pages;
}

void AdapterCache::evict_front() {
  const std::string victim = lru_.front();
  lru_.pop_front();
  Entry& e = entries_.at(victim);
  pool_.release(e.pages);
  evictable_pages_ -= static_cast<int64_t>(e.pages.size());
  stats_.resident_pages -= static_cast<int64_t>(e.pages.size());
  e.pages.clear();
  e.resident = false;
  --stats_.resident;
  ++stats_.evictions;
}

bool AdapterCache::make_room(int64_t pages) {
  LR_CHECK(pages >= 0, InvalidArgument, "adapter cache: make_room(", pages, ")");
  if (pool_.available_pages() + evictable_pages_ < pages) return false;
  while (pool_.available_pages() < pages) evict_front();
  return true;
}

AcquireStatus AdapterCache::acquire(const std::string& name) {
  Entry& e = entry(name);
  if (e.resident) {
    if (e.pins == 0) {
      lru_.erase(e.lru_pos);
      evictable_pages_ -= static_cast<int64_t>(e.pages.size());
      ++stats_.pinned;
    }
    ++e.pins;
    ++stats_.hits;
    return AcquireStatus::kHit;
  }
  const int64_t need = e.page_count;
  if (!make_room(need)) {
    ++stats_.no_room;
    return AcquireStatus::kNoRoom;
  }
  auto pages = pool_.allocate(need);
  LR_CHECK(pages.has_value(), InternalError, "adapter cache: allocation of ", need,
           " pages failed after make_room");
  e.pages = std::move(*pages);
  e.resident = true;
  e.pins = 1;
  ++stats_.resident;
  ++stats_.pinned;
  stats_.resident_pages += need;
  ++stats_.loads;
  return AcquireStatus::kLoaded;
}

void AdapterCache::release(const std::string& name) {
  Entry& e = entry(name);
  LR_CHECK(e.pins > 0, InvalidArgument, "adapter '", name, "' released but not pinned");
  if (--e.pins == 0) {
    e.lru_pos = lru_.insert(lru_.end(), name);
    evictable_pages_ += static_cast<int64_t>(e.pages.size());
    --stats_.pinned;
  }
}

std::vector<std::string> AdapterCache::resident_adapters() const {
  std::vector<std::string> out(lru_.begin(), lru_.end());
  std::vector<std::string> pinned;
  for (const auto& [name, e] : entries_) {
    if (e.resident && e.pins > 0) pinned.push_back(name);
  }
  std::sort(pinned.begin(), pinned.end());
  out.insert(out.end(), pinned.begin(), pinned.end());
  return out;
}

AdapterCacheStats AdapterCache::stats() const {
  return stats_;
}

}  // namespace lowrank::serve
