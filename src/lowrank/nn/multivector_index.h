// An exact multi-vector index: every document's vectors stored end to end, searched by MaxSim
// (multivector.h) against all of them; no candidate generation, no compression beyond an optional
// fp16 store. What the retrieval repro measures its metrics on, so that they depend on the vectors
// alone.
//
// Files (a directory, written atomically): index.safetensors with `vectors` [N, dim] (float32, or
// float16 with fp16) and `doc_offsets` [D + 1] int64 (document d owns rows doc_offsets[d] ..
// doc_offsets[d + 1] − 1), and index_config.json {"format": "lowrank-multivector-index",
// "version": 1, "dim", "documents", "vectors", "dtype", plus the caller's "info"}.
#pragma once

#include <cstdint>
#include <filesystem>
#include <utility>
#include <vector>

#include <ATen/ATen.h>

#include "lowrank/core/json.h"

namespace lowrank::nn {

struct SearchHit {
  int64_t document = 0;
  double score = 0;
};

class MultiVectorIndex {
 public:
  explicit MultiVectorIndex(int64_t dim);

  // Appends one document's vectors [n, dim] (n >= 1); returns its id. InvalidArgument otherwise.
  int64_t add(const at::Tensor& vectors);

  int64_t dim() const { return dim_; }
  int64_t documents() const { return static_cast<int64_t>(offsets_.size()) - 1; }
  int64_t vectors() const { return offsets_.back(); }
  // Document d's vectors [n_d, dim] (float32). InvalidArgument for d out of range.
  at::Tensor document(int64_t d) const;

  // MaxSim of `query` [Tq, dim] against every document -> [D] (float32).
  at::Tensor scores(const at::Tensor& query) const;
  // The k best documents for each query (best first; ties by lower id). InvalidArgument for k < 1 or
  // a query of another dim.
  std::vector<std::vector<SearchHit>> search(const std::vector<at::Tensor>& queries, int64_t k) const;

  // Writes the directory atomically; `info` is stored under "info" in index_config.json.
  void save(const std::filesystem::path& dir, bool fp16 = false, const Json& info = Json::object()) const;
  // Throws NotFound for a missing file, Corruption naming the file for an inconsistent one.
  static MultiVectorIndex load(const std::filesystem::path& dir);
  // index_config.json of a saved index.
  static Json read_config(const std::filesystem::path& dir);

 private:
  void pack() const;

  int64_t dim_;
  std::vector<int64_t> offsets_{0};
  mutable std::vector<at::Tensor> pending_;  // added since the last pack()
  mutable at::Tensor packed_;                // [N, dim] float32
};

}  // namespace lowrank::nn
