// Click-through-rate data: rows of categorical ("sparse") fields, numeric ("dense") fields and a
// 0/1 click label, in the shape of Criteo's display-ads set (13 integer features I1..I13, 26
// categorical C1..C26) that the CTR models of nn/ctr.h read.
//
// A data directory holds
//   ctr_data.json        {"format": "lowrank-ctr-data", "version": 1,
//                         "sparse_fields": [{"name": "C1", "vocab_size": V}, ...],
//                         "dense_fields": ["I1", ...], "splits": {"train": rows, "test": rows},
//                         "generator": {...}}   (generator: the synthetic options, when generated)
//   train.<ext>, test.<ext>  one split each, as
//     .safetensors       `sparse` [N, F] int32, `dense` [N, D] float32, `label` [N] uint8
//     .tsv / .csv        a header naming `label`, every dense and every sparse field (any order,
//                        other columns ignored), then one row per line; categorical values are
//                        integer ids
// Ids are in [0, V) for a field of vocabulary V. An id outside it, or a categorical value that is not
// an integer, is unknown: it goes to the field's out-of-vocabulary bucket (id V; nn/ctr.h gives every
// table V + 1 rows) and is counted (CtrData::oov). A row missing a field, an unparseable number or
// label, or a label other than 0/1 is refused, naming the file, line and column.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include <ATen/ATen.h>

#include "lowrank/core/json.h"

namespace lowrank::data {

struct CtrField {
  std::string name;
  int64_t vocab_size = 0;
};

struct CtrSchema {
  std::vector<CtrField> sparse;    // categorical fields
  std::vector<std::string> dense;  // numeric fields
  int64_t sparse_count() const { return static_cast<int64_t>(sparse.size()); }
  int64_t dense_count() const { return static_cast<int64_t>(dense.size()); }
  OrderedJson to_json() const;
  // Throws InvalidArgument naming `what` and the bad key.
  static CtrSchema from_json(const Json& j, const std::string& what);
  // Throws InvalidArgument for no fields, a vocabulary < 1, or repeated names.
  void check(const std::string& what) const;
};

struct CtrData {
  at::Tensor sparse;  // [N, F] int64, ids in [0, V_f] (V_f: the OOV bucket)
  at::Tensor dense;   // [N, D] float32
  at::Tensor labels;  // [N] float32, 0 or 1
  int64_t oov = 0;    // categorical values sent to the OOV bucket when read
  int64_t rows() const { return labels.defined() ? labels.size(0) : 0; }
  // Rows [begin, end) (views).
  CtrData slice(int64_t begin, int64_t end) const;
  // The rows listed in `index` (int64 [B]).
  CtrData gather(const at::Tensor& index) const;
  // Fraction of positive labels.
  double ctr() const;
};

// Checks shapes against the schema, maps ids outside [0, V_f) to V_f and counts them. `what` names
// the source in messages.
CtrData checked_ctr_data(const CtrSchema& schema, at::Tensor sparse, at::Tensor dense, at::Tensor labels,
                         const std::string& what);

// A split of a data directory: `dir`/`split`.safetensors, .tsv or .csv (the first that exists).
// Throws NotFound when none does, InvalidArgument / Corruption naming the file, line and field.
CtrData load_ctr_split(const std::filesystem::path& dir, const CtrSchema& schema, const std::string& split);
// The schema of a data directory (ctr_data.json). Throws NotFound / InvalidArgument.
CtrSchema load_ctr_schema(const std::filesystem::path& dir);
// A .tsv / .csv split (by extension: tab or comma separated).
CtrData read_ctr_table(const std::filesystem::path& path, const CtrSchema& schema);

// Writes a data directory atomically file by file: ctr_data.json (with `generator` when not null)
// and train / test .safetensors.
void save_ctr_dataset(const std::filesystem::path& dir, const CtrSchema& schema, const CtrData& train,
                      const CtrData& test, const Json& generator = nullptr);

}  // namespace lowrank::data
