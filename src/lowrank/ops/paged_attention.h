// Paged decode attention on the CPU: one query per row attends to that row's keys and values where
// they lie in the pages of the KV pool, read through its block table, with no copy of the past into
// a padded [B, S_max, …] tensor (PagedAttention, Kwon et al., 2023, "Efficient Memory Management for
// Large Language Model Serving with PagedAttention", arXiv:2309.06180, §4.1; S-LoRA, Sheng et al.,
// 2023, arXiv:2311.03285, §4, serves its unified pool with the same kind of kernel).
//
// Row b has L_b keys, positions 0 … L_b − 1, its query at position L_b − 1; position t lives in pool
// slot block_table_b[⌊t / P⌋] · P + t mod P (P tokens a page). With a sliding window W > 0 the row
// sees positions t ≥ L_b − W (transformers' sliding_window_overlay: 0 ≤ i − j < W), else all. Query
// head h reads KV head g = ⌊h / G⌋, G = n_heads / n_kv (grouped-query attention):
//   s_t = (q_h · k_{t,g}) · scale
//   o_h = Σ_t exp(s_t − m) v_{t,g} / Σ_t exp(s_t − m),   m = max_t s_t
// computed in one pass over the pages with the online softmax (Milakov & Gimelshein, 2018, "Online
// normalizer calculation for softmax", arXiv:1805.02867; the split-key form of Flash-Decoding, Dao
// et al., 2023): a running max m, sum ℓ and unnormalised output a; for each page's scores s_t with
// page max m' = max(m, max_t s_t):
//   c = exp(m − m');  ℓ ← c·ℓ + Σ_t exp(s_t − m');  a ← c·a + Σ_t exp(s_t − m') v_t;  m ← m'
// and o_h = a / ℓ at the end. Scores and sums are float32 whatever the pool's dtype.
//
// Reference code: vLLM, csrc/attention/attention_kernels.cu (paged_attention_kernel: the walk over
// the block table, a sequence's partitions reduced by rescaling each partial sum with
// exp(m_i − m)) and csrc/cpu/attention.cpp (the CPU kernels, one work item per (sequence, head),
// dynamically scheduled). Deviations: vLLM's v1 kernels store every logit of a sequence and make a
// second pass for the softmax, its v2 kernels rescale once per 512-token partition; here the
// rescale is per page, so one pass and a page of scores are all the scratch. One work item is a
// (row, KV head) pair whose G query heads are computed together, so each page of keys and values is
// read from memory once for the group rather than G times. Items go longest row first to whichever
// thread is free (the rows' lengths differ by up to two orders of magnitude). The dot products and
// the value updates are ops::dot and ops::axpy (gemv.h: AVX2 + FMA where the CPU has it).
#pragma once

#include <cstdint>
#include <span>

#include <ATen/ATen.h>

namespace lowrank::ops {

struct PagedAttentionRow {
  std::span<const int32_t> block_table;  // the pages holding positions [0, length), in order
  int64_t length = 0;                    // keys of the row; its query is at position length − 1
};

// q [B, n_heads, D] (any floating dtype; computed in float32), key_pages [num_pages · page_tokens,
// n_kv, D] and value_pages [num_pages · page_tokens, n_kv, D_v] (the pool of one layer, as
// serve::PagedKV holds it; D_v ≠ D for MatryoshkaKV's compressed pages), one row per query, window
// 0 (none) or the sliding window; returns o [B, n_heads, D_v] in q's dtype. Throws
// InvalidArgument for shapes that do not fit together, a row of length < 1 or whose block table is
// too short or names a page outside the pool, and Unsupported for a pool that
// paged_attention_supports() refuses. Uses libtorch's intra-op threads.
at::Tensor paged_attention(const at::Tensor& q, const at::Tensor& key_pages, const at::Tensor& value_pages,
                           int64_t page_tokens, std::span<const PagedAttentionRow> rows, int64_t window,
                           double scale);

// Whether paged_attention reads this pool: a contiguous float32 or bfloat16 CPU tensor.
bool paged_attention_supports(const at::Tensor& pages);

}  // namespace lowrank::ops
