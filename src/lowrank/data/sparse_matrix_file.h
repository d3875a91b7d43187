// Sparse matrix files by extension: .mtx (Matrix Market, matrix_market.h) or .safetensors, a CSR
// matrix as four tensors, the arrays of scipy.sparse.csr_matrix:
//   indptr  int64 [rows + 1]   row offsets
//   indices int32 [nnz]        column indices (int64 is read too)
//   data    float64 [nnz]      values (any float dtype is read)
//   shape   int64 [2]          rows, cols
#pragma once

#include <filesystem>

#include "lowrank/ops/spgemm.h"

namespace lowrank::data {

// InvalidArgument names the file and the field at fault (or the extension, when it is neither).
ops::Csr read_sparse_matrix(const std::filesystem::path& path);
// Atomic (temp file, then rename).
void write_sparse_matrix(const std::filesystem::path& path, const ops::Csr& matrix);

}  // namespace lowrank::data
