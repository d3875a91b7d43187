// Adapter weights in the pool and the routed products reading them there; see paged_lora.h.
#include "lowrank/serve/paged_lora.h"

#include <algorithm>
#include <regex>

#include "lowrank/adapt/model_adapters.h"
#include "lowrank/core/error.h"
#include "lowrank/nn/linear_slot.h"
#include "lowrank/ops/lora_gather.h"
#include "lowrank/serve/paged_kv.h"

namespace lowrank::serve {
namespace {

int64_t ceil_div(int64_t a, int64_t b) {
  return (a + b - 1) / b;
}

// The model layer a slot belongs to ("model.layers.3.self_attn.q_proj" -> 3); 0 for a slot
// outside the layers (its weights go to layer 0's buffers).
int64_t buffer_of(const std::string& slot, int64_t layers) {
  static const std::regex pattern(R"(layers\.(\d+)\.)");
  std::smatch m;
  if (!std::regex_search(slot, m, pattern)) return 0;
  const int64_t layer = std::stoll(m[1].str());
  LR_CHECK(layer < layers, InvalidArgument, "slot ", slot, " is in layer ", layer, " of a model with ",
           layers);
  return layer;
}

int64_t slot_width(const PagedKV& kv) {
  return kv.keys.front().size(1) * kv.keys.front().size(2);
}

// [slots, W] view of one layer's key or value buffer.
at::Tensor arena(const at::Tensor& buffer) {
  return buffer.view({buffer.size(0), buffer.size(1) * buffer.size(2)});
}

// [r, n] -> [r · spr, W]: each row zero-padded to spr · W elements and cut into slots.
at::Tensor to_slots(const at::Tensor& rows, int64_t spr, int64_t width) {
  at::Tensor padded = at::zeros({rows.size(0), spr * width}, rows.options());
  padded.narrow(1, 0, rows.size(1)).copy_(rows);
  return padded.view({rows.size(0) * spr, width});
}

std::optional<ops::LoraElement> element_of(at::ScalarType type) {
  switch (type) {
    case at::kFloat:
      return ops::LoraElement::kF32;
    case at::kBFloat16:
      return ops::LoraElement::kBF16;
    case at::kHalf:
      return ops::LoraElement::kF16;
    default:
      return std::nullopt;
  }
}

}  // namespace

HostAdapter pack_adapter(const adapt::AttachedAdapter& adapter, const PagedKV& kv, bool pinned) {
  LR_CHECK(!kv.compressed(), Unsupported, "adapter \"", adapter.name,
           "\": the KV pages of this model hold MatryoshkaKV-compressed keys and values, narrower than an "
           "adapter's rows, so adapters cannot share them; serve the uncompressed model for adapters");
  const auto layers = static_cast<int64_t>(kv.keys.size());
  const int64_t width = slot_width(kv);
  const at::ScalarType dtype = kv.keys.front().scalar_type();
  HostAdapter host;
  std::vector<int64_t> used(static_cast<size_t>(layers), 0);  // slots taken per layer so far
  std::vector<std::pair<const PagedModule*, nn::LowRankDelta>> deltas;
  // Layer modules first, in slot order, then those outside the layers (after layer 0's).
  std::vector<std::pair<std::string, const adapt::TrainableAdapter*>> ordered;
  for (const auto& [slot, layer] : adapter.layers) ordered.emplace_back(slot, layer.get());
  std::stable_partition(ordered.begin(), ordered.end(),
                        [](const auto& e) { return e.first.find("layers.") != std::string::npos; });
  for (const auto& [slot, layer] : ordered) {
    std::optional<nn::LowRankDelta> d = layer->low_rank_delta();
    LR_CHECK(d.has_value(), Unsupported, "adapter '", adapter.name, "': its ", layer->kind(), " layer on ",
             slot,
             " has no low-rank form B·A; the serving engine keeps only such adapters in its memory pool");
    PagedModule m;
    m.layer = buffer_of(slot, layers);
    m.rank = d->a.size(0);
    m.in = d->a.size(1);
    m.out = d->b.size(0);
    m.scale = d->scale;
    m.slots_per_rank = std::max(ceil_div(m.in, width), ceil_div(m.out, width));
    m.first = used[static_cast<size_t>(m.layer)];
    used[static_cast<size_t>(m.layer)] += m.rank * m.slots_per_rank;
    const auto [it, fresh] = host.modules.emplace(slot, m);
    LR_CHECK(fresh, InvalidArgument, "adapter '", adapter.name, "' has two layers on slot ", slot);
    deltas.emplace_back(&it->second, std::move(*d));
  }
  host.slots = std::max<int64_t>(1, *std::max_element(used.begin(), used.end()));
  const auto options = at::TensorOptions().dtype(dtype).pinned_memory(pinned);
  host.a_rows = at::zeros({layers, host.slots, width}, options);
  host.b_columns = at::zeros({layers, host.slots, width}, options);
  for (const auto& [m, d] : deltas) {
    const int64_t n = m->rank * m->slots_per_rank;
    host.a_rows[m->layer]
        .narrow(0, m->first, n)
        .copy_(to_slots(d.a.detach().cpu().to(dtype), m->slots_per_rank, width));
    host.b_columns[m->layer]
        .narrow(0, m->first, n)
        .copy_(to_slots(d.b.detach().cpu().to(dtype).t(), m->slots_per_rank, width));
  }
  return host;
}

int64_t adapter_pages(const HostAdapter& adapter, int64_t page_tokens) {
  return std::max<int64_t>(1, ceil_div(adapter.slots, page_tokens));
}

ResidentAdapter load_into_pool(const HostAdapter& adapter, std::span<const int32_t> pages, PagedKV& kv) {
  const int64_t pt = kv.page_tokens;
  LR_CHECK(static_cast<int64_t>(pages.size()) * pt >= adapter.slots, InternalError,
           "adapter pool load: ", pages.size(), " pages of ", pt, " slots for an adapter of ", adapter.slots,
           " slots");
  std::vector<int64_t> slots(static_cast<size_t>(adapter.slots));
  for (int64_t i = 0; i < adapter.slots; ++i)
    slots[static_cast<size_t>(i)] = int64_t{pages[i / pt]} * pt + i % pt;
  const at::Device device = kv.keys.front().device();
  ResidentAdapter resident;
  resident.host = &adapter;
  resident.pages.assign(pages.begin(), pages.end());
  resident.slots = at::tensor(slots, at::kLong).to(device);
  // From page-locked memory the host-to-device copy is asynchronous on the current stream, and
  // the index copies (and every later read) are ordered after it.
  const at::Tensor a = adapter.a_rows.to(device, /*non_blocking=*/true);
  const at::Tensor b = adapter.b_columns.to(device, /*non_blocking=*/true);
  for (size_t l = 0; l < kv.keys.size(); ++l) {
    arena(kv.keys[l]).index_copy_(0, resident.slots, a[static_cast<int64_t>(l)]);
    arena(kv.values[l]).index_copy_(0, resident.slots, b[static_cast<int64_t>(l)]);
  }
  return resident;
}

PagedLoraPass::PagedLoraPass(const PagedKV& kv, std::vector<const ResidentAdapter*> adapters)
    : kv_(kv), adapters_(std::move(adapters)) {}

void PagedLoraPass::add(std::span<const std::string_view> slots, const at::Tensor& x,
                        const nn::AdapterRouting& routing, std::span<at::Tensor> ys) const {
  const int64_t rows = x.size(0);
  LR_CHECK(static_cast<int64_t>(routing.row_adapter.size()) == rows, InvalidArgument, "slot ", slots[0],
           ": adapter routing has ", routing.row_adapter.size(), " rows, the input ", rows);
  const int64_t in = x.size(-1);
  const int64_t tokens_per_row = rows > 0 ? x.numel() / (rows * in) : 0;
  const int64_t width = slot_width(kv_);
  const at::Tensor& pool = kv_.keys.front();
  const std::optional<ops::LoraElement> element = element_of(pool.scalar_type());
  const bool kernel_device = x.device().is_cpu() || (x.device().is_cuda() && ops::lora_gather_cuda_built());
  const bool kernel = element && kernel_device && x.scalar_type() == pool.scalar_type() &&
                      x.is_contiguous() && x.device() == pool.device();
  const int64_t kernel_max_tokens = ops::lora_gather_max_tokens();
  for (at::Tensor& y : ys) y = y.contiguous();

  std::vector<ops::LoraPagedTask> tasks;
  for (int64_t start = 0; start < rows;) {
    const int64_t id = routing.row_adapter[static_cast<size_t>(start)];
    int64_t end = start + 1;
    while (end < rows && routing.row_adapter[static_cast<size_t>(end)] == id) ++end;
    const int64_t length = end - start;
    const int64_t begin_row = start;
    start = end;
    if (id < 0) continue;  // the base model alone
    LR_CHECK(static_cast<size_t>(id) < adapters_.size() && adapters_[static_cast<size_t>(id)] != nullptr,
             InternalError, "paged LoRA: row ", begin_row, " is routed to adapter ", id,
             ", which is not resident in this pass");
    const ResidentAdapter& adapter = *adapters_[static_cast<size_t>(id)];
    const int64_t tokens = length * tokens_per_row;
    for (size_t i = 0; i < slots.size(); ++i) {
      const auto it = adapter.host->modules.find(slots[i]);
      if (it == adapter.host->modules.end()) continue;  // the adapter does not target this slot
      const PagedModule& m = it->second;
      const int64_t out = ys[i].size(-1);
      LR_CHECK(m.in == in && m.out == out, InternalError, "paged LoRA: slot ", slots[i], " is ", in, " -> ",
               out, " but the adapter's module is ", m.in, " -> ", m.out);
      const at::Tensor& keys = kv_.keys[static_cast<size_t>(m.layer)];
      const at::Tensor& values = kv_.values[static_cast<size_t>(m.layer)];
      if (kernel && tokens <= kernel_max_tokens && ys[i].scalar_type() == pool.scalar_type()) {
        ops::LoraPagedTask t;
        t.x =
            static_cast<const char*>(x.const_data_ptr()) + begin_row * tokens_per_row * in * x.element_size();
        t.y = static_cast<char*>(ys[i].mutable_data_ptr()) +
              begin_row * tokens_per_row * out * ys[i].element_size();
        t.a_arena = keys.const_data_ptr();
        t.b_arena = values.const_data_ptr();
        t.slots = adapter.slots.const_data_ptr<int64_t>();
        t.first = m.first;
        t.slots_per_rank = m.slots_per_rank;
        t.slot_width = width;
        t.tokens = tokens;
        t.in = in;
        t.out = out;
        t.rank = m.rank;
        t.scale = static_cast<float>(m.scale);
        tasks.push_back(t);
        continue;
      }
      // A long segment: gather A and B out of the pages, then one GEMM pair.
      const at::Tensor index = adapter.slots.narrow(0, m.first, m.rank * m.slots_per_rank);
      const at::Tensor a = arena(keys).index_select(0, index).view({m.rank, -1}).narrow(1, 0, in);
      const at::Tensor b_t = arena(values).index_select(0, index).view({m.rank, -1}).narrow(1, 0, out);
      const at::Tensor xs = x.narrow(0, begin_row, length).reshape({tokens, in}).to(a.scalar_type());
      at::Tensor y = ys[i].narrow(0, begin_row, length).view({tokens, out});
      y.add_(at::mm(at::mm(xs, a.t()).mul_(m.scale), b_t).to(y.scalar_type()));
    }
  }
  if (tasks.empty()) return;
  if (x.device().is_cuda())
    ops::lora_gather_paged_cuda(tasks, *element, x.device().index());
  else
    ops::lora_gather_paged(tasks, *element);
}

}  // namespace lowrank::serve
