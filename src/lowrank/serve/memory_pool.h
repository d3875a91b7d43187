// MemoryPool — the CPU-side bookkeeping of S-LoRA's Unified Paging (Sheng et al., 2023, "S-LoRA:
// Serving Thousands of Concurrent LoRA Adapters", arXiv:2311.03285, §4.1), with vLLM's
// page-granular block tables (Kwon et al., 2023, "Efficient Memory Management for Large Language
// Model Serving with PagedAttention", arXiv:2309.06180, §4.2-4.3).
//
// Design. The device holds, per layer, a key buffer and a value buffer of `num_pages ·
// page_tokens` slots; one slot is one hidden-size (H) vector in each buffer. Both consumers of
// device memory are measured in the same slots and handed out in the same pages:
//   - KV cache: one token of one sequence takes one slot (its key in the key buffer, its value in
//     the value buffer, in every layer). A sequence's block table is its list of page ids; token t
//     lives in page table[t / page_tokens], slot t % page_tokens (vLLM's logical → physical map).
//   - LoRA weights: as in S-LoRA (`slora/common/mem_manager.py`), A's rows go into the key buffer
//     and B's columns into the value buffer at the same slot indices. For a targeted module with
//     in_features d_in and out_features d_out, A is (r, d_in) and B is (d_out, r): its r rows of
//     A take r·⌈d_in/H⌉ key slots and its r columns of B take r·⌈d_out/H⌉ value slots, so the
//     module takes r·max(⌈d_in/H⌉, ⌈d_out/H⌉) slots per layer (A and B share slot indices). For
//     S-LoRA's default targets (q, k, v, o, all H×H) this is its 4r slots per layer.
//       adapter_slots(r) = r · Σ_modules max(⌈d_in/H⌉, ⌈d_out/H⌉)
//       adapter_pages(r) = ⌈adapter_slots(r) / page_tokens⌉
//     The serving engine lays its adapters out so (serve/paged_lora.h) and registers each with
//     the page count of its own modules and ranks; lora_modules here gives the count for adapters
//     registered by rank alone.
// Deviation from S-LoRA: allocation is page-granular (vLLM), not slot-granular (S-LoRA's bitmap),
// so an adapter wastes at most page_tokens − 1 slots and one allocator serves both uses.
//
// Reservations implement admission control without over-commit: the scheduler reserves the
// pages a request may ever need (prompt + max_new_tokens) when admitting it and draws its KV
// pages from that reservation as the sequence grows, so growth can never fail mid-generation.
// Plain `allocate` (adapter loads) only uses pages nobody has reserved. Pages the prefix cache
// keeps (serve/prefix_cache.h) stay allocated here until it evicts them; a request that shares
// cached pages reserves only the rest.
//
// This class hands out page ids only. The buffers are the engine's (serve/paged_kv.h): its
// attention reads and writes KV through block tables, it copies an adapter's weights into the
// pages the adapter cache allocated when the scheduler lists the adapter in a step's
// adapter_loads, and its routed LoRA products read them there through the adapter's slot table
// (serve/paged_lora.h, ops::lora_gather_paged).
//
// Thread safety: none. A MemoryPool is owned by one Scheduler, which the engine thread drives;
// all locking lives in the serve queue layer in front of it.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <vector>

namespace lowrank::serve {

// One module an adapter targets, per layer: the base weight maps in_features → out_features.
struct ModuleShape {
  int64_t in_features = 0;
  int64_t out_features = 0;
};

struct PoolConfig {
  int64_t num_pages = 0;     // pages in the pool (≤ INT32_MAX: ids are int32)
  int64_t page_tokens = 16;  // slots per page: KV tokens of one sequence a page holds
  int64_t hidden_size = 0;   // H: the width of one slot's vector
  // The modules an adapter targets, per layer. Empty = S-LoRA's q, k, v, o, each H × H.
  std::vector<ModuleShape> lora_modules;
};

class MemoryPool {
 public:
  // Throws InvalidArgument naming the field for a non-positive size, num_pages > INT32_MAX or a
  // non-positive module dimension. All pages start free and unreserved.
  explicit MemoryPool(PoolConfig config);

  const PoolConfig& config() const { return config_; }
  int64_t num_pages() const { return config_.num_pages; }
  int64_t page_tokens() const { return config_.page_tokens; }

  // Pages holding the KV of `tokens` tokens of one sequence: ⌈tokens / page_tokens⌉.
  int64_t kv_pages(int64_t tokens) const;
  // Slots (per layer) a rank-`rank` adapter occupies; see the formula above. Throws
  // InvalidArgument for rank < 1.
  int64_t adapter_slots(int64_t rank) const;
  // ⌈adapter_slots(rank) / page_tokens⌉.
  int64_t adapter_pages(int64_t rank) const;

  // All-or-nothing: `pages` distinct unreserved free pages, or nullopt when fewer than that are
  // available (nothing changes then). allocate(0) returns an empty list. Throws InvalidArgument
  // for pages < 0.
  std::optional<std::vector<int32_t>> allocate(int64_t pages);
  // Sets `pages` free pages aside for later allocate_reserved calls; false (nothing changes) when
  // fewer than that are available. Throws InvalidArgument for pages < 0.
  bool reserve(int64_t pages);
  // Allocates `pages` pages out of an earlier reservation (which shrinks by as much). Throws
  // InvalidArgument when more is asked than is reserved in total: the caller's accounting is
  // wrong.
  std::vector<int32_t> allocate_reserved(int64_t pages);
  // Returns `pages` reserved-but-unallocated pages to the available ones. Throws InvalidArgument
  // when more than is reserved.
  void unreserve(int64_t pages);
  // Frees allocated pages. Validates first, then frees: an out-of-range id, a page that is not
  // allocated (double free) or an id listed twice throws InvalidArgument and frees nothing.
  void release(std::span<const int32_t> pages);

  bool is_allocated(int32_t page) const;
  int64_t used_pages() const { return config_.num_pages - static_cast<int64_t>(free_list_.size()); }
  // Pages not allocated, reserved ones included; used_pages() + free_pages() == num_pages().
  int64_t free_pages() const { return static_cast<int64_t>(free_list_.size()); }
  int64_t reserved_pages() const { return reserved_; }
  // Free pages nobody reserved: what allocate() and reserve() can hand out.
  int64_t available_pages() const { return free_pages() - reserved_; }

 private:
  std::vector<int32_t> take(int64_t pages);

  PoolConfig config_;
  int64_t slots_per_rank_ = 0;           // Σ_modules max(⌈d_in/H⌉, ⌈d_out/H⌉)
  std::vector<int32_t> free_list_;       // a stack; the lowest ids are handed out first
  std::vector<std::uint8_t> allocated_;  // per page: 1 while allocated
  int64_t reserved_ = 0;
};

}  // namespace lowrank::serve
