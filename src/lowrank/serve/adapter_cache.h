// AdapterCache — which LoRA adapters are resident in the unified memory pool, after S-LoRA
// (Sheng et al., 2023, "S-LoRA: Serving Thousands of Concurrent LoRA Adapters", arXiv:2311.03285,
// §4): every adapter is kept in host memory and only those the running batch needs are packed
// into the device pool, whose pages they share with the KV cache (see memory_pool.h).
//
// Design. Adapters are registered by name with their rank and page count (their host copies
// live in the engine, paged_lora.h). acquire(name) pins an adapter, loading it (allocating
// adapter_pages(rank) pages) if it is not resident. Unpinned resident adapters stay cached and are evicted
// least recently released first, only when their pages are needed (by another adapter, or by the scheduler's
// KV reservations through make_room). Pinned adapters are never evicted. Deviation from S-LoRA,
// which offloads an adapter as soon as no running request uses it: keeping it until its pages
// are needed saves reloads of popular adapters at no cost in admission capacity, since cached
// pages count as reclaimable.
//
// Failure to find room is not an error: acquire returns kNoRoom (and evicts nothing), so the
// scheduler can keep the request waiting.
//
// The engine copies the host weights of a kLoaded adapter into its pages before the step that
// uses it (the scheduler lists it in StepPlan::adapter_loads), on the step's own stream; S-LoRA
// can overlap that copy with compute on a separate stream, which is not done here. Its routed
// LoRA products read the adapters through their pages (serve/paged_lora.h).
//
// Thread safety: none; owned by the Scheduler and driven by the engine thread (see scheduler.h).
#pragma once

#include <cstdint>
#include <list>
#include <span>
#include <string>
#include <unordered_map>
#include <vector>

#include "lowrank/serve/memory_pool.h"

namespace lowrank::serve {

// The numbers /metrics reports.
struct AdapterCacheStats {
  int64_t registered = 0;
  int64_t resident = 0;        // adapters holding pages now
  int64_t pinned = 0;          // resident adapters with at least one pin
  int64_t resident_pages = 0;  // pages held by resident adapters
  int64_t hits = 0;            // acquire() found the adapter resident
  int64_t loads = 0;           // acquire() made it resident
  int64_t evictions = 0;       // resident adapters evicted to make room
  int64_t no_room = 0;         // acquire() returned kNoRoom
};

enum class AcquireStatus {
  kHit,     // was resident: pinned, nothing to copy
  kLoaded,  // pages allocated and pinned: the engine must copy the weights in before use
  kNoRoom,  // not enough reclaimable pages: nothing changed; retry later
};

class AdapterCache {
 public:
  // `pool` must outlive the cache; adapter pages come from its unreserved pages.
  explicit AdapterCache(MemoryPool& pool);

  // Makes `name` known. `pages` is what it takes when resident; negative: the pool's
  // adapter_pages(rank), for adapters on the pool's lora_modules. Throws InvalidArgument for an
  // empty name, a name already registered, rank < 1, pages 0, or an adapter that could not fit in
  // the whole pool.
  void register_adapter(const std::string& name, int64_t rank, int64_t pages = -1);
  // Forgets `name`, freeing its pages if resident. Throws NotFound for an unknown name and
  // InvalidArgument ("busy") while a request pins it.
  void unregister(const std::string& name);

  bool is_registered(const std::string& name) const { return entries_.count(name) != 0; }
  // The following throw NotFound for an unknown name.
  int64_t rank(const std::string& name) const;
  int64_t page_count(const std::string& name) const;  // pages it takes when resident
  bool is_resident(const std::string& name) const;
  int64_t pin_count(const std::string& name) const;
  // Pages needed to make `name` resident now: 0 when it is, adapter_pages(rank) otherwise.
  int64_t pages_to_load(const std::string& name) const;
  // The pages holding `name` (empty when not resident); valid until it is evicted or unregistered.
  std::span<const int32_t> pages(const std::string& name) const;

  // Pins `name`, loading it first if needed (evicting unpinned adapters, LRU first). Throws
  // NotFound for an unknown name.
  AcquireStatus acquire(const std::string& name);
  // Drops one pin; at zero pins the adapter stays resident as the most recently used evictable
  // one. Throws NotFound for an unknown name and InvalidArgument when it is not pinned.
  void release(const std::string& name);
  // Evicts unpinned adapters, LRU first, until the pool has `pages` available pages. Returns
  // false and evicts nothing when even evicting all of them would not be enough.
  bool make_room(int64_t pages);
  // Pages that evicting every unpinned resident adapter would free.
  int64_t evictable_pages() const { return evictable_pages_; }

  // Resident adapters, unpinned ones in eviction order (next victim first), then pinned ones in
  // name order.
  std::vector<std::string> resident_adapters() const;
  AdapterCacheStats stats() const;

 private:
  struct Entry {
    int64_t rank = 0;
    int64_t page_count = 0;
    int64_t pins = 0;
    bool resident = false;
    std::vector<int32_t> pages;
    std::list<std::string>::iterator lru_pos;  // valid iff resident && pins == 0
  };
  Entry& entry(const std::string& name);
  const Entry& entry(const std::string& name) const;
  void evict_front();

  MemoryPool& pool_;
  std::unordered_map<std::string, Entry> entries_;
  std::list<std::string> lru_;  // unpinned resident adapters, least recently used first
  int64_t evictable_pages_ = 0;
  AdapterCacheStats stats_;
};

}  // namespace lowrank::serve
