// A key/value store that computes single-position attention over its own layout: serve's paged
// store (serve/paged_kv.h), whose decode steps attend through the block tables (ops/
// paged_attention.h) instead of gathering every row's past into the padded [B, n_kv, S, D] that
// update() returns. Attention::forward asks for it with a dynamic_cast at steps of one new position
// (a capability of one store, kept out of KVStore so that the contiguous KVCache and every user of
// the interface stay as they are).
#pragma once

#include <cstdint>
#include <optional>

#include <ATen/ATen.h>

#include "lowrank/nn/kv_cache.h"

namespace lowrank::nn {

class AttendingKVStore : public KVStore {
 public:
  // For a step of one new position per row (between begin(1, …) and commit()): stores k, v
  // [B, n_kv, 1, D] of `layer` as update() would and returns o [B, n_heads, 1, D] in q's dtype,
  //   o_h = softmax_t(q_h · k_t · scale) v_t   over the keys the step's attention mask would allow
  // (the row's real positions, within the layer's sliding window; query head h reads KV head
  // h / (n_heads / n_kv)). Returns nullopt without storing anything when it cannot (a dtype or a
  // device it has no kernel for); the caller then takes update() and SDPA.
  virtual std::optional<at::Tensor> attend(int64_t layer, const at::Tensor& q, const at::Tensor& k,
                                           const at::Tensor& v, double scale) = 0;
};

}  // namespace lowrank::nn
