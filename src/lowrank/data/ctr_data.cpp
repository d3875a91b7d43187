#include "lowrank/data/ctr_data.h"

#include <charconv>
#include <fstream>
#include <map>
#include <set>

#include "lowrank/core/error.h"
#include "lowrank/core/file.h"
#include "lowrank/core/safetensors.h"

namespace lowrank::data {

namespace fs = std::filesystem;

OrderedJson CtrSchema::to_json() const {
  OrderedJson fields = OrderedJson::array();
  for (const CtrField& f : sparse)
    fields.push_back(OrderedJson{{"name", f.name}, {"vocab_size", f.vocab_size}});
  return OrderedJson{{"sparse_fields", fields}, {"dense_fields", dense}};
}

CtrSchema CtrSchema::from_json(const Json& j, const std::string& what) {
  LR_CHECK(j.is_object(), InvalidArgument, what, ": not a JSON object");
  CtrSchema s;
  const auto sparse = json_get<Json>(j, "sparse_fields", what);
  LR_CHECK(sparse.is_array(), InvalidArgument, what, ": \"sparse_fields\" must be an array");
  for (const Json& f : sparse)
    s.sparse.push_back({json_get<std::string>(f, "name", what + " sparse field"),
                        json_get<int64_t>(f, "vocab_size", what + " sparse field")});
  s.dense = json_get<std::vector<std::string>>(j, "dense_fields", what);
  s.check(what);
  return s;
}

void CtrSchema::check(const std::string& what) const {
  LR_CHECK(!sparse.empty() || !dense.empty(), InvalidArgument, what, ": no sparse or dense fields");
  std::set<std::string> names{"label"};
  for (const CtrField& f : sparse) {
    LR_CHECK(f.vocab_size >= 1, InvalidArgument, what, ": field ", f.name, " has vocab_size ", f.vocab_size,
             " (must be >= 1)");
    LR_CHECK(names.insert(f.name).second, InvalidArgument, what, ": field name \"", f.name, "\" repeated");
  }
  for (const std::string& d : dense)
    LR_CHECK(names.insert(d).second, InvalidArgument, what, ": field name \"", d, "\" repeated");
}

CtrData CtrData::slice(int64_t begin, int64_t end) const {
  CtrData out;
  out.sparse = sparse.slice(0, begin, end);
  out.dense = dense.slice(0, begin, end);
  out.labels = labels.slice(0, begin, end);
  return out;
}

CtrData CtrData::gather(const at::Tensor& index) const {
  CtrData out;
  out.sparse = sparse.index_select(0, index);
  out.dense = dense.index_select(0, index);
  out.labels = labels.index_select(0, index);
  return out;
}

double CtrData::ctr() const {
  return rows() == 0 ? 0.0 : labels.to(at::kDouble).mean().item<double>();
}

CtrData checked_ctr_data(const CtrSchema& schema, at::Tensor sparse, at::Tensor dense, at::Tensor labels,
                         const std::string& what) {
  LR_CHECK(labels.defined() && labels.dim() == 1, InvalidArgument, what, ": `label` must be one-dimensional");
  const int64_t n = labels.size(0);
  LR_CHECK(
      sparse.defined() && sparse.dim() == 2 && sparse.size(0) == n && sparse.size(1) == schema.sparse_count(),
      InvalidArgument, what, ": `sparse` has shape ", sparse.defined() ? sparse.sizes() : at::IntArrayRef{},
      "; the schema wants [", n, ", ", schema.sparse_count(), "]");
  LR_CHECK(dense.defined() && dense.dim() == 2 && dense.size(0) == n && dense.size(1) == schema.dense_count(),
           InvalidArgument, what, ": `dense` has shape ", dense.defined() ? dense.sizes() : at::IntArrayRef{},
           "; the schema wants [", n, ", ", schema.dense_count(), "]");
  LR_CHECK(!at::isfinite(dense.to(at::kFloat)).logical_not().any().item<bool>(), InvalidArgument, what,
           ": `dense` holds a NaN or an infinity");
  CtrData d;
  d.labels = labels.to(at::kFloat).contiguous();
  const auto bad = d.labels.ne(0).logical_and(d.labels.ne(1));
  LR_CHECK(!bad.any().item<bool>(), InvalidArgument, what, ": label ",
           d.labels.masked_select(bad)[0].item<float>(), " at row ", bad.nonzero()[0][0].item<int64_t>(),
           " (labels are 0 or 1)");
  d.dense = dense.to(at::kFloat).contiguous();
  d.sparse = sparse.to(at::kLong).contiguous();
  if (n > 0 && schema.sparse_count() > 0) {
    std::vector<int64_t> vocab;
    for (const CtrField& f : schema.sparse) vocab.push_back(f.vocab_size);
    const at::Tensor v = at::tensor(vocab, at::kLong).unsqueeze(0).expand_as(d.sparse);
    const at::Tensor unknown = d.sparse.lt(0).logical_or(d.sparse.ge(v));
    d.oov = unknown.sum().item<int64_t>();
    if (d.oov > 0) d.sparse = at::where(unknown, v, d.sparse).contiguous();
  }
  return d;
}

namespace {

std::vector<std::string_view> split_line(std::string_view line, char sep) {
  std::vector<std::string_view> out;
  size_t start = 0;
  while (true) {
    const size_t pos = line.find(sep, start);
    out.push_back(line.substr(start, pos == std::string_view::npos ? std::string_view::npos : pos - start));
    if (pos == std::string_view::npos) break;
    start = pos + 1;
  }
  return out;
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\r' || s.front() == '"')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\r' || s.back() == '"')) s.remove_suffix(1);
  return s;
}

}  // namespace

CtrData read_ctr_table(const fs::path& path, const CtrSchema& schema) {
  const std::string ext = path.extension().string();
  LR_CHECK(ext == ".tsv" || ext == ".csv", InvalidArgument, path.string(), ": a CTR table is .tsv or .csv");
  const char sep = ext == ".tsv" ? '\t' : ',';
  std::ifstream in(path);
  LR_CHECK(in.good(), NotFound, path.string(), ": cannot open");
  std::string line;
  LR_CHECK(static_cast<bool>(std::getline(in, line)), InvalidArgument, path.string(),
           ": empty (no header line)");
  const std::vector<std::string_view> header = split_line(line, sep);
  std::map<std::string, size_t, std::less<>> column;
  for (size_t c = 0; c < header.size(); ++c) column.emplace(std::string(trim(header[c])), c);
  auto find = [&](const std::string& name) {
    auto it = column.find(name);
    LR_CHECK(it != column.end(), InvalidArgument, path.string(), ": the header has no column \"", name, "\"");
    return it->second;
  };
  const size_t label_col = find("label");
  std::vector<size_t> sparse_cols, dense_cols;
  for (const CtrField& f : schema.sparse) sparse_cols.push_back(find(f.name));
  for (const std::string& d : schema.dense) dense_cols.push_back(find(d));

  std::vector<int64_t> sparse;
  std::vector<float> dense, labels;
  for (int64_t line_no = 2; std::getline(in, line); ++line_no) {
    if (trim(line).empty()) continue;
    const std::vector<std::string_view> cells = split_line(line, sep);
    LR_CHECK(cells.size() == header.size(), InvalidArgument, path.string(), ":", line_no, ": ", cells.size(),
             " fields, the header has ", header.size());
    const std::string_view label = trim(cells[label_col]);
    LR_CHECK(label == "0" || label == "1", InvalidArgument, path.string(), ":", line_no, ": label \"", label,
             "\" (labels are 0 or 1)");
    labels.push_back(label == "1" ? 1.0f : 0.0f);
    for (size_t j = 0; j < dense_cols.size(); ++j) {
      const std::string text(trim(cells[dense_cols[j]]));
      LR_CHECK(!text.empty(), InvalidArgument, path.string(), ":", line_no, ": field ", schema.dense[j],
               " is missing");
      size_t used = 0;
      float v = 0;
      try {
        v = std::stof(text, &used);
      } catch (const std::exception&) {
        used = 0;
      }
      LR_CHECK(used == text.size() && std::isfinite(v), InvalidArgument, path.string(), ":", line_no,
               ": field ", schema.dense[j], " = \"", text, "\" is not a finite number");
      dense.push_back(v);
    }
    for (size_t j = 0; j < sparse_cols.size(); ++j) {
      const std::string_view text = trim(cells[sparse_cols[j]]);
      LR_CHECK(!text.empty(), InvalidArgument, path.string(), ":", line_no, ": field ", schema.sparse[j].name,
               " is missing");
      int64_t id = -1;
      const auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), id);
      // Unknown (not an integer, or outside the vocabulary): checked_ctr_data counts it and sends it
      // to the OOV bucket.
      if (ec != std::errc() || ptr != text.data() + text.size()) id = -1;
      sparse.push_back(id);
    }
  }
  const auto n = static_cast<int64_t>(labels.size());
  return checked_ctr_data(schema, at::tensor(sparse, at::kLong).view({n, schema.sparse_count()}),
                          at::tensor(dense, at::kFloat).view({n, schema.dense_count()}),
                          at::tensor(labels, at::kFloat), path.string());
}

CtrSchema load_ctr_schema(const fs::path& dir) {
  const fs::path file = dir / "ctr_data.json";
  LR_CHECK(fs::exists(file), NotFound, dir.string(), " is not a CTR data directory (no ctr_data.json)");
  const Json j = read_json_file(file);
  LR_CHECK(j.value("format", "") == "lowrank-ctr-data", InvalidArgument, file.string(),
           ": \"format\" must be \"lowrank-ctr-data\"");
  return CtrSchema::from_json(j, file.string());
}

CtrData load_ctr_split(const fs::path& dir, const CtrSchema& schema, const std::string& split) {
  const fs::path st = dir / (split + ".safetensors");
  if (fs::exists(st)) {
    const SafetensorsFile f = SafetensorsFile::open(st);
    for (const char* name : {"sparse", "dense", "label"})
      LR_CHECK(f.contains(name), InvalidArgument, st.string(), ": no tensor `", name, "`");
    return checked_ctr_data(schema, f.load("sparse"), f.load("dense"), f.load("label"), st.string());
  }
  for (const char* ext : {".tsv", ".csv"}) {
    const fs::path table = dir / (split + ext);
    if (fs::exists(table)) return read_ctr_table(table, schema);
  }
  throw NotFound(str(dir.string(), ": no ", split, ".safetensors, ", split, ".tsv or ", split, ".csv"));
}

void save_ctr_dataset(const fs::path& dir, const CtrSchema& schema, const CtrData& train, const CtrData& test,
                      const Json& generator) {
  schema.check(dir.string());
  StagedDirectory staged(dir);
  auto write_split = [&](const CtrData& d, const std::string& split) {
    const std::vector<NamedTensor> tensors = {{"sparse", d.sparse.to(at::kInt).contiguous()},
                                              {"dense", d.dense.to(at::kFloat).contiguous()},
                                              {"label", d.labels.to(at::kByte).contiguous()}};
    save_safetensors(staged.path() / (split + ".safetensors"), tensors);
  };
  write_split(train, "train");
  write_split(test, "test");
  OrderedJson j{{"format", "lowrank-ctr-data"}, {"version", 1}};
  const OrderedJson s = schema.to_json();
  j["sparse_fields"] = s["sparse_fields"];
  j["dense_fields"] = s["dense_fields"];
  j["splits"] = OrderedJson{{"train", train.rows()}, {"test", test.rows()}};
  j["ctr"] = OrderedJson{{"train", train.ctr()}, {"test", test.ctr()}};
  if (!generator.is_null()) j["generator"] = OrderedJson::parse(generator.dump());
  write_json_file(staged.path() / "ctr_data.json", j);
  staged.commit();
}

}  // namespace lowrank::data
