// The serving engine's adapter registry: loading, creating, attaching, unloading and listing the
// adapters it serves, and what each costs in the page pool (see engine.h).
#include <algorithm>
#include <map>
#include <regex>
#include <utility>

#include "lowrank/adapt/model_adapters.h"
#include "lowrank/core/error.h"
#include "lowrank/nn/model.h"
#include "lowrank/serve/engine.h"

namespace lowrank::serve {
namespace {

// The model layer a slot belongs to ("model.layers.3.self_attn.q_proj" -> 3; -1 otherwise).
int64_t layer_of(const std::string& slot) {
  static const std::regex pattern(R"(layers\.(\d+)\.)");
  std::smatch m;
  return std::regex_search(slot, m, pattern) ? std::stoll(m[1].str()) : -1;
}

// Pages of the pool an adapter takes when resident (memory_pool.h): per layer, its A and B
// entries fill key and value slots of width H at the same indices, so a layer needs
// ⌈Σ its parameters / 2H⌉ slots; the adapter takes the largest layer's count in every layer.
int64_t adapter_pool_pages(const adapt::AttachedAdapter& adapter, int64_t width, int64_t page_tokens) {
  std::map<int64_t, int64_t> params;
  for (const auto& [slot, layer] : adapter.layers)
    for (const auto& [name, tensor] : layer->parameters()) params[layer_of(slot)] += tensor.numel();
  int64_t slots = 1;
  for (const auto& [layer, n] : params) slots = std::max(slots, (n + 2 * width - 1) / (2 * width));
  return (slots + page_tokens - 1) / page_tokens;
}

int64_t adapter_rank(const adapt::AdapterConfig& config) {
  int64_t r = config.r;
  for (const auto& [pattern, rank] : config.rank_pattern) r = std::max(r, rank);
  return r;
}

// Adapters whose modules_to_save replace whole modules cannot share a batch with others.
void check_batchable(const adapt::AttachedAdapter& adapter) {
  LR_CHECK(adapter.saved_modules.empty(), Unsupported, "adapter '", adapter.name,
           "' replaces whole modules (modules_to_save), which a batch mixing adapters cannot serve");
}

}  // namespace

void Engine::check_name_free(const std::string& name) const {
  LR_CHECK(!name.empty(), InvalidArgument, "an adapter name must not be empty (empty means the base model)");
  std::lock_guard lock(mutex_);
  LR_CHECK(!attached_.contains(name), InvalidArgument, "adapter '", name, "' is already loaded");
}

AdapterInfo Engine::load_adapter(const std::string& name, const std::filesystem::path& dir) {
  check_name_free(name);
  // The files are read and the layers built while steps go on (read_adapter only reads the
  // model); the model lock is held only to attach them. Saved modules would replace bases, which
  // concurrent reads of the slots must never see: they are refused first.
  adapt::AttachedAdapter prepared = adapt::read_adapter(*model_, dir, name);
  check_batchable(prepared);
  return attach_adapter(name, dir, [&](nn::Model& model) {
    adapt::attach_adapter(model, prepared);
    return std::move(prepared);
  });
}

AdapterInfo Engine::create_adapter(const std::string& name, const adapt::AdapterConfig& config,
                                   uint64_t seed) {
  return attach_adapter(name, {},
                        [&](nn::Model& model) { return adapt::create_adapter(model, name, config, seed); });
}

AdapterInfo Engine::attach_adapter(const std::string& name, const std::filesystem::path& dir,
                                   const std::function<adapt::AttachedAdapter(nn::Model&)>& attach) {
  std::lock_guard model_lock(model_mutex_);  // no step runs while slots change
  check_name_free(name);
  adapt::AttachedAdapter attached = attach(*model_);
  try {
    check_batchable(attached);
    AdapterInfo info{.name = name, .dir = dir, .rank = adapter_rank(attached.config)};
    const int64_t pages = adapter_pool_pages(attached, model_->config().kv_size(), config_.page_tokens);
    std::lock_guard lock(mutex_);
    scheduler_->adapters().register_adapter(name, info.rank, pages);
    attached_.emplace(name, std::make_pair(info, std::move(attached)));
    return info;
  } catch (...) {
    adapt::detach_adapter(*model_, attached);
    throw;
  }
}

void Engine::unload_adapter(const std::string& name) {
  std::lock_guard model_lock(model_mutex_);
  adapt::AttachedAdapter attached;
  {
    std::lock_guard lock(mutex_);
    auto it = attached_.find(name);
    LR_CHECK(it != attached_.end(), NotFound, "adapter '", name, "' is not loaded");
    scheduler_->adapters().unregister(name);  // throws "busy" while a running request pins it
    attached = std::move(it->second.second);
    attached_.erase(it);
  }
  adapt::detach_adapter(*model_, attached);
  work_.notify_all();  // waiting requests that named it are rejected at the next step
}

std::vector<AdapterInfo> Engine::adapters() const {
  std::lock_guard lock(mutex_);
  std::vector<AdapterInfo> out;
  for (const auto& [name, entry] : attached_) {
    AdapterInfo info = entry.first;
    info.resident = scheduler_->adapters().is_resident(name);
    info.pins = scheduler_->adapters().pin_count(name);
    out.push_back(std::move(info));
  }
  return out;
}

bool Engine::has_adapter(const std::string& name) const {
  std::lock_guard lock(mutex_);
  return attached_.contains(name);
}

}  // namespace lowrank::serve
