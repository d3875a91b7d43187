#include "lowrank/serve/memory_pool.h"

#include <algorithm>
#include <limits>
#include <utility>

#include "lowrank/core/error.h"

namespace lowrank::serve {
namespace {

int64_t ceil_div(int64_t a, int64_t b) {
  return (a + b - 1) / b;
}

}  // namespace

MemoryPool::MemoryPool(PoolConfig config) : config_(std::move(config)) {
  LR_CHECK(config_.num_pages > 0, InvalidArgument, "memory pool: num_pages must be positive, got ",
           config_.num_pages);
  LR_CHECK(config_.num_pages <= std::numeric_limits<int32_t>::max(), InvalidArgument,
           "memory pool: num_pages ", config_.num_pages, " exceeds the int32 page-id range");
  LR_CHECK(config_.page_tokens > 0, InvalidArgument, "memory pool: page_tokens must be positive, got ",
           config_.page_tokens);
  LR_CHECK(config_.hidden_size > 0, InvalidArgument, "memory pool: hidden_size must be positive, got ",
           config_.hidden_size);
  const int64_t h = config_.hidden_size;
  if (config_.lora_modules.empty()) config_.lora_modules.assign(4, ModuleShape{h, h});
  for (size_t i = 0; i < config_.lora_modules.size(); ++i) {
    const ModuleShape& m = config_.lora_modules[i];
    LR_CHECK(m.in_features > 0 && m.out_features > 0, InvalidArgument, "memory pool: lora_modules[", i,
             "] has non-positive shape ", m.in_features, " -> ", m.out_features);
    slots_per_rank_ += std::max(ceil_div(m.in_features, h), ceil_div(m.out_features, h));
  }
  free_list_.resize(static_cast<size_t>(config_.num_pages));
  // A stack popped from the back: page 0 on top.
  for (int64_t i = 0; i < config_.num_pages; ++i) {
    free_list_[static_cast<size_t>(i)] = static_cast<int32_t>(config_.num_pages - 1 - i);
  }
  allocated_.assign(static_cast<size_t>(config_.num_pages), 0);
}

int64_t MemoryPool::kv_pages(int64_t tokens) const {
  LR_CHECK(tokens >= 0, InvalidArgument, "memory pool: negative token count ", tokens);
  return ceil_div(tokens, config_.page_tokens);
}

int64_t MemoryPool::adapter_slots(int64_t rank) const {
  LR_CHECK(rank >= 1, InvalidArgument, "memory pool: adapter rank must be at least 1, got ", rank);
  return rank * slots_per_rank_;
}

int64_t MemoryPool::adapter_pages(int64_t rank) const {
  return ceil_div(adapter_slots(rank), config_.page_tokens);
}

std::vector<int32_t> MemoryPool::take(int64_t pages) {
  std::vector<int32_t> out(static_cast<size_t>(pages));
  for (auto& id : out) {
    id = free_list_.back();
    free_list_.pop_back();
    allocated_[static_cast<size_t>(id)] = 1;
  }
  return out;
}

std::optional<std::vector<int32_t>> MemoryPool::allocate(int64_t pages) {
  LR_CHECK(pages >= 0, InvalidArgument, "memory pool: cannot allocate ", pages, " pages");
  if (pages > available_pages()) return std::nullopt;
  return take(pages);
}

bool MemoryPool::reserve(int64_t pages) {
  LR_CHECK(pages >= 0, InvalidArgument, "memory pool: cannot reserve ", pages, " pages");
  if (pages > available_pages()) return false;
  reserved_ += pages;
  return true;
}

std::vector<int32_t> MemoryPool::allocate_reserved(int64_t pages) {
  LR_CHECK(pages >= 0 && pages <= reserved_, InvalidArgument, "memory pool: allocate_reserved(", pages,
           ") but only ", reserved_, " pages are reserved");
  reserved_ -= pages;
  return take(pages);
}

void MemoryPool::unreserve(int64_t pages) {
  LR_CHECK(pages >= 0 && pages <= reserved_, InvalidArgument, "memory pool: unreserve(", pages, ") but only ",
           reserved_, " pages are reserved");
  reserved_ -= pages;
}

void MemoryPool::release(std::span<const int32_t> pages) {
  for (int32_t id : pages) {
    LR_CHECK(id >= 0 && id < config_.num_pages, InvalidArgument, "memory pool: page id ", id,
             " out of range [0, ", config_.num_pages, ")");
    LR_CHECK(allocated_[static_cast<size_t>(id)], InvalidArgument, "memory pool: page ", id,
             " released but not allocated (double free)");
  }
  std::vector<int32_t> sorted(pages.begin(), pages.end());
  std::sort(sorted.begin(), sorted.end());
  auto dup = std::adjacent_find(sorted.begin(), sorted.end());
  LR_CHECK(dup == sorted.end(), InvalidArgument, "memory pool: page ", (dup == sorted.end() ? -1 : *dup),
           " listed twice in one release (double free)");
  for (int32_t id : pages) {
    allocated_[static_cast<size_t>(id)] = 0;
    free_list_.push_back(id);
  }
}

bool MemoryPool::is_allocated(int32_t page) const {
  LR_CHECK(page >= 0 && page < config_.num_pages, InvalidArgument, "memory pool: page id ", page,
           " out of range [0, ", config_.num_pages, ")");
  return allocated_[static_cast<size_t>(page)] != 0;
}

}  // namespace lowrank::serve
