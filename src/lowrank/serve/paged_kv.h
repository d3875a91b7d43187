// PagedKV and PagedStep — the serving engine's paged KV cache (vLLM's PagedAttention block tables,
// Kwon et al., 2023, arXiv:2309.06180), as the model sees it through nn::KVStore.
//
// PagedKV is the pool: per layer, the keys and values of every page slot,
// [num_pages · page_tokens, n_kv, D]. A sequence's token t lives in page block_table[t /
// page_tokens], slot t % page_tokens; which pages a sequence owns is the scheduler's business
// (scheduler.h, memory_pool.h). With prefix caching (prefix_cache.h) the leading pages of several
// block tables may be the same pages: a pass only reads them, and writes only positions at or
// after each row's start, which lie in pages of that row's own.
//
// PagedStep is one model pass's view of the pool: B rows, each with its past length, its block
// table and its number of new positions (T = the largest). Rows with fewer new positions are
// left-padded (the attention mask marks the padding). Keys are laid out right-aligned
// (nn::KVStore): row b's position p is column p + S − start_b − new_b of the S = max_b (start_b +
// new_b) columns, and its new positions are its queries' last new_b columns of T. The pass writes
// the new keys and values into their page slots and gathers each row's past through its block
// table; the model knows nothing of pages.
// A pass of one new position per row (the engine's decode pass) does not gather: attend() runs
// ops::paged_attention, which reads each row's keys and values in place through its block table,
// over its own length only (no padding to the longest row). The gathered path stays for prefill
// chunks and for pools the kernel does not read (other than float32/bfloat16 on the CPU).
#pragma once

#include <cstdint>
#include <optional>
#include <utility>
#include <vector>

#include <ATen/ATen.h>

#include "lowrank/nn/attending_kv_store.h"

namespace lowrank::nn {
struct ModelConfig;
class Model;
}  // namespace lowrank::nn

namespace lowrank::serve {

// What one position of one KV head stores in a layer: head_dim key and value coordinates, or under
// MatryoshkaKV (compress/matryoshka_kv.h) the layer's r_k and r_v (its heads padded to the largest).
struct KVWidths {
  int64_t key = 0, value = 0;
};

// Per layer, the widths the model's attention writes into its cache.
std::vector<KVWidths> stored_kv_widths(const nn::Model& model);

struct PagedKV {
  // Zeroed pages for every layer of a model of `config`, with `options`' dtype and device, each
  // layer `widths[l]` wide (empty: head_dim everywhere).
  PagedKV(const nn::ModelConfig& config, int64_t num_pages, int64_t page_tokens, at::TensorOptions options,
          const std::vector<KVWidths>& widths = {});

  // Bytes of one page in all layers' key and value buffers together.
  int64_t page_bytes() const;
  // Whether a layer stores other than head_dim coordinates (MatryoshkaKV): the slots are then
  // narrower than an adapter's rows, so no adapter can be paged in (serve/paged_lora.h).
  bool compressed() const { return compressed_; }

  int64_t page_tokens = 0;
  std::vector<at::Tensor> keys, values;  // per layer, [num_pages · page_tokens, n_kv, r_k or r_v]
  std::vector<int64_t> windows;          // per layer, the model's sliding window (0: none)

 private:
  bool compressed_ = false;
};

class PagedStep final : public nn::AttendingKVStore {
 public:
  struct Row {
    int64_t start = 0;                                  // positions already in the pool
    int64_t new_tokens = 1;                             // positions this pass adds
    const std::vector<int32_t>* block_table = nullptr;  // pages covering [0, start + new_tokens)
  };

  // `kv` must outlive the step; the block tables must outlive it too.
  PagedStep(PagedKV& kv, std::vector<Row> rows);

  int64_t batch() const override { return static_cast<int64_t>(rows_.size()); }
  int64_t num_layers() const override { return static_cast<int64_t>(kv_.keys.size()); }
  int64_t length() const override { return S_ - T_; }
  bool has_padding() const override { return ragged_; }
  const at::Tensor& valid_count() const override { return valid_count_; }
  at::Tensor begin(int64_t T, const at::Tensor& valid) override;
  std::pair<at::Tensor, at::Tensor> update(int64_t layer, const at::Tensor& k, const at::Tensor& v) override;
  void commit() override {}
  // Steps of one new position per row on a float32/bfloat16 CPU pool (else nullopt).
  std::optional<at::Tensor> attend(int64_t layer, const at::Tensor& q, const at::Tensor& k,
                                   const at::Tensor& v, double scale) override;

 private:
  // Writes the new positions' k, v [B, n_kv, T, D] into their page slots.
  void store(int64_t layer, const at::Tensor& k, const at::Tensor& v);

  // Index and mask tensors live where the pool does (built on the host, copied once per pass).
  at::Tensor on_device(const at::Tensor& t) const { return t.to(kv_.keys.front().device()); }

  PagedKV& kv_;
  std::vector<Row> rows_;
  int64_t T_ = 0;  // new positions of the longest row
  int64_t S_ = 0;  // key columns
  bool ragged_ = false;
  at::Tensor valid_count_, write_, read_, new_rows_;  // read_: built at the first update()
};

}  // namespace lowrank::serve
