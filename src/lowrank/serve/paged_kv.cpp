// The paged KV pool and one pass's view of it; see paged_kv.h.
#include "lowrank/serve/paged_kv.h"

#include <algorithm>

#include "lowrank/core/error.h"
#include "lowrank/nn/attention.h"
#include "lowrank/nn/config.h"
#include "lowrank/nn/model.h"
#include "lowrank/ops/paged_attention.h"

namespace lowrank::serve {

std::vector<KVWidths> stored_kv_widths(const nn::Model& model) {
  const nn::ModelConfig& config = model.config();
  std::vector<KVWidths> widths;
  for (int64_t l = 0; l < config.num_hidden_layers; ++l) {
    const auto* attention = dynamic_cast<const nn::Attention*>(&model.mixer(l));
    const nn::KVCompression* c = attention ? attention->kv_compression().get() : nullptr;
    widths.push_back(c ? KVWidths{c->key_basis.size(2), c->value_basis.size(2)}
                       : KVWidths{config.head_dim, config.head_dim});
  }
  return widths;
}

PagedKV::PagedKV(const nn::ModelConfig& config, int64_t num_pages, int64_t page_tokens,
                 at::TensorOptions options, const std::vector<KVWidths>& widths)
    : page_tokens(page_tokens), windows(config.sliding_window) {
  LR_CHECK(static_cast<int64_t>(windows.size()) == config.num_hidden_layers, InvalidArgument,
           "paged KV: the model config has ", windows.size(), " sliding_window entries for ",
           config.num_hidden_layers, " layers");
  LR_CHECK(widths.empty() || static_cast<int64_t>(widths.size()) == config.num_hidden_layers, InvalidArgument,
           "paged KV: ", widths.size(), " layer widths for ", config.num_hidden_layers, " layers");
  for (int64_t l = 0; l < config.num_hidden_layers; ++l) {
    const KVWidths w =
        widths.empty() ? KVWidths{config.head_dim, config.head_dim} : widths[static_cast<size_t>(l)];
    LR_CHECK(w.key >= 1 && w.key <= config.head_dim && w.value >= 1 && w.value <= config.head_dim,
             InvalidArgument, "paged KV: layer ", l, " stores ", w.key, " key and ", w.value,
             " value coordinates per head (1 … head_dim ", config.head_dim, ")");
    compressed_ = compressed_ || w.key != config.head_dim || w.value != config.head_dim;
    keys.push_back(at::zeros({num_pages * page_tokens, config.num_key_value_heads, w.key}, options));
    values.push_back(at::zeros({num_pages * page_tokens, config.num_key_value_heads, w.value}, options));
  }
}

int64_t PagedKV::page_bytes() const {
  int64_t bytes = 0;
  for (size_t l = 0; l < keys.size(); ++l)
    bytes += page_tokens * (keys[l].size(1) * keys[l].size(2) * keys[l].element_size() +
                            values[l].size(1) * values[l].size(2) * values[l].element_size());
  return bytes;
}

PagedStep::PagedStep(PagedKV& kv, std::vector<Row> rows) : kv_(kv), rows_(std::move(rows)) {
  std::vector<int64_t> starts;
  for (const Row& r : rows_) {
    starts.push_back(r.start);
    T_ = std::max(T_, r.new_tokens);
    S_ = std::max(S_, r.start + r.new_tokens);
    ragged_ = ragged_ || r.start != rows_.front().start || r.new_tokens != rows_.front().new_tokens;
  }
  valid_count_ = on_device(at::tensor(starts, at::kLong));
}

at::Tensor PagedStep::begin(int64_t T, const at::Tensor& /*valid: the same padding, from the rows*/) {
  LR_CHECK(T == T_, InternalError, "paged KV: a step of ", T, " positions for rows of at most ", T_);
  const int64_t B = batch();
  const int64_t page_tokens = kv_.page_tokens;
  std::vector<int64_t> write, new_rows;
  std::vector<uint8_t> key_valid(static_cast<size_t>(B * S_), 0);
  for (int64_t b = 0; b < B; ++b) {
    const Row& r = rows_[static_cast<size_t>(b)];
    const int64_t offset = S_ - r.start - r.new_tokens;
    LR_CHECK((r.start + r.new_tokens + page_tokens - 1) / page_tokens <=
                 static_cast<int64_t>(r.block_table->size()),
             InternalError, "paged KV: ", r.start + r.new_tokens, " positions beyond the ",
             r.block_table->size(), " pages of its block table");
    std::fill_n(key_valid.begin() + b * S_ + offset, r.start + r.new_tokens, 1);
    for (int64_t p = r.start; p < r.start + r.new_tokens; ++p) {
      write.push_back(int64_t{(*r.block_table)[static_cast<size_t>(p / page_tokens)]} * page_tokens +
                      p % page_tokens);
      new_rows.push_back(b * T_ + T_ - r.new_tokens + (p - r.start));
    }
  }
  write_ = on_device(at::tensor(write, at::kLong));
  new_rows_ = ragged_ ? on_device(at::tensor(new_rows, at::kLong)) : at::Tensor();
  read_ = at::Tensor();
  return on_device(at::tensor(key_valid, at::kByte).view({B, S_}).to(at::kBool));
}

void PagedStep::store(int64_t layer, const at::Tensor& k, const at::Tensor& v) {
  const int64_t B = batch();
  const int64_t n_kv = k.size(1);
  // [B, n_kv, T, E] -> [B·T, n_kv, E]; the real (not padding) positions, in the order of write_.
  auto real = [&](const at::Tensor& x) {
    at::Tensor rows = x.transpose(1, 2).reshape({B * T_, n_kv, x.size(3)});
    return new_rows_.defined() ? rows.index_select(0, new_rows_) : rows;
  };
  kv_.keys[static_cast<size_t>(layer)].index_copy_(0, write_, real(k));
  kv_.values[static_cast<size_t>(layer)].index_copy_(0, write_, real(v));
}

std::optional<at::Tensor> PagedStep::attend(int64_t layer, const at::Tensor& q, const at::Tensor& k,
                                            const at::Tensor& v, double scale) {
  const at::Tensor& K = kv_.keys[static_cast<size_t>(layer)];
  const at::Tensor& V = kv_.values[static_cast<size_t>(layer)];
  if (T_ != 1 || !ops::paged_attention_supports(K)) return std::nullopt;
  store(layer, k, v);
  std::vector<ops::PagedAttentionRow> rows;
  rows.reserve(rows_.size());
  for (const Row& r : rows_) rows.push_back({.block_table = *r.block_table, .length = r.start + 1});
  const int64_t B = batch();
  // q [B, n_heads, 1, D] -> [B, n_heads, D]; the output [B, n_heads, D_v] -> [B, n_heads, 1, D_v].
  return ops::paged_attention(q.squeeze(2), K, V, kv_.page_tokens, rows,
                              kv_.windows[static_cast<size_t>(layer)], scale)
      .view({B, q.size(1), 1, V.size(2)});
}

std::pair<at::Tensor, at::Tensor> PagedStep::update(int64_t layer, const at::Tensor& k, const at::Tensor& v) {
  const int64_t B = batch();
  const int64_t n_kv = k.size(1);
  store(layer, k, v);
  if (!read_.defined()) {
    // Every row's slots, right-aligned in S_ columns; padding reads slot 0 (masked).
    std::vector<int64_t> read(static_cast<size_t>(B * S_), 0);
    for (int64_t b = 0; b < B; ++b) {
      const Row& r = rows_[static_cast<size_t>(b)];
      const int64_t offset = S_ - r.start - r.new_tokens;
      for (int64_t p = 0; p < r.start + r.new_tokens; ++p)
        read[static_cast<size_t>(b * S_ + offset + p)] =
            int64_t{(*r.block_table)[static_cast<size_t>(p / kv_.page_tokens)]} * kv_.page_tokens +
            p % kv_.page_tokens;
    }
    read_ = on_device(at::tensor(read, at::kLong));
  }
  const at::Tensor& K = kv_.keys[static_cast<size_t>(layer)];
  const at::Tensor& V = kv_.values[static_cast<size_t>(layer)];
  // Gather each row's past through its block table: [B·S, n_kv, E] -> [B, n_kv, S, E].
  return {K.index_select(0, read_).view({B, S_, n_kv, K.size(2)}).transpose(1, 2),
          V.index_select(0, read_).view({B, S_, n_kv, V.size(2)}).transpose(1, 2)};
}

}  // namespace lowrank::serve
