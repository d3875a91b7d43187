// The exact multi-vector index; see multivector_index.h.
#include "lowrank/nn/multivector_index.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <limits>

#include "lowrank/core/error.h"
#include "lowrank/core/file.h"
#include "lowrank/core/safetensors.h"

namespace lowrank::nn {

namespace fs = std::filesystem;

namespace {

constexpr const char* kFormat = "lowrank-multivector-index";
constexpr const char* kTensors = "index.safetensors";
constexpr const char* kConfig = "index_config.json";

}  // namespace

MultiVectorIndex::MultiVectorIndex(int64_t dim) : dim_(dim) {
  LR_CHECK(dim >= 1, InvalidArgument, "multi-vector index: dim ", dim, " must be >= 1");
}

int64_t MultiVectorIndex::add(const at::Tensor& vectors) {
  LR_CHECK(vectors.dim() == 2 && vectors.size(1) == dim_ && vectors.size(0) >= 1, InvalidArgument,
           "multi-vector index: a document's vectors must be [n >= 1, ", dim_, "], got ", vectors.sizes());
  pending_.push_back(vectors.detach().to(at::kCPU, at::kFloat).contiguous());
  offsets_.push_back(offsets_.back() + vectors.size(0));
  return documents() - 1;
}

void MultiVectorIndex::pack() const {
  if (pending_.empty() && packed_.defined()) return;
  std::vector<at::Tensor> parts;
  if (packed_.defined()) parts.push_back(packed_);
  for (auto& p : pending_) parts.push_back(p);
  packed_ = parts.empty() ? at::empty({0, dim_}, at::kFloat) : at::cat(parts, 0);
  pending_.clear();
}

at::Tensor MultiVectorIndex::document(int64_t d) const {
  LR_CHECK(d >= 0 && d < documents(), InvalidArgument, "multi-vector index: document ", d, " out of range (",
           documents(), " documents)");
  pack();
  const auto i = static_cast<std::size_t>(d);
  return packed_.narrow(0, offsets_[i], offsets_[i + 1] - offsets_[i]);
}

at::Tensor MultiVectorIndex::scores(const at::Tensor& query) const {
  LR_CHECK(query.dim() == 2 && query.size(1) == dim_ && query.size(0) >= 1, InvalidArgument,
           "multi-vector index: a query must be [n >= 1, ", dim_, "], got ", query.sizes());
  pack();
  const int64_t D = documents();
  at::Tensor out = at::zeros({D}, at::kFloat);
  if (D == 0) return out;
  const at::Tensor sim =
      at::matmul(query.detach().to(at::kCPU, at::kFloat).contiguous(), packed_.t()).contiguous();
  const int64_t Tq = sim.size(0), N = sim.size(1);
  const float* s = sim.data_ptr<float>();
  float* o = out.data_ptr<float>();
  const int64_t* off = offsets_.data();
  at::parallel_for(0, D, 256, [&](int64_t begin, int64_t end) {
    for (int64_t d = begin; d < end; ++d) {
      double total = 0;
      for (int64_t i = 0; i < Tq; ++i) {
        const float* row = s + i * N;
        float best = -std::numeric_limits<float>::infinity();
        for (int64_t j = off[d]; j < off[d + 1]; ++j) best = std::max(best, row[j]);
        total += best;
      }
      o[d] = static_cast<float>(total);
    }
  });
  return out;
}

std::vector<std::vector<SearchHit>> MultiVectorIndex::search(const std::vector<at::Tensor>& queries,
                                                             int64_t k) const {
  LR_CHECK(k >= 1, InvalidArgument, "multi-vector index: k ", k, " must be >= 1");
  std::vector<std::vector<SearchHit>> out;
  out.reserve(queries.size());
  const int64_t D = documents();
  for (const at::Tensor& q : queries) {
    const at::Tensor s = scores(q);
    const float* p = s.data_ptr<float>();
    std::vector<int64_t> ids(static_cast<std::size_t>(D));
    for (int64_t d = 0; d < D; ++d) ids[static_cast<std::size_t>(d)] = d;
    const int64_t n = std::min(k, D);
    std::partial_sort(ids.begin(), ids.begin() + n, ids.end(),
                      [&](int64_t a, int64_t b) { return p[a] > p[b] || (p[a] == p[b] && a < b); });
    std::vector<SearchHit> hits;
    for (int64_t i = 0; i < n; ++i)
      hits.push_back({ids[static_cast<std::size_t>(i)], p[ids[static_cast<std::size_t>(i)]]});
    out.push_back(std::move(hits));
  }
  return out;
}

void MultiVectorIndex::save(const fs::path& dir, bool fp16, const Json& info) const {
  pack();
  StagedDirectory staged(dir);
  const at::Tensor offsets = at::tensor(offsets_, at::kLong);
  const std::vector<NamedTensor> tensors = {{"vectors", fp16 ? packed_.to(at::kHalf) : packed_},
                                            {"doc_offsets", offsets}};
  save_safetensors(staged.path() / kTensors, tensors, {{"format", kFormat}});
  write_json_file(staged.path() / kConfig, OrderedJson{{"format", kFormat},
                                                       {"version", 1},
                                                       {"dim", dim_},
                                                       {"documents", documents()},
                                                       {"vectors", vectors()},
                                                       {"dtype", fp16 ? "float16" : "float32"},
                                                       {"info", info}});
  staged.commit();
}

Json MultiVectorIndex::read_config(const fs::path& dir) {
  const fs::path path = dir / kConfig;
  LR_CHECK(fs::exists(path), NotFound, path.string(), " is missing: not a multi-vector index");
  const Json c = read_json_file(path);
  LR_CHECK(c.is_object() && c.value("format", "") == kFormat, Corruption, path.string(), ": format is not \"",
           kFormat, "\"");
  return c;
}

MultiVectorIndex MultiVectorIndex::load(const fs::path& dir) {
  const Json c = read_config(dir);
  const fs::path path = dir / kTensors;
  LR_CHECK(fs::exists(path), NotFound, path.string(), " is missing");
  const Checkpoint file = Checkpoint::open(path);
  LR_CHECK(file.contains("vectors") && file.contains("doc_offsets"), Corruption, path.string(),
           ": needs the tensors \"vectors\" and \"doc_offsets\"");
  const at::Tensor v = file.load("vectors", at::kFloat);
  const at::Tensor off = file.load("doc_offsets").to(at::kLong).contiguous();
  const int64_t dim = c.value("dim", int64_t{0});
  LR_CHECK(v.dim() == 2 && v.size(1) == dim && dim >= 1, Corruption, path.string(), ": vectors ", v.sizes(),
           " do not match dim ", dim, " of ", (dir / kConfig).string());
  LR_CHECK(off.dim() == 1 && off.size(0) >= 1, Corruption, path.string(),
           ": doc_offsets must be [documents + 1]");
  MultiVectorIndex index(dim);
  const int64_t* o = off.data_ptr<int64_t>();
  LR_CHECK(o[0] == 0 && o[off.size(0) - 1] == v.size(0), Corruption, path.string(),
           ": doc_offsets must run from 0 to the number of vectors (", v.size(0), ")");
  for (int64_t d = 0; d + 1 < off.size(0); ++d) {
    LR_CHECK(o[d + 1] > o[d], Corruption, path.string(), ": document ", d, " has no vectors (doc_offsets ",
             o[d], ", ", o[d + 1], ")");
    index.offsets_.push_back(o[d + 1]);
  }
  index.packed_ = v.contiguous();
  return index;
}

}  // namespace lowrank::nn
