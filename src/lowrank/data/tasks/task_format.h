// The on-disk form of a generated task (`lowrank task generate`): a directory holding
//   task.json                       what was generated and how (see TaskInfo), with the SHA-256
//                                   of every other file
//   {train,val,test}.tokens.bin     the input sequences, one row per example
//   {train,val,test}.labels.bin     one row per example: a single class id (target "class") or
//                                   the target tokens (target "tokens", e.g. selective copying)
// Written atomically (a staged directory renamed into place); read through memory maps.
//
// Sequence file layout (every *.bin), little-endian:
//   [0, 8)    magic "LRTASKSQ"
//   [8, 12)   uint32 format version (kTaskFormatVersion)
//   [12, 16)  uint32 element type: 1 = uint8, 4 = int32 (the element's width in bytes)
//   [16, 24)  uint64 rows
//   [24, 32)  uint64 elements, the sum of the row lengths
//   [32, 64)  zero
//   [64, ...) the elements of all rows back to back, then zero bytes up to a multiple of 8
//   then      uint64 offsets[rows + 1]: row i is elements [offsets[i], offsets[i+1]),
//             offsets[0] = 0, offsets[rows] = elements
// The header fixes the file's size exactly; a reader checks it, the offsets, the values against
// task.json's vocabulary / classes, and (by default) the SHA-256 recorded in task.json.
#pragma once

#include <array>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "lowrank/core/file.h"
#include "lowrank/core/json.h"

namespace lowrank::data::tasks {

inline constexpr uint32_t kTaskFormatVersion = 1;

enum class ElementType : uint32_t { kUint8 = 1, kInt32 = 4 };
std::string element_type_name(ElementType type);

enum class Split { kTrain = 0, kVal = 1, kTest = 2 };
inline constexpr std::array<Split, 3> kSplits = {Split::kTrain, Split::kVal, Split::kTest};
std::string split_name(Split split);

// Streams rows into one sequence file. finish() writes the offsets and the header; a writer
// destroyed unfinished leaves a partial file (TaskWriter stages the directory, so nobody sees it).
class SequenceFileWriter {
 public:
  SequenceFileWriter(std::filesystem::path path, ElementType type);
  // Appends one row. Values must fit the element type (InternalError otherwise: a generator bug).
  void append(std::span<const int32_t> row);
  void finish();
  int64_t rows() const { return static_cast<int64_t>(offsets_.size()) - 1; }

 private:
  std::filesystem::path path_;
  ElementType type_;
  std::ofstream out_;
  std::vector<uint64_t> offsets_{0};
  std::vector<uint8_t> bytes_;  // scratch for one row
};

// A read-only, memory-mapped sequence file. Move-only.
class SequenceFile {
 public:
  // Checks the magic, version, element type, the size the header implies and the offsets.
  // Throws NotFound for a missing file, Corruption naming the file for anything else.
  static SequenceFile open(const std::filesystem::path& path);

  int64_t rows() const { return rows_; }
  int64_t elements() const { return elements_; }
  ElementType element_type() const { return type_; }
  int64_t row_length(int64_t row) const;
  // Element j of row `row` (bounds-checked: InvalidArgument naming the file).
  int64_t at(int64_t row, int64_t j) const;
  std::vector<int64_t> row(int64_t row) const;
  // The smallest and largest element of the file (0, -1 when empty).
  std::pair<int64_t, int64_t> value_range() const;
  const std::filesystem::path& path() const { return file_.path(); }

 private:
  int64_t value(uint64_t index) const;

  MappedFile file_;
  ElementType type_ = ElementType::kInt32;
  int64_t rows_ = 0;
  int64_t elements_ = 0;
  const std::byte* data_ = nullptr;
  const std::byte* offsets_ = nullptr;  // uint64 little-endian, possibly unaligned in theory
};

// What a generator declares before it writes (everything in task.json but the split tables).
struct TaskHeader {
  std::string task;       // registry name, e.g. "listops"
  std::string generator;  // the reference it follows, e.g. "LRA lra_benchmarks/data/listops.py"
  uint64_t seed = 0;
  bool lra = false;                                // the paper's settings (--lra)
  OrderedJson parameters = OrderedJson::object();  // every parameter, defaults included
  std::vector<std::string> vocabulary;             // token strings by id; empty: ids are bytes / pixels
  int64_t vocab_size = 0;
  int64_t pad_id = -1;  // -1: rows have one length, no padding token
  ElementType token_type = ElementType::kInt32;
  std::string target = "class";                 // "class" or "tokens"
  std::vector<std::string> classes;             // class names (target "class")
  OrderedJson layout = OrderedJson::object();   // {"kind": "sequence" | "image" | "pair", ...}
  OrderedJson sources = OrderedJson::object();  // inputs read (corpora, files) and their digests
};

// Writes a task directory: stages it next to `out`, streams rows, then on commit() hashes the
// files, writes task.json and renames the directory into place.
class TaskWriter {
 public:
  // Fails before any work if `out` exists (non-empty) or its parent does not.
  TaskWriter(const std::filesystem::path& out, TaskHeader header);
  // Appends one example to `split`. Checks tokens against the vocabulary and labels against the
  // classes (target "class") or the vocabulary (target "tokens"); InternalError otherwise.
  void add(Split split, std::span<const int32_t> tokens, std::span<const int32_t> labels);
  int64_t examples(Split split) const;
  void commit();

 private:
  struct SplitFiles {
    std::unique_ptr<SequenceFileWriter> tokens;
    std::unique_ptr<SequenceFileWriter> labels;
    int64_t min_length = -1;
    int64_t max_length = -1;
  };
  StagedDirectory staged_;
  TaskHeader header_;
  std::array<SplitFiles, 3> splits_;
};

struct TaskSplitInfo {
  int64_t examples = 0;
  int64_t min_length = 0;
  int64_t max_length = 0;
};

// task.json, parsed and checked.
struct TaskInfo {
  TaskHeader header;
  std::array<TaskSplitInfo, 3> splits;
  int64_t num_classes = 0;  // classes.size() for target "class"
};

// A generated task opened for reading: task.json plus the six memory-mapped files.
class TaskDataset {
 public:
  // Throws NotFound for a missing directory or file, Corruption naming the file for a malformed
  // task.json, a bad header, truncation, a row count that disagrees with task.json, a value
  // outside the vocabulary / classes, or (verify_hashes) a SHA-256 that differs from task.json's.
  static TaskDataset open(const std::filesystem::path& dir, bool verify_hashes = true);

  const TaskInfo& info() const { return info_; }
  const SequenceFile& tokens(Split split) const { return tokens_[static_cast<int>(split)]; }
  const SequenceFile& labels(Split split) const { return labels_[static_cast<int>(split)]; }
  const std::filesystem::path& dir() const { return dir_; }

 private:
  std::filesystem::path dir_;
  TaskInfo info_;
  std::array<SequenceFile, 3> tokens_;
  std::array<SequenceFile, 3> labels_;
};

}  // namespace lowrank::data::tasks
