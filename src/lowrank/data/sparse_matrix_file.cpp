// Sparse matrix files (sparse_matrix_file.h).
#include "lowrank/data/sparse_matrix_file.h"

#include "lowrank/core/error.h"
#include "lowrank/core/safetensors.h"
#include "lowrank/data/matrix_market.h"

namespace lowrank::data {

namespace {

enum class SparseFormat { kMatrixMarket, kSafetensors };

SparseFormat format_of(const std::filesystem::path& path) {
  const std::string ext = path.extension().string();
  if (ext == ".mtx") return SparseFormat::kMatrixMarket;
  if (ext == ".safetensors") return SparseFormat::kSafetensors;
  throw InvalidArgument(
      str(path.string(), ": unknown sparse matrix format \"", ext, "\" (expected .mtx or .safetensors)"));
}

}  // namespace

ops::Csr read_sparse_matrix(const std::filesystem::path& path) {
  if (format_of(path) == SparseFormat::kMatrixMarket) return read_matrix_market(path);
  const SafetensorsFile file = SafetensorsFile::open(path);
  for (const char* name : {"indptr", "indices", "data", "shape"})
    LR_CHECK(file.contains(name), InvalidArgument, path.string(), ": no tensor \"", name,
             "\" (a CSR matrix holds indptr, indices, data and shape)");
  const at::Tensor shape = file.load("shape", at::kLong);
  LR_CHECK(shape.numel() == 2, InvalidArgument, path.string(), ": \"shape\" has ", shape.numel(),
           " entries (expected 2: rows, cols)");
  ops::Csr m;
  m.rows = shape[0].item<int64_t>();
  m.cols = shape[1].item<int64_t>();
  const at::Tensor indptr = file.load("indptr", at::kLong).flatten().contiguous();
  const at::Tensor indices = file.load("indices", at::kLong).flatten();
  LR_CHECK(
      indices.numel() == 0 || (indices.min().item<int64_t>() >= 0 && indices.max().item<int64_t>() < m.cols),
      InvalidArgument, path.string(), ": \"indices\" holds a column outside [0, ", m.cols, ")");
  const at::Tensor indices32 = indices.to(at::kInt).contiguous();
  const at::Tensor data = file.load("data", at::kDouble).flatten().contiguous();
  m.indptr.assign(indptr.data_ptr<int64_t>(), indptr.data_ptr<int64_t>() + indptr.numel());
  m.indices.assign(indices32.data_ptr<int32_t>(), indices32.data_ptr<int32_t>() + indices32.numel());
  m.values.assign(data.data_ptr<double>(), data.data_ptr<double>() + data.numel());
  m.check(path.string());
  return m;
}

void write_sparse_matrix(const std::filesystem::path& path, const ops::Csr& m) {
  if (format_of(path) == SparseFormat::kMatrixMarket) {
    write_matrix_market(path, m);
    return;
  }
  m.check(path.string(), /*require_sorted=*/false);
  const std::vector<NamedTensor> tensors = {
      {"indptr", at::tensor(m.indptr, at::kLong)},
      {"indices", at::tensor(m.indices, at::kInt)},
      {"data", at::tensor(m.values, at::kDouble)},
      {"shape", at::tensor(std::vector<int64_t>{m.rows, m.cols}, at::kLong)},
  };
  save_safetensors(path, tensors, {{"format", "csr"}});
}

}  // namespace lowrank::data
