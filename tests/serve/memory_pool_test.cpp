// MemoryPool: the S-LoRA page formula, all-or-nothing allocation, reservations, loud double
// frees, and a randomised run against a reference set model that must never leak a page.
#include "lowrank/serve/memory_pool.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <random>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "lowrank/core/error.h"
#include "tests/testing.h"

namespace lowrank::serve {
namespace {

using testing::error_of;

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

PoolConfig pool_config(int64_t num_pages, int64_t page_tokens, int64_t hidden_size,
                       std::vector<ModuleShape> lora_modules = {}) {
  PoolConfig c;
  c.num_pages = num_pages;
  c.page_tokens = page_tokens;
  c.hidden_size = hidden_size;
  c.lora_modules = std::move(lora_modules);
  return c;
}

TEST(MemoryPoolTest, AdapterPagesFollowSLoraSlotFormula) {
  // S-LoRA's default: q, k, v, o at H x H take 4r slots per layer.
  MemoryPool pool(pool_config(100, 16, 4096));
  EXPECT_EQ(pool.adapter_slots(8), 32);
  EXPECT_EQ(pool.adapter_pages(8), 2);  // 32 slots / 16 per page
  EXPECT_EQ(pool.adapter_pages(3), 1);  // 12 slots round up to one page
  EXPECT_EQ(pool.adapter_pages(64), 16);
  // A Llama-7B-like layer with GQA k/v (out 1024) and the MLP (intermediate 11008 = 2.69 H):
  // q 1, k 1, v 1, o 1, gate 3, up 3, down 3 = 13 slots per rank.
  MemoryPool llama(pool_config(
      100, 16, 4096,
      {{4096, 4096}, {4096, 1024}, {4096, 1024}, {4096, 4096}, {4096, 11008}, {4096, 11008}, {11008, 4096}}));
  EXPECT_EQ(llama.adapter_slots(16), 16 * 13);
  EXPECT_EQ(llama.adapter_pages(16), 13);
  EXPECT_TRUE(contains(error_of([&] { pool.adapter_pages(0); }), "rank must be at least 1, got 0"));
}

TEST(MemoryPoolTest, KvPagesRoundUpPerPage) {
  MemoryPool pool(pool_config(4, 16, 8));
  EXPECT_EQ(pool.kv_pages(0), 0);
  EXPECT_EQ(pool.kv_pages(1), 1);
  EXPECT_EQ(pool.kv_pages(16), 1);
  EXPECT_EQ(pool.kv_pages(17), 2);
}

TEST(MemoryPoolTest, RejectsBadConfigNamingTheField) {
  EXPECT_TRUE(contains(error_of([] { MemoryPool(pool_config(0, 16, 8)); }), "num_pages"));
  EXPECT_TRUE(contains(error_of([] { MemoryPool(pool_config(1, 0, 8)); }), "page_tokens"));
  EXPECT_TRUE(contains(error_of([] { MemoryPool(pool_config(1, 16, 0)); }), "hidden_size"));
  EXPECT_TRUE(contains(error_of([] { MemoryPool(pool_config(int64_t{1} << 40, 16, 8)); }), "int32"));
  EXPECT_TRUE(contains(error_of([] {
                         MemoryPool(pool_config(1, 16, 8, {{8, 8}, {0, 8}}));
                       }),
                       "lora_modules[1]"));
}

TEST(MemoryPoolTest, AllocateIsAllOrNothing) {
  MemoryPool pool(pool_config(10, 4, 8));
  EXPECT_FALSE(pool.allocate(11).has_value());
  EXPECT_EQ(pool.free_pages(), 10);
  EXPECT_TRUE(pool.allocate(0).value().empty());
  auto all = pool.allocate(10);
  ASSERT_TRUE(all.has_value());
  std::set<int32_t> distinct(all->begin(), all->end());
  EXPECT_EQ(distinct.size(), 10u);
  EXPECT_EQ(*distinct.begin(), 0);
  EXPECT_EQ(*distinct.rbegin(), 9);
  EXPECT_FALSE(pool.allocate(1).has_value());
  EXPECT_EQ(pool.used_pages(), 10);
  pool.release(*all);
  EXPECT_EQ(pool.free_pages(), 10);
  EXPECT_TRUE(contains(error_of([&] { pool.allocate(-1); }), "cannot allocate -1"));
}

TEST(MemoryPoolTest, DoubleFreeAndBadIdsThrowAndFreeNothing) {
  MemoryPool pool(pool_config(6, 4, 8));
  auto a = pool.allocate(3).value();
  pool.release(std::vector<int32_t>{a[0]});
  EXPECT_TRUE(contains(error_of([&] { pool.release(std::vector<int32_t>{a[0]}); }), "double free"));
  // A batch with one bad id frees none of the good ones.
  EXPECT_TRUE(contains(error_of([&] { pool.release(std::vector<int32_t>{a[1], a[0]}); }), "double free"));
  EXPECT_TRUE(pool.is_allocated(a[1]));
  EXPECT_TRUE(contains(error_of([&] { pool.release(std::vector<int32_t>{a[1], a[1]}); }), "listed twice"));
  EXPECT_TRUE(pool.is_allocated(a[1]));
  EXPECT_TRUE(contains(error_of([&] {
                         pool.release(std::vector<int32_t>{a[2], 6});
                       }),
                       "page id 6 out of range"));
  EXPECT_TRUE(contains(error_of([&] { pool.release(std::vector<int32_t>{-1}); }), "page id -1 out of range"));
  EXPECT_TRUE(pool.is_allocated(a[2]));
  EXPECT_EQ(pool.used_pages(), 2);
  pool.release(std::vector<int32_t>{a[1], a[2]});
  EXPECT_EQ(pool.used_pages(), 0);
}

TEST(MemoryPoolTest, ReservationsAreHeldBackFromPlainAllocation) {
  MemoryPool pool(pool_config(10, 4, 8));
  EXPECT_TRUE(pool.reserve(6));
  EXPECT_EQ(pool.available_pages(), 4);
  EXPECT_EQ(pool.free_pages(), 10);
  EXPECT_FALSE(pool.reserve(5));
  EXPECT_FALSE(pool.allocate(5).has_value());
  auto plain = pool.allocate(4).value();
  EXPECT_TRUE(contains(error_of([&] { pool.allocate_reserved(7); }), "only 6 pages are reserved"));
  auto reserved = pool.allocate_reserved(6);
  EXPECT_EQ(pool.reserved_pages(), 0);
  EXPECT_EQ(pool.used_pages(), 10);
  EXPECT_TRUE(contains(error_of([&] { pool.unreserve(1); }), "only 0 pages are reserved"));
  pool.release(plain);
  pool.release(reserved);
  EXPECT_TRUE(pool.reserve(10));
  pool.unreserve(10);
  EXPECT_EQ(pool.available_pages(), 10);
}

// A randomised sequence of every operation against a reference model (a set of allocated ids and
// a reserved count); afterwards nothing has leaked.
TEST(MemoryPoolTest, RandomisedOperationsMatchReferenceModelAndNeverLeak) {
  constexpr int32_t kPages = 64;
  MemoryPool pool(pool_config(kPages, 8, 16));
  std::set<int32_t> ref_allocated;
  int64_t ref_reserved = 0;
  std::vector<std::vector<int32_t>> held;  // blocks handed out, not yet released
  std::vector<int32_t> recently_freed;
  std::mt19937 rng(20240611);
  auto uniform = [&](int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); };

  auto take_block = [&](std::vector<int32_t> block) {
    for (int32_t id : block) {
      ASSERT_GE(id, 0);
      ASSERT_LT(id, kPages);
      ASSERT_TRUE(ref_allocated.insert(id).second) << "page " << id << " handed out twice";
    }
    held.push_back(std::move(block));
  };

  for (int op = 0; op < 20000; ++op) {
    const int64_t ref_available = kPages - static_cast<int64_t>(ref_allocated.size()) - ref_reserved;
    switch (uniform(0, 6)) {
      case 0:
      case 1: {  // plain allocation
        const int n = uniform(0, 12);
        auto got = pool.allocate(n);
        ASSERT_EQ(got.has_value(), n <= ref_available) << "op " << op;
        if (got) {
          ASSERT_EQ(static_cast<int>(got->size()), n);
          take_block(*got);
        }
        break;
      }
      case 2:
      case 3: {  // release a whole block or a part of it
        if (held.empty()) break;
        const size_t b = static_cast<size_t>(uniform(0, static_cast<int>(held.size()) - 1));
        std::vector<int32_t>& block = held[b];
        const size_t k = static_cast<size_t>(uniform(0, static_cast<int>(block.size())));
        std::vector<int32_t> part(block.end() - static_cast<std::ptrdiff_t>(k), block.end());
        block.resize(block.size() - k);
        pool.release(part);
        for (int32_t id : part) {
          ASSERT_EQ(ref_allocated.erase(id), 1u);
          recently_freed.push_back(id);
        }
        if (block.empty()) held.erase(held.begin() + static_cast<std::ptrdiff_t>(b));
        break;
      }
      case 4: {  // reserve, or allocate from / return a reservation
        const int n = uniform(0, 8);
        const int which = uniform(0, 2);
        if (which == 0) {
          ASSERT_EQ(pool.reserve(n), n <= ref_available);
          if (n <= ref_available) ref_reserved += n;
        } else if (which == 1 && n <= ref_reserved) {
          take_block(pool.allocate_reserved(n));
          ref_reserved -= n;
        } else if (n <= ref_reserved) {
          pool.unreserve(n);
          ref_reserved -= n;
        } else {
          ASSERT_THROW(pool.allocate_reserved(n), InvalidArgument);
          ASSERT_THROW(pool.unreserve(n), InvalidArgument);
        }
        break;
      }
      case 5: {  // a double free must throw and change nothing
        if (recently_freed.empty()) break;
        const int32_t id =
            recently_freed[static_cast<size_t>(uniform(0, static_cast<int>(recently_freed.size()) - 1))];
        if (ref_allocated.count(id)) break;  // handed out again since
        ASSERT_THROW(pool.release(std::vector<int32_t>{id}), InvalidArgument);
        break;
      }
      case 6: {  // out-of-range ids
        ASSERT_THROW(pool.release(std::vector<int32_t>{kPages + uniform(0, 5)}), InvalidArgument);
        break;
      }
    }
    ASSERT_EQ(pool.used_pages(), static_cast<int64_t>(ref_allocated.size())) << "op " << op;
    ASSERT_EQ(pool.used_pages() + pool.free_pages(), kPages);
    ASSERT_EQ(pool.reserved_pages(), ref_reserved);
    ASSERT_GE(pool.available_pages(), 0);
    if (op % 97 == 0) {
      for (int32_t id = 0; id < kPages; ++id) ASSERT_EQ(pool.is_allocated(id), ref_allocated.count(id) == 1);
    }
  }
  for (const auto& block : held) pool.release(block);
  pool.unreserve(ref_reserved);
  EXPECT_EQ(pool.free_pages(), kPages);
  EXPECT_EQ(pool.available_pages(), kPages);
  auto everything = pool.allocate(kPages);  // and every page is usable again
  ASSERT_TRUE(everything.has_value());
  EXPECT_EQ(std::set<int32_t>(everything->begin(), everything->end()).size(), static_cast<size_t>(kPages));
}

}  // namespace
}  // namespace lowrank::serve
