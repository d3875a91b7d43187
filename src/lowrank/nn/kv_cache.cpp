// Preallocated key/value cache; see kv_cache.h.
#include "lowrank/nn/kv_cache.h"

#include <algorithm>
#include <tuple>

#include "lowrank/core/error.h"
#include "lowrank/nn/token_mixer.h"

namespace lowrank::nn {

KVCache::KVCache(const ModelConfig& config, int64_t batch, int64_t capacity, at::TensorOptions options)
    : KVCache(config, batch, capacity, options, {}) {}

KVCache::KVCache(const ModelConfig& config, int64_t batch, int64_t capacity, at::TensorOptions options,
                 std::vector<std::unique_ptr<MixerState>> mixer_states)
    : batch_(batch), capacity_(std::max<int64_t>(capacity, 1)), states_(std::move(mixer_states)) {
  LR_CHECK(batch > 0, InvalidArgument, "KV cache: batch must be positive, got ", batch);
  LR_CHECK(capacity >= 0, InvalidArgument, "KV cache: capacity must be >= 0, got ", capacity);
  LR_CHECK(states_.empty() || static_cast<int64_t>(states_.size()) == config.num_hidden_layers, InternalError,
           "KV cache: ", states_.size(), " mixer states for ", config.num_hidden_layers, " layers");
  for (int64_t l = 0; l < config.num_hidden_layers; ++l) {
    if (!states_.empty() && states_[static_cast<size_t>(l)]) {
      keys_.emplace_back();
      values_.emplace_back();
      continue;
    }
    keys_.push_back(at::empty({batch, config.num_key_value_heads, capacity_, config.head_dim}, options));
    values_.push_back(at::empty_like(keys_.back()));
  }
  key_valid_ = at::zeros({batch, capacity_}, options.dtype(at::kBool));
  valid_count_ = at::zeros({batch}, options.dtype(at::kLong));
}

KVCache::KVCache(KVCache&&) noexcept = default;
KVCache& KVCache::operator=(KVCache&&) noexcept = default;
KVCache::~KVCache() = default;

MixerState* KVCache::mixer_state(int64_t layer) {
  LR_CHECK(layer >= 0 && layer < num_layers(), InvalidArgument, "KV cache: no layer ", layer);
  return states_.empty() ? nullptr : states_[static_cast<size_t>(layer)].get();
}

void KVCache::reserve(int64_t capacity) {
  if (capacity <= capacity_) return;
  const int64_t grown = std::max(capacity, 2 * capacity_);
  auto grow = [&](at::Tensor& t, int64_t dim) {
    std::vector<int64_t> sizes = t.sizes().vec();
    sizes[dim] = grown;
    at::Tensor bigger = dim == 1 ? at::zeros(sizes, t.options()) : at::empty(sizes, t.options());
    bigger.narrow(dim, 0, length_).copy_(t.narrow(dim, 0, length_));
    t = std::move(bigger);
  };
  for (auto& k : keys_)
    if (k.defined()) grow(k, 2);
  for (auto& v : values_)
    if (v.defined()) grow(v, 2);
  grow(key_valid_, 1);
  capacity_ = grown;
}

void KVCache::clear() {
  for (const auto& state : states_)
    LR_CHECK(state == nullptr, Unsupported,
             "KV cache: a cache holding mixer states cannot be cleared; make a new one (Model::new_cache)");
  length_ = 0;
  pending_ = 0;
  key_valid_.zero_();
  valid_count_.zero_();
  has_padding_ = false;
}

at::Tensor KVCache::begin(int64_t new_positions, const at::Tensor& valid) {
  LR_CHECK(new_positions > 0, InvalidArgument, "KV cache: a step needs at least one position");
  reserve(length_ + new_positions);
  at::Tensor slot = key_valid_.narrow(1, length_, new_positions);
  if (valid.defined()) {
    LR_CHECK(valid.dim() == 2 && valid.size(0) == batch_ && valid.size(1) == new_positions, InvalidArgument,
             "KV cache: attention mask of shape ", valid.sizes(), " for a step of [", batch_, ", ",
             new_positions, "]");
    slot.copy_(valid);
    pending_valid_ = valid.to(at::kBool);
  } else {
    slot.fill_(true);
    pending_valid_ = at::Tensor();
  }
  pending_ = new_positions;
  return key_valid_.narrow(1, 0, length_ + new_positions);
}

std::pair<at::Tensor, at::Tensor> KVCache::update(int64_t layer, const at::Tensor& k, const at::Tensor& v) {
  LR_CHECK(layer >= 0 && layer < num_layers(), InvalidArgument, "KV cache: no layer ", layer);
  LR_CHECK(pending_ > 0 && k.size(2) == pending_, InternalError, "KV cache: update outside begin()/commit()");
  LR_CHECK(keys_[layer].defined(), InternalError, "KV cache: layer ", layer,
           " keeps a mixer state, not keys and values");
  for (auto [store, given, what] :
       {std::tuple<at::Tensor*, const at::Tensor*, const char*>{&keys_[layer], &k, "key"},
        {&values_[layer], &v, "value"}}) {
    if (store->size(3) == given->size(3)) continue;
    LR_CHECK(length_ == 0, InvalidArgument, "KV cache: layer ", layer, " holds ", what, "s of width ",
             store->size(3), ", got a write of width ", given->size(3));
    *store = at::empty({store->size(0), store->size(1), capacity_, given->size(3)}, store->options());
  }
  keys_[layer].narrow(2, length_, pending_).copy_(k);
  values_[layer].narrow(2, length_, pending_).copy_(v);
  return {keys_[layer].narrow(2, 0, length_ + pending_), values_[layer].narrow(2, 0, length_ + pending_)};
}

int64_t KVCache::bytes() const {
  int64_t total = 0;
  for (size_t l = 0; l < keys_.size(); ++l)
    if (keys_[l].defined())  // not a layer keeping a mixer state
      total += keys_[l].size(0) * keys_[l].size(1) * length_ *
               (keys_[l].size(3) * keys_[l].element_size() + values_[l].size(3) * values_[l].element_size());
  return total;
}

void KVCache::commit() {
  if (pending_valid_.defined()) {
    valid_count_ += pending_valid_.sum(1);
    if (!has_padding_) has_padding_ = !pending_valid_.all().item<bool>();
  } else {
    valid_count_ += pending_;
  }
  length_ += pending_;
  pending_ = 0;
  pending_valid_ = at::Tensor();
}

int64_t KVCache::append_position() {
  LR_CHECK(pending_ == 0, InternalError, "KV cache: append_position inside begin()/commit()");
  LR_CHECK(key_valid_.device().is_cpu(), InternalError, "KV cache: append_position needs a CPU cache");
  reserve(length_ + 1);
  bool* valid = key_valid_.data_ptr<bool>();
  int64_t* count = valid_count_.data_ptr<int64_t>();
  for (int64_t b = 0; b < batch_; ++b) {
    valid[b * capacity_ + length_] = true;
    count[b] += 1;
  }
  return length_++;
}

}  // namespace lowrank::nn
