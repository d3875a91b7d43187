// GGUF v3, the file format of llama.cpp and Ollama, without libtorch: a reader that validates
// every count, offset and size against the file, a writer (atomic: temp file + rename), and the
// element encodings lowrank writes (F32, F16, BF16 and ggml's Q8_0 / Q4_0 blocks).
//
// Format (ggml's docs/gguf.md, and gguf-py's gguf_writer.py / gguf_reader.py of llama.cpp), all
// little-endian:
//   u32 magic "GGUF" | u32 version (3; 2 is read too: the same layout) | u64 tensor_count |
//   u64 kv_count | kv_count × (string key, u32 value type, value) |
//   tensor_count × (string name, u32 n_dims, n_dims × u64 ne, u32 ggml type, u64 offset) |
//   padding to `alignment` | data section.
//   string = u64 length + bytes (no terminator); array = u32 element type + u64 count + elements.
// `alignment` is the u32 key general.alignment when present (a power of two), else 32. ne[0] is
// the contiguous dimension (a row): a PyTorch [out, in] weight has ne = {in, out}. Each tensor's
// offset is relative to the data section, a multiple of the alignment, and the tensors follow
// each other in header order with padding between them (what ggml's gguf.cpp requires of a file it
// loads; the reader here requires it too).
//
// Block formats (ggml-common.h; gguf-py quants.py is their Python port), 32 elements a block:
//   Q8_0: f16 d | 32 × i8 q            x ≈ d·q;     d = max|x| / 127, q = roundf(x / d)
//   Q4_0: f16 d | 16 × u8 (lo | hi<<4)  x ≈ d·(q-8); d = m / -8 with m the element of largest
//         magnitude (the first one on ties), q = min(15, trunc(x / d + 8.5)); byte j holds element
//         j in its low nibble and element j + 16 in its high one.
// Both as quantize_row_q8_0_ref / quantize_row_q4_0_ref in ggml-quants.c: float32 arithmetic with
// 1/d multiplied in (not a division per element), f16 rounded to nearest even. The project builds
// with ISO C++ (no GNU extensions), so GCC does not contract x·id + 8.5 into an FMA.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace lowrank::gguf {

inline constexpr uint32_t kMagic = 0x46554747;  // "GGUF" read as a little-endian u32
inline constexpr uint32_t kVersion = 3;
inline constexpr uint64_t kDefaultAlignment = 32;
inline constexpr uint32_t kMaxDims = 4;           // GGML_MAX_DIMS
inline constexpr std::size_t kMaxNameBytes = 63;  // GGML_MAX_NAME - 1: longer names llama.cpp refuses

enum class ValueType : uint32_t {
  kU8 = 0,
  kI8 = 1,
  kU16 = 2,
  kI16 = 3,
  kU32 = 4,
  kI32 = 5,
  kF32 = 6,
  kBool = 7,
  kString = 8,
  kArray = 9,
  kU64 = 10,
  kI64 = 11,
  kF64 = 12,
};
std::string_view value_type_name(ValueType type);  // "u32", "string", "array", ...

// One metadata value. Scalars live in the field their type names (unsigned integers and bool in
// `uint`, signed integers in `sint`, floats in `real`, strings in `text`); an array has an
// element type and its items (GGUF arrays are homogeneous; nested arrays are refused).
struct Value {
  ValueType type = ValueType::kU32;
  uint64_t uint = 0;
  int64_t sint = 0;
  double real = 0;
  std::string text;
  ValueType element_type = ValueType::kU8;
  std::vector<Value> items;

  static Value u8(uint8_t v);
  static Value u32(uint32_t v);
  static Value u64(uint64_t v);
  static Value i32(int32_t v);
  static Value f32(float v);
  static Value f64(double v);
  static Value boolean(bool v);
  static Value string(std::string v);
  static Value array(ValueType element_type, std::vector<Value> items);
  static Value strings(const std::vector<std::string>& items);
  static Value i32s(const std::vector<int32_t>& items);

  // Any integer type as u64 / i64 (InvalidArgument naming `what` for another type, a negative
  // value as u64, or a u64 above INT64_MAX as i64); f32/f64 as double; a string.
  uint64_t as_uint(std::string_view what) const;
  int64_t as_int(std::string_view what) const;
  double as_real(std::string_view what) const;
  const std::string& as_string(std::string_view what) const;

  bool operator==(const Value& other) const = default;
};

using Metadata = std::vector<std::pair<std::string, Value>>;  // in file order

// The ggml tensor types lowrank reads and writes; a file holding another type is refused
// (Unsupported, naming the type id).
enum class TensorType : uint32_t { kF32 = 0, kF16 = 1, kQ4_0 = 2, kQ8_0 = 8, kBF16 = 30 };
std::string_view tensor_type_name(TensorType type);  // "F32", "F16", "Q4_0", "Q8_0", "BF16"
// "f32" | "f16" | "bf16" | "q8_0" | "q4_0" (any case). InvalidArgument naming `what` otherwise.
TensorType tensor_type_from_name(std::string_view name, std::string_view what);
uint64_t block_size(TensorType type);  // elements per block: 1, or 32 for Q8_0 / Q4_0
uint64_t type_size(TensorType type);   // bytes per block

struct TensorInfo {
  std::string name;
  std::vector<uint64_t> dims;  // ggml order: dims[0] is the row length
  TensorType type = TensorType::kF32;
  uint64_t offset = 0;  // relative to the data section (the reader fills it; the writer plans it)
  uint64_t element_count() const;
  uint64_t byte_count() const;  // element_count / block_size * type_size
};

struct Header {
  uint32_t version = kVersion;
  Metadata metadata;
  std::vector<TensorInfo> tensors;  // in file order
  uint64_t alignment = kDefaultAlignment;
  uint64_t data_start = 0;  // absolute offset of the data section
  const Value* find(std::string_view key) const;
};

// Parses and validates a whole GGUF file held in `file`. Throws Corruption (Unsupported for a
// tensor type lowrank does not know, a nested array or a version other than 2 and 3) whose
// message starts with `what` and names the field at fault. Never reads outside `file`, never
// allocates more than the file's size implies.
Header parse(std::span<const std::byte> file, std::string_view what);

// The bytes of one tensor of a validated file.
std::span<const std::byte> tensor_bytes(std::span<const std::byte> file, const Header& header,
                                        const TensorInfo& info);

// What the writer emits before the data section, with each tensor's offset filled in. The
// alignment is general.alignment when `metadata` holds it (a power-of-two u32), else 32. Throws
// InvalidArgument naming `what` for a duplicate key or tensor name, an empty or too long name
// (> 63 bytes), more than 4 or zero dimensions, or a row a block does not divide.
struct Layout {
  std::string prefix;               // header + padding: the data section starts at prefix.size()
  std::vector<TensorInfo> tensors;  // with offsets
  uint64_t alignment = kDefaultAlignment;
};
Layout plan_layout(const Metadata& metadata, std::vector<TensorInfo> tensors, std::string_view what);

// Writes `path` atomically: the layout's prefix, then each tensor's bytes as `tensor_data(i)`
// returns them (exactly byte_count() bytes, checked: InternalError otherwise), padded to the
// alignment. Nothing is left at `path` (or beside it) when any step throws.
void write_file(const std::filesystem::path& path, const Metadata& metadata, std::vector<TensorInfo> tensors,
                const std::function<std::vector<std::byte>(std::size_t)>& tensor_data);

// ---- element encodings ----

uint16_t f32_to_f16(float value);  // round to nearest even (numpy's astype(float16))
float f16_to_f32(uint16_t bits);
uint16_t f32_to_bf16(float value);  // round to nearest even, NaN made quiet (gguf-py's BF16)
float bf16_to_f32(uint16_t bits);

// `values` (row-major rows of `row_length`) in `type`'s encoding. InvalidArgument naming `what`
// when the block size does not divide the row length or the rows.
std::vector<std::byte> encode(std::span<const float> values, uint64_t row_length, TensorType type,
                              std::string_view what);
// The float values of `bytes` holding `element_count` elements of `type` (dequantised for Q8_0 and
// Q4_0, as ggml's dequantize_row_*). Corruption naming `what` on a size mismatch.
std::vector<float> decode(std::span<const std::byte> bytes, uint64_t element_count, TensorType type,
                          std::string_view what);

}  // namespace lowrank::gguf
