// Adapter weights in the unified memory pool — the half of S-LoRA's Unified Paging (Sheng et al.,
// 2023, "S-LoRA: Serving Thousands of Concurrent LoRA Adapters", arXiv:2311.03285, §4) that puts
// LoRA weights in the pages the KV cache uses, and its MBGMV/MBGMM products reading them there
// (§5.2). Layout as in the authors' code (S-LoRA/S-LoRA `slora/common/mem_manager.py`: per layer a
// key buffer and a value buffer of hidden-size slots; `slora/server/router/model_infer/
// infer_adapter.py`: A's rows into the key buffer, B's columns into the value buffer, at the same
// slot indices `a_loc`; `slora/csrc/bgmv`: the kernel gathers them through those indices).
//
// Layout. The pool (paged_kv.h) holds per layer keys and values of num_pages · page_tokens slots,
// each slot W = n_kv · head_dim elements wide. An adapter owns pages (adapter_cache.h); its
// logical slot i is physical slot pages[i / page_tokens] · page_tokens + i % page_tokens, in every
// layer. Its modules on one layer are laid out one after the other from logical slot 0: a module
// with A [r, in] and B [out, r] takes r · spr slots, spr = max(⌈in / W⌉, ⌈out / W⌉) (memory_pool.h's
// adapter_slots); rank index j owns slots first + j·spr + c, c < spr, whose key halves hold A[j, :]
// and value halves B[:, j], W elements per slot (the tail of the last slot is zero). A module
// outside the model's layers (no "layers.N." in its slot name) is placed in layer 0's buffers,
// after layer 0's own modules. The adapter takes ⌈max over layers of its slots / page_tokens⌉
// pages. Deviation from S-LoRA: allocation is page-granular (vLLM), so an adapter wastes at most
// page_tokens − 1 slots per layer; and modules other than q, k, v, o are allowed, each at its own
// width.
//
// Host and device. A registered adapter is a HostAdapter: its weights already in that layout and
// in the pool's dtype, in host memory (page-locked when the pool is on a CUDA device, so the copy
// can be asynchronous), never attached to the model. load_into_pool copies it into the pages the
// scheduler gave it (StepPlan::adapter_loads) before the step that uses it; the pool is the only
// device-side copy. PagedLoraPass is what the model's routed forward calls
// (nn::RoutedAdapterSource): for every slot it adds each row's adapter delta, reading A and B
// through the adapter's slot table.
//
// Products. Segments (runs of rows for one adapter, the engine sorts rows by adapter) of at most
// ops::lora_gather_max_tokens() tokens go to one ops::lora_gather_paged call for the whole batch
// (or lora_gather_paged_cuda), which reads every chunk of A and B through the slot table (float32,
// bfloat16 and float16; float32 accumulation). Longer segments (prompt chunks) gather their
// adapter's A and B out of the pool (index_select through the same slot table) and run one GEMM
// pair at the pool's dtype, as S-LoRA's prefill does with its own kernel.
#pragma once

#include <cstdint>
#include <map>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <ATen/ATen.h>

#include "lowrank/nn/routed_adapter_source.h"

namespace lowrank::adapt {
struct AttachedAdapter;
}

namespace lowrank::serve {

struct PagedKV;

// One module (slot) of an adapter as it sits in the pool.
struct PagedModule {
  int64_t layer = 0;           // whose key/value buffers hold it
  int64_t first = 0;           // its first logical slot
  int64_t slots_per_rank = 0;  // spr
  int64_t rank = 0, in = 0, out = 0;
  double scale = 1;
};

// A registered adapter in host memory, in the pool's layout.
struct HostAdapter {
  std::map<std::string, PagedModule, std::less<>> modules;  // by slot name
  int64_t slots = 0;                                        // logical slots per layer
  at::Tensor a_rows, b_columns;  // [layers, slots, W], the pool's dtype, on the host
  // Bytes it occupies in the pool when resident (both halves of its slots in every layer).
  int64_t pool_bytes() const { return 2 * a_rows.numel() * static_cast<int64_t>(a_rows.element_size()); }
};

// Packs `adapter` (built against the model, attached or not) into the pool layout for `kv`.
// `pinned`: page-locked host memory (for a CUDA pool). Throws Unsupported, naming the adapter and
// slot, for a layer without a low-rank form (B·A): only such adapters live in the pool.
HostAdapter pack_adapter(const adapt::AttachedAdapter& adapter, const PagedKV& kv, bool pinned);

// Pages the adapter takes: ⌈slots / page_tokens⌉ (at least 1).
int64_t adapter_pages(const HostAdapter& adapter, int64_t page_tokens);

// An adapter copied into pool pages: its slot table on the pool's device.
struct ResidentAdapter {
  const HostAdapter* host = nullptr;
  std::vector<int32_t> pages;
  at::Tensor slots;  // int64 [host->slots]: logical → physical slot
};

// Copies `adapter` into `pages` of the pool (every layer, key and value halves) and returns its
// slot table. The copy is issued on the pool device's current stream. Throws InternalError when
// the pages are too few.
ResidentAdapter load_into_pool(const HostAdapter& adapter, std::span<const int32_t> pages, PagedKV& kv);

// One model pass's routed LoRA products: adapter index a of the pass's AdapterRouting reads
// `adapters[a]` (which must stay resident for the pass).
class PagedLoraPass final : public nn::RoutedAdapterSource {
 public:
  PagedLoraPass(const PagedKV& kv, std::vector<const ResidentAdapter*> adapters);
  void add(std::span<const std::string_view> slots, const at::Tensor& x, const nn::AdapterRouting& routing,
           std::span<at::Tensor> ys) const override;

 private:
  const PagedKV& kv_;
  std::vector<const ResidentAdapter*> adapters_;
};

}  // namespace lowrank::serve
