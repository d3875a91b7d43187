// The serving engine's adapter registry: loading and creating adapters into host memory,
// registering them with the scheduler, copying them into the page pool when a step needs them,
// unloading and listing them (see engine.h and paged_lora.h).
#include <algorithm>
#include <utility>

#include "lowrank/adapt/model_adapters.h"
#include "lowrank/core/error.h"
#include "lowrank/core/log.h"
#include "lowrank/nn/model.h"
#include "lowrank/serve/engine.h"
#include "lowrank/serve/paged_kv.h"

namespace lowrank::serve {
namespace {

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
  LR_CHECK(!host_adapters_.contains(name), InvalidArgument, "adapter '", name, "' is already loaded");
}

AdapterInfo Engine::load_adapter(const std::string& name, const std::filesystem::path& dir) {
  check_name_free(name);
  // read_adapter only reads the model (slot names, shapes, dtype), so steps go on meanwhile.
  const adapt::AttachedAdapter prepared = adapt::read_adapter(*model_, dir, name);
  return register_adapter(name, dir, prepared);
}

AdapterInfo Engine::create_adapter(const std::string& name, const adapt::AdapterConfig& config,
                                   uint64_t seed) {
  check_name_free(name);
  adapt::AttachedAdapter created;
  {
    // create_adapter attaches what it builds: no step may run meanwhile, and it leaves at once.
    std::lock_guard model_lock(model_mutex_);
    created = adapt::create_adapter(*model_, name, config, seed);
    adapt::detach_adapter(*model_, created);
  }
  return register_adapter(name, {}, created);
}

AdapterInfo Engine::register_adapter(const std::string& name, const std::filesystem::path& dir,
                                     const adapt::AttachedAdapter& adapter) {
  check_batchable(adapter);
  HostAdapter host = pack_adapter(adapter, *kv_, /*pinned=*/model_->device().is_cuda());
  AdapterInfo info{.name = name, .dir = dir, .rank = adapter_rank(adapter.config)};
  const int64_t pages = adapter_pages(host, config_.page_tokens);
  std::lock_guard lock(mutex_);
  LR_CHECK(!host_adapters_.contains(name), InvalidArgument, "adapter '", name, "' is already loaded");
  scheduler_->adapters().register_adapter(name, info.rank, pages);
  host_adapters_.emplace(name, std::make_pair(info, std::move(host)));
  adapter_serials_[name] = ++next_adapter_serial_;  // a new prefix-cache salt (engine.h)
  return info;
}

void Engine::load_adapters(const StepPlan& plan) {
  // What to copy, decided under mutex_ (the registry and the cache); the copies run without it.
  std::vector<std::pair<const HostAdapter*, AdapterLoad>> loads;
  {
    std::lock_guard lock(mutex_);
    const AdapterCache& cache = scheduler_->adapters();
    for (const AdapterLoad& load : plan.adapter_loads)
      loads.emplace_back(&host_adapters_.at(load.name).second, load);
    // An adapter the plan uses whose copy is not where the cache says (its load was in a step that
    // failed before copying) is copied again.
    for (const ScheduledRequest& r : plan.requests) {
      if (r.adapter.empty() ||
          std::any_of(loads.begin(), loads.end(), [&](const auto& l) { return l.second.name == r.adapter; }))
        continue;
      const std::span<const int32_t> pages = cache.pages(r.adapter);
      const auto it = resident_.find(r.adapter);
      if (it != resident_.end() && std::ranges::equal(pages, it->second.pages)) continue;
      log::warn("serving engine: adapter '", r.adapter,
                "' is not in the pool where the scheduler placed it; copying it again");
      loads.emplace_back(&host_adapters_.at(r.adapter).second,
                         AdapterLoad{r.adapter, std::vector<int32_t>(pages.begin(), pages.end())});
    }
  }
  int64_t bytes = 0;
  for (auto& [host, load] : loads) {
    resident_.insert_or_assign(load.name, load_into_pool(*host, load.pages, *kv_));
    bytes += host->pool_bytes();
  }
  if (loads.empty()) return;
  std::lock_guard lock(mutex_);
  metrics_.record_adapter_copies(static_cast<int64_t>(loads.size()), bytes);
  // Forget the slot tables of adapters that are no longer resident (evicted since their load).
  const AdapterCache& cache = scheduler_->adapters();
  std::erase_if(resident_, [&](const auto& entry) {
    return !cache.is_registered(entry.first) || !cache.is_resident(entry.first);
  });
}

void Engine::unload_adapter(const std::string& name) {
  std::lock_guard model_lock(model_mutex_);
  std::lock_guard lock(mutex_);
  auto it = host_adapters_.find(name);
  LR_CHECK(it != host_adapters_.end(), NotFound, "adapter '", name, "' is not loaded");
  scheduler_->adapters().unregister(name);  // throws "busy" while a running request pins it
  scheduler_->forget_prefixes(name);        // its KV pages, computed with the weights going away
  resident_.erase(name);
  host_adapters_.erase(it);
  work_.notify_all();  // waiting requests that named it are rejected at the next step
}

std::vector<AdapterInfo> Engine::adapters() const {
  std::lock_guard lock(mutex_);
  std::vector<AdapterInfo> out;
  for (const auto& [name, entry] : host_adapters_) {
    AdapterInfo info = entry.first;
    info.resident = scheduler_->adapters().is_resident(name);
    info.pins = scheduler_->adapters().pin_count(name);
    out.push_back(std::move(info));
  }
  return out;
}

bool Engine::has_adapter(const std::string& name) const {
  std::lock_guard lock(mutex_);
  return host_adapters_.contains(name);
}

}  // namespace lowrank::serve
