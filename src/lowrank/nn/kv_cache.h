// The key/value cache of one batch of sequences (a session's state, never part of the shared
// model): per layer, contiguous preallocated buffers K, V [B, n_kv, capacity, head_dim] holding the
// rotated keys and the values of every position seen so far, plus which positions are real tokens
// (left padding) and how many real tokens each row has (its next position id).
// Deviation from transformers' DynamicCache: storage is allocated once for `capacity` positions
// and grows by doubling (one copy) when exceeded, instead of concatenating every step; sliding-
// window layers keep all positions and rely on the attention mask.
// A hybrid model (token_mixer.h) keeps keys and values only for its attention layers; each other
// layer keeps its mixer's constant-size decode state (MixerState) in the same cache, so one object
// is a sequence's whole decode state and its memory grows only with the attention layers.
// Per-layer widths: a layer whose attention stores compressed keys and values (MatryoshkaKV,
// attention.h's KVCompression) writes [.., r_k] and [.., r_v] instead of head_dim; the layer's
// buffers take the width of its first write (reallocated then, while the cache is still empty).
#pragma once

#include <cstdint>
#include <memory>
#include <utility>
#include <vector>

#include <ATen/ATen.h>

#include "lowrank/nn/config.h"

namespace lowrank::nn {

struct MixerState;  // token_mixer.h

// What Model::forward needs from a key/value store: the contiguous KVCache below, or a paged one
// whose sequences' positions live in pages of a shared pool (serve/paged_kv.h). A step of T new
// positions for B rows is laid out right-aligned: the keys a row attends to are the last columns
// of the S = length() + T returned by update(), earlier columns of shorter rows are padding
// (false in the key validity begin() returns).
class KVStore {
 public:
  virtual ~KVStore() = default;
  virtual int64_t batch() const = 0;
  virtual int64_t num_layers() const = 0;
  // Key columns before the step's new positions (S − T).
  virtual int64_t length() const = 0;
  // Some row has padding columns (so the mask cannot be the plain causal one).
  virtual bool has_padding() const = 0;
  // [B] int64: real tokens per row before the step (the next position id of each row).
  virtual const at::Tensor& valid_count() const = 0;
  // Protocol used by Model::forward for one step of T new positions:
  //   begin(T, valid) once (valid: [B, T] bool, or undefined for all real), then update() per
  //   layer, then commit(). begin returns [B, length() + T] key validity including the new
  //   positions.
  virtual at::Tensor begin(int64_t new_positions, const at::Tensor& valid) = 0;
  // Stores k, v [B, n_kv, T, D] of `layer` and returns the keys and values [B, n_kv, length() + T,
  // D] the step attends to.
  virtual std::pair<at::Tensor, at::Tensor> update(int64_t layer, const at::Tensor& k,
                                                   const at::Tensor& v) = 0;
  virtual void commit() = 0;
  // The decode state of `layer` when its mixer keeps one instead of keys and values (token_mixer.h),
  // which the step advances in place; null for an attention layer and for a store that keeps
  // keys and values only (the paged store of serve/).
  virtual MixerState* mixer_state(int64_t /*layer*/) { return nullptr; }
};

class KVCache final : public KVStore {
 public:
  // `options` give the dtype and device of keys and values (the model's compute dtype).
  KVCache(const ModelConfig& config, int64_t batch, int64_t capacity, at::TensorOptions options);
  // A cache for a hybrid model: `mixer_states` has one entry per layer, null for a layer that keeps
  // keys and values, else that layer's state (TokenMixer::new_state(batch)); such a layer gets no
  // key/value storage. Model::new_cache builds it.
  KVCache(const ModelConfig& config, int64_t batch, int64_t capacity, at::TensorOptions options,
          std::vector<std::unique_ptr<MixerState>> mixer_states);
  KVCache(KVCache&&) noexcept;
  KVCache& operator=(KVCache&&) noexcept;
  ~KVCache() override;

  int64_t batch() const override { return batch_; }
  int64_t length() const override { return length_; }  // positions written (padding included)
  int64_t capacity() const { return capacity_; }
  int64_t num_layers() const override { return static_cast<int64_t>(keys_.size()); }
  // Ensures room for `capacity` positions, copying what is there. Never shrinks.
  void reserve(int64_t capacity);
  // Forgets every position (keeps the storage). Throws Unsupported for a cache holding mixer
  // states, which only their mixer can reset (make a new cache with Model::new_cache).
  void clear();

  // [B, length()] bool: which cached positions are real tokens.
  at::Tensor key_valid() const { return key_valid_.narrow(1, 0, length_); }
  // [B] int64: real tokens per row so far (the next position id of each row).
  const at::Tensor& valid_count() const override { return valid_count_; }
  bool has_padding() const override { return has_padding_; }

  at::Tensor begin(int64_t new_positions, const at::Tensor& valid) override;
  // Writes k, v at [length(), length() + T) and returns views of the keys and values (no copy).
  // The first write into an empty cache sets the layer's key and value widths (k.size(3),
  // v.size(3)); a later write of another width is an InvalidArgument.
  std::pair<at::Tensor, at::Tensor> update(int64_t layer, const at::Tensor& k, const at::Tensor& v) override;
  void commit() override;
  MixerState* mixer_state(int64_t layer) override;

  // For the fused decode step (decode_step.h), which writes keys and values itself: appends one real
  // position to every row (growing the storage if needed) with plain stores instead of a
  // begin()/commit() pair of ATen operations, and returns its column. Only for CPU caches.
  int64_t append_position();
  // Layer `layer`'s storage [B, n_kv, capacity(), head_dim] (rotated keys; values); undefined for
  // a layer that keeps a mixer state.
  const at::Tensor& keys(int64_t layer) const { return keys_.at(static_cast<size_t>(layer)); }
  const at::Tensor& values(int64_t layer) const { return values_.at(static_cast<size_t>(layer)); }
  // Bytes the length() positions written occupy, every layer's keys and values at its (padded)
  // width: B · n_kv · length() · Σ_l (w_k,l + w_v,l) · element size.
  int64_t bytes() const;

 private:
  int64_t batch_;
  int64_t capacity_;
  int64_t length_ = 0;
  int64_t pending_ = 0;                              // T of the step in progress
  std::vector<at::Tensor> keys_, values_;            // undefined for a layer with a mixer state
  std::vector<std::unique_ptr<MixerState>> states_;  // one per layer (null: keys and values), or empty
  at::Tensor key_valid_;                             // [B, capacity] bool
  at::Tensor valid_count_;                           // [B] int64
  at::Tensor pending_valid_;
  bool has_padding_ = false;
};

}  // namespace lowrank::nn
