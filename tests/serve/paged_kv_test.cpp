// PagedStep: a decode step that attends through the pages (attend) against the model's padded path
// over the same pool (update's gathered keys, make_attention_mask, SDPA with the KV heads repeated).
#include "lowrank/serve/paged_kv.h"

#include <gtest/gtest.h>

#include <ATen/CPUGeneratorImpl.h>

#include <cmath>
#include <vector>

#include "lowrank/nn/attention.h"
#include "lowrank/nn/config.h"

namespace lowrank::serve {
namespace {

// Rows whose past (4 … 20 positions, page of 4, pages out of order) was written by earlier steps;
// layer 0 attends fully, layer 1 through a window of 6 (Mistral's sliding window).
TEST(PagedKVTest, DecodeAttendMatchesThePaddedPath) {
  nn::ModelConfig config;
  config.num_hidden_layers = 2;
  config.num_attention_heads = 4;
  config.num_key_value_heads = 2;
  config.head_dim = 8;
  config.sliding_window = {0, 6};
  const int64_t page_tokens = 4, num_pages = 16;
  at::Generator gen = at::detail::createCPUGenerator(5);
  PagedKV paged(config, num_pages, page_tokens, at::kFloat);
  for (size_t l = 0; l < 2; ++l) {
    paged.keys[l].normal_(0, 1, gen);
    paged.values[l].normal_(0, 1, gen);
  }
  PagedKV gathered = paged;
  for (size_t l = 0; l < 2; ++l) {
    gathered.keys[l] = paged.keys[l].clone();
    gathered.values[l] = paged.values[l].clone();
  }
  // Row starts (positions already cached): 0 (a first token), 3, 7 (the new one fills a page), 20.
  const std::vector<std::vector<int32_t>> tables = {{9}, {4}, {12, 2}, {0, 15, 6, 3, 11, 8}};
  const std::vector<int64_t> starts = {0, 3, 7, 20};
  std::vector<PagedStep::Row> rows;
  for (size_t b = 0; b < starts.size(); ++b)
    rows.push_back({.start = starts[b], .new_tokens = 1, .block_table = &tables[b]});
  const int64_t B = 4, H = 4, n_kv = 2, D = 8;
  const double scale = 1.0 / std::sqrt(8.0);

  PagedStep in_place(paged, rows);
  PagedStep padded(gathered, rows);
  in_place.begin(1, at::Tensor());
  const at::Tensor key_valid = padded.begin(1, at::Tensor());
  for (int64_t layer = 0; layer < 2; ++layer) {
    const at::Tensor q = at::randn({B, H, 1, D}, gen, at::kFloat).mul(2);
    const at::Tensor k = at::randn({B, n_kv, 1, D}, gen, at::kFloat);
    const at::Tensor v = at::randn({B, n_kv, 1, D}, gen, at::kFloat);
    const std::optional<at::Tensor> got = in_place.attend(layer, q, k, v, scale);
    ASSERT_TRUE(got.has_value());
    const auto [keys, values] = padded.update(layer, k, v);
    const int64_t S = keys.size(2);
    const nn::AttentionMask mask = nn::make_attention_mask(
        key_valid, /*padded=*/true, S - 1, 1, config.sliding_window[static_cast<size_t>(layer)], at::kCPU);
    const at::Tensor expected = at::scaled_dot_product_attention(q.view({B, n_kv, 2, D}), keys, values,
                                                                 mask.allowed, 0.0, false, scale)
                                    .view({B, H, 1, D});
    EXPECT_LT(got->sub(expected).abs().max().item<double>(), 1e-6) << "layer " << layer;
    // attend stored the new keys and values where update did.
    EXPECT_TRUE(paged.keys[static_cast<size_t>(layer)].equal(gathered.keys[static_cast<size_t>(layer)]));
    EXPECT_TRUE(paged.values[static_cast<size_t>(layer)].equal(gathered.values[static_cast<size_t>(layer)]));
  }
  // The window bites: without it layer 1's longest row would differ.
  {
    PagedStep again(paged, rows);
    again.begin(1, at::Tensor());
    paged.windows[1] = 0;
    const at::Tensor q = at::randn({B, H, 1, D}, gen, at::kFloat).mul(2);
    const at::Tensor k = at::randn({B, n_kv, 1, D}, gen, at::kFloat);
    const at::Tensor full = *again.attend(1, q, k, k, scale);
    paged.windows[1] = 6;
    const at::Tensor windowed = *again.attend(1, q, k, k, scale);
    EXPECT_GT(full.narrow(0, 3, 1).sub(windowed.narrow(0, 3, 1)).abs().max().item<double>(), 1e-3);
    EXPECT_TRUE(full.narrow(0, 0, 2).equal(windowed.narrow(0, 0, 2)));  // rows shorter than the window
  }
  // A prefill step (several new positions) keeps the gathered path.
  std::vector<PagedStep::Row> chunk = {{.start = 0, .new_tokens = 2, .block_table = &tables[0]}};
  PagedStep prefill(paged, chunk);
  prefill.begin(2, at::Tensor());
  EXPECT_FALSE(prefill.attend(0, at::zeros({1, H, 2, D}), at::zeros({1, n_kv, 2, D}),
                              at::zeros({1, n_kv, 2, D}), scale));
}

}  // namespace
}  // namespace lowrank::serve
