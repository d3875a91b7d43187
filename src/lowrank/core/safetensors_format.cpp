// safetensors byte format: header parsing + validation and the writer's header layout, without
// libtorch. Spec: https://github.com/huggingface/safetensors (README "Format" and the Rust crate's
// `SafeTensors::read_metadata` / `Metadata::validate` / `prepare`); see safetensors_format.h.
#include "lowrank/core/safetensors_format.h"

#include <algorithm>
#include <array>
#include <filesystem>
#include <limits>
#include <numeric>
#include <unordered_set>
#include <utility>

#include <nlohmann/json.hpp>

#include "lowrank/core/error.h"

namespace lowrank {
namespace {

using OJson = nlohmann::ordered_json;

struct DtypeEntry {
  Dtype dtype;
  std::string_view name;
  std::size_t size;
  // Position in the Rust crate's `Dtype` enum among lowrank's dtypes; the writer sorts by it,
  // descending (the crate derives Ord from the declaration order).
  int rust_rank;
};

constexpr std::array<DtypeEntry, 10> kDtypes = {{
    {Dtype::kF64, "F64", 8, 8},
    {Dtype::kF32, "F32", 4, 7},
    {Dtype::kF16, "F16", 2, 4},
    {Dtype::kBF16, "BF16", 2, 5},
    {Dtype::kI64, "I64", 8, 9},
    {Dtype::kI32, "I32", 4, 6},
    {Dtype::kI16, "I16", 2, 3},
    {Dtype::kI8, "I8", 1, 2},
    {Dtype::kU8, "U8", 1, 1},
    {Dtype::kBool, "BOOL", 1, 0},
}};

const DtypeEntry& entry(Dtype dtype) {
  for (const auto& e : kDtypes)
    if (e.dtype == dtype) return e;
  throw InternalError(str("invalid Dtype value ", static_cast<int>(dtype)));
}

// A string for messages: JSON-quoted (control characters escaped) and cut at 100 bytes, since a
// hostile header can hold names of any length.
std::string quote(std::string_view s) {
  constexpr std::size_t kMax = 100;
  std::string cut(s.substr(0, kMax));
  std::string out = OJson(cut).dump(-1, ' ', false, OJson::error_handler_t::replace);
  if (s.size() > kMax) out += "...";
  return out;
}

template <typename... Args>
[[noreturn]] void fail(std::string_view what, const Args&... parts) {
  throw Corruption(str(what, ": not a valid safetensors file: ", parts...));
}

uint64_t read_le64(std::span<const std::byte> bytes) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | static_cast<uint64_t>(bytes[static_cast<std::size_t>(i)]);
  return v;
}

// Parses `text` as one JSON value, rejecting duplicate object keys (nlohmann keeps the last one
// silently) and, when max_depth >= 0, containers nested deeper than max_depth. Errors are
// Corruption naming `what`, worded for a safetensors header or for a plain JSON file.
OJson parse_strict_json(std::string_view text, int max_depth, std::string_view what,
                        bool safetensors_header) {
  std::vector<std::unordered_set<std::string>> keys;  // one set per open object
  std::string root_key;                               // the current top-level key
  auto fail_here = [&](const std::string& problem) -> void {
    if (safetensors_header) fail(what, problem);
    throw Corruption(str(what, ": ", problem));
  };
  auto callback = [&](int depth, OJson::parse_event_t event, OJson& parsed) -> bool {
    switch (event) {
      case OJson::parse_event_t::object_start:
      case OJson::parse_event_t::array_start:
        if (max_depth >= 0 && depth >= max_depth)
          fail_here(str("the JSON nests deeper than ", max_depth, " levels"));
        if (event == OJson::parse_event_t::object_start) keys.emplace_back();
        break;
      case OJson::parse_event_t::object_end:
        if (!keys.empty()) keys.pop_back();
        break;
      case OJson::parse_event_t::key: {
        const auto& key = parsed.get_ref<const std::string&>();
        if (depth == 1) root_key = key;
        if (!keys.empty() && !keys.back().insert(key).second) {
          if (depth == 1 && safetensors_header) fail_here(str("duplicate tensor name ", quote(key)));
          if (depth == 1) fail_here(str("duplicate key ", quote(key)));
          fail_here(str("duplicate key ", quote(key), " in ", quote(root_key)));
        }
        break;
      }
      default:
        break;
    }
    return true;
  };
  try {
    return OJson::parse(text.begin(), text.end(), callback, /*allow_exceptions=*/true,
                        /*ignore_comments=*/false);
  } catch (const nlohmann::json::exception& e) {
    fail_here(str("invalid JSON: ", e.what()));
  }
  throw InternalError("unreachable");
}

// A JSON value as a non-negative integer, or false.
bool as_u64(const OJson& v, uint64_t& out) {
  if (!v.is_number_unsigned()) return false;
  out = v.get<uint64_t>();
  return true;
}

TensorInfo parse_entry(const std::string& name, const OJson& value, std::string_view what) {
  const std::string tensor = quote(name);
  if (!value.is_object())
    fail(what, "tensor ", tensor, ": entry is a ", value.type_name(), ", not an object");
  for (const char* key : {"dtype", "shape", "data_offsets"})
    if (!value.contains(key)) fail(what, "tensor ", tensor, ": missing key \"", key, "\"");
  for (const auto& [key, unused] : value.items())
    if (key != "dtype" && key != "shape" && key != "data_offsets")
      fail(what, "tensor ", tensor, ": unknown key ", quote(key));

  TensorInfo info;
  info.name = name;
  const OJson& dtype = value.at("dtype");
  if (!dtype.is_string()) fail(what, "tensor ", tensor, ": dtype is a ", dtype.type_name(), ", not a string");
  info.dtype = dtype_from_name(dtype.get_ref<const std::string&>(), str(what, ": tensor ", tensor));

  const OJson& shape = value.at("shape");
  if (!shape.is_array()) fail(what, "tensor ", tensor, ": shape is a ", shape.type_name(), ", not a list");
  // numel must be countable in int64, and so must the product of the non-zero dimensions (the
  // largest stride of the tensor), else [0, 2^40, 2^40] would overflow at::empty's strides.
  constexpr uint64_t kMax = static_cast<uint64_t>(std::numeric_limits<int64_t>::max());
  uint64_t nonzero_product = 1;
  bool has_zero = false;
  for (const OJson& d : shape) {
    uint64_t dim = 0;
    if (!as_u64(d, dim) || dim > kMax)
      fail(what, "tensor ", tensor, ": shape ", quote(shape.dump()),
           " is not a list of non-negative integers");
    info.shape.push_back(static_cast<int64_t>(dim));
    if (dim == 0) {
      has_zero = true;
    } else {
      if (nonzero_product > kMax / dim)
        fail(what, "tensor ", tensor, ": shape ", quote(shape.dump()),
             " overflows (more than 2^63 elements)");
      nonzero_product *= dim;
    }
  }
  const uint64_t numel = has_zero ? 0 : nonzero_product;
  const uint64_t item = entry(info.dtype).size;
  if (numel > std::numeric_limits<uint64_t>::max() / item)
    fail(what, "tensor ", tensor, ": shape ", quote(shape.dump()), " overflows the byte size");

  const OJson& offsets = value.at("data_offsets");
  if (!offsets.is_array() || offsets.size() != 2 || !as_u64(offsets[0], info.begin) ||
      !as_u64(offsets[1], info.end))
    fail(what, "tensor ", tensor, ": data_offsets ", quote(offsets.dump()),
         " is not a pair of non-negative integers");
  if (info.begin > info.end)
    fail(what, "tensor ", tensor, ": data_offsets [", info.begin, ", ", info.end, "] begin after end");
  if (info.end - info.begin != numel * item)
    fail(what, "tensor ", tensor, ": data_offsets [", info.begin, ", ", info.end, "] hold ",
         info.end - info.begin, " bytes but ", dtype_name(info.dtype), " shape ", quote(shape.dump()),
         " needs ", numel * item);
  return info;
}

}  // namespace

std::string_view dtype_name(Dtype dtype) {
  return entry(dtype).name;
}

std::size_t dtype_size(Dtype dtype) {
  return entry(dtype).size;
}

Dtype dtype_from_name(std::string_view name, std::string_view what) {
  for (const auto& e : kDtypes)
    if (e.name == name) return e.dtype;
  throw Unsupported(str(what, ": unsupported dtype ", quote(name),
                        " (lowrank reads F64 F32 F16 BF16 I64 I32 I16 I8 U8 BOOL)"));
}

int64_t TensorInfo::numel() const {
  if (std::find(shape.begin(), shape.end(), 0) != shape.end()) return 0;
  int64_t n = 1;
  for (int64_t d : shape) n *= d;  // bounded by parse_header's overflow check
  return n;
}

namespace safetensors {

bool is_valid_utf8(std::string_view text) {
  std::size_t i = 0;
  const std::size_t n = text.size();
  while (i < n) {
    const auto c = static_cast<unsigned char>(text[i]);
    if (c < 0x80) {
      ++i;
      continue;
    }
    std::size_t len = 0;
    uint32_t cp = 0;
    uint32_t min = 0;
    if ((c & 0xE0) == 0xC0) {
      len = 2, cp = c & 0x1F, min = 0x80;
    } else if ((c & 0xF0) == 0xE0) {
      len = 3, cp = c & 0x0F, min = 0x800;
    } else if ((c & 0xF8) == 0xF0) {
      len = 4, cp = c & 0x07, min = 0x10000;
    } else {
      return false;
    }
    if (n - i < len) return false;
    for (std::size_t k = 1; k < len; ++k) {
      const auto cc = static_cast<unsigned char>(text[i + k]);
      if ((cc & 0xC0) != 0x80) return false;
      cp = (cp << 6) | (cc & 0x3F);
    }
    if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return false;
    i += len;
  }
  return true;
}

Header parse_header(std::span<const std::byte> file, std::string_view what) {
  if (file.size() < 8)
    fail(what, "the file is ", file.size(), " bytes, shorter than the 8-byte header length");
  const uint64_t n = read_le64(file.first(8));
  if (n == 0) fail(what, "header length is 0");
  if (n > kMaxHeaderSize) fail(what, "header length ", n, " exceeds the limit of ", kMaxHeaderSize, " bytes");
  if (n > file.size() - 8)
    fail(what, "header length ", n, " runs past the end of the file (", file.size(), " bytes)");

  const std::string_view text(reinterpret_cast<const char*>(file.data()) + 8, static_cast<std::size_t>(n));
  if (text.front() != '{') fail(what, "header does not start with '{'");
  if (!is_valid_utf8(text)) fail(what, "header is not valid UTF-8");
  std::string_view body = text;
  while (!body.empty() && body.back() == ' ') body.remove_suffix(1);
  // The depth limit (an entry's shape is the deepest value: root > entry > list) bounds the
  // parser's work on hostile input and rejects what validation would reject anyway.
  const OJson root = parse_strict_json(body, 3, what, /*safetensors_header=*/true);
  if (!root.is_object()) fail(what, "header is a JSON ", root.type_name(), ", not an object");
  // nlohmann accepts any JSON whitespace after the value; the format pads with spaces only.
  if (body.back() != '}') fail(what, "header is padded with bytes other than spaces (0x20)");

  Header header;
  header.data_start = 8 + n;
  header.buffer_size = file.size() - header.data_start;
  for (const auto& [name, value] : root.items()) {
    if (name == "__metadata__") {
      if (value.is_null()) continue;  // the Rust crate reads null as "no metadata"
      if (!value.is_object()) fail(what, "__metadata__ is a ", value.type_name(), ", not an object");
      for (const auto& [key, v] : value.items()) {
        if (!v.is_string())
          fail(what, "__metadata__ value of ", quote(key), " is a ", v.type_name(), ", not a string");
        header.metadata.emplace(key, v.get<std::string>());
      }
      continue;
    }
    TensorInfo info = parse_entry(name, value, what);
    if (info.end > header.buffer_size)
      fail(what, "tensor ", quote(name), ": data_offsets [", info.begin, ", ", info.end,
           "] run past the end of the byte buffer (", header.buffer_size, " bytes)");
    header.tensors.push_back(std::move(info));
  }

  std::stable_sort(header.tensors.begin(), header.tensors.end(),
                   [](const TensorInfo& a, const TensorInfo& b) {
                     return std::pair(a.begin, a.end) < std::pair(b.begin, b.end);
                   });
  // The tensors must tile [0, buffer_size) exactly, as the Rust crate demands.
  uint64_t expected = 0;
  const TensorInfo* previous = nullptr;
  for (const TensorInfo& t : header.tensors) {
    if (t.begin < expected)
      fail(what, "tensors ", quote(previous->name), " [", previous->begin, ", ", previous->end, ") and ",
           quote(t.name), " [", t.begin, ", ", t.end, ") overlap");
    if (t.begin > expected)
      fail(what, "bytes [", expected, ", ", t.begin, ") of the buffer belong to no tensor (a hole before ",
           quote(t.name), ")");
    expected = t.end;
    previous = &t;
  }
  if (expected != header.buffer_size)
    fail(what, "the tensors end at byte ", expected, " of the buffer but it holds ", header.buffer_size,
         " bytes (trailing bytes)");
  return header;
}

std::span<const std::byte> tensor_bytes(std::span<const std::byte> file, const Header& header,
                                        const TensorInfo& info) {
  LR_CHECK(info.begin <= info.end && info.end <= header.buffer_size && header.data_start <= file.size() &&
               header.buffer_size == file.size() - header.data_start,
           InvalidArgument, "tensor_bytes: tensor ", quote(info.name), " does not belong to this file");
  return file.subspan(static_cast<std::size_t>(header.data_start + info.begin),
                      static_cast<std::size_t>(info.nbytes()));
}

Layout plan_layout(std::span<const TensorInfo> tensors, const std::map<std::string, std::string>& metadata,
                   std::string_view what) {
  for (const auto& [key, value] : metadata)
    LR_CHECK(is_valid_utf8(key) && is_valid_utf8(value), InvalidArgument, what,
             ": metadata key or value is not valid UTF-8: ", quote(key));
  std::unordered_set<std::string_view> seen;
  for (const TensorInfo& t : tensors) {
    LR_CHECK(!t.name.empty(), InvalidArgument, what, ": a tensor has an empty name");
    LR_CHECK(t.name != "__metadata__", InvalidArgument, what,
             ": \"__metadata__\" is reserved, not a tensor name");
    LR_CHECK(is_valid_utf8(t.name), InvalidArgument, what,
             ": tensor name is not valid UTF-8: ", quote(t.name));
    LR_CHECK(seen.insert(t.name).second, InvalidArgument, what, ": duplicate tensor name ", quote(t.name));
  }

  Layout layout;
  layout.order.resize(tensors.size());
  std::iota(layout.order.begin(), layout.order.end(), std::size_t{0});
  std::sort(layout.order.begin(), layout.order.end(), [&](std::size_t a, std::size_t b) {
    const int ra = entry(tensors[a].dtype).rust_rank;
    const int rb = entry(tensors[b].dtype).rust_rank;
    if (ra != rb) return ra > rb;
    return tensors[a].name < tensors[b].name;  // std::string compares bytes as unsigned char
  });

  OJson header = OJson::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  uint64_t offset = 0;
  for (std::size_t i : layout.order) {
    TensorInfo info = tensors[i];
    uint64_t nbytes = dtype_size(info.dtype);
    OJson shape = OJson::array();
    for (int64_t d : info.shape) {
      LR_CHECK(d >= 0, InvalidArgument, what, ": tensor ", quote(info.name), " has a negative dimension ", d);
      const auto dim = static_cast<uint64_t>(d);
      LR_CHECK(dim == 0 || nbytes <= std::numeric_limits<uint64_t>::max() / dim, InvalidArgument, what,
               ": tensor ", quote(info.name), " is too large");
      nbytes *= dim;
      shape.push_back(d);
    }
    LR_CHECK(offset <= std::numeric_limits<uint64_t>::max() - nbytes, InvalidArgument, what,
             ": tensors too large");
    info.begin = offset;
    info.end = offset + nbytes;
    offset = info.end;
    OJson e = OJson::object();
    e["dtype"] = dtype_name(info.dtype);
    e["shape"] = std::move(shape);
    e["data_offsets"] = OJson::array({info.begin, info.end});
    header[info.name] = std::move(e);
    layout.tensors.push_back(std::move(info));
  }

  std::string json = header.dump();  // compact, UTF-8 kept as is (what serde_json writes)
  json.append((8 - json.size() % 8) % 8, ' ');
  layout.prefix.reserve(8 + json.size());
  uint64_t n = json.size();
  for (int i = 0; i < 8; ++i) layout.prefix.push_back(static_cast<char>((n >> (8 * i)) & 0xFF));
  layout.prefix += json;
  return layout;
}

Index parse_index(std::string_view text, std::string_view what) {
  const OJson root = parse_strict_json(text, -1, what, /*safetensors_header=*/false);
  LR_CHECK(root.is_object(), Corruption, what, ": the index is a JSON ", root.type_name(), ", not an object");
  Index index;
  auto map = root.find("weight_map");
  LR_CHECK(map != root.end(), Corruption, what, ": missing key \"weight_map\"");
  LR_CHECK(map->is_object(), Corruption, what, ": \"weight_map\" is a ", map->type_name(), ", not an object");
  for (const auto& [name, file] : map->items()) {
    LR_CHECK(file.is_string(), Corruption, what, ": weight_map entry ", quote(name), " is a ",
             file.type_name(), ", not a file name");
    const std::string& shard = file.get_ref<const std::string&>();
    const std::filesystem::path p(shard);
    bool escapes = shard.empty() || p.is_absolute();
    for (const auto& part : p)
      if (part == "..") escapes = true;
    LR_CHECK(!escapes, Corruption, what, ": weight_map entry ", quote(name), " names shard ", quote(shard),
             ", which is not a relative path inside the checkpoint directory");
    index.weight_map.emplace(name, shard);
  }
  auto meta = root.find("metadata");
  if (meta != root.end() && !meta->is_null()) {
    LR_CHECK(meta->is_object(), Corruption, what, ": \"metadata\" is a ", meta->type_name(),
             ", not an object");
    for (const auto& [key, value] : meta->items())
      index.metadata.emplace(key, value.is_string() ? value.get<std::string>() : value.dump());
  }
  return index;
}

}  // namespace safetensors
}  // namespace lowrank
