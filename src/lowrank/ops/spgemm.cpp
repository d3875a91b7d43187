// CSR containers, ATen conversions, the symbolic phase and the dispatch of spgemm (spgemm.h).
#include "lowrank/ops/spgemm.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <limits>
#include <numeric>

#include "lowrank/core/error.h"

namespace lowrank::ops {

void Csr::check(std::string_view what, bool require_sorted) const {
  LR_CHECK(rows >= 0 && cols >= 0, InvalidArgument, what, ": negative shape ", rows, "x", cols);
  LR_CHECK(cols <= std::numeric_limits<int32_t>::max() && rows <= std::numeric_limits<int32_t>::max(),
           InvalidArgument, what, ": shape ", rows, "x", cols, " exceeds 2^31 - 1 (int32 column indices)");
  LR_CHECK(static_cast<int64_t>(indptr.size()) == rows + 1 && indptr.front() == 0, InvalidArgument, what,
           ": indptr has ", indptr.size(), " entries for ", rows, " rows (expected rows + 1, starting at 0)");
  LR_CHECK(static_cast<int64_t>(indices.size()) == nnz() && static_cast<int64_t>(values.size()) == nnz(),
           InvalidArgument, what, ": indptr ends at ", nnz(), " but there are ", indices.size(),
           " indices and ", values.size(), " values");
  for (int64_t i = 0; i < rows; ++i)
    LR_CHECK(indptr[i] <= indptr[i + 1], InvalidArgument, what, ": indptr decreases at row ", i);
  for (int64_t i = 0; i < rows; ++i) {
    for (int64_t p = indptr[i]; p < indptr[i + 1]; ++p) {
      LR_CHECK(indices[p] >= 0 && indices[p] < cols, InvalidArgument, what, ": row ", i, " has column ",
               indices[p], ", outside [0, ", cols, ")");
      if (p > indptr[i] && require_sorted)
        LR_CHECK(indices[p] > indices[p - 1], InvalidArgument, what, ": row ", i,
                 " has columns out of order or repeated (", indices[p - 1], " then ", indices[p], ")");
    }
  }
}

Csr csr_zeros(int64_t rows, int64_t cols) {
  Csr m;
  m.rows = rows;
  m.cols = cols;
  m.indptr.assign(rows + 1, 0);
  return m;
}

Csr csr_from_coo(int64_t rows, int64_t cols, std::span<const int64_t> row, std::span<const int64_t> col,
                 std::span<const double> value) {
  LR_CHECK(row.size() == col.size() && row.size() == value.size(), InvalidArgument,
           "COO arrays differ in length: ", row.size(), " rows, ", col.size(), " columns, ", value.size(),
           " values");
  Csr m = csr_zeros(rows, cols);
  m.check("COO matrix");  // the shape
  const auto n = static_cast<int64_t>(row.size());
  for (int64_t e = 0; e < n; ++e) {
    LR_CHECK(row[e] >= 0 && row[e] < rows && col[e] >= 0 && col[e] < cols, InvalidArgument, "COO entry ", e,
             " at (", row[e], ", ", col[e], ") lies outside the ", rows, "x", cols, " matrix");
    ++m.indptr[row[e] + 1];
  }
  std::partial_sum(m.indptr.begin(), m.indptr.end(), m.indptr.begin());
  // Bucket by row (stable), then sort each row by column and sum duplicates.
  std::vector<int64_t> cursor(m.indptr.begin(), m.indptr.end() - 1);
  std::vector<std::pair<int32_t, double>> entries(n);
  for (int64_t e = 0; e < n; ++e) entries[cursor[row[e]]++] = {static_cast<int32_t>(col[e]), value[e]};
  CsrArray<int64_t> out_ptr(rows + 1, 0);
  int64_t out = 0;
  for (int64_t i = 0; i < rows; ++i) {
    auto first = entries.begin() + m.indptr[i], last = entries.begin() + m.indptr[i + 1];
    std::stable_sort(first, last, [](const auto& x, const auto& y) { return x.first < y.first; });
    for (auto it = first; it != last; ++it) {
      if (out > out_ptr[i] && entries[out - 1].first == it->first)
        entries[out - 1].second += it->second;
      else
        entries[out++] = *it;
    }
    out_ptr[i + 1] = out;
  }
  m.indptr = std::move(out_ptr);
  m.indices.resize(out);
  m.values.resize(out);
  for (int64_t p = 0; p < out; ++p) {
    m.indices[p] = entries[p].first;
    m.values[p] = entries[p].second;
  }
  return m;
}

Csr csr_from_tensor(const at::Tensor& tensor) {
  LR_CHECK(tensor.dim() == 2, InvalidArgument, "SpGEMM operand must be 2-D, got shape ", tensor.sizes());
  const at::Tensor t = tensor.to(at::kCPU);
  if (t.layout() == at::kSparseCsr) {
    Csr m;
    m.rows = t.size(0);
    m.cols = t.size(1);
    const at::Tensor crow = t.crow_indices().to(at::kLong).contiguous();
    const at::Tensor col = t.col_indices().to(at::kInt).contiguous();
    const at::Tensor val = t.values().to(at::kDouble).contiguous();
    m.indptr.assign(crow.data_ptr<int64_t>(), crow.data_ptr<int64_t>() + crow.numel());
    m.indices.assign(col.data_ptr<int32_t>(), col.data_ptr<int32_t>() + col.numel());
    m.values.assign(val.data_ptr<double>(), val.data_ptr<double>() + val.numel());
    m.check("sparse CSR tensor");
    return m;
  }
  at::Tensor idx, val;
  if (t.layout() == at::kSparse) {
    const at::Tensor c = t.coalesce();
    idx = c.indices().to(at::kLong).contiguous();
    val = c.values().to(at::kDouble).contiguous();
  } else {
    LR_CHECK(t.layout() == at::kStrided, Unsupported, "SpGEMM operand has layout ", t.layout(),
             " (expected strided, sparse COO or sparse CSR)");
    idx = at::nonzero(t).t().contiguous();
    val = t.masked_select(t != 0).to(at::kDouble).contiguous();  // row-major, as nonzero()
  }
  const int64_t n = idx.size(1);
  return csr_from_coo(t.size(0), t.size(1), {idx[0].data_ptr<int64_t>(), static_cast<size_t>(n)},
                      {idx[1].data_ptr<int64_t>(), static_cast<size_t>(n)},
                      {val.data_ptr<double>(), static_cast<size_t>(n)});
}

at::Tensor csr_to_tensor(const Csr& m, at::ScalarType dtype) {
  const at::Tensor crow = at::tensor(m.indptr, at::kLong);
  const at::Tensor col = at::tensor(m.indices, at::kInt).to(at::kLong);
  const at::Tensor val = at::tensor(m.values, at::kDouble).to(dtype);
  return at::sparse_csr_tensor(crow, col, val, {m.rows, m.cols}, val.options().layout(at::kSparseCsr));
}

at::Tensor csr_to_dense(const Csr& m) {
  at::Tensor d = at::zeros({m.rows, m.cols}, at::kDouble);
  auto a = d.accessor<double, 2>();
  for (int64_t i = 0; i < m.rows; ++i)
    for (int64_t p = m.indptr[i]; p < m.indptr[i + 1]; ++p) a[i][m.indices[p]] += m.values[p];
  return d;
}

Csr csr_transpose(const Csr& m) {
  Csr t = csr_zeros(m.cols, m.rows);
  for (int64_t p = 0; p < m.nnz(); ++p) ++t.indptr[m.indices[p] + 1];
  std::partial_sum(t.indptr.begin(), t.indptr.end(), t.indptr.begin());
  t.indices.resize(m.nnz());
  t.values.resize(m.nnz());
  std::vector<int64_t> cursor(t.indptr.begin(), t.indptr.end() - 1);
  // Rows of A in order: each column of A (row of Aᵀ) receives its entries sorted by row.
  for (int64_t i = 0; i < m.rows; ++i)
    for (int64_t p = m.indptr[i]; p < m.indptr[i + 1]; ++p) {
      const int64_t q = cursor[m.indices[p]]++;
      t.indices[q] = static_cast<int32_t>(i);
      t.values[q] = m.values[p];
    }
  return t;
}

Csr csr_drop_zeros(const Csr& m) {
  Csr out = csr_zeros(m.rows, m.cols);
  for (int64_t i = 0; i < m.rows; ++i) {
    for (int64_t p = m.indptr[i]; p < m.indptr[i + 1]; ++p)
      if (m.values[p] != 0.0) {
        out.indices.push_back(m.indices[p]);
        out.values.push_back(m.values[p]);
      }
    out.indptr[i + 1] = static_cast<int64_t>(out.indices.size());
  }
  return out;
}

Csr csr_from_row_lists(int64_t cols, const std::vector<std::vector<int32_t>>& row_cols,
                       const std::vector<std::vector<double>>& row_vals) {
  const auto rows = static_cast<int64_t>(row_cols.size());
  Csr c = csr_zeros(rows, cols);
  for (int64_t i = 0; i < rows; ++i) c.indptr[i + 1] = c.indptr[i] + static_cast<int64_t>(row_cols[i].size());
  c.indices.resize(c.nnz());
  c.values.resize(c.nnz());
  at::parallel_for(0, rows, 256, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      std::copy(row_cols[i].begin(), row_cols[i].end(), c.indices.begin() + c.indptr[i]);
      std::copy(row_vals[i].begin(), row_vals[i].end(), c.values.begin() + c.indptr[i]);
    }
  });
  return c;
}

std::string_view spgemm_algorithm_name(SpgemmAlgorithm algorithm) {
  switch (algorithm) {
    case SpgemmAlgorithm::kHash:
      return "hash";
    case SpgemmAlgorithm::kHashAtomic:
      return "hash-atomic";
    case SpgemmAlgorithm::kDense:
      return "dense";
    case SpgemmAlgorithm::kEsc:
      return "esc";
    case SpgemmAlgorithm::kInner:
      return "inner";
  }
  return "?";
}

SpgemmAlgorithm parse_spgemm_algorithm(std::string_view name) {
  for (SpgemmAlgorithm a : kSpgemmAlgorithms)
    if (spgemm_algorithm_name(a) == name) return a;
  throw InvalidArgument(
      str("unknown SpGEMM algorithm \"", name, "\" (expected hash, hash-atomic, dense, esc or inner)"));
}

std::vector<int64_t> spgemm_row_flops(const Csr& a, const Csr& b) {
  LR_CHECK(a.cols == b.rows, InvalidArgument, "SpGEMM shapes do not chain: A is ", a.rows, "x", a.cols,
           ", B is ", b.rows, "x", b.cols, " (A's columns must equal B's rows)");
  std::vector<int64_t> flops(a.rows, 0);
  at::parallel_for(0, a.rows, 1024, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      int64_t f = 0;
      for (int64_t p = a.indptr[i]; p < a.indptr[i + 1]; ++p) {
        const int32_t k = a.indices[p];
        f += b.indptr[k + 1] - b.indptr[k];
      }
      flops[i] = f;
    }
  });
  return flops;
}

int64_t spgemm_memory_bytes(const Csr& a, const Csr& b, SpgemmAlgorithm algorithm,
                            std::span<const int64_t> row_flops) {
  constexpr int64_t entry = sizeof(int32_t) + sizeof(double);
  int64_t bound = 0, flops = 0;  // Σ min(flops_i, cols): nnz(C) can be no larger
  for (int64_t f : row_flops) {
    bound += std::min<int64_t>(f, b.cols);
    flops += f;
  }
  const int64_t indptr = (a.rows + 1) * static_cast<int64_t>(sizeof(int64_t));
  const int64_t threads = at::get_num_threads();
  switch (algorithm) {
    case SpgemmAlgorithm::kHash:
    case SpgemmAlgorithm::kHashAtomic:
      // Row slots, then the compacted output (at most as large), and per-thread scratch.
      return 2 * indptr + 2 * bound * entry + threads * (b.cols * 12 + (int64_t{1} << 20));
    case SpgemmAlgorithm::kDense:
    case SpgemmAlgorithm::kInner:
      // Per-row results, then the concatenated output.
      return 2 * indptr + 2 * bound * entry + threads * b.cols * 12 +
             (algorithm == SpgemmAlgorithm::kInner ? (b.nnz() * entry + b.cols * 8) : 0);
    case SpgemmAlgorithm::kEsc:
      // Expanded triples (row, column, value) twice (before and after the row sort), then C.
      return 2 * flops * 16 + indptr + bound * entry + a.nnz() * entry;
  }
  return 0;
}

Csr spgemm(const Csr& a, const Csr& b, const SpgemmOptions& options, SpgemmStats* stats,
           std::span<const int64_t> given_row_flops) {
  a.check("A");
  if (&b != &a) b.check("B");
  std::vector<int64_t> computed;
  if (given_row_flops.empty()) computed = spgemm_row_flops(a, b);
  LR_CHECK(given_row_flops.empty() || static_cast<int64_t>(given_row_flops.size()) == a.rows, InvalidArgument,
           "spgemm: ", given_row_flops.size(), " row flop counts for ", a.rows, " rows");
  const std::span<const int64_t> row_flops =
      given_row_flops.empty() ? std::span<const int64_t>(computed) : given_row_flops;
  if (stats) {
    *stats = SpgemmStats{};
    stats->flops = std::accumulate(row_flops.begin(), row_flops.end(), int64_t{0});
    stats->peak_bytes = spgemm_memory_bytes(a, b, options.algorithm, row_flops);
  }
  Csr c;
  switch (options.algorithm) {
    case SpgemmAlgorithm::kHash:
    case SpgemmAlgorithm::kHashAtomic:
      c = spgemm_hash(a, b, row_flops, options, options.algorithm == SpgemmAlgorithm::kHashAtomic, stats);
      break;
    case SpgemmAlgorithm::kDense:
      c = spgemm_dense(a, b);
      break;
    case SpgemmAlgorithm::kEsc:
      c = spgemm_esc(a, b);
      break;
    case SpgemmAlgorithm::kInner:
      c = spgemm_inner(a, b);
      break;
  }
  if (options.drop_zeros) c = csr_drop_zeros(c);
  if (stats) stats->nnz = c.nnz();
  return c;
}

}  // namespace lowrank::ops
