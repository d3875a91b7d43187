// Inner-product SpGEMM, the other dataflow SMASH is compared against (Shivdikar 2021, its inner-product
// baseline):
//   C_ij = A_{i,:} · B_{:,j} = Σ_{k ∈ A_i ∩ B_{:,j}} A_ik · B_kj
// with A in CSR and B in CSC (csr_transpose(B)), each dot product a merge of two sorted index
// lists. It visits every (row of A, non-empty column of B) pair, whether or not the two meet:
// rows × columns merges, which is why it loses on sparse products however cheap each merge is.
// (i, j) is stored when the lists intersect; the sum runs over k ascending, from 0.
#include <ATen/Parallel.h>

#include "lowrank/ops/spgemm.h"

namespace lowrank::ops {

Csr spgemm_inner(const Csr& a, const Csr& b) {
  const Csr bt = csr_transpose(b);  // row j of Bᵀ is column j of B, sorted by k
  std::vector<int32_t> columns;     // the non-empty columns of B
  for (int64_t j = 0; j < bt.rows; ++j)
    if (bt.indptr[j + 1] > bt.indptr[j]) columns.push_back(static_cast<int32_t>(j));
  std::vector<std::vector<int32_t>> row_cols(a.rows);
  std::vector<std::vector<double>> row_vals(a.rows);
  at::parallel_for(0, a.rows, 16, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const int64_t p0 = a.indptr[i], p1 = a.indptr[i + 1];
      if (p0 == p1) continue;
      for (int32_t j : columns) {
        int64_t p = p0, q = bt.indptr[j];
        const int64_t q1 = bt.indptr[j + 1];
        bool met = false;
        double sum = 0.0;
        while (p < p1 && q < q1) {
          const int32_t ka = a.indices[p], kb = bt.indices[q];
          if (ka < kb) {
            ++p;
          } else if (kb < ka) {
            ++q;
          } else {
            sum += a.values[p] * bt.values[q];
            met = true;
            ++p;
            ++q;
          }
        }
        if (met) {
          row_cols[i].push_back(j);
          row_vals[i].push_back(sum);
        }
      }
    }
  });
  return csr_from_row_lists(b.cols, row_cols, row_vals);
}

}  // namespace lowrank::ops
