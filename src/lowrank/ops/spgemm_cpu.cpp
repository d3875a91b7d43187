// The reference SpGEMM kernel (spgemm.h): Gustavson's row-wise product with a dense accumulator.
//   for each row i:  acc[j] += A_ik · B_kj  for k ∈ A_i (ascending), j ∈ B_k;
//                    emit the touched columns in ascending order.
// Deliberately plain: a value array and a "touched in row i" stamp of `cols` entries per thread, a
// list of the touched columns, a sort. Rows run in parallel, each on one thread, so the result does
// not depend on the thread count. The other kernels are tested against this one.
#include <ATen/Parallel.h>

#include <algorithm>

#include "lowrank/ops/spgemm.h"

namespace lowrank::ops {

Csr spgemm_dense(const Csr& a, const Csr& b) {
  std::vector<std::vector<int32_t>> row_cols(a.rows);
  std::vector<std::vector<double>> row_vals(a.rows);
  at::parallel_for(0, a.rows, 64, [&](int64_t begin, int64_t end) {
    std::vector<double> acc(b.cols, 0.0);
    std::vector<int64_t> stamp(b.cols, -1);
    std::vector<int32_t> touched;
    for (int64_t i = begin; i < end; ++i) {
      touched.clear();
      for (int64_t p = a.indptr[i]; p < a.indptr[i + 1]; ++p) {
        const int32_t k = a.indices[p];
        const double a_ik = a.values[p];
        for (int64_t q = b.indptr[k]; q < b.indptr[k + 1]; ++q) {
          const int32_t j = b.indices[q];
          if (stamp[j] != i) {
            stamp[j] = i;
            acc[j] = 0.0;
            touched.push_back(j);
          }
          acc[j] += a_ik * b.values[q];
        }
      }
      std::sort(touched.begin(), touched.end());
      row_cols[i] = touched;
      row_vals[i].resize(touched.size());
      for (size_t t = 0; t < touched.size(); ++t) row_vals[i][t] = acc[touched[t]];
    }
  });
  return csr_from_row_lists(b.cols, row_cols, row_vals);
}

}  // namespace lowrank::ops
