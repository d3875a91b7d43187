// The linear slot and the dense base operator; see linear_slot.h.
#include "lowrank/nn/linear_slot.h"

#include <algorithm>

#include <ATen/Parallel.h>

#include "lowrank/core/error.h"
#include "lowrank/nn/shared_input.h"
#include "lowrank/ops/lora_gather.h"

namespace lowrank::nn {

DenseOperator::DenseOperator(at::Tensor weight, at::Tensor bias)
    : weight_(std::move(weight)), bias_(std::move(bias)) {
  LR_CHECK(weight_.defined() && weight_.dim() == 2, InvalidArgument,
           "dense operator: weight must be 2-D, got ",
           weight_.defined() ? weight_.sizes() : at::IntArrayRef{});
  if (bias_.defined())
    LR_CHECK(bias_.dim() == 1 && bias_.size(0) == weight_.size(0), InvalidArgument,
             "dense operator: bias shape ", bias_.sizes(), " does not match weight ", weight_.sizes());
}

NamedTensors DenseOperator::tensors() const {
  NamedTensors out{{"weight", weight_}};
  if (bias_.defined()) out.emplace_back("bias", bias_);
  return out;
}

LinearSlot::LinearSlot(std::string name, std::shared_ptr<const BaseOperator> base)
    : name_(std::move(name)), base_(std::move(base)) {
  LR_CHECK(!name_.empty(), InvalidArgument, "linear slot: empty name");
  LR_CHECK(base_ != nullptr, InvalidArgument, "linear slot ", name_, ": null base operator");
}

namespace {

// The fusable adapters of one slot stacked: A = [A₁; A₂; …] [R, in] and B = [s₁B₁, s₂B₂, …]
// [out, R] with scale 1, or one adapter's own A, B and scale (applied by the GEMM, as its α).
struct StackedLowRank {
  at::Tensor a, b;
  double scale = 1;
};

StackedLowRank stacked(const std::vector<LowRankDelta>& deltas) {
  if (deltas.size() == 1) return {deltas[0].a, deltas[0].b, deltas[0].scale};
  std::vector<at::Tensor> as, bs;
  for (const LowRankDelta& d : deltas) {
    as.push_back(d.a);
    bs.push_back(d.b * d.scale);
  }
  return {at::cat(as, 0), at::cat(bs, 1), 1.0};
}

// ys[i] += s_i·(x·A_iᵀ)·B_iᵀ for every slot i with factors (null: none). Each second product is
// accumulated into its output by the GEMM itself (addmm, β = 1, α = s), so no delta is
// materialised at full width: the products are skinny (rank r), and the separate passes over y of
// a materialised delta (write, scale, add) would cost more than they do. When x has many rows
// (a prefill or training batch), the first products of all the slots, which read the same x, are
// one GEMM x·[A₁; A₂; …]ᵀ, so x is read once; for few rows (decode, a segment of a routed batch)
// x stays in cache and copying the A's together would cost more than it saves. Adds in place
// when no gradient is recorded (ys[i] must then be contiguous; it may be a view, which is what
// gets updated); otherwise replaces ys[i].
void add_low_rank(std::span<at::Tensor> ys, const at::Tensor& x,
                  std::span<const StackedLowRank* const> factors) {
  const bool in_place = !at::GradMode::is_enabled();
  auto accumulate = [&](at::Tensor& y, const at::Tensor& h, const StackedLowRank& f) {
    if (in_place)
      y.view({-1, y.size(-1)}).addmm_(h, f.b.t(), 1.0, f.scale);
    else
      y = at::addmm(y.reshape({-1, y.size(-1)}), h, f.b.t(), 1.0, f.scale).view(y.sizes());
  };
  std::vector<at::Tensor> as;
  for (const StackedLowRank* f : factors)
    if (f != nullptr) as.push_back(f->a);
  if (as.empty()) return;
  const int64_t rows = x.numel() / x.size(-1);
  int64_t total_rank = 0;
  for (const at::Tensor& a : as) total_rank += a.size(0);
  if (as.size() == 1 || rows < 8 * total_rank) {
    for (size_t i = 0; i < factors.size(); ++i)
      if (factors[i] != nullptr) {
        const at::Tensor h = at::linear(x, factors[i]->a);
        accumulate(ys[i], h.reshape({-1, h.size(-1)}), *factors[i]);
      }
    return;
  }
  const at::Tensor h = at::linear(x, at::cat(as, 0));
  const at::Tensor h2 = h.reshape({-1, h.size(-1)});
  int64_t column = 0;
  for (size_t i = 0; i < factors.size(); ++i) {
    if (factors[i] == nullptr) continue;
    accumulate(ys[i], h2.narrow(1, column, factors[i]->a.size(0)), *factors[i]);
    column += factors[i]->a.size(0);
  }
}

}  // namespace

at::Tensor LinearSlot::forward(const at::Tensor& x) const {
  const LinearSlot* self = this;
  return forward_shared_input({&self, 1}, x)[0];
}

at::Tensor LinearSlot::forward(const at::Tensor& x, const AdapterRouting* routing) const {
  const LinearSlot* self = this;
  return forward_shared_input({&self, 1}, x, routing)[0];
}

std::vector<at::Tensor> LinearSlot::forward_shared_input(std::span<const LinearSlot* const> slots,
                                                         const at::Tensor& x, const AdapterRouting* routing) {
  std::vector<at::Tensor> ys;
  {
    // Base operators that share work derived from x alone (SVDQuant's x̂·L₂ᵀ) do it once.
    std::optional<SharedInputScope> scope;
    if (slots.size() > 1) scope.emplace(x);
    for (const LinearSlot* slot : slots) ys.push_back(slot->base_->forward(x));
  }
  if (routing == nullptr) {
    // Adapters that are plain scaled products s·B·A share one pair of GEMMs per slot (and the
    // first one with the other slots); every other adapter adds its own delta first, while the
    // base output is still untouched.
    std::vector<StackedLowRank> low_rank(slots.size());
    std::vector<const StackedLowRank*> factors(slots.size(), nullptr);
    for (size_t i = 0; i < slots.size(); ++i) {
      const LinearSlot& slot = *slots[i];
      if (!slot.adapters_enabled_ || slot.adapters_.empty()) continue;
      const at::Tensor base_y = ys[i];
      std::vector<LowRankDelta> deltas;
      for (const auto& [adapter_name, adapter] : slot.adapters_) {
        if (auto d = adapter->low_rank_delta()) {
          deltas.push_back(std::move(*d));
          continue;
        }
        at::Tensor d = adapter->delta(x, base_y, *slot.base_);
        LR_CHECK(d.sizes() == base_y.sizes(), InvalidArgument, "slot ", slot.name_, ": adapter \"",
                 adapter_name, "\" returned shape ", d.sizes(), ", expected ", base_y.sizes());
        ys[i] = ys[i] + d;
      }
      if (deltas.empty()) continue;
      low_rank[i] = stacked(deltas);
      factors[i] = &low_rank[i];
      ys[i] = ys[i].contiguous();
    }
    add_low_rank(ys, x, factors);
    return ys;
  }

  const int64_t rows = x.size(0);
  LR_CHECK(static_cast<int64_t>(routing->row_adapter.size()) == rows, InvalidArgument, "slot ",
           slots[0]->name_, ": adapter routing has ", routing->row_adapter.size(), " rows, the input ", rows);
  // Without gradients, a low-rank adapter is applied to each run of consecutive rows that use it
  // (the segments of S-LoRA/Punica's SGMV): the run is a view of x and y, so it costs one pair of
  // products at the adapter's own rank, added into y in place, with no gather or scatter. Other
  // adapters, and every adapter while gradients are recorded, gather their rows, first, while
  // the base output is still untouched.
  const bool in_place = !at::GradMode::is_enabled();
  const size_t n_adapters = routing->adapters.size();
  // segment_form[a * slots + i]: adapter a's stacked factors in slot i, when it has them.
  std::vector<std::optional<StackedLowRank>> segment_form(n_adapters * slots.size());
  for (size_t i = 0; i < slots.size(); ++i) {
    const LinearSlot& slot = *slots[i];
    if (!slot.adapters_enabled_) continue;
    const at::Tensor base_y = ys[i];
    for (size_t a = 0; a < n_adapters; ++a) {
      const Adapter* adapter = slot.adapter(routing->adapters[a]);
      if (adapter == nullptr) continue;  // the adapter does not target this slot
      if (in_place)
        if (auto d = adapter->low_rank_delta()) {
          segment_form[a * slots.size() + i] = stacked({*d});
          continue;
        }
      std::vector<int64_t> members;
      for (int64_t b = 0; b < rows; ++b)
        if (routing->row_adapter[static_cast<size_t>(b)] == static_cast<int64_t>(a)) members.push_back(b);
      if (members.empty()) continue;
      if (static_cast<int64_t>(members.size()) == rows) {
        ys[i] = ys[i] + adapter->delta(x, base_y, *slot.base_);
        continue;
      }
      const at::Tensor index = at::tensor(members, at::TensorOptions(at::kLong)).to(x.device());
      const at::Tensor d =
          adapter->delta(x.index_select(0, index), base_y.index_select(0, index), *slot.base_);
      ys[i] = ys[i].index_add(0, index, d);
    }
    ys[i] = ys[i].contiguous();
  }
  struct Segment {
    int64_t start, length;
    size_t adapter;
  };
  std::vector<Segment> segments;
  for (int64_t start = 0; start < rows;) {
    const int64_t id = routing->row_adapter[static_cast<size_t>(start)];
    int64_t end = start + 1;
    while (end < rows && routing->row_adapter[static_cast<size_t>(end)] == id) ++end;
    if (id >= 0 && static_cast<size_t>(id) < n_adapters)
      segments.push_back({start, end - start, static_cast<size_t>(id)});
    start = end;
  }
  // Segments of a few tokens (decode rows, one adapter each when many adapters are in use) run
  // through the gathered kernel (ops/lora_gather.h, BGMV): one parallel loop over all of them
  // instead of two library calls per segment per slot. Longer segments keep the GEMM pair.
  const int64_t gather_max_tokens = ops::lora_gather_max_tokens();
  // On a CUDA device the same tasks go to the CUDA twin (one launch for the whole batch).
  const bool gather_device = x.device().is_cpu() || (x.device().is_cuda() && ops::lora_gather_cuda_built());
  if (in_place && gather_max_tokens > 0 && gather_device && x.scalar_type() == at::kFloat &&
      x.is_contiguous() && rows > 0) {
    const int64_t in = x.size(-1);
    const int64_t tokens_per_row = x.numel() / (rows * in);
    auto gatherable = [&](const at::Tensor& t) {
      return t.device() == x.device() && t.scalar_type() == at::kFloat && t.is_contiguous();
    };
    std::vector<ops::LoraGatherTask> tasks;
    std::vector<Segment> rest;
    for (const Segment& s : segments) {
      bool gather = s.length * tokens_per_row <= gather_max_tokens;
      for (size_t i = 0; gather && i < slots.size(); ++i) {
        const auto& form = segment_form[s.adapter * slots.size() + i];
        gather = !form || (gatherable(form->a) && gatherable(form->b) && gatherable(ys[i]));
      }
      if (!gather) {
        rest.push_back(s);
        continue;
      }
      for (size_t i = 0; i < slots.size(); ++i) {
        const auto& form = segment_form[s.adapter * slots.size() + i];
        if (!form) continue;
        const int64_t out = ys[i].size(-1);
        ops::LoraGatherTask task;
        task.x = x.const_data_ptr<float>() + s.start * tokens_per_row * in;
        task.y = ys[i].mutable_data_ptr<float>() + s.start * tokens_per_row * out;
        task.a = form->a.const_data_ptr<float>();
        task.b = form->b.const_data_ptr<float>();
        task.tokens = s.length * tokens_per_row;
        task.in = in;
        task.out = out;
        task.rank = form->a.size(0);
        task.scale = static_cast<float>(form->scale);
        tasks.push_back(task);
      }
    }
    if (x.device().is_cuda())
      ops::lora_gather_cuda(tasks, x.device().index());
    else
      ops::lora_gather(tasks);
    segments = std::move(rest);
  }
  auto apply = [&](const Segment& s) {
    std::vector<at::Tensor> rows_of_y;
    std::vector<const StackedLowRank*> factors;
    for (size_t i = 0; i < slots.size(); ++i) {
      const auto& form = segment_form[s.adapter * slots.size() + i];
      rows_of_y.push_back(ys[i].narrow(0, s.start, s.length));
      factors.push_back(form ? &*form : nullptr);
    }
    add_low_rank(rows_of_y, x.narrow(0, s.start, s.length), factors);
  };
  if (segments.size() < 2 || at::get_num_threads() < 2) {
    for (const Segment& s : segments) apply(s);
    return ys;
  }
  // Many small segments: one thread per segment is better than splitting each small product
  // across threads. The segments write disjoint rows of y. Worker threads start without this
  // thread's inference mode, which the in-place additions into y (an inference tensor) need.
  const bool inference = c10::InferenceMode::is_enabled();
  at::parallel_for(0, static_cast<int64_t>(segments.size()), 1, [&](int64_t begin, int64_t end) {
    const c10::InferenceMode inference_guard(inference);
    const at::NoGradGuard no_grad;
    for (int64_t i = begin; i < end; ++i) apply(segments[static_cast<size_t>(i)]);
  });
  return ys;
}

std::shared_ptr<const BaseOperator> LinearSlot::replace_base(std::shared_ptr<const BaseOperator> base) {
  LR_CHECK(base != nullptr, InvalidArgument, "slot ", name_, ": null base operator");
  LR_CHECK(base->in_features() == in_features() && base->out_features() == out_features(), InvalidArgument,
           "slot ", name_, ": a ", base->kind(), " operator ", base->out_features(), "x", base->in_features(),
           " cannot replace ", base_->kind(), " ", out_features(), "x", in_features(),
           " (in/out features must match)");
  std::swap(base, base_);
  return base;
}

void LinearSlot::add_adapter(std::string adapter_name, std::shared_ptr<const Adapter> adapter) {
  LR_CHECK(!adapter_name.empty(), InvalidArgument, "slot ", name_, ": empty adapter name");
  LR_CHECK(adapter != nullptr, InvalidArgument, "slot ", name_, ": null adapter \"", adapter_name, "\"");
  LR_CHECK(this->adapter(adapter_name) == nullptr, InvalidArgument, "slot ", name_, ": adapter \"",
           adapter_name, "\" is already attached");
  adapters_.emplace_back(std::move(adapter_name), std::move(adapter));
}

std::shared_ptr<const Adapter> LinearSlot::remove_adapter(std::string_view adapter_name) {
  for (auto it = adapters_.begin(); it != adapters_.end(); ++it) {
    if (it->first != adapter_name) continue;
    std::shared_ptr<const Adapter> out = std::move(it->second);
    adapters_.erase(it);
    return out;
  }
  throw NotFound(str("slot ", name_, ": no adapter \"", adapter_name, "\""));
}

const Adapter* LinearSlot::adapter(std::string_view adapter_name) const {
  for (const auto& [n, a] : adapters_)
    if (n == adapter_name) return a.get();
  return nullptr;
}

std::vector<std::string> LinearSlot::adapter_names() const {
  std::vector<std::string> out;
  for (const auto& [n, a] : adapters_) out.push_back(n);
  return out;
}

}  // namespace lowrank::nn
