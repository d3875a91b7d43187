// safetensors: the tensor file format of Hugging Face (https://github.com/huggingface/safetensors).
//
// Layout: 8-byte little-endian u64 N | N bytes of UTF-8 JSON header | byte buffer. The header
// maps tensor names to {"dtype", "shape", "data_offsets": [begin, end]} (offsets relative to the
// buffer) plus an optional "__metadata__" object of string -> string. The header may be padded
// with trailing spaces. Tensors are row-major, little-endian, and must tile the buffer exactly.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <ATen/ATen.h>

#include "lowrank/core/safetensors_format.h"

namespace lowrank {

// Dtype, dtype_name, dtype_from_name, dtype_size and TensorInfo live in safetensors_format.h
// (the torch-free half of the format).
at::ScalarType to_scalar_type(Dtype dtype);
// Throws Unsupported for a scalar type safetensors cannot hold.
Dtype from_scalar_type(at::ScalarType type);

// One safetensors file, memory-mapped; tensors are materialised lazily, one at a time.
// Thread-safe for concurrent reads. The header is validated in full by open().
class SafetensorsFile {
 public:
  // Throws NotFound, IoError, or Corruption with the file name and the problem.
  static SafetensorsFile open(const std::filesystem::path& path);
  // Validates bytes already in memory. `what` names the source in messages. (The fuzz target
  // drives the torch-free safetensors::parse_header directly.)
  static SafetensorsFile from_bytes(std::vector<std::byte> bytes, std::string what);

  const std::filesystem::path& path() const;
  // Sorted by offset (file order).
  const std::vector<TensorInfo>& tensors() const;
  // nullptr when absent.
  const TensorInfo* find(std::string_view name) const;
  bool contains(std::string_view name) const { return find(name) != nullptr; }
  // __metadata__ as written (empty when absent).
  const std::map<std::string, std::string>& metadata() const;

  // Raw bytes of one tensor (inside the mapping; valid while this object lives).
  std::span<const std::byte> bytes(const TensorInfo& info) const;
  // An owning CPU tensor with the stored dtype and shape (a copy of the bytes).
  // Throws NotFound naming the file and tensor.
  at::Tensor load(std::string_view name) const;
  // As load(), converted to `dtype` in one pass (no extra full-size copy of the stored bytes).
  at::Tensor load(std::string_view name, at::ScalarType dtype) const;

 private:
  struct Impl;
  std::shared_ptr<const Impl> impl_;
};

// A tensor to write. The tensor must be on the CPU; it is written as contiguous bytes.
struct NamedTensor {
  std::string name;
  at::Tensor tensor;
};

// Writes a safetensors file atomically (temp file + rename). Output is byte-identical to the
// Python `safetensors` library's for the same tensors and metadata: tensors ordered by dtype
// size (descending) then name, "__metadata__" first, compact JSON, header padded with spaces
// to a multiple of 8. Throws InvalidArgument for duplicate or empty names, IoError on failure.
void save_safetensors(const std::filesystem::path& path, std::span<const NamedTensor> tensors,
                      const std::map<std::string, std::string>& metadata = {});

// The weights of a Hugging Face model directory: `model.safetensors`, or shards listed in
// `model.safetensors.index.json` ("weight_map": name -> shard file). Also accepts the path of a
// single .safetensors file or of an index file. Shards are opened lazily on first use.
class Checkpoint {
 public:
  // Throws NotFound when the directory holds neither form; Corruption for a bad index
  // (a shard missing, a tensor listed in the index but absent from its shard, or vice versa).
  static Checkpoint open(const std::filesystem::path& path);

  // All tensor names, sorted.
  std::vector<std::string> names() const;
  const TensorInfo& info(std::string_view name) const;  // throws NotFound
  bool contains(std::string_view name) const;
  at::Tensor load(std::string_view name) const;
  at::Tensor load(std::string_view name, at::ScalarType dtype) const;
  // The shard files (one entry for an unsharded checkpoint).
  std::vector<std::filesystem::path> files() const;
  // __metadata__ of the first file, plus the index's "metadata" object when sharded.
  const std::map<std::string, std::string>& metadata() const;

 private:
  struct Impl;
  std::shared_ptr<Impl> impl_;
};

}  // namespace lowrank
