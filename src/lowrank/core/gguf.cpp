#include "lowrank/core/gguf.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>
#include <limits>
#include <set>

#include "lowrank/core/error.h"
#include "lowrank/core/file.h"

namespace lowrank::gguf {
namespace {

static_assert(std::endian::native == std::endian::little, "GGUF I/O assumes a little-endian host");

// ---- reading ----

// A cursor over the file that refuses every read past its end, naming the field it was reading.
class Cursor {
 public:
  Cursor(std::span<const std::byte> file, std::string_view what) : file_(file), what_(what) {}

  uint64_t position() const { return pos_; }
  uint64_t remaining() const { return file_.size() - pos_; }

  template <typename T>
  T scalar(std::string_view field) {
    need(sizeof(T), field);
    T v;
    std::memcpy(&v, file_.data() + pos_, sizeof(T));
    pos_ += sizeof(T);
    return v;
  }

  std::string string(std::string_view field) {
    const uint64_t n = scalar<uint64_t>(field);
    need(n, field);
    std::string s(reinterpret_cast<const char*>(file_.data() + pos_), n);
    pos_ += n;
    return s;
  }

  // A count of items that each take at least `min_item_bytes`: more than the rest of the file
  // could hold is corruption (and would otherwise be a huge allocation).
  uint64_t count(std::string_view field, uint64_t min_item_bytes) {
    const uint64_t n = scalar<uint64_t>(field);
    LR_CHECK(n <= remaining() / min_item_bytes, Corruption, what_, ": ", field, " = ", n,
             " does not fit in the ", remaining(), " bytes left of the file");
    return n;
  }

  [[noreturn]] void fail(const std::string& message) const { throw Corruption(str(what_, ": ", message)); }

 private:
  void need(uint64_t n, std::string_view field) const {
    LR_CHECK(n <= remaining(), Corruption, what_, ": ", field, " at byte ", pos_, " needs ", n,
             " bytes, the file has ", remaining(), " left");
  }
  std::span<const std::byte> file_;
  std::string_view what_;
  uint64_t pos_ = 0;
};

bool known_value_type(uint32_t t) {
  return t <= static_cast<uint32_t>(ValueType::kF64);
}

uint64_t min_value_bytes(ValueType t) {
  switch (t) {
    case ValueType::kU8:
    case ValueType::kI8:
    case ValueType::kBool:
      return 1;
    case ValueType::kU16:
    case ValueType::kI16:
      return 2;
    case ValueType::kU32:
    case ValueType::kI32:
    case ValueType::kF32:
      return 4;
    case ValueType::kU64:
    case ValueType::kI64:
    case ValueType::kF64:
    case ValueType::kString:
      return 8;
    case ValueType::kArray:
      return 12;
  }
  return 1;
}

Value read_scalar(Cursor& in, ValueType type, const std::string& field) {
  Value v;
  v.type = type;
  switch (type) {
    case ValueType::kU8:
      v.uint = in.scalar<uint8_t>(field);
      break;
    case ValueType::kU16:
      v.uint = in.scalar<uint16_t>(field);
      break;
    case ValueType::kU32:
      v.uint = in.scalar<uint32_t>(field);
      break;
    case ValueType::kU64:
      v.uint = in.scalar<uint64_t>(field);
      break;
    case ValueType::kI8:
      v.sint = in.scalar<int8_t>(field);
      break;
    case ValueType::kI16:
      v.sint = in.scalar<int16_t>(field);
      break;
    case ValueType::kI32:
      v.sint = in.scalar<int32_t>(field);
      break;
    case ValueType::kI64:
      v.sint = in.scalar<int64_t>(field);
      break;
    case ValueType::kF32:
      v.real = in.scalar<float>(field);
      break;
    case ValueType::kF64:
      v.real = in.scalar<double>(field);
      break;
    case ValueType::kBool: {
      const uint8_t b = in.scalar<uint8_t>(field);
      if (b > 1) in.fail(str(field, ": bool byte ", int(b), " is neither 0 nor 1"));
      v.uint = b;
      break;
    }
    case ValueType::kString:
      v.text = in.string(field);
      break;
    case ValueType::kArray:
      in.fail(str(field, ": nested array"));
  }
  return v;
}

Value read_value(Cursor& in, const std::string& key, std::string_view what) {
  const uint32_t raw = in.scalar<uint32_t>(str("type of key \"", key, "\""));
  if (!known_value_type(raw)) in.fail(str("key \"", key, "\": unknown value type ", raw));
  const auto type = static_cast<ValueType>(raw);
  if (type != ValueType::kArray) return read_scalar(in, type, str("key \"", key, "\""));
  const uint32_t raw_element = in.scalar<uint32_t>(str("element type of key \"", key, "\""));
  if (!known_value_type(raw_element))
    in.fail(str("key \"", key, "\": unknown array element type ", raw_element));
  const auto element = static_cast<ValueType>(raw_element);
  LR_CHECK(element != ValueType::kArray, Unsupported, what, ": key \"", key,
           "\": an array of arrays (lowrank reads flat arrays only)");
  const uint64_t n = in.count(str("length of array \"", key, "\""), min_value_bytes(element));
  std::vector<Value> items;
  items.reserve(n);
  for (uint64_t i = 0; i < n; ++i)
    items.push_back(read_scalar(in, element, str("key \"", key, "\"[", i, "]")));
  return Value::array(element, std::move(items));
}

bool known_tensor_type(uint32_t t) {
  return t == 0 || t == 1 || t == 2 || t == 8 || t == 30;
}

uint64_t pad_to(uint64_t n, uint64_t alignment) {
  return (n + alignment - 1) / alignment * alignment;
}

bool is_power_of_two(uint64_t n) {
  return n != 0 && (n & (n - 1)) == 0;
}

// The alignment a metadata list asks for.
uint64_t alignment_of(const Metadata& metadata, std::string_view what, bool reading) {
  for (const auto& [key, value] : metadata) {
    if (key != "general.alignment") continue;
    const bool ok = value.type == ValueType::kU32 && is_power_of_two(value.uint);
    if (!ok) {
      const std::string message = str(what, ": general.alignment must be a power-of-two u32, got ",
                                      value_type_name(value.type), " ", value.uint);
      if (reading) throw Corruption(message);
      throw InvalidArgument(message);
    }
    return value.uint;
  }
  return kDefaultAlignment;
}

// ---- writing ----

void put_bytes(std::string& out, const void* p, std::size_t n) {
  out.append(static_cast<const char*>(p), n);
}
template <typename T>
void put(std::string& out, T v) {
  put_bytes(out, &v, sizeof(T));
}
void put_string(std::string& out, std::string_view s) {
  put<uint64_t>(out, s.size());
  out.append(s);
}

void put_scalar(std::string& out, const Value& v) {
  switch (v.type) {
    case ValueType::kU8:
      put<uint8_t>(out, static_cast<uint8_t>(v.uint));
      break;
    case ValueType::kU16:
      put<uint16_t>(out, static_cast<uint16_t>(v.uint));
      break;
    case ValueType::kU32:
      put<uint32_t>(out, static_cast<uint32_t>(v.uint));
      break;
    case ValueType::kU64:
      put<uint64_t>(out, v.uint);
      break;
    case ValueType::kI8:
      put<int8_t>(out, static_cast<int8_t>(v.sint));
      break;
    case ValueType::kI16:
      put<int16_t>(out, static_cast<int16_t>(v.sint));
      break;
    case ValueType::kI32:
      put<int32_t>(out, static_cast<int32_t>(v.sint));
      break;
    case ValueType::kI64:
      put<int64_t>(out, v.sint);
      break;
    case ValueType::kF32:
      put<float>(out, static_cast<float>(v.real));
      break;
    case ValueType::kF64:
      put<double>(out, v.real);
      break;
    case ValueType::kBool:
      put<uint8_t>(out, v.uint ? 1 : 0);
      break;
    case ValueType::kString:
      put_string(out, v.text);
      break;
    case ValueType::kArray:
      throw InternalError("gguf: put_scalar of an array");
  }
}

void put_value(std::string& out, const Value& v, std::string_view what, const std::string& key) {
  put<uint32_t>(out, static_cast<uint32_t>(v.type));
  if (v.type != ValueType::kArray) return put_scalar(out, v);
  LR_CHECK(v.element_type != ValueType::kArray, InvalidArgument, what, ": key \"", key, "\": nested array");
  put<uint32_t>(out, static_cast<uint32_t>(v.element_type));
  put<uint64_t>(out, v.items.size());
  for (const Value& item : v.items) {
    LR_CHECK(item.type == v.element_type, InvalidArgument, what, ": key \"", key, "\": a ",
             value_type_name(item.type), " item in an array of ", value_type_name(v.element_type));
    put_scalar(out, item);
  }
}

}  // namespace

std::string_view value_type_name(ValueType type) {
  switch (type) {
    case ValueType::kU8:
      return "u8";
    case ValueType::kI8:
      return "i8";
    case ValueType::kU16:
      return "u16";
    case ValueType::kI16:
      return "i16";
    case ValueType::kU32:
      return "u32";
    case ValueType::kI32:
      return "i32";
    case ValueType::kF32:
      return "f32";
    case ValueType::kBool:
      return "bool";
    case ValueType::kString:
      return "string";
    case ValueType::kArray:
      return "array";
    case ValueType::kU64:
      return "u64";
    case ValueType::kI64:
      return "i64";
    case ValueType::kF64:
      return "f64";
  }
  return "?";
}

namespace {
Value make(ValueType type) {
  Value v;
  v.type = type;
  return v;
}
Value make_uint(ValueType type, uint64_t x) {
  Value v = make(type);
  v.uint = x;
  return v;
}
}  // namespace

Value Value::u8(uint8_t v) {
  return make_uint(ValueType::kU8, v);
}
Value Value::u32(uint32_t v) {
  return make_uint(ValueType::kU32, v);
}
Value Value::u64(uint64_t v) {
  return make_uint(ValueType::kU64, v);
}
Value Value::boolean(bool v) {
  return make_uint(ValueType::kBool, v ? 1 : 0);
}
Value Value::i32(int32_t v) {
  Value out = make(ValueType::kI32);
  out.sint = v;
  return out;
}
// The value as a float32 holds it, so that a written and re-read value compares equal.
Value Value::f32(float v) {
  Value out = make(ValueType::kF32);
  out.real = v;
  return out;
}
Value Value::f64(double v) {
  Value out = make(ValueType::kF64);
  out.real = v;
  return out;
}
Value Value::string(std::string v) {
  Value out = make(ValueType::kString);
  out.text = std::move(v);
  return out;
}
Value Value::array(ValueType element_type, std::vector<Value> items) {
  Value out = make(ValueType::kArray);
  out.element_type = element_type;
  out.items = std::move(items);
  return out;
}
Value Value::strings(const std::vector<std::string>& items) {
  std::vector<Value> v;
  v.reserve(items.size());
  for (const std::string& s : items) v.push_back(Value::string(s));
  return array(ValueType::kString, std::move(v));
}
Value Value::i32s(const std::vector<int32_t>& items) {
  std::vector<Value> v;
  v.reserve(items.size());
  for (int32_t x : items) v.push_back(Value::i32(x));
  return array(ValueType::kI32, std::move(v));
}

uint64_t Value::as_uint(std::string_view what) const {
  switch (type) {
    case ValueType::kU8:
    case ValueType::kU16:
    case ValueType::kU32:
    case ValueType::kU64:
      return uint;
    case ValueType::kI8:
    case ValueType::kI16:
    case ValueType::kI32:
    case ValueType::kI64:
      LR_CHECK(sint >= 0, InvalidArgument, what, ": expected a non-negative integer, got ", sint);
      return static_cast<uint64_t>(sint);
    default:
      throw InvalidArgument(str(what, ": expected an integer, got a ", value_type_name(type)));
  }
}

int64_t Value::as_int(std::string_view what) const {
  switch (type) {
    case ValueType::kI8:
    case ValueType::kI16:
    case ValueType::kI32:
    case ValueType::kI64:
      return sint;
    case ValueType::kU8:
    case ValueType::kU16:
    case ValueType::kU32:
    case ValueType::kU64:
      LR_CHECK(uint <= static_cast<uint64_t>(std::numeric_limits<int64_t>::max()), InvalidArgument, what,
               ": ", uint, " does not fit in an i64");
      return static_cast<int64_t>(uint);
    default:
      throw InvalidArgument(str(what, ": expected an integer, got a ", value_type_name(type)));
  }
}

double Value::as_real(std::string_view what) const {
  LR_CHECK(type == ValueType::kF32 || type == ValueType::kF64, InvalidArgument, what,
           ": expected a float, got a ", value_type_name(type));
  return real;
}

const std::string& Value::as_string(std::string_view what) const {
  LR_CHECK(type == ValueType::kString, InvalidArgument, what, ": expected a string, got a ",
           value_type_name(type));
  return text;
}

std::string_view tensor_type_name(TensorType type) {
  switch (type) {
    case TensorType::kF32:
      return "F32";
    case TensorType::kF16:
      return "F16";
    case TensorType::kQ4_0:
      return "Q4_0";
    case TensorType::kQ8_0:
      return "Q8_0";
    case TensorType::kBF16:
      return "BF16";
  }
  return "?";
}

TensorType tensor_type_from_name(std::string_view name, std::string_view what) {
  std::string lower(name);
  std::transform(lower.begin(), lower.end(), lower.begin(), [](unsigned char c) { return std::tolower(c); });
  if (lower == "f32") return TensorType::kF32;
  if (lower == "f16") return TensorType::kF16;
  if (lower == "bf16") return TensorType::kBF16;
  if (lower == "q8_0") return TensorType::kQ8_0;
  if (lower == "q4_0") return TensorType::kQ4_0;
  throw InvalidArgument(
      str(what, ": unknown GGUF tensor type \"", name, "\" (expected f32, f16, bf16, q8_0 or q4_0)"));
}

uint64_t block_size(TensorType type) {
  return type == TensorType::kQ8_0 || type == TensorType::kQ4_0 ? 32 : 1;
}

uint64_t type_size(TensorType type) {
  switch (type) {
    case TensorType::kF32:
      return 4;
    case TensorType::kF16:
    case TensorType::kBF16:
      return 2;
    case TensorType::kQ8_0:
      return 2 + 32;
    case TensorType::kQ4_0:
      return 2 + 16;
  }
  return 0;
}

uint64_t TensorInfo::element_count() const {
  uint64_t n = 1;
  for (uint64_t d : dims) n *= d;
  return n;
}

uint64_t TensorInfo::byte_count() const {
  return element_count() / block_size(type) * type_size(type);
}

const Value* Header::find(std::string_view key) const {
  for (const auto& [k, v] : metadata)
    if (k == key) return &v;
  return nullptr;
}

Header parse(std::span<const std::byte> file, std::string_view what) {
  Cursor in(file, what);
  Header h;
  const uint32_t magic = in.scalar<uint32_t>("magic");
  LR_CHECK(magic == kMagic, Corruption, what, ": not a GGUF file (magic 0x", std::hex, magic,
           ", expected \"GGUF\")");
  h.version = in.scalar<uint32_t>("version");
  LR_CHECK(h.version == 2 || h.version == 3, Unsupported, what, ": GGUF version ", h.version,
           " (lowrank reads versions 2 and 3; a byte-swapped number means a big-endian file)");
  // A tensor info takes at least 8 (name) + 4 + 4 + 8 bytes, a key/value 8 + 4 + 1.
  const uint64_t tensor_count = in.scalar<uint64_t>("tensor_count");
  const uint64_t kv_count = in.count("kv_count", 13);
  LR_CHECK(tensor_count <= in.remaining() / 24, Corruption, what, ": tensor_count = ", tensor_count,
           " does not fit in the ", in.remaining(), " bytes left of the file");

  std::set<std::string, std::less<>> keys;
  h.metadata.reserve(kv_count);
  for (uint64_t i = 0; i < kv_count; ++i) {
    std::string key = in.string(str("key ", i));
    LR_CHECK(keys.insert(key).second, Corruption, what, ": duplicate key \"", key, "\"");
    Value v = read_value(in, key, what);
    h.metadata.emplace_back(std::move(key), std::move(v));
  }
  h.alignment = alignment_of(h.metadata, what, /*reading=*/true);

  std::set<std::string, std::less<>> names;
  h.tensors.reserve(tensor_count);
  for (uint64_t i = 0; i < tensor_count; ++i) {
    TensorInfo t;
    t.name = in.string(str("name of tensor ", i));
    LR_CHECK(names.insert(t.name).second, Corruption, what, ": duplicate tensor \"", t.name, "\"");
    const std::string field = str("tensor \"", t.name, "\"");
    const uint32_t n_dims = in.scalar<uint32_t>(field + " n_dims");
    LR_CHECK(n_dims >= 1 && n_dims <= kMaxDims, Corruption, what, ": ", field, " has ", n_dims,
             " dimensions (1 to ", kMaxDims, " allowed)");
    uint64_t elements = 1;
    for (uint32_t d = 0; d < n_dims; ++d) {
      const uint64_t ne = in.scalar<uint64_t>(str(field, " ne[", d, "]"));
      // ggml holds ne as int64 and refuses a total above INT64_MAX.
      LR_CHECK(ne <= static_cast<uint64_t>(std::numeric_limits<int64_t>::max()) &&
                   (ne == 0 || elements <= static_cast<uint64_t>(std::numeric_limits<int64_t>::max()) / ne),
               Corruption, what, ": ", field, " element count overflows at ne[", d, "] = ", ne);
      elements *= ne;
      t.dims.push_back(ne);
    }
    const uint32_t type = in.scalar<uint32_t>(field + " type");
    LR_CHECK(known_tensor_type(type), Unsupported, what, ": ", field, " has ggml type ", type,
             " (lowrank reads F32, F16, BF16, Q8_0 and Q4_0)");
    t.type = static_cast<TensorType>(type);
    LR_CHECK(t.dims[0] % block_size(t.type) == 0, Corruption, what, ": ", field, " row length ", t.dims[0],
             " is not a multiple of the ", tensor_type_name(t.type), " block size ", block_size(t.type));
    t.offset = in.scalar<uint64_t>(field + " offset");
    h.tensors.push_back(std::move(t));
  }

  h.data_start = pad_to(in.position(), h.alignment);
  LR_CHECK(h.data_start <= file.size(), Corruption, what, ": the data section would start at byte ",
           h.data_start, ", past the end of the file (", file.size(), " bytes)");
  const uint64_t data_size = file.size() - h.data_start;
  uint64_t expected = 0;  // where the next tensor must start: ggml's gguf.cpp requires this layout
  for (const TensorInfo& t : h.tensors) {
    LR_CHECK(t.offset == expected, Corruption, what, ": tensor \"", t.name, "\" at offset ", t.offset,
             ", expected ", expected, " (tensors follow each other, each aligned to ", h.alignment, ")");
    const uint64_t n = t.byte_count();  // element_count <= INT64_MAX and type_size <= 34 / 32: no overflow
    LR_CHECK(n <= data_size && t.offset <= data_size - n, Corruption, what, ": tensor \"", t.name, "\" (", n,
             " bytes at offset ", t.offset, ") runs past the end of the data section (", data_size,
             " bytes)");
    expected = pad_to(t.offset + n, h.alignment);
  }
  return h;
}

std::span<const std::byte> tensor_bytes(std::span<const std::byte> file, const Header& header,
                                        const TensorInfo& info) {
  return file.subspan(header.data_start + info.offset, info.byte_count());
}

Layout plan_layout(const Metadata& metadata, std::vector<TensorInfo> tensors, std::string_view what) {
  Layout layout;
  layout.alignment = alignment_of(metadata, what, /*reading=*/false);
  std::string& out = layout.prefix;
  put<uint32_t>(out, kMagic);
  put<uint32_t>(out, kVersion);
  put<uint64_t>(out, tensors.size());
  put<uint64_t>(out, metadata.size());
  std::set<std::string, std::less<>> keys;
  for (const auto& [key, value] : metadata) {
    LR_CHECK(keys.insert(key).second, InvalidArgument, what, ": duplicate key \"", key, "\"");
    put_string(out, key);
    put_value(out, value, what, key);
  }
  std::set<std::string, std::less<>> names;
  uint64_t offset = 0;
  for (TensorInfo& t : tensors) {
    LR_CHECK(!t.name.empty() && t.name.size() <= kMaxNameBytes, InvalidArgument, what, ": tensor name \"",
             t.name, "\" must have 1 to ", kMaxNameBytes, " bytes (llama.cpp's limit)");
    LR_CHECK(names.insert(t.name).second, InvalidArgument, what, ": duplicate tensor \"", t.name, "\"");
    LR_CHECK(!t.dims.empty() && t.dims.size() <= kMaxDims, InvalidArgument, what, ": tensor \"", t.name,
             "\" has ", t.dims.size(), " dimensions (1 to ", kMaxDims, " allowed)");
    LR_CHECK(t.dims[0] % block_size(t.type) == 0, InvalidArgument, what, ": tensor \"", t.name,
             "\": ", tensor_type_name(t.type), " needs rows of a multiple of ", block_size(t.type),
             " elements, its rows have ", t.dims[0]);
    put_string(out, t.name);
    put<uint32_t>(out, static_cast<uint32_t>(t.dims.size()));
    for (uint64_t d : t.dims) put<uint64_t>(out, d);
    put<uint32_t>(out, static_cast<uint32_t>(t.type));
    put<uint64_t>(out, offset);
    t.offset = offset;
    offset = pad_to(offset + t.byte_count(), layout.alignment);
  }
  out.resize(pad_to(out.size(), layout.alignment), '\0');
  layout.tensors = std::move(tensors);
  return layout;
}

void write_file(const std::filesystem::path& path, const Metadata& metadata, std::vector<TensorInfo> tensors,
                const std::function<std::vector<std::byte>(std::size_t)>& tensor_data) {
  const Layout layout = plan_layout(metadata, std::move(tensors), path.string());
  AtomicFile file(path);
  file.write(layout.prefix);
  const std::vector<std::byte> zeros(layout.alignment);
  for (std::size_t i = 0; i < layout.tensors.size(); ++i) {
    const TensorInfo& t = layout.tensors[i];
    const std::vector<std::byte> bytes = tensor_data(i);
    LR_CHECK(bytes.size() == t.byte_count(), InternalError, path.string(), ": tensor \"", t.name, "\" has ",
             bytes.size(), " bytes, its header says ", t.byte_count());
    file.write(bytes);
    const uint64_t end = t.offset + bytes.size();
    file.write(std::span(zeros).first(pad_to(end, layout.alignment) - end));
  }
  file.commit();
}

// ---- element encodings ----

uint16_t f32_to_f16(float value) {
  const uint32_t x = std::bit_cast<uint32_t>(value);
  const auto sign = static_cast<uint16_t>((x >> 16) & 0x8000u);
  const uint32_t a = x & 0x7fffffffu;
  if (a >= 0x7f800000u) {  // inf, or NaN keeping its top payload bits (numpy's npy_floatbits_to_halfbits)
    if (a == 0x7f800000u) return sign | 0x7c00u;
    uint16_t nan = static_cast<uint16_t>(0x7c00u + ((a & 0x7fffffu) >> 13));
    if (nan == 0x7c00u) ++nan;
    return sign | nan;
  }
  const uint32_t e = a >> 23;
  if (e < 113) {  // below 2^-14: a half subnormal (or zero), value / 2^-24 rounded to nearest even
    if (e < 102) return sign;  // below 2^-25: rounds to zero
    const uint32_t m = (a & 0x7fffffu) | 0x800000u;
    const uint32_t shift = 126 - e;  // 14..24
    uint32_t q = m >> shift;
    const uint32_t rem = m & ((1u << shift) - 1), half = 1u << (shift - 1);
    if (rem > half || (rem == half && (q & 1u))) ++q;
    return sign | static_cast<uint16_t>(q);
  }
  if (e > 142) return sign | 0x7c00u;  // 2^16 and above: overflow
  uint32_t h = ((e - 112) << 10) | ((a & 0x7fffffu) >> 13);
  const uint32_t rem = a & 0x1fffu;
  if (rem > 0x1000u || (rem == 0x1000u && (h & 1u))) ++h;  // a carry may reach the exponent (or inf): right
  return sign | static_cast<uint16_t>(h);
}

float f16_to_f32(uint16_t bits) {
  const uint32_t sign = static_cast<uint32_t>(bits & 0x8000u) << 16;
  const uint32_t e = (bits >> 10) & 0x1fu, m = bits & 0x3ffu;
  if (e == 0) {
    const float v = std::ldexp(static_cast<float>(m), -24);
    return sign ? -v : v;
  }
  if (e == 31) return std::bit_cast<float>(sign | 0x7f800000u | (m << 13));
  return std::bit_cast<float>(sign | ((e + 112) << 23) | (m << 13));
}

uint16_t f32_to_bf16(float value) {
  uint32_t n = std::bit_cast<uint32_t>(value);
  if ((n & 0x7fffffffu) > 0x7f800000u) n = (n & 0xffff0000u) | (64u << 16);  // quiet NaN, as gguf-py
  return static_cast<uint16_t>((static_cast<uint64_t>(n) + (0x7fffu + ((n >> 16) & 1u))) >> 16);
}

float bf16_to_f32(uint16_t bits) {
  return std::bit_cast<float>(static_cast<uint32_t>(bits) << 16);
}

std::vector<std::byte> encode(std::span<const float> values, uint64_t row_length, TensorType type,
                              std::string_view what) {
  const uint64_t qk = block_size(type);
  LR_CHECK(row_length > 0 && row_length % qk == 0 && values.size() % row_length == 0, InvalidArgument, what,
           ": ", tensor_type_name(type), " needs rows of a multiple of ", qk,
           " elements; this tensor's rows have ", row_length);
  std::vector<std::byte> out(values.size() / qk * type_size(type));
  std::byte* o = out.data();
  auto put16 = [&](uint16_t v) {
    std::memcpy(o, &v, 2);
    o += 2;
  };
  switch (type) {
    case TensorType::kF32:
      std::memcpy(out.data(), values.data(), out.size());
      break;
    case TensorType::kF16:
      for (float x : values) put16(f32_to_f16(x));
      break;
    case TensorType::kBF16:
      for (float x : values) put16(f32_to_bf16(x));
      break;
    case TensorType::kQ8_0:
      for (std::size_t b = 0; b < values.size(); b += 32) {
        const float* x = values.data() + b;
        float amax = 0.0f;
        for (int j = 0; j < 32; ++j) amax = std::max(amax, std::fabs(x[j]));
        const float d = amax / 127.0f;
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        put16(f32_to_f16(d));
        for (int j = 0; j < 32; ++j)
          *o++ = static_cast<std::byte>(static_cast<int8_t>(std::roundf(x[j] * id)));
      }
      break;
    case TensorType::kQ4_0:
      for (std::size_t b = 0; b < values.size(); b += 32) {
        const float* x = values.data() + b;
        float amax = 0.0f, max = 0.0f;  // the element of largest magnitude, the first on ties
        for (int j = 0; j < 32; ++j)
          if (amax < std::fabs(x[j])) {
            amax = std::fabs(x[j]);
            max = x[j];
          }
        const float d = max / -8.0f;
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        put16(f32_to_f16(d));
        for (int j = 0; j < 16; ++j) {
          const float x0 = x[j] * id, x1 = x[16 + j] * id;
          const auto q0 = static_cast<uint8_t>(std::min<int>(15, static_cast<int8_t>(x0 + 8.5f)));
          const auto q1 = static_cast<uint8_t>(std::min<int>(15, static_cast<int8_t>(x1 + 8.5f)));
          *o++ = static_cast<std::byte>(q0 | (q1 << 4));
        }
      }
      break;
  }
  return out;
}

std::vector<float> decode(std::span<const std::byte> bytes, uint64_t element_count, TensorType type,
                          std::string_view what) {
  const uint64_t qk = block_size(type);
  LR_CHECK(element_count % qk == 0 && bytes.size() == element_count / qk * type_size(type), Corruption, what,
           ": ", bytes.size(), " bytes do not hold ", element_count, " ", tensor_type_name(type),
           " elements");
  std::vector<float> out(element_count);
  const std::byte* p = bytes.data();
  auto get16 = [&] {
    uint16_t v;
    std::memcpy(&v, p, 2);
    p += 2;
    return v;
  };
  switch (type) {
    case TensorType::kF32:
      std::memcpy(out.data(), bytes.data(), bytes.size());
      break;
    case TensorType::kF16:
      for (float& x : out) x = f16_to_f32(get16());
      break;
    case TensorType::kBF16:
      for (float& x : out) x = bf16_to_f32(get16());
      break;
    case TensorType::kQ8_0:
      for (uint64_t b = 0; b < element_count; b += 32) {
        const float d = f16_to_f32(get16());
        for (int j = 0; j < 32; ++j) out[b + j] = d * static_cast<float>(static_cast<int8_t>(*p++));
      }
      break;
    case TensorType::kQ4_0:
      for (uint64_t b = 0; b < element_count; b += 32) {
        const float d = f16_to_f32(get16());
        for (int j = 0; j < 16; ++j) {
          const auto q = static_cast<uint8_t>(*p++);
          out[b + j] = d * static_cast<float>((q & 0x0f) - 8);
          out[b + 16 + j] = d * static_cast<float>((q >> 4) - 8);
        }
      }
      break;
  }
  return out;
}

}  // namespace lowrank::gguf
