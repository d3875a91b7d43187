#include "lowrank/data/tasks/task_format.h"

#include <algorithm>
#include <cstring>
#include <limits>

#include "lowrank/core/error.h"
#include "lowrank/data/tasks/sha256.h"

namespace lowrank::data::tasks {

namespace fs = std::filesystem;

namespace {

constexpr char kMagic[8] = {'L', 'R', 'T', 'A', 'S', 'K', 'S', 'Q'};
constexpr std::size_t kHeaderBytes = 64;

uint64_t load_u64(const std::byte* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | static_cast<uint8_t>(p[i]);
  return v;
}
uint32_t load_u32(const std::byte* p) {
  uint32_t v = 0;
  for (int i = 3; i >= 0; --i) v = (v << 8) | static_cast<uint8_t>(p[i]);
  return v;
}
void store_u64(uint8_t* p, uint64_t v) {
  for (int i = 0; i < 8; ++i) p[i] = static_cast<uint8_t>(v >> (8 * i));
}
void store_u32(uint8_t* p, uint32_t v) {
  for (int i = 0; i < 4; ++i) p[i] = static_cast<uint8_t>(v >> (8 * i));
}
uint64_t align8(uint64_t n) {
  return (n + 7) / 8 * 8;
}

std::string file_name(Split split, const char* kind) {
  return split_name(split) + "." + kind + ".bin";
}

}  // namespace

std::string element_type_name(ElementType type) {
  return type == ElementType::kUint8 ? "uint8" : "int32";
}

std::string split_name(Split split) {
  switch (split) {
    case Split::kTrain:
      return "train";
    case Split::kVal:
      return "val";
    case Split::kTest:
      return "test";
  }
  return "?";
}

// ---------------------------------------------------------------------------------------------
// SequenceFileWriter

SequenceFileWriter::SequenceFileWriter(fs::path path, ElementType type)
    : path_(std::move(path)), type_(type) {
  out_.open(path_, std::ios::binary | std::ios::trunc);
  LR_CHECK(out_, IoError, "cannot create ", path_.string());
  const uint8_t zeros[kHeaderBytes] = {};
  out_.write(reinterpret_cast<const char*>(zeros), kHeaderBytes);  // the header, rewritten by finish()
}

void SequenceFileWriter::append(std::span<const int32_t> row) {
  const std::size_t width = static_cast<std::size_t>(type_);
  bytes_.resize(row.size() * width);
  for (std::size_t i = 0; i < row.size(); ++i) {
    const int32_t v = row[i];
    if (type_ == ElementType::kUint8) {
      LR_CHECK(v >= 0 && v <= 255, InternalError, path_.string(), ": value ", v, " does not fit uint8");
      bytes_[i] = static_cast<uint8_t>(v);
    } else {
      store_u32(bytes_.data() + 4 * i, static_cast<uint32_t>(v));
    }
  }
  out_.write(reinterpret_cast<const char*>(bytes_.data()), static_cast<std::streamsize>(bytes_.size()));
  offsets_.push_back(offsets_.back() + row.size());
}

void SequenceFileWriter::finish() {
  const uint64_t elements = offsets_.back();
  const uint64_t data_end = kHeaderBytes + elements * static_cast<uint64_t>(type_);
  const uint8_t zeros[8] = {};
  out_.write(reinterpret_cast<const char*>(zeros), static_cast<std::streamsize>(align8(data_end) - data_end));
  std::vector<uint8_t> table(offsets_.size() * 8);
  for (std::size_t i = 0; i < offsets_.size(); ++i) store_u64(table.data() + 8 * i, offsets_[i]);
  out_.write(reinterpret_cast<const char*>(table.data()), static_cast<std::streamsize>(table.size()));
  uint8_t header[kHeaderBytes] = {};
  std::memcpy(header, kMagic, 8);
  store_u32(header + 8, kTaskFormatVersion);
  store_u32(header + 12, static_cast<uint32_t>(type_));
  store_u64(header + 16, offsets_.size() - 1);
  store_u64(header + 24, elements);
  out_.seekp(0);
  out_.write(reinterpret_cast<const char*>(header), kHeaderBytes);
  out_.close();
  LR_CHECK(!out_.fail(), IoError, "cannot write ", path_.string());
}

// ---------------------------------------------------------------------------------------------
// SequenceFile

SequenceFile SequenceFile::open(const fs::path& path) {
  SequenceFile f;
  f.file_ = MappedFile::open(path);
  const std::string name = path.string();
  const auto bytes = f.file_.bytes();
  LR_CHECK(bytes.size() >= kHeaderBytes, Corruption, name, ": truncated (", bytes.size(),
           " bytes, smaller than the 64-byte header)");
  LR_CHECK(std::memcmp(bytes.data(), kMagic, 8) == 0, Corruption, name,
           ": not a lowrank task sequence file (bad magic)");
  const uint32_t version = load_u32(bytes.data() + 8);
  LR_CHECK(version == kTaskFormatVersion, Corruption, name, ": format version ", version,
           ", this build reads ", kTaskFormatVersion);
  const uint32_t type = load_u32(bytes.data() + 12);
  LR_CHECK(type == 1 || type == 4, Corruption, name, ": unknown element type code ", type);
  f.type_ = static_cast<ElementType>(type);
  const uint64_t rows = load_u64(bytes.data() + 16);
  const uint64_t elements = load_u64(bytes.data() + 24);
  // Bound both counts by the file size first, so the size arithmetic below cannot overflow.
  LR_CHECK(rows < bytes.size() && elements <= bytes.size(), Corruption, name, ": header claims ", rows,
           " rows and ", elements, " elements, more than a ", bytes.size(), "-byte file can hold");
  const uint64_t offsets_at = align8(kHeaderBytes + elements * type);
  const uint64_t expected = offsets_at + (rows + 1) * 8;
  LR_CHECK(bytes.size() == expected, Corruption, name, ": ", bytes.size(), " bytes, but its header (", rows,
           " rows, ", elements, " ", element_type_name(f.type_), " elements) implies ", expected,
           bytes.size() < expected ? " (truncated)" : " (trailing bytes)");
  f.rows_ = static_cast<int64_t>(rows);
  f.elements_ = static_cast<int64_t>(elements);
  f.data_ = bytes.data() + kHeaderBytes;
  f.offsets_ = bytes.data() + offsets_at;
  LR_CHECK(load_u64(f.offsets_) == 0, Corruption, name, ": row offsets do not start at 0");
  uint64_t previous = 0;
  for (uint64_t i = 1; i <= rows; ++i) {
    const uint64_t offset = load_u64(f.offsets_ + 8 * i);
    LR_CHECK(offset >= previous && offset <= elements, Corruption, name, ": row offset ", i, " is ", offset,
             " (previous ", previous, ", elements ", elements, ")");
    previous = offset;
  }
  LR_CHECK(previous == elements, Corruption, name, ": row offsets end at ", previous, ", not at the ",
           elements, " elements of the header");
  return f;
}

int64_t SequenceFile::row_length(int64_t row) const {
  LR_CHECK(row >= 0 && row < rows_, InvalidArgument, path().string(), ": row ", row, " out of range [0, ",
           rows_, ")");
  return static_cast<int64_t>(load_u64(offsets_ + 8 * (row + 1)) - load_u64(offsets_ + 8 * row));
}

int64_t SequenceFile::value(uint64_t index) const {
  if (type_ == ElementType::kUint8) return static_cast<uint8_t>(data_[index]);
  return static_cast<int32_t>(load_u32(data_ + 4 * index));
}

int64_t SequenceFile::at(int64_t row, int64_t j) const {
  const int64_t length = row_length(row);
  LR_CHECK(j >= 0 && j < length, InvalidArgument, path().string(), ": element ", j, " of row ", row,
           " out of range [0, ", length, ")");
  return value(load_u64(offsets_ + 8 * row) + static_cast<uint64_t>(j));
}

std::vector<int64_t> SequenceFile::row(int64_t row) const {
  const int64_t length = row_length(row);
  const uint64_t begin = load_u64(offsets_ + 8 * row);
  std::vector<int64_t> values(static_cast<std::size_t>(length));
  for (int64_t j = 0; j < length; ++j) values[j] = value(begin + static_cast<uint64_t>(j));
  return values;
}

std::pair<int64_t, int64_t> SequenceFile::value_range() const {
  if (elements_ == 0) return {0, -1};
  int64_t lo = std::numeric_limits<int64_t>::max(), hi = std::numeric_limits<int64_t>::min();
  for (int64_t i = 0; i < elements_; ++i) {
    const int64_t v = value(static_cast<uint64_t>(i));
    lo = std::min(lo, v);
    hi = std::max(hi, v);
  }
  return {lo, hi};
}

// ---------------------------------------------------------------------------------------------
// TaskWriter

TaskWriter::TaskWriter(const fs::path& out, TaskHeader header) : staged_(out), header_(std::move(header)) {
  LR_CHECK(header_.target == "class" || header_.target == "tokens", InternalError, "task target '",
           header_.target, "'");
  for (Split split : kSplits) {
    SplitFiles& files = splits_[static_cast<int>(split)];
    files.tokens =
        std::make_unique<SequenceFileWriter>(staged_.path() / file_name(split, "tokens"), header_.token_type);
    files.labels = std::make_unique<SequenceFileWriter>(staged_.path() / file_name(split, "labels"),
                                                        ElementType::kInt32);
  }
}

void TaskWriter::add(Split split, std::span<const int32_t> tokens, std::span<const int32_t> labels) {
  for (int32_t t : tokens) {
    LR_CHECK(t >= 0 && t < header_.vocab_size, InternalError, header_.task, ": token ", t,
             " outside the vocabulary [0, ", header_.vocab_size, ")");
  }
  const int64_t label_limit =
      header_.target == "class" ? static_cast<int64_t>(header_.classes.size()) : header_.vocab_size;
  for (int32_t l : labels) {
    LR_CHECK(l >= 0 && l < label_limit, InternalError, header_.task, ": label ", l, " outside [0, ",
             label_limit, ")");
  }
  LR_CHECK(header_.target != "class" || labels.size() == 1, InternalError, header_.task,
           ": a class task needs one label per example");
  SplitFiles& files = splits_[static_cast<int>(split)];
  files.tokens->append(tokens);
  files.labels->append(labels);
  const auto length = static_cast<int64_t>(tokens.size());
  files.min_length = files.min_length < 0 ? length : std::min(files.min_length, length);
  files.max_length = std::max(files.max_length, length);
}

int64_t TaskWriter::examples(Split split) const {
  return splits_[static_cast<int>(split)].tokens->rows();
}

void TaskWriter::commit() {
  OrderedJson json;
  json["format"] = "lowrank-task";
  json["format_version"] = kTaskFormatVersion;
  json["task"] = header_.task;
  json["generator"] = header_.generator;
  json["seed"] = header_.seed;
  json["lra"] = header_.lra;
  json["parameters"] = header_.parameters;
  json["vocab_size"] = header_.vocab_size;
  json["vocabulary"] = header_.vocabulary;
  json["pad_id"] = header_.pad_id;
  json["token_dtype"] = element_type_name(header_.token_type);
  json["target"] = header_.target;
  json["num_classes"] = header_.target == "class" ? static_cast<int64_t>(header_.classes.size()) : 0;
  json["classes"] = header_.classes;
  json["layout"] = header_.layout;
  json["sources"] = header_.sources;
  OrderedJson splits = OrderedJson::object();
  for (Split split : kSplits) {
    SplitFiles& files = splits_[static_cast<int>(split)];
    files.tokens->finish();
    files.labels->finish();
    OrderedJson entry;
    entry["examples"] = files.tokens->rows();
    entry["min_length"] = std::max<int64_t>(files.min_length, 0);
    entry["max_length"] = std::max<int64_t>(files.max_length, 0);
    for (const char* kind : {"tokens", "labels"}) {
      const std::string name = file_name(split, kind);
      entry[kind] = {{"file", name}, {"sha256", sha256_file(staged_.path() / name)}};
    }
    splits[split_name(split)] = entry;
  }
  json["splits"] = splits;
  write_json_file(staged_.path() / "task.json", json);
  staged_.commit();
}

// ---------------------------------------------------------------------------------------------
// TaskDataset

TaskDataset TaskDataset::open(const fs::path& dir, bool verify_hashes) {
  LR_CHECK(fs::is_directory(dir), NotFound, "task directory ", dir.string(), " does not exist");
  const fs::path json_path = dir / "task.json";
  LR_CHECK(fs::exists(json_path), NotFound, json_path.string(), " does not exist (not a task directory)");
  const Json json = read_json_file(json_path);
  const std::string what = json_path.string();
  TaskDataset task;
  task.dir_ = dir;
  TaskInfo& info = task.info_;
  TaskHeader& h = info.header;
  try {
    LR_CHECK(json.value("format", "") == "lowrank-task", Corruption, what,
             ": \"format\" is not \"lowrank-task\"");
    const int version = json.at("format_version").get<int>();
    LR_CHECK(version == static_cast<int>(kTaskFormatVersion), Corruption, what, ": format_version ", version,
             ", this build reads ", kTaskFormatVersion);
    h.task = json.at("task").get<std::string>();
    h.generator = json.at("generator").get<std::string>();
    h.seed = json.at("seed").get<uint64_t>();
    h.lra = json.at("lra").get<bool>();
    h.parameters = json.at("parameters");
    h.vocab_size = json.at("vocab_size").get<int64_t>();
    h.vocabulary = json.at("vocabulary").get<std::vector<std::string>>();
    h.pad_id = json.at("pad_id").get<int64_t>();
    const std::string dtype = json.at("token_dtype").get<std::string>();
    LR_CHECK(dtype == "uint8" || dtype == "int32", Corruption, what, ": token_dtype '", dtype, "'");
    h.token_type = dtype == "uint8" ? ElementType::kUint8 : ElementType::kInt32;
    h.target = json.at("target").get<std::string>();
    LR_CHECK(h.target == "class" || h.target == "tokens", Corruption, what, ": target '", h.target, "'");
    h.classes = json.at("classes").get<std::vector<std::string>>();
    h.layout = json.at("layout");
    h.sources = json.at("sources");
    info.num_classes = json.at("num_classes").get<int64_t>();
    LR_CHECK(h.vocab_size > 0, Corruption, what, ": vocab_size ", h.vocab_size);
    LR_CHECK(h.target != "class" || info.num_classes == static_cast<int64_t>(h.classes.size()), Corruption,
             what, ": num_classes ", info.num_classes, " but ", h.classes.size(), " class names");
  } catch (const nlohmann::json::exception& e) {
    throw Corruption(str(what, ": malformed task description (", e.what(), ")"));
  }
  for (Split split : kSplits) {
    const int s = static_cast<int>(split);
    std::string expected_sha256[2];
    try {
      const Json& entry = json.at("splits").at(split_name(split));
      info.splits[s].examples = entry.at("examples").get<int64_t>();
      info.splits[s].min_length = entry.at("min_length").get<int64_t>();
      info.splits[s].max_length = entry.at("max_length").get<int64_t>();
      expected_sha256[0] = entry.at("tokens").at("sha256").get<std::string>();
      expected_sha256[1] = entry.at("labels").at("sha256").get<std::string>();
    } catch (const nlohmann::json::exception& e) {
      throw Corruption(str(what, ": malformed split '", split_name(split), "' (", e.what(), ")"));
    }
    for (int k = 0; k < 2; ++k) {
      const char* kind = k == 0 ? "tokens" : "labels";
      const std::string name = file_name(split, kind);
      const fs::path path = dir / name;
      LR_CHECK(fs::exists(path), NotFound, path.string(), " does not exist (named in ", what, ")");
      if (verify_hashes) {
        const std::string& expected = expected_sha256[k];
        const std::string actual = sha256_file(path);
        LR_CHECK(actual == expected, Corruption, path.string(), ": SHA-256 ", actual,
                 " differs from task.json's ", expected, " (the file was changed or damaged)");
      }
      SequenceFile file = SequenceFile::open(path);
      LR_CHECK(file.rows() == info.splits[s].examples, Corruption, path.string(), ": ", file.rows(),
               " rows, task.json says ", info.splits[s].examples);
      const auto [lo, hi] = file.value_range();
      const bool is_labels = k == 1;
      const int64_t limit = is_labels && h.target == "class" ? info.num_classes : h.vocab_size;
      LR_CHECK(file.elements() == 0 || (lo >= 0 && hi < limit), Corruption, path.string(), ": values span [",
               lo, ", ", hi, "], outside [0, ", limit, ")");
      LR_CHECK(!is_labels || h.target != "class" || file.elements() == file.rows(), Corruption, path.string(),
               ": a class task has one label per example, found ", file.elements(), " for ", file.rows());
      if (!is_labels) {
        LR_CHECK(file.element_type() == h.token_type, Corruption, path.string(), ": element type ",
                 element_type_name(file.element_type()), ", task.json says ",
                 element_type_name(h.token_type));
        task.tokens_[s] = std::move(file);
      } else {
        task.labels_[s] = std::move(file);
      }
    }
  }
  return task;
}

}  // namespace lowrank::data::tasks
