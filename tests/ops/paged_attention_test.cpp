#include "lowrank/ops/paged_attention.h"

#include <gtest/gtest.h>

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <vector>

#include "lowrank/core/error.h"
#include "tests/testing.h"

namespace lowrank::ops {
namespace {

using testing::error_of;

// A pool of `num_pages` pages of `page_tokens` slots and rows of the given lengths whose pages are
// drawn from a shuffled list (so no row's pages are contiguous or in order).
struct Fixture {
  int64_t page_tokens = 5, n_heads = 4, n_kv = 2, D = 12;
  int64_t Dv = 12;  // the value width (MatryoshkaKV's compressed pages: ≠ D)
  std::vector<int64_t> lengths = {1, 7, 5, 23, 12, 16, 2};
  at::Tensor q, keys, values;  // [B, n_heads, D], [slots, n_kv, D], [slots, n_kv, Dv]
  std::vector<std::vector<int32_t>> tables;

  void build(at::ScalarType pool_dtype, uint64_t seed) {
    at::Generator gen = at::detail::createCPUGenerator(seed);
    std::vector<int32_t> free_pages(40);
    std::iota(free_pages.begin(), free_pages.end(), 0);
    std::shuffle(free_pages.begin(), free_pages.end(), std::mt19937(static_cast<uint32_t>(seed)));
    size_t used = 0;
    tables.clear();
    for (int64_t L : lengths) {
      std::vector<int32_t> t;
      for (int64_t p = 0; p < (L + page_tokens - 1) / page_tokens; ++p) t.push_back(free_pages[used++]);
      tables.push_back(t);
    }
    const auto B = static_cast<int64_t>(lengths.size());
    const int64_t slots = 40 * page_tokens;
    // Scores of a few units, so that the running max moves from page to page.
    q = at::randn({B, n_heads, D}, gen, at::kFloat).mul(1.5);
    keys = at::randn({slots, n_kv, D}, gen, at::kFloat).to(pool_dtype);
    values = at::randn({slots, n_kv, Dv}, gen, at::kFloat).to(pool_dtype);
  }

  std::vector<PagedAttentionRow> rows() const {
    std::vector<PagedAttentionRow> r;
    for (size_t b = 0; b < lengths.size(); ++b) r.push_back({.block_table = tables[b], .length = lengths[b]});
    return r;
  }

  // The oracle: for each row and head, its keys read one by one through the block table, the
  // softmax written out in float64 (max subtracted, exponentials summed, divided).
  at::Tensor float64_softmax(int64_t window, double scale) const {
    const at::Tensor qd = q.to(at::kDouble), kd = keys.to(at::kDouble), vd = values.to(at::kDouble);
    const auto B = static_cast<int64_t>(lengths.size());
    at::Tensor out = at::zeros({B, n_heads, Dv}, at::kDouble);
    auto o = out.accessor<double, 3>();
    auto qa = qd.accessor<double, 3>();
    auto ka = kd.accessor<double, 3>();
    auto va = vd.accessor<double, 3>();
    for (int64_t b = 0; b < B; ++b) {
      const int64_t L = lengths[static_cast<size_t>(b)];
      const int64_t first = window > 0 ? std::max<int64_t>(0, L - window) : 0;
      for (int64_t h = 0; h < n_heads; ++h) {
        const int64_t g = h / (n_heads / n_kv);
        std::vector<double> s;
        std::vector<int64_t> slot;
        for (int64_t t = first; t < L; ++t) {
          slot.push_back(int64_t{tables[static_cast<size_t>(b)][static_cast<size_t>(t / page_tokens)]} *
                             page_tokens +
                         t % page_tokens);
          double x = 0;
          for (int64_t d = 0; d < D; ++d) x += qa[b][h][d] * ka[slot.back()][g][d];
          s.push_back(x * scale);
        }
        const double m = *std::max_element(s.begin(), s.end());
        double total = 0;
        for (double& x : s) total += x = std::exp(x - m);
        for (size_t i = 0; i < s.size(); ++i)
          for (int64_t d = 0; d < Dv; ++d) o[b][h][d] += s[i] / total * va[slot[i]][g][d];
      }
    }
    return out;
  }

  // The engine's padded path: every row's keys gathered right-aligned into [B, n_kv, S_max, D],
  // a key mask for the padding and the window, the KV heads repeated for their query heads, SDPA.
  at::Tensor padded_sdpa(int64_t window, double scale) const {
    const auto B = static_cast<int64_t>(lengths.size());
    const int64_t S = *std::max_element(lengths.begin(), lengths.end());
    std::vector<int64_t> read(static_cast<size_t>(B * S), 0);
    at::Tensor allowed = at::zeros({B, 1, 1, S}, at::kBool);
    for (int64_t b = 0; b < B; ++b) {
      const int64_t L = lengths[static_cast<size_t>(b)];
      for (int64_t t = 0; t < L; ++t) {
        read[static_cast<size_t>(b * S + S - L + t)] =
            int64_t{tables[static_cast<size_t>(b)][static_cast<size_t>(t / page_tokens)]} * page_tokens +
            t % page_tokens;
        if (window == 0 || L - 1 - t < window) allowed[b][0][0][S - L + t] = true;
      }
    }
    const at::Tensor index = at::tensor(read, at::kLong);
    const int64_t groups = n_heads / n_kv;
    auto gather = [&](const at::Tensor& pool) {
      const int64_t E = pool.size(2);
      return pool.to(at::kFloat)
          .index_select(0, index)
          .view({B, S, n_kv, E})
          .transpose(1, 2)
          .unsqueeze(2)
          .expand({B, n_kv, groups, S, E})
          .reshape({B, n_heads, S, E});
    };
    return at::scaled_dot_product_attention(q.unsqueeze(2), gather(keys), gather(values), allowed, 0.0, false,
                                            scale)
        .squeeze(2);
  }
};

// Rows of lengths 1 … 23 over pages of 5 (lengths that are and are not multiples of the page,
// pages scattered), grouped-query heads (2 per KV head) and one head per KV head, with and without
// a sliding window (6: cuts rows mid-page), on one and two threads.
TEST(PagedAttentionTest, MatchesFloat64SoftmaxAndPaddedSdpa) {
  const int saved_threads = at::get_num_threads();
  for (int64_t n_kv : {2, 4}) {
    for (int64_t window : {0, 6}) {
      for (int threads : {1, 2}) {
        at::set_num_threads(threads);
        Fixture f;
        f.n_kv = n_kv;
        f.build(at::kFloat, 3 + static_cast<uint64_t>(n_kv));
        const double scale = 1.0 / std::sqrt(static_cast<double>(f.D));
        const at::Tensor got = paged_attention(f.q, f.keys, f.values, f.page_tokens, f.rows(), window, scale);
        ASSERT_EQ(got.sizes(), f.q.sizes());
        ASSERT_EQ(got.scalar_type(), at::kFloat);
        const at::Tensor exact = f.float64_softmax(window, scale);
        const at::Tensor padded = f.padded_sdpa(window, scale);
        EXPECT_LT(got.to(at::kDouble).sub(exact).abs().max().item<double>(), 2e-6)
            << "n_kv " << n_kv << " window " << window << " threads " << threads;
        EXPECT_LT(got.sub(padded).abs().max().item<double>(), 2e-6)
            << "n_kv " << n_kv << " window " << window << " threads " << threads;
        // The oracles agree with each other (the comparison can fail).
        EXPECT_LT(padded.to(at::kDouble).sub(exact).abs().max().item<double>(), 2e-6);
      }
    }
  }
  at::set_num_threads(saved_threads);
}

// MatryoshkaKV's pages keep r_k key and r_v value coordinates: a value width other than the key
// width, on one and two threads, against both oracles.
TEST(PagedAttentionTest, ValuesMayBeNarrowerOrWiderThanKeys) {
  const int saved_threads = at::get_num_threads();
  for (int64_t Dv : {5, 17}) {
    for (int threads : {1, 2}) {
      at::set_num_threads(threads);
      Fixture f;
      f.Dv = Dv;
      f.build(at::kFloat, 21 + static_cast<uint64_t>(Dv));
      const double scale = 1.0 / std::sqrt(16.0);
      const at::Tensor got = paged_attention(f.q, f.keys, f.values, f.page_tokens, f.rows(), 0, scale);
      ASSERT_EQ(got.sizes(), (at::IntArrayRef{f.q.size(0), f.n_heads, Dv}));
      EXPECT_LT(got.to(at::kDouble).sub(f.float64_softmax(0, scale)).abs().max().item<double>(), 2e-6)
          << "Dv " << Dv << " threads " << threads;
      EXPECT_LT(got.sub(f.padded_sdpa(0, scale)).abs().max().item<double>(), 2e-6)
          << "Dv " << Dv << " threads " << threads;
    }
  }
  at::set_num_threads(saved_threads);
}

// A bfloat16 pool (the keys and values a bfloat16 model caches) is widened and accumulated in
// float32: the float64 oracle on the same bfloat16 values, to float32 rounding.
TEST(PagedAttentionTest, Bfloat16PoolAccumulatesInFloat32) {
  Fixture f;
  f.build(at::kBFloat16, 9);
  const double scale = 1.0 / std::sqrt(static_cast<double>(f.D));
  const at::Tensor got = paged_attention(f.q, f.keys, f.values, f.page_tokens, f.rows(), 0, scale);
  EXPECT_LT(got.to(at::kDouble).sub(f.float64_softmax(0, scale)).abs().max().item<double>(), 2e-6);
  // q's dtype is the output's.
  EXPECT_EQ(paged_attention(f.q.to(at::kBFloat16), f.keys, f.values, f.page_tokens, f.rows(), 0, scale)
                .scalar_type(),
            at::kBFloat16);
}

TEST(PagedAttentionTest, BadInputIsRefused) {
  Fixture f;
  f.build(at::kFloat, 1);
  std::vector<PagedAttentionRow> rows = f.rows();
  auto run = [&](const std::vector<PagedAttentionRow>& r, int64_t window = 0) {
    return error_of([&] { paged_attention(f.q, f.keys, f.values, f.page_tokens, r, window, 1.0); });
  };
  EXPECT_EQ(run(rows), "(no error)");
  std::vector<PagedAttentionRow> bad = rows;
  bad[3].length = 26;  // needs 6 pages, its table has 5
  EXPECT_NE(run(bad).find("row 3 of length 26 needs 6 pages"), std::string::npos) << run(bad);
  bad = rows;
  bad[0].length = 0;
  EXPECT_NE(run(bad).find("row 0 has length 0"), std::string::npos) << run(bad);
  std::vector<int32_t> outside = {40};
  bad = rows;
  bad[0].block_table = outside;
  EXPECT_NE(run(bad).find("names page 40 of a pool of 40"), std::string::npos) << run(bad);
  bad.pop_back();
  EXPECT_NE(run(bad).find("6 rows for 7 queries"), std::string::npos) << run(bad);
  EXPECT_NE(run(rows, -1).find("window = -1"), std::string::npos);
  EXPECT_NE(
      error_of([&] { paged_attention(f.q, f.keys, f.values, 7, rows, 0, 1.0); }).find("page_tokens = 7"),
      std::string::npos);
  EXPECT_NE(error_of([&] {
              paged_attention(f.q.narrow(1, 0, 3), f.keys, f.values, f.page_tokens, rows, 0, 1.0);
            }).find("3 query heads over 2 KV heads"),
            std::string::npos);
  EXPECT_THROW(
      paged_attention(f.q, f.keys.to(at::kDouble), f.values.to(at::kDouble), f.page_tokens, rows, 0, 1.0),
      Unsupported);
  EXPECT_FALSE(paged_attention_supports(f.keys.transpose(0, 1)));
}

}  // namespace
}  // namespace lowrank::ops
