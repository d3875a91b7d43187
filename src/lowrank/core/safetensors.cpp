// safetensors (https://github.com/huggingface/safetensors) with ATen: lazy memory-mapped reading
// into at::Tensor, the atomic writer, and Hugging Face checkpoints (single file or shards + index).
// The byte format itself (header parsing, validation, writer layout) is safetensors_format.cpp.
#include "lowrank/core/safetensors.h"

#include <algorithm>
#include <bit>
#include <cstring>
#include <mutex>
#include <optional>

#include "lowrank/core/error.h"
#include "lowrank/core/file.h"

namespace lowrank {
namespace fs = std::filesystem;

// safetensors stores little-endian bytes; reading and writing are plain copies.
static_assert(std::endian::native == std::endian::little,
              "lowrank's safetensors I/O assumes a little-endian host");

namespace {

std::optional<Dtype> find_dtype(at::ScalarType type) {
  switch (type) {
    case at::kDouble:
      return Dtype::kF64;
    case at::kFloat:
      return Dtype::kF32;
    case at::kHalf:
      return Dtype::kF16;
    case at::kBFloat16:
      return Dtype::kBF16;
    case at::kLong:
      return Dtype::kI64;
    case at::kInt:
      return Dtype::kI32;
    case at::kShort:
      return Dtype::kI16;
    case at::kChar:
      return Dtype::kI8;
    case at::kByte:
      return Dtype::kU8;
    case at::kBool:
      return Dtype::kBool;
    default:
      return std::nullopt;
  }
}

// A BOOL tensor's bytes must be 0 or 1: any other value is not a valid C++/ATen bool.
void check_bool_bytes(std::span<const std::byte> bytes, std::string_view what, const std::string& name,
                      uint64_t first_element) {
  for (std::size_t i = 0; i < bytes.size(); ++i)
    LR_CHECK(static_cast<unsigned char>(bytes[i]) <= 1, Corruption, what, ": tensor \"", name,
             "\": BOOL element ", first_element + i, " has byte value ", static_cast<int>(bytes[i]),
             " (not 0 or 1)");
}

// Stored bytes are converted in chunks of this size: one pass over the file, bounded scratch.
constexpr std::size_t kChunkBytes = std::size_t{1} << 20;

}  // namespace

at::ScalarType to_scalar_type(Dtype dtype) {
  switch (dtype) {
    case Dtype::kF64:
      return at::kDouble;
    case Dtype::kF32:
      return at::kFloat;
    case Dtype::kF16:
      return at::kHalf;
    case Dtype::kBF16:
      return at::kBFloat16;
    case Dtype::kI64:
      return at::kLong;
    case Dtype::kI32:
      return at::kInt;
    case Dtype::kI16:
      return at::kShort;
    case Dtype::kI8:
      return at::kChar;
    case Dtype::kU8:
      return at::kByte;
    case Dtype::kBool:
      return at::kBool;
  }
  throw InternalError(str("invalid Dtype value ", static_cast<int>(dtype)));
}

Dtype from_scalar_type(at::ScalarType type) {
  std::optional<Dtype> dtype = find_dtype(type);
  LR_CHECK(dtype.has_value(), Unsupported, "scalar type ", c10::toString(type),
           " cannot be stored in safetensors by lowrank (F64 F32 F16 BF16 I64 I32 I16 I8 U8 BOOL)");
  return *dtype;
}

// ---------------------------------------------------------------------------------------------
// SafetensorsFile

struct SafetensorsFile::Impl {
  fs::path path;
  std::string what;                 // names the source in messages
  MappedFile mapping;               // when opened from a file
  std::vector<std::byte> owned;     // when made from bytes
  std::span<const std::byte> file;  // the whole file, header included
  safetensors::Header header;
  std::map<std::string, std::size_t, std::less<>> by_name;  // -> index into header.tensors

  void index() {
    header = safetensors::parse_header(file, what);
    for (std::size_t i = 0; i < header.tensors.size(); ++i) by_name.emplace(header.tensors[i].name, i);
  }
  const TensorInfo& require(std::string_view name) const {
    auto it = by_name.find(name);
    LR_CHECK(it != by_name.end(), NotFound, what, ": no tensor \"", name, "\"");
    return header.tensors[it->second];
  }
};

SafetensorsFile SafetensorsFile::open(const fs::path& path) {
  auto impl = std::make_shared<Impl>();
  impl->path = path;
  impl->what = path.string();
  impl->mapping = MappedFile::open(path);
  impl->file = impl->mapping.bytes();
  impl->index();
  SafetensorsFile file;
  file.impl_ = std::move(impl);
  return file;
}

SafetensorsFile SafetensorsFile::from_bytes(std::vector<std::byte> bytes, std::string what) {
  auto impl = std::make_shared<Impl>();
  impl->what = std::move(what);
  impl->owned = std::move(bytes);
  impl->file = impl->owned;
  impl->index();
  SafetensorsFile file;
  file.impl_ = std::move(impl);
  return file;
}

const fs::path& SafetensorsFile::path() const {
  return impl_->path;
}

const std::vector<TensorInfo>& SafetensorsFile::tensors() const {
  return impl_->header.tensors;
}

const TensorInfo* SafetensorsFile::find(std::string_view name) const {
  auto it = impl_->by_name.find(name);
  return it == impl_->by_name.end() ? nullptr : &impl_->header.tensors[it->second];
}

const std::map<std::string, std::string>& SafetensorsFile::metadata() const {
  return impl_->header.metadata;
}

std::span<const std::byte> SafetensorsFile::bytes(const TensorInfo& info) const {
  return safetensors::tensor_bytes(impl_->file, impl_->header, info);
}

at::Tensor SafetensorsFile::load(std::string_view name) const {
  const TensorInfo& info = impl_->require(name);
  std::span<const std::byte> src = bytes(info);
  if (info.dtype == Dtype::kBool) check_bool_bytes(src, impl_->what, info.name, 0);
  at::Tensor out = at::empty(info.shape, at::TensorOptions().dtype(to_scalar_type(info.dtype)));
  // A copy, never a view of the mapping: the data may sit at any alignment (8 + N need not be a
  // multiple of the element size) and the tensor must outlive this file. Copied in chunks whose
  // mapped pages are released as soon as they are copied, so that the stored bytes and the
  // tensor are never both resident in full.
  auto* dst = static_cast<std::byte*>(out.data_ptr());
  for (std::size_t start = 0; start < src.size(); start += kChunkBytes) {
    const std::span<const std::byte> piece = src.subspan(start, std::min(kChunkBytes, src.size() - start));
    std::memcpy(dst + start, piece.data(), piece.size());
    impl_->mapping.release(piece);
  }
  return out;
}

at::Tensor SafetensorsFile::load(std::string_view name, at::ScalarType dtype) const {
  const TensorInfo& info = impl_->require(name);
  LR_CHECK(find_dtype(dtype).has_value(), Unsupported, impl_->what, ": tensor \"", info.name,
           "\": cannot convert to ", c10::toString(dtype));
  const at::ScalarType stored = to_scalar_type(info.dtype);
  if (stored == dtype) return load(name);

  at::Tensor out = at::empty(info.shape, at::TensorOptions().dtype(dtype));
  const int64_t n = info.numel();
  if (n == 0) return out;
  // Copy aligned chunks of the stored bytes into a small staging tensor and convert each into
  // its slice of the output: one pass, no full-size copy of the stored tensor.
  std::span<const std::byte> src = bytes(info);
  const auto item = static_cast<int64_t>(dtype_size(info.dtype));
  const int64_t chunk = std::max<int64_t>(1, static_cast<int64_t>(kChunkBytes) / item);
  at::Tensor staging = at::empty({std::min(chunk, n)}, at::TensorOptions().dtype(stored));
  at::Tensor flat = out.view({-1});
  for (int64_t start = 0; start < n; start += chunk) {
    const int64_t count = std::min(chunk, n - start);
    std::span<const std::byte> piece =
        src.subspan(static_cast<std::size_t>(start * item), static_cast<std::size_t>(count * item));
    if (info.dtype == Dtype::kBool)
      check_bool_bytes(piece, impl_->what, info.name, static_cast<uint64_t>(start));
    std::memcpy(staging.data_ptr(), piece.data(), piece.size());
    impl_->mapping.release(piece);
    flat.narrow(0, start, count).copy_(staging.narrow(0, 0, count));
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Writer

void save_safetensors(const fs::path& path, std::span<const NamedTensor> tensors,
                      const std::map<std::string, std::string>& metadata) {
  const std::string what = path.string();
  std::vector<TensorInfo> infos;
  infos.reserve(tensors.size());
  for (const NamedTensor& nt : tensors) {
    const at::Tensor& t = nt.tensor;
    LR_CHECK(t.defined(), InvalidArgument, what, ": tensor \"", nt.name, "\" is undefined");
    LR_CHECK(t.device().is_cpu(), Unsupported, what, ": tensor \"", nt.name, "\" is on ", t.device().str(),
             "; move it to the CPU before saving");
    LR_CHECK(t.layout() == at::kStrided, Unsupported, what, ": tensor \"", nt.name,
             "\" is not a dense (strided) tensor");
    std::optional<Dtype> dtype = find_dtype(t.scalar_type());
    LR_CHECK(dtype.has_value(), Unsupported, what, ": tensor \"", nt.name, "\" has dtype ",
             c10::toString(t.scalar_type()), ", which safetensors cannot hold in lowrank");
    infos.push_back({nt.name, *dtype, t.sizes().vec(), 0, 0});
  }
  // Everything is validated before the temp file exists, so a bad call leaves no trace.
  const safetensors::Layout layout = safetensors::plan_layout(infos, metadata, what);

  AtomicFile out(path);
  out.write(std::string_view(layout.prefix));
  for (std::size_t k = 0; k < layout.order.size(); ++k) {
    const at::Tensor t = tensors[layout.order[k]].tensor.resolve_conj().resolve_neg().contiguous();
    const std::size_t nbytes = static_cast<std::size_t>(layout.tensors[k].nbytes());
    if (nbytes == 0) continue;
    LR_CHECK(t.nbytes() == nbytes, InternalError, what, ": tensor \"", layout.tensors[k].name, "\" has ",
             t.nbytes(), " bytes, expected ", nbytes);
    out.write(std::span(static_cast<const std::byte*>(t.const_data_ptr()), nbytes));
  }
  out.commit();
}

// ---------------------------------------------------------------------------------------------
// Checkpoint

namespace {

struct Shard {
  fs::path path;
  std::vector<std::string> names;  // from the index (empty for an unsharded checkpoint)
  std::optional<SafetensorsFile> file;
};

constexpr const char* kSingleName = "model.safetensors";
constexpr const char* kIndexName = "model.safetensors.index.json";

}  // namespace

struct Checkpoint::Impl {
  fs::path index_path;        // empty when unsharded
  std::vector<Shard> shards;  // sorted by file name; never resized after open()
  std::map<std::string, std::size_t, std::less<>> shard_of;  // tensor name -> shards index
  std::map<std::string, std::string> index_metadata;

  std::mutex mutex;  // guards Shard::file and `metadata`
  std::optional<std::map<std::string, std::string>> metadata;

  std::string what() const { return (index_path.empty() ? shards.at(0).path : index_path).string(); }

  std::size_t shard_index(std::string_view name) const {
    auto it = shard_of.find(name);
    LR_CHECK(it != shard_of.end(), NotFound, what(), ": no tensor \"", name, "\" in the checkpoint");
    return it->second;
  }

  // Opens shard i on first use and checks it against the index. The reference stays valid for
  // the life of the checkpoint (the file is set once and never replaced).
  const SafetensorsFile& shard(std::size_t i) {
    std::lock_guard lock(mutex);
    Shard& s = shards[i];
    if (s.file) return *s.file;
    SafetensorsFile file = SafetensorsFile::open(s.path);
    if (!index_path.empty()) {
      for (const TensorInfo& t : file.tensors()) {
        auto it = shard_of.find(t.name);
        LR_CHECK(it != shard_of.end(), Corruption, s.path.string(), ": tensor \"", t.name,
                 "\" is not listed in ", index_path.string());
        LR_CHECK(it->second == i, Corruption, "tensor \"", t.name, "\" is in shard ", s.path.string(),
                 " but ", index_path.string(), " places it in ", shards[it->second].path.string(),
                 " (a name in two shards)");
      }
      for (const std::string& name : s.names)
        LR_CHECK(file.contains(name), Corruption, index_path.string(), " lists tensor \"", name, "\" in ",
                 s.path.string(), ", which does not hold it");
    }
    s.file = std::move(file);
    return *s.file;
  }
};

Checkpoint Checkpoint::open(const fs::path& path) {
  fs::path single;
  fs::path index;
  std::error_code ec;
  if (fs::is_directory(path, ec)) {
    // As transformers: a single model.safetensors wins over an index.
    if (fs::exists(path / kSingleName, ec)) {
      single = path / kSingleName;
    } else if (fs::exists(path / kIndexName, ec)) {
      index = path / kIndexName;
    } else {
      throw NotFound(
          str(path.string(), ": neither ", kSingleName, " nor ", kIndexName, " in this directory"));
    }
  } else if (path.extension() == ".json") {
    index = path;
  } else {
    single = path;
  }

  auto impl = std::make_shared<Impl>();
  if (!single.empty()) {
    Shard shard;
    shard.path = single;
    shard.file = SafetensorsFile::open(single);  // nothing to check against: open now
    for (const TensorInfo& t : shard.file->tensors()) impl->shard_of.emplace(t.name, 0);
    impl->shards.push_back(std::move(shard));
  } else {
    impl->index_path = index;
    const safetensors::Index parsed = safetensors::parse_index(read_text_file(index), index.string());
    impl->index_metadata = parsed.metadata;
    std::map<std::string, std::size_t> shard_ids;  // relative shard name -> position (sorted)
    for (const auto& [name, shard] : parsed.weight_map) shard_ids.emplace(shard, 0);
    for (auto& [shard, id] : shard_ids) {
      id = impl->shards.size();
      Shard s;
      s.path = index.parent_path() / shard;
      LR_CHECK(fs::is_regular_file(s.path, ec), Corruption, index.string(), " lists shard \"", shard,
               "\", which does not exist (", s.path.string(), ")");
      impl->shards.push_back(std::move(s));
    }
    for (const auto& [name, shard] : parsed.weight_map) {
      const std::size_t id = shard_ids.at(shard);
      impl->shard_of.emplace(name, id);
      impl->shards[id].names.push_back(name);
    }
  }
  Checkpoint checkpoint;
  checkpoint.impl_ = std::move(impl);
  return checkpoint;
}

std::vector<std::string> Checkpoint::names() const {
  std::vector<std::string> names;
  names.reserve(impl_->shard_of.size());
  for (const auto& [name, unused] : impl_->shard_of) names.push_back(name);
  return names;
}

const TensorInfo& Checkpoint::info(std::string_view name) const {
  const SafetensorsFile& file = impl_->shard(impl_->shard_index(name));
  const TensorInfo* info = file.find(name);
  LR_CHECK(info != nullptr, InternalError, file.path().string(), ": \"", name, "\" vanished");
  return *info;
}

bool Checkpoint::contains(std::string_view name) const {
  return impl_->shard_of.contains(name);
}

at::Tensor Checkpoint::load(std::string_view name) const {
  return impl_->shard(impl_->shard_index(name)).load(name);
}

at::Tensor Checkpoint::load(std::string_view name, at::ScalarType dtype) const {
  return impl_->shard(impl_->shard_index(name)).load(name, dtype);
}

std::vector<fs::path> Checkpoint::files() const {
  std::vector<fs::path> files;
  for (const Shard& s : impl_->shards) files.push_back(s.path);
  return files;
}

const std::map<std::string, std::string>& Checkpoint::metadata() const {
  // Open the first shard outside the lock (shard() takes it).
  std::map<std::string, std::string> merged;
  if (!impl_->shards.empty()) merged = impl_->shard(0).metadata();
  std::lock_guard lock(impl_->mutex);
  if (!impl_->metadata) {
    for (const auto& [key, value] : impl_->index_metadata) merged.insert_or_assign(key, value);
    impl_->metadata = std::move(merged);
  }
  return *impl_->metadata;
}

}  // namespace lowrank
