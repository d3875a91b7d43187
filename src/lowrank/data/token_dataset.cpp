// TokenDataset (token_dataset.h): opens and validates a prepared dataset directory.
#include "lowrank/data/token_dataset.h"

#include <cstring>

#include "lowrank/core/error.h"
#include "lowrank/core/file.h"
#include "lowrank/core/json.h"

namespace lowrank::data {

namespace fs = std::filesystem;

struct TokenDataset::Impl {
  fs::path dir;
  TokenDatasetInfo info;
  int width = 2;  // bytes per token
  MappedFile tokens[2];
  std::vector<int64_t> starts[2];  // copied: small, and aligned for the span

  int index(std::string_view split) const {
    if (split == "train") return 0;
    if (split == "validation") return 1;
    throw InvalidArgument(str(dir.string(), ": no split \"", split, "\" (expected train or validation)"));
  }
  int64_t size(int s) const { return static_cast<int64_t>(tokens[s].size()) / width; }
  uint32_t at(int s, int64_t k) const {
    const std::byte* p = tokens[s].bytes().data() + k * width;
    if (width == 2) {
      uint16_t v;
      std::memcpy(&v, p, 2);
      return v;
    }
    uint32_t v;
    std::memcpy(&v, p, 4);
    return v;
  }
};

TokenDataset TokenDataset::open(const fs::path& dir) {
  LR_CHECK(fs::is_directory(dir), NotFound, dir.string(), ": no such dataset directory");
  auto impl = std::make_shared<Impl>();
  impl->dir = dir;
  const fs::path meta_path = dir / "dataset.json";
  LR_CHECK(fs::exists(meta_path), NotFound, meta_path.string(),
           ": missing (not a `lowrank data prepare` dataset)");
  Json meta;
  try {
    meta = read_json_file(meta_path);
  } catch (const Error& e) {
    throw Corruption(e.what());
  }
  const std::string what = meta_path.string();
  auto get = [&](const Json& obj, std::string_view key) -> const Json& {
    LR_CHECK(obj.is_object() && obj.contains(key), Corruption, what, ": missing \"", key, "\"");
    return obj[std::string(key)];
  };
  auto get_int = [&](const Json& obj, std::string_view key) {
    const Json& v = get(obj, key);
    LR_CHECK(v.is_number_integer(), Corruption, what, ": \"", key, "\" is not an integer");
    return v.get<int64_t>();
  };
  LR_CHECK(get(meta, "format") == "lowrank.tokens", Corruption, what, ": format is not \"lowrank.tokens\"");
  LR_CHECK(get_int(meta, "version") == 1, Corruption, what, ": unsupported version ", meta["version"].dump());
  TokenDatasetInfo& info = impl->info;
  const Json& corpus = get(meta, "corpus");
  const Json& tokenizer = get(meta, "tokenizer");
  LR_CHECK(corpus.is_string() && tokenizer.is_string(), Corruption, what,
           ": \"corpus\" and \"tokenizer\" must be strings");
  info.corpus = corpus.get<std::string>();
  info.tokenizer = tokenizer.get<std::string>();
  info.vocab_size = get_int(meta, "vocab_size");
  const int64_t eos = get_int(meta, "eos_id");
  const Json& dtype = get(meta, "dtype");
  LR_CHECK(dtype == "uint16" || dtype == "uint32", Corruption, what, ": dtype ", dtype.dump(),
           " is not \"uint16\" or \"uint32\"");
  impl->width = dtype == "uint16" ? 2 : 4;
  LR_CHECK(info.vocab_size > 0 && info.vocab_size <= (impl->width == 2 ? 65536 : (int64_t{1} << 32)),
           Corruption, what, ": vocab_size ", info.vocab_size, " does not fit dtype ",
           dtype.get<std::string>());
  LR_CHECK(eos >= -1 && eos < info.vocab_size, Corruption, what, ": eos_id ", eos,
           " is outside the vocabulary");
  info.eos_id = static_cast<int32_t>(eos);
  const Json& documents = get(meta, "documents");
  const Json& token_counts = get(meta, "tokens");

  const char* names[2] = {"train", "validation"};
  for (int s = 0; s < 2; ++s) {
    const fs::path token_path = dir / str(names[s], ".bin");
    const fs::path docs_path = dir / str(names[s], ".docs.bin");
    LR_CHECK(fs::exists(token_path), NotFound, token_path.string(), ": missing");
    LR_CHECK(fs::exists(docs_path), NotFound, docs_path.string(), ": missing");
    impl->tokens[s] = MappedFile::open(token_path);
    const MappedFile& tokens = impl->tokens[s];
    LR_CHECK(tokens.size() % impl->width == 0, Corruption, token_path.string(), ": ", tokens.size(),
             " bytes is not a multiple of the ", impl->width, "-byte dtype");
    const int64_t n = impl->size(s);
    const int64_t want_tokens = get_int(token_counts, names[s]);
    LR_CHECK(n == want_tokens, Corruption, token_path.string(), ": holds ", n, " tokens, dataset.json says ",
             want_tokens);
    // Ids are checked on open (one pass over the map), so slice() never returns an id >= vocab_size.
    for (int64_t k = 0; k < n; ++k) {
      const uint32_t id = impl->at(s, k);
      LR_CHECK(id < info.vocab_size, Corruption, token_path.string(), ": token ", k, " is id ", id,
               ", outside the vocabulary of ", info.vocab_size);
    }

    const MappedFile docs = MappedFile::open(docs_path);
    LR_CHECK(docs.size() % sizeof(int64_t) == 0, Corruption, docs_path.string(), ": ", docs.size(),
             " bytes is not a multiple of 8 (int64 offsets)");
    std::vector<int64_t>& starts = impl->starts[s];
    starts.resize(docs.size() / sizeof(int64_t));
    if (!starts.empty()) std::memcpy(starts.data(), docs.bytes().data(), docs.size());
    const int64_t want_docs = get_int(documents, names[s]);
    LR_CHECK(static_cast<int64_t>(starts.size()) == want_docs, Corruption, docs_path.string(), ": holds ",
             starts.size(), " document offsets, dataset.json says ", want_docs);
    for (std::size_t k = 0; k < starts.size(); ++k) {
      LR_CHECK(starts[k] >= 0 && starts[k] <= n && (k == 0 ? starts[k] == 0 : starts[k] >= starts[k - 1]),
               Corruption, docs_path.string(), ": document ", k, " starts at ", starts[k],
               k == 0 ? " (expected 0)" : str(" after ", starts[k - 1]), " in a split of ", n, " tokens");
    }
    LR_CHECK(!starts.empty() || n == 0, Corruption, docs_path.string(), ": no documents for ", n, " tokens");
  }
  info.train_tokens = impl->size(0);
  info.validation_tokens = impl->size(1);
  info.train_documents = static_cast<int64_t>(impl->starts[0].size());
  info.validation_documents = static_cast<int64_t>(impl->starts[1].size());

  TokenDataset dataset;
  dataset.impl_ = std::move(impl);
  return dataset;
}

const TokenDatasetInfo& TokenDataset::info() const {
  return impl_->info;
}

const fs::path& TokenDataset::dir() const {
  return impl_->dir;
}

int64_t TokenDataset::size(std::string_view split) const {
  return impl_->size(impl_->index(split));
}

at::Tensor TokenDataset::slice(std::string_view split, int64_t begin, int64_t length) const {
  const int s = impl_->index(split);
  const int64_t n = impl_->size(s);
  LR_CHECK(begin >= 0 && length >= 0 && begin <= n && length <= n - begin, InvalidArgument,
           impl_->dir.string(), ": slice [", begin, ", ", begin + length, ") is outside the ", split,
           " split of ", n, " tokens");
  at::Tensor out = at::empty({length}, at::kLong);
  int64_t* data = out.data_ptr<int64_t>();
  for (int64_t k = 0; k < length; ++k) data[k] = impl_->at(s, begin + k);
  return out;
}

std::span<const int64_t> TokenDataset::document_starts(std::string_view split) const {
  return impl_->starts[impl_->index(split)];
}

}  // namespace lowrank::data
