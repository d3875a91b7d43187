// Paged decode attention on the CPU; see paged_attention.h for the equations and references.
#include "lowrank/ops/paged_attention.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <limits>
#include <numeric>
#include <vector>

#include "lowrank/core/error.h"
#include "lowrank/core/parallel_region.h"
#include "lowrank/ops/gemv.h"

namespace lowrank::ops {

bool paged_attention_supports(const at::Tensor& pages) {
  return pages.defined() && pages.device().is_cpu() && pages.is_contiguous() &&
         (pages.scalar_type() == at::kFloat || pages.scalar_type() == at::kBFloat16);
}

namespace {

// One (row, KV head) item: the G query heads of KV head g over the row's pages.
struct Pool {
  const char* keys;
  const char* values;
  ElementType type;
  int64_t elem;          // bytes per element
  int64_t key_stride;    // bytes from one slot of the key pool to the next (n_kv · D elements)
  int64_t value_stride;  // the same in the value pool (n_kv · D_v elements)
  int64_t page_tokens;   // P
};

// q: the group's G query rows of D; out: G rows of D_v.
void attend_group(const Pool& pool, const PagedAttentionRow& row, int64_t g, int64_t groups, int64_t D,
                  int64_t Dv, int64_t window, float scale, const float* q, float* out,
                  std::vector<float>& scores) {
  const int64_t P = pool.page_tokens;
  const int64_t L = row.length;
  const int64_t first = window > 0 ? std::max<int64_t>(0, L - window) : 0;
  const char* k_head = pool.keys + g * D * pool.elem;
  const char* v_head = pool.values + g * Dv * pool.elem;
  // Running max m_j and sum ℓ_j of each query head j of the group; out holds the unnormalised a_j.
  float m[64], l[64];  // G ≤ 64 (checked)
  std::fill_n(m, groups, -std::numeric_limits<float>::infinity());
  std::fill_n(l, groups, 0.0f);
  std::fill_n(out, groups * Dv, 0.0f);
  for (int64_t page = first / P; page * P < L; ++page) {
    const int64_t lo = std::max(first, page * P);
    const int64_t hi = std::min(L, (page + 1) * P);
    const int64_t base =
        int64_t{row.block_table[static_cast<size_t>(page)]} * P - page * P;  // slot of t: base + t
    for (int64_t j = 0; j < groups; ++j) {
      const float* qj = q + j * D;
      float* s = scores.data();
      float page_max = -std::numeric_limits<float>::infinity();
      for (int64_t t = lo; t < hi; ++t) {
        s[t - lo] = dot(qj, pool.type, k_head + (base + t) * pool.key_stride, D) * scale;
        page_max = std::max(page_max, s[t - lo]);
      }
      float* aj = out + j * Dv;
      if (page_max > m[j]) {
        // c = exp(m − m'): the earlier terms were weighed against the old max.
        const float c = std::exp(m[j] - page_max);  // 0 on the first page (m = −∞)
        l[j] *= c;
        for (int64_t d = 0; d < Dv; ++d) aj[d] *= c;
        m[j] = page_max;
      }
      for (int64_t t = lo; t < hi; ++t) {
        const float p = std::exp(s[t - lo] - m[j]);
        l[j] += p;
        axpy(p, pool.type, v_head + (base + t) * pool.value_stride, aj, Dv);
      }
    }
  }
  for (int64_t j = 0; j < groups; ++j) {
    const float inv = 1.0f / l[j];  // ℓ ≥ 1: the max term contributes exp(0)
    for (int64_t d = 0; d < Dv; ++d) out[j * Dv + d] *= inv;
  }
}

}  // namespace

at::Tensor paged_attention(const at::Tensor& q, const at::Tensor& key_pages, const at::Tensor& value_pages,
                           int64_t page_tokens, std::span<const PagedAttentionRow> rows, int64_t window,
                           double scale) {
  LR_CHECK(q.dim() == 3 && at::isFloatingType(q.scalar_type()), InvalidArgument,
           "paged_attention: q must be a floating [rows, heads, head_dim] tensor, got ",
           c10::toString(q.scalar_type()), " ", q.sizes());
  LR_CHECK(key_pages.dim() == 3 && value_pages.dim() == 3 && value_pages.size(0) == key_pages.size(0) &&
               value_pages.size(1) == key_pages.size(1),
           InvalidArgument, "paged_attention: key_pages ", key_pages.sizes(), " and value_pages ",
           value_pages.sizes(), " must be [slots, kv_heads, key width] and [slots, kv_heads, value width]");
  LR_CHECK(paged_attention_supports(key_pages) && paged_attention_supports(value_pages) &&
               key_pages.scalar_type() == value_pages.scalar_type(),
           Unsupported, "paged_attention: the pool must be contiguous float32 or bfloat16 on the CPU, got ",
           c10::toString(key_pages.scalar_type()), " on ", key_pages.device(), " (",
           key_pages.is_contiguous() ? "contiguous" : "strided", ")");
  const int64_t B = q.size(0);
  const int64_t n_heads = q.size(1);
  const int64_t D = q.size(2);
  const int64_t n_kv = key_pages.size(1);
  const int64_t Dv = value_pages.size(2);
  LR_CHECK(key_pages.size(2) == D, InvalidArgument, "paged_attention: head_dim ", D, " of q, ",
           key_pages.size(2), " of the pool");
  LR_CHECK(n_kv > 0 && n_heads % n_kv == 0 && n_heads / n_kv <= 64, InvalidArgument,
           "paged_attention: ", n_heads, " query heads over ", n_kv,
           " KV heads (a multiple, at most 64 query heads per KV head)");
  LR_CHECK(page_tokens >= 1 && key_pages.size(0) % page_tokens == 0, InvalidArgument,
           "paged_attention: page_tokens = ", page_tokens, " does not divide the pool's ", key_pages.size(0),
           " slots");
  LR_CHECK(window >= 0, InvalidArgument, "paged_attention: window = ", window, " is negative");
  LR_CHECK(static_cast<int64_t>(rows.size()) == B, InvalidArgument, "paged_attention: ", rows.size(),
           " rows for ", B, " queries");
  const int64_t num_pages = key_pages.size(0) / page_tokens;
  for (size_t b = 0; b < rows.size(); ++b) {
    const PagedAttentionRow& r = rows[b];
    LR_CHECK(r.length >= 1, InvalidArgument, "paged_attention: row ", b, " has length ", r.length,
             " (at least 1: the query's own key)");
    const int64_t pages = (r.length + page_tokens - 1) / page_tokens;
    LR_CHECK(static_cast<int64_t>(r.block_table.size()) >= pages, InvalidArgument, "paged_attention: row ", b,
             " of length ", r.length, " needs ", pages, " pages; its block table has ", r.block_table.size());
    for (int64_t p = 0; p < pages; ++p) {
      const int32_t page = r.block_table[static_cast<size_t>(p)];
      LR_CHECK(page >= 0 && page < num_pages, InvalidArgument, "paged_attention: row ", b, " names page ",
               page, " of a pool of ", num_pages);
    }
  }

  const at::Tensor qf = q.to(at::kFloat).contiguous();
  at::Tensor out = at::empty({B, n_heads, Dv}, qf.options());
  if (B == 0) return out.to(q.scalar_type());
  const bool bf16 = key_pages.scalar_type() == at::kBFloat16;
  const Pool pool{.keys = static_cast<const char*>(key_pages.data_ptr()),
                  .values = static_cast<const char*>(value_pages.data_ptr()),
                  .type = bf16 ? ElementType::kBF16 : ElementType::kF32,
                  .elem = static_cast<int64_t>(key_pages.element_size()),
                  .key_stride = n_kv * D * static_cast<int64_t>(key_pages.element_size()),
                  .value_stride = n_kv * Dv * static_cast<int64_t>(key_pages.element_size()),
                  .page_tokens = page_tokens};
  const int64_t groups = n_heads / n_kv;
  const auto scale_f = static_cast<float>(scale);
  const float* q_data = qf.data_ptr<float>();
  float* out_data = out.data_ptr<float>();

  // Rows longest first; each thread takes the next (row, KV head) item when it is free, so a long
  // row started early overlaps many short ones instead of ending a thread's fixed share last.
  std::vector<int64_t> order(static_cast<size_t>(B));
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) {
    return rows[static_cast<size_t>(a)].length > rows[static_cast<size_t>(b)].length;
  });
  const int64_t items = B * n_kv;
  std::atomic<int64_t> next{0};
  parallel_region([&](int /*member*/, int /*members*/, SpinBarrier& /*unused: items are independent*/) {
    std::vector<float> scores(static_cast<size_t>(page_tokens));
    for (int64_t i = next.fetch_add(1, std::memory_order_relaxed); i < items;
         i = next.fetch_add(1, std::memory_order_relaxed)) {
      const int64_t b = order[static_cast<size_t>(i / n_kv)];
      const int64_t g = i % n_kv;
      const int64_t head = b * n_heads + g * groups;  // the group's first query head
      attend_group(pool, rows[static_cast<size_t>(b)], g, groups, D, Dv, window, scale_f, q_data + head * D,
                   out_data + head * Dv, scores);
    }
  });
  return out.to(q.scalar_type());
}

}  // namespace lowrank::ops
