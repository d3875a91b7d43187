// AdapterCache: LRU eviction order, pins that are never evicted, no-room as a result (not an
// exception), busy unregister, mixed ranks, and a randomised run against a reference LRU model.
#include "lowrank/serve/adapter_cache.h"

#include <gtest/gtest.h>

#include <map>
#include <random>
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

// page_tokens 4, H = 8, q/k/v/o at H x H: 4r slots = r pages for a rank-r adapter.
PoolConfig pool_config(int64_t num_pages) {
  PoolConfig c;
  c.num_pages = num_pages;
  c.page_tokens = 4;
  c.hidden_size = 8;
  return c;
}

TEST(AdapterCacheTest, EvictsLeastRecentlyReleasedUnpinnedAdapterFirst) {
  MemoryPool pool(pool_config(16));
  AdapterCache cache(pool);
  for (const char* name : {"a", "b", "c", "d", "e"}) cache.register_adapter(name, 4);
  for (const char* name : {"a", "b", "c", "d"}) EXPECT_EQ(cache.acquire(name), AcquireStatus::kLoaded);
  EXPECT_EQ(pool.available_pages(), 0);
  // Everything pinned: no room, and nothing changes.
  EXPECT_EQ(cache.acquire("e"), AcquireStatus::kNoRoom);
  EXPECT_FALSE(cache.is_resident("e"));
  EXPECT_EQ(cache.stats().evictions, 0);
  EXPECT_EQ(cache.stats().no_room, 1);

  cache.release("b");
  cache.release("d");
  cache.release("a");  // unpinned, LRU first: b, d, a; c stays pinned
  EXPECT_EQ(cache.resident_adapters(), (std::vector<std::string>{"b", "d", "a", "c"}));
  EXPECT_EQ(cache.evictable_pages(), 12);
  EXPECT_EQ(cache.acquire("e"), AcquireStatus::kLoaded);
  EXPECT_FALSE(cache.is_resident("b"));
  EXPECT_TRUE(cache.is_resident("d"));
  EXPECT_TRUE(cache.is_resident("a"));
  // A hit moves `d` out of the LRU list; released again it becomes the most recent.
  EXPECT_EQ(cache.acquire("d"), AcquireStatus::kHit);
  cache.release("d");
  EXPECT_EQ(cache.acquire("b"), AcquireStatus::kLoaded);  // evicts a, not d
  EXPECT_FALSE(cache.is_resident("a"));
  EXPECT_TRUE(cache.is_resident("d"));

  const AdapterCacheStats s = cache.stats();
  EXPECT_EQ(s.loads, 6);
  EXPECT_EQ(s.hits, 1);
  EXPECT_EQ(s.evictions, 2);
  EXPECT_EQ(s.resident, 4);  // c, e, b pinned; d cached
  EXPECT_EQ(s.pinned, 3);
  EXPECT_EQ(s.resident_pages, 16);
  EXPECT_EQ(s.registered, 5);
}

TEST(AdapterCacheTest, PinnedAdaptersAreNeverEvicted) {
  MemoryPool pool(pool_config(8));
  AdapterCache cache(pool);
  cache.register_adapter("x", 4);
  cache.register_adapter("y", 4);
  cache.register_adapter("z", 2);
  EXPECT_EQ(cache.acquire("x"), AcquireStatus::kLoaded);
  EXPECT_EQ(cache.acquire("x"), AcquireStatus::kHit);  // two requests pin it
  EXPECT_EQ(cache.acquire("y"), AcquireStatus::kLoaded);
  cache.release("x");  // still pinned once
  EXPECT_EQ(cache.pin_count("x"), 1);
  EXPECT_EQ(cache.evictable_pages(), 0);
  EXPECT_FALSE(cache.make_room(1));
  EXPECT_EQ(cache.acquire("z"), AcquireStatus::kNoRoom);
  EXPECT_TRUE(cache.is_resident("x"));
  EXPECT_TRUE(cache.is_resident("y"));
  cache.release("x");
  EXPECT_EQ(cache.acquire("z"), AcquireStatus::kLoaded);
  EXPECT_FALSE(cache.is_resident("x"));
  EXPECT_EQ(pool.available_pages(), 2);  // 4 of x freed, 2 taken by z
}

TEST(AdapterCacheTest, MakeRoomEvictsOnlyWhatIsNeededOrNothing) {
  MemoryPool pool(pool_config(20));
  AdapterCache cache(pool);
  cache.register_adapter("r8", 8);
  cache.register_adapter("r2", 2);
  cache.register_adapter("r4", 4);
  for (const char* name : {"r8", "r2", "r4"}) {
    ASSERT_EQ(cache.acquire(name), AcquireStatus::kLoaded);
    cache.release(name);
  }
  EXPECT_EQ(pool.available_pages(), 6);
  EXPECT_FALSE(cache.make_room(21));
  EXPECT_EQ(cache.stats().resident, 3);
  EXPECT_TRUE(cache.make_room(6));  // already available: nothing evicted
  EXPECT_EQ(cache.stats().evictions, 0);
  EXPECT_TRUE(cache.make_room(15));  // evicts r8 (LRU) only: 6 + 8 = 14 < 15, then r2: 16
  EXPECT_FALSE(cache.is_resident("r8"));
  EXPECT_FALSE(cache.is_resident("r2"));
  EXPECT_TRUE(cache.is_resident("r4"));
  EXPECT_EQ(pool.available_pages(), 16);
  EXPECT_EQ(cache.pages_to_load("r8"), 8);
  EXPECT_EQ(cache.pages_to_load("r4"), 0);
}

TEST(AdapterCacheTest, UnregisterIsRefusedWhileBusyAndFreesPagesAfter) {
  MemoryPool pool(pool_config(8));
  AdapterCache cache(pool);
  cache.register_adapter("a", 4);
  ASSERT_EQ(cache.acquire("a"), AcquireStatus::kLoaded);
  EXPECT_EQ(cache.pages("a").size(), 4u);
  EXPECT_TRUE(contains(error_of([&] { cache.unregister("a"); }), "adapter 'a' is busy"));
  EXPECT_THROW(cache.unregister("a"), InvalidArgument);
  cache.release("a");
  cache.unregister("a");
  EXPECT_FALSE(cache.is_registered("a"));
  EXPECT_EQ(pool.used_pages(), 0);
  EXPECT_EQ(cache.evictable_pages(), 0);
  EXPECT_EQ(cache.stats().resident, 0);
  cache.register_adapter("a", 2);  // the name is free again
  EXPECT_EQ(cache.rank("a"), 2);
}

TEST(AdapterCacheTest, RejectsBadNamesRanksAndUnknownAdapters) {
  MemoryPool pool(pool_config(8));
  AdapterCache cache(pool);
  cache.register_adapter("a", 1);
  EXPECT_TRUE(contains(error_of([&] { cache.register_adapter("a", 1); }), "already registered"));
  EXPECT_TRUE(contains(error_of([&] { cache.register_adapter("", 1); }), "must not be empty"));
  EXPECT_TRUE(contains(error_of([&] { cache.register_adapter("b", 0); }), "rank must be at least 1, got 0"));
  EXPECT_TRUE(contains(error_of([&] { cache.register_adapter("huge", 9); }), "needs 9 pages"));
  EXPECT_THROW(cache.acquire("nope"), NotFound);
  EXPECT_THROW(cache.release("nope"), NotFound);
  EXPECT_THROW(cache.unregister("nope"), NotFound);
  EXPECT_TRUE(contains(error_of([&] { cache.release("a"); }), "released but not pinned"));
}

// A randomised run of acquire/release/unregister/register against an independent reference: a
// map of adapters with rank, pins, residency and the time of their last release; the victim is
// the unpinned resident adapter with the oldest release time.
TEST(AdapterCacheTest, RandomisedRunMatchesReferenceLru) {
  constexpr int64_t kPages = 40;
  MemoryPool pool(pool_config(kPages));
  AdapterCache cache(pool);
  struct Ref {
    int64_t rank = 0;
    int64_t pins = 0;
    bool resident = false;
    int64_t released_at = 0;
  };
  std::map<std::string, Ref> ref;
  const int64_t ranks[] = {1, 2, 4, 8, 16};
  std::mt19937 rng(77);
  auto uniform = [&](int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); };
  for (int i = 0; i < 12; ++i) {
    const std::string name = "ad" + std::to_string(i);
    const int64_t rank = ranks[i % 5];
    cache.register_adapter(name, rank);
    ref[name] = {rank, 0, false, 0};
  }
  int64_t clock = 0, ref_hits = 0, ref_loads = 0, ref_evictions = 0, ref_no_room = 0;
  auto ref_used = [&] {
    int64_t used = 0;
    for (const auto& [n, r] : ref) used += r.resident ? r.rank : 0;
    return used;
  };
  for (int op = 0; op < 5000; ++op) {
    ++clock;
    auto it = ref.begin();
    std::advance(it, uniform(0, static_cast<int>(ref.size()) - 1));
    const std::string name = it->first;
    Ref& r = it->second;
    const int kind = uniform(0, 9);
    if (kind < 4) {  // acquire
      AcquireStatus expected;
      if (r.resident) {
        expected = AcquireStatus::kHit;
        ++ref_hits;
      } else {
        int64_t evictable = 0;
        for (const auto& [n, o] : ref) evictable += (o.resident && o.pins == 0) ? o.rank : 0;
        if (kPages - ref_used() + evictable < r.rank) {
          expected = AcquireStatus::kNoRoom;
          ++ref_no_room;
        } else {
          while (kPages - ref_used() < r.rank) {
            Ref* victim = nullptr;
            for (auto& [n, o] : ref) {
              if (o.resident && o.pins == 0 && (!victim || o.released_at < victim->released_at)) victim = &o;
            }
            ASSERT_NE(victim, nullptr);
            victim->resident = false;
            ++ref_evictions;
          }
          r.resident = true;
          expected = AcquireStatus::kLoaded;
          ++ref_loads;
        }
      }
      if (expected != AcquireStatus::kNoRoom) ++r.pins;
      ASSERT_EQ(cache.acquire(name), expected) << "op " << op << " " << name;
    } else if (kind < 9) {  // release
      if (r.pins == 0) {
        ASSERT_THROW(cache.release(name), InvalidArgument);
      } else {
        cache.release(name);
        if (--r.pins == 0) r.released_at = clock;
      }
    } else {  // unregister (refused while pinned), then register again with another rank
      if (r.pins > 0) {
        ASSERT_THROW(cache.unregister(name), InvalidArgument);
      } else {
        cache.unregister(name);
        r = {ranks[uniform(0, 4)], 0, false, 0};
        cache.register_adapter(name, r.rank);
      }
    }
    int64_t ref_evictable = 0;
    for (const auto& [n, o] : ref) {
      ASSERT_EQ(cache.is_resident(n), o.resident) << "op " << op << " " << n;
      ASSERT_EQ(cache.pin_count(n), o.pins);
      ASSERT_EQ(static_cast<int64_t>(cache.pages(n).size()), o.resident ? o.rank : 0);
      ref_evictable += (o.resident && o.pins == 0) ? o.rank : 0;
    }
    ASSERT_EQ(pool.used_pages(), ref_used());
    ASSERT_EQ(cache.evictable_pages(), ref_evictable);
  }
  const AdapterCacheStats s = cache.stats();
  EXPECT_EQ(s.hits, ref_hits);
  EXPECT_EQ(s.loads, ref_loads);
  EXPECT_EQ(s.evictions, ref_evictions);
  EXPECT_EQ(s.no_room, ref_no_room);
  EXPECT_GT(ref_evictions, 50);  // the run did exercise eviction
  EXPECT_EQ(s.resident_pages, ref_used());
}

}  // namespace
}  // namespace lowrank::serve
