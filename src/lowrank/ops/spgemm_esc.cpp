// Outer-product SpGEMM by expand–sort–compress (ESC), the dataflow SMASH is compared against
// (Shivdikar 2021, its outer-product baseline; the ESC formulation: Bell, Dalton & Olson 2012, "Exposing
// fine-grained parallelism in algebraic multigrid methods"):
//   C = Σ_k A_{:,k} ⊗ B_{k,:}
//   expand    every product A_ik·B_kj becomes a triple (i, j, v), k-major (A read by columns);
//   sort      by row: a stable counting sort (per-thread histograms over k-ranges), so each row's
//             triples keep ascending k; then by column within each row (stable);
//   compress  runs of equal (i, j) are summed, starting from 0, in that k order.
// Every partial product is materialised (16 bytes each): the memory the row-wise kernels avoid.
#include <algorithm>
#include <numeric>

#include <ATen/Parallel.h>

#include "lowrank/ops/spgemm.h"

namespace lowrank::ops {

namespace {
struct Triple {
  int32_t row;
  int32_t col;
  double value;
};
}  // namespace

Csr spgemm_esc(const Csr& a, const Csr& b) {
  const Csr at = csr_transpose(a);  // A in CSC: row k of Aᵀ is column k of A
  const int64_t inner = a.cols;
  // Expand: products of column k start at offset[k].
  std::vector<int64_t> offset(inner + 1, 0);
  for (int64_t k = 0; k < inner; ++k)
    offset[k + 1] = offset[k] + (at.indptr[k + 1] - at.indptr[k]) * (b.indptr[k + 1] - b.indptr[k]);
  const int64_t flops = offset[inner];
  std::vector<Triple> expanded(flops);
  at::parallel_for(0, inner, 256, [&](int64_t begin, int64_t end) {
    for (int64_t k = begin; k < end; ++k) {
      int64_t out = offset[k];
      for (int64_t p = at.indptr[k]; p < at.indptr[k + 1]; ++p)
        for (int64_t q = b.indptr[k]; q < b.indptr[k + 1]; ++q)
          expanded[out++] = {at.indices[p], b.indices[q], at.values[p] * b.values[q]};
    }
  });
  // Sort by row: stable counting sort. The k-range is cut into `parts` pieces; piece t counts its
  // rows, then writes them after the same rows of pieces 0 … t−1.
  const int64_t parts = std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), inner));
  std::vector<int64_t> cut(parts + 1);
  for (int64_t t = 0; t <= parts; ++t) cut[t] = offset[inner * t / parts];
  std::vector<std::vector<int64_t>> count(parts, std::vector<int64_t>(a.rows + 1, 0));
  at::parallel_for(0, parts, 1, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t)
      for (int64_t e = cut[t]; e < cut[t + 1]; ++e) ++count[t][expanded[e].row];
  });
  std::vector<int64_t> row_begin(a.rows + 1, 0);
  {
    int64_t running = 0;
    for (int64_t i = 0; i < a.rows; ++i) {
      row_begin[i] = running;
      for (int64_t t = 0; t < parts; ++t) {
        const int64_t n = count[t][i];
        count[t][i] = running;  // piece t's cursor for row i
        running += n;
      }
    }
    row_begin[a.rows] = running;
  }
  std::vector<Triple> by_row(flops);
  at::parallel_for(0, parts, 1, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t)
      for (int64_t e = cut[t]; e < cut[t + 1]; ++e) by_row[count[t][expanded[e].row]++] = expanded[e];
  });
  expanded = {};
  // Sort each row by column, then compress in place.
  std::vector<int64_t> row_nnz(a.rows, 0);
  at::parallel_for(0, a.rows, 64, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      Triple* first = by_row.data() + row_begin[i];
      Triple* last = by_row.data() + row_begin[i + 1];
      std::stable_sort(first, last, [](const Triple& x, const Triple& y) { return x.col < y.col; });
      Triple* out = first;
      for (Triple* e = first; e != last;) {
        const int32_t j = e->col;
        double sum = 0.0;
        for (; e != last && e->col == j; ++e) sum += e->value;
        *out++ = {static_cast<int32_t>(i), j, sum};
      }
      row_nnz[i] = out - first;
    }
  });
  Csr c = csr_zeros(a.rows, b.cols);
  for (int64_t i = 0; i < a.rows; ++i) c.indptr[i + 1] = c.indptr[i] + row_nnz[i];
  c.indices.resize(c.nnz());
  c.values.resize(c.nnz());
  at::parallel_for(0, a.rows, 256, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i)
      for (int64_t t = 0; t < row_nnz[i]; ++t) {
        c.indices[c.indptr[i] + t] = by_row[row_begin[i] + t].col;
        c.values[c.indptr[i] + t] = by_row[row_begin[i] + t].value;
      }
  });
  return c;
}

}  // namespace lowrank::ops
