// safetensors, the byte format without libtorch (https://github.com/huggingface/safetensors):
// header parsing and validation, and the writer's header layout. lowrank/core/safetensors.h
// builds tensors on top; the fuzz target (fuzz/safetensors_fuzz.cpp) drives this file alone.
//
// File: 8-byte little-endian u64 N | N bytes of UTF-8 JSON header | byte buffer.
// Header: {"__metadata__": {string: string}?, name: {"dtype": D, "shape": [u64...],
// "data_offsets": [begin, end]}...}. It starts with '{' and may be padded with trailing
// spaces; N <= 100,000,000. Offsets are relative to the buffer; the tensors, sorted by offset,
// tile the buffer exactly (no holes, overlaps or trailing bytes), and end - begin equals
// numel * dtype size. This is what the Rust `safetensors` crate validates, made stricter on
// purpose: duplicate keys, unknown keys in a tensor entry and whitespace other than trailing
// spaces around the JSON are refused (the crate accepts them).
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace lowrank {

enum class Dtype { kF64, kF32, kF16, kBF16, kI64, kI32, kI16, kI8, kU8, kBool };

std::string_view dtype_name(Dtype dtype);  // "F32", "BF16", ...
// Throws Unsupported naming `what` (file and tensor) for an unknown name.
Dtype dtype_from_name(std::string_view name, std::string_view what);
std::size_t dtype_size(Dtype dtype);

struct TensorInfo {
  std::string name;
  Dtype dtype;
  std::vector<int64_t> shape;
  uint64_t begin = 0;  // offsets into the byte buffer
  uint64_t end = 0;
  int64_t numel() const;
  uint64_t nbytes() const { return end - begin; }
};

namespace safetensors {

// The Python library's limit on N (and ours).
inline constexpr uint64_t kMaxHeaderSize = 100'000'000;

struct Header {
  // Sorted by (begin, end); tensors at the same offset (empty ones) keep header order.
  std::vector<TensorInfo> tensors;
  std::map<std::string, std::string> metadata;  // "__metadata__" (empty when absent or null)
  uint64_t data_start = 0;                      // 8 + N: where the byte buffer begins
  uint64_t buffer_size = 0;                     // file size - data_start
};

// Parses and validates the header of a whole file held in `file` (reads only the first 8 + N
// bytes; the size of `file` bounds the buffer). Throws Corruption (Unsupported for a dtype
// lowrank does not know) with a message that starts with `what` and names the problem. Never
// reads outside `file`.
Header parse_header(std::span<const std::byte> file, std::string_view what);

// The bytes of one tensor of a validated file: file[data_start + begin, data_start + end).
std::span<const std::byte> tensor_bytes(std::span<const std::byte> file, const Header& header,
                                        const TensorInfo& info);

// What the writer emits before the tensor bytes, and in which order the bytes follow.
struct Layout {
  std::string prefix;               // 8-byte little-endian N, then N bytes of header (JSON + spaces)
  std::vector<std::size_t> order;   // indices into the input, in buffer order
  std::vector<TensorInfo> tensors;  // in buffer order, with their offsets
};

// Lays out a file exactly as the Python `safetensors` library (Rust crate) does: tensors sorted
// by the crate's dtype order descending (U64 I64 F64 | F32 U32 I32 | BF16 F16 U16 I16 | I8 U8 |
// BOOL; for lowrank's dtypes this is dtype size descending, then I64 > F64, F32 > I32 and
// BF16 > F16 > I16 at equal size), then by name (bytewise); compact JSON with "__metadata__"
// first when non-empty and each entry as {"dtype", "shape", "data_offsets"}; spaces pad the
// header so that 8 + N is a multiple of 8. `tensors` give name, dtype and shape (their offsets
// are ignored). Throws InvalidArgument naming `what` for an empty, duplicate, reserved
// ("__metadata__") or non-UTF-8 name, non-UTF-8 metadata, a negative dimension or a size overflow.
Layout plan_layout(std::span<const TensorInfo> tensors, const std::map<std::string, std::string>& metadata,
                   std::string_view what);

// A Hugging Face shard index (`model.safetensors.index.json`).
struct Index {
  std::map<std::string, std::string> weight_map;  // tensor name -> shard file (relative)
  // "metadata": strings as they are, other values as compact JSON ({"total_size": 123} -> "123").
  std::map<std::string, std::string> metadata;
};

// Parses an index file's text. Throws Corruption naming `what` for invalid JSON, a duplicate key,
// a missing or non-object "weight_map", a non-string shard name, or an absolute or ".." path.
Index parse_index(std::string_view text, std::string_view what);

// True when `text` is well-formed UTF-8 (no overlongs, surrogates or code points > U+10FFFF).
bool is_valid_utf8(std::string_view text);

}  // namespace safetensors
}  // namespace lowrank
