// ZeRO-1 over the data-parallel ranks; see zero.h.
#include "lowrank/train/zero.h"

#include <algorithm>
#include <numeric>

#include "lowrank/core/error.h"
#include "lowrank/core/json.h"
#include "lowrank/optim/low_rank_adam.h"

namespace lowrank::train {

ZeroSharding ZeroSharding::assign(const std::vector<std::pair<std::string, at::Tensor>>& params,
                                  const optim::Optimizer& optimizer, int world) {
  LR_CHECK(world >= 1, InvalidArgument, "ZeRO: world size must be >= 1, got ", world);
  ZeroSharding s;
  const auto* low_rank = dynamic_cast<const optim::LowRankAdam*>(&optimizer);
  for (const auto& [name, p] : params) {
    int64_t w = 2 * p.numel();
    if (low_rank && low_rank->is_projected(name) && p.dim() == 2 && low_rank->config().rank > 0) {
      const int64_t r = low_rank->config().rank, m = p.size(0), n = p.size(1);
      w = 2 * r * std::max(m, n) + r * std::min(m, n);
    }
    s.names.push_back(name);
    s.weight.push_back(w);
  }
  std::vector<size_t> order(params.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return s.weight[a] > s.weight[b]; });
  std::vector<int64_t> load(world, 0);
  s.owner.assign(params.size(), 0);
  for (size_t i : order) {
    const int r = static_cast<int>(std::min_element(load.begin(), load.end()) - load.begin());
    s.owner[i] = r;
    load[r] += s.weight[i];
  }
  return s;
}

int ZeroSharding::owner_of_entry(const std::string& entry) const {
  int owner_rank = 0;
  size_t best = 0;
  for (size_t i = 0; i < names.size(); ++i)
    if (names[i].size() > best && entry.size() > names[i].size() && entry.starts_with(names[i]) &&
        entry[names[i].size()] == '.') {
      best = names[i].size();
      owner_rank = owner[i];
    }
  return owner_rank;
}

void zero_step(optim::Optimizer& optimizer, const std::vector<at::Tensor>& params,
               const ZeroSharding& sharding, dist::Group& group, double lr) {
  optimizer.begin_step(lr);
  for (size_t i = 0; i < params.size(); ++i)
    if (sharding.owner[i] == group.rank() && params[i].grad().defined())
      optimizer.step_parameter(i, params[i].grad());
  optimizer.end_step();
  for (int r = 0; r < group.size(); ++r) {
    std::vector<at::Tensor> owned;
    for (size_t i = 0; i < params.size(); ++i)
      if (sharding.owner[i] == r) owned.push_back(params[i].detach());
    if (!owned.empty()) group.broadcast(owned, r);
  }
}

std::vector<std::pair<std::string, at::Tensor>> gather_optimizer_state(const optim::Optimizer& optimizer,
                                                                       const ZeroSharding& sharding,
                                                                       dist::Group& group,
                                                                       std::string_view key) {
  // Each rank announces the entries it owns (name, dtype, shape), then each rank in turn
  // broadcasts their values (bool entries travel as bytes: Gloo has no bool type).
  std::vector<std::pair<std::string, at::Tensor>> mine;
  Json meta = Json::array();
  for (auto& [name, t] : optimizer.state_tensors())
    if (sharding.owner_of_entry(name) == group.rank()) {
      const at::Tensor c = t.contiguous();
      meta.push_back(Json{{"name", name},
                          {"dtype", static_cast<int>(c.scalar_type())},
                          {"shape", std::vector<int64_t>(c.sizes().begin(), c.sizes().end())}});
      mine.emplace_back(name, c);
    }
  const std::vector<std::string> all = group.all_gather_text(str("zero-state/", key), meta.dump());
  const auto wire = [](const at::Tensor& t) { return t.scalar_type() == at::kBool ? t.to(at::kByte) : t; };
  std::vector<std::pair<std::string, at::Tensor>> out;
  for (int r = 0; r < group.size(); ++r) {
    // Rank r's entries: its own tensors, or receive buffers shaped as it announced.
    std::vector<std::pair<std::string, at::Tensor>> entries;
    std::vector<at::Tensor> sent;
    std::vector<bool> boolean;
    if (r == group.rank()) {
      entries = mine;
      for (auto& [n, t] : entries) sent.push_back(wire(t));
    } else {
      for (const Json& e : Json::parse(all[r])) {
        const auto dtype = static_cast<at::ScalarType>(e["dtype"].get<int>());
        boolean.push_back(dtype == at::kBool);
        const at::Tensor t = at::empty(e["shape"].get<std::vector<int64_t>>(),
                                       at::TensorOptions().dtype(dtype == at::kBool ? at::kByte : dtype));
        entries.emplace_back(e["name"].get<std::string>(), t);
        sent.push_back(t);
      }
    }
    std::vector<at::Tensor> nonempty;
    for (const at::Tensor& t : sent)
      if (t.numel() > 0) nonempty.push_back(t);
    if (!nonempty.empty()) group.broadcast(nonempty, r);
    for (size_t i = 0; i < boolean.size(); ++i)
      if (boolean[i]) entries[i].second = entries[i].second.to(at::kBool);
    for (auto& e : entries) out.push_back(std::move(e));
  }
  return out;
}

void release_unowned_state(optim::Optimizer& optimizer, const ZeroSharding& sharding, int rank) {
  for (size_t i = 0; i < sharding.owner.size(); ++i)
    if (sharding.owner[i] != rank) optimizer.release_state(i);
}

}  // namespace lowrank::train
