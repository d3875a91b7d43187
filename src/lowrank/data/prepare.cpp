// prepare_dataset (prepare.h): corpus -> tokenizer -> token dataset directory, atomically.
#include "lowrank/data/prepare.h"

#include <unistd.h>

#include <bit>
#include <chrono>
#include <cmath>
#include <random>

#include "lowrank/core/error.h"
#include "lowrank/core/file.h"
#include "lowrank/core/json.h"
#include "lowrank/core/log.h"
#include "lowrank/core/progress.h"
#include "lowrank/core/random.h"
#include "lowrank/data/corpus.h"
#include "lowrank/data/tokenizer.h"

namespace lowrank::data {

namespace fs = std::filesystem;

namespace {

static_assert(std::endian::native == std::endian::little,
              "token files are written in host (little) endianness");

struct Split {
  std::vector<uint32_t> tokens;
  std::vector<int64_t> starts;
};

template <typename T>
void write_array(const fs::path& path, const std::vector<T>& values) {
  AtomicFile file(path);
  file.write(std::as_bytes(std::span<const T>(values)));
  file.commit();
}

void write_tokens(const fs::path& path, const std::vector<uint32_t>& tokens, bool narrow) {
  if (!narrow) {
    write_array(path, tokens);
    return;
  }
  std::vector<uint16_t> narrowed(tokens.begin(), tokens.end());
  write_array(path, narrowed);
}

}  // namespace

bool in_validation(int64_t index, uint64_t seed, double fraction) {
  if (fraction <= 0) return false;
  const uint64_t h = splitmix64(splitmix64(seed) ^ static_cast<uint64_t>(index));
  const double u = unit_interval(h);
  return u < fraction;
}

PrepareSummary prepare_dataset(const PrepareOptions& options) {
  LR_CHECK(std::isfinite(options.validation_fraction) && options.validation_fraction >= 0 &&
               options.validation_fraction < 1,
           InvalidArgument, "--validation-fraction must be in [0, 1), got ", options.validation_fraction);
  LR_CHECK(!options.out.empty(), InvalidArgument, "--out DIR is required");
  LR_CHECK(!options.tokenizer.empty(), InvalidArgument, "--tokenizer FILE is required");
  fs::path out = fs::absolute(options.out).lexically_normal();
  if (out.filename().empty()) out = out.parent_path();
  LR_CHECK(!fs::exists(out), InvalidArgument, out.string(),
           " already exists; give a new directory (the dataset is never written over another)");
  StagedDirectory staged(out);  // checks the parent before the long work
  const fs::path& temp = staged.path();

  const Tokenizer tokenizer = Tokenizer::load(options.tokenizer);
  const int64_t vocab_size = tokenizer.vocab_size();
  LR_CHECK(vocab_size > 0 && vocab_size <= (int64_t{1} << 32), InvalidArgument, options.tokenizer.string(),
           ": vocabulary size ", vocab_size, " does not fit the token file format");
  const bool narrow = vocab_size <= 65535;
  const int32_t eos_id = tokenizer.eos_id().value_or(-1);

  const Corpus corpus = read_corpus(options.corpus, options.max_documents);

  Split splits[2];  // train, validation
  ProgressBar bar(static_cast<int64_t>(corpus.documents.size()), "tokenize " + corpus.name);
  for (std::size_t k = 0; k < corpus.documents.size(); ++k) {
    const Document& doc = corpus.documents[k];
    Split& split = splits[in_validation(static_cast<int64_t>(k), options.seed, options.validation_fraction)];
    split.starts.push_back(static_cast<int64_t>(split.tokens.size()));
    std::vector<int32_t> ids;
    try {
      ids = tokenizer.encode(doc.text);
    } catch (const Error& e) {
      throw InvalidArgument(str("corpus ", corpus.name, ", document ", k, " (", doc.source, "): ", e.what()));
    }
    split.tokens.insert(split.tokens.end(), ids.begin(), ids.end());
    if (eos_id >= 0) split.tokens.push_back(static_cast<uint32_t>(eos_id));
    bar.advance();
  }
  bar.finish();
  LR_CHECK(!splits[0].starts.empty(), InvalidArgument, "corpus ", corpus.name, ": all ",
           corpus.documents.size(), " documents fell in the validation split; lower --validation-fraction");

  // Build next to the target (same file system), then rename into place.

  const char* names[2] = {"train", "validation"};
  for (int s = 0; s < 2; ++s) {
    write_tokens(temp / str(names[s], ".bin"), splits[s].tokens, narrow);
    write_array(temp / str(names[s], ".docs.bin"), splits[s].starts);
  }
  tokenizer.save(temp / "tokenizer.json");

  PrepareSummary summary;
  TokenDatasetInfo& info = summary.info;
  info.corpus = corpus.name;
  info.tokenizer = options.tokenizer.string();
  info.vocab_size = vocab_size;
  info.eos_id = eos_id;
  info.train_tokens = static_cast<int64_t>(splits[0].tokens.size());
  info.validation_tokens = static_cast<int64_t>(splits[1].tokens.size());
  info.train_documents = static_cast<int64_t>(splits[0].starts.size());
  info.validation_documents = static_cast<int64_t>(splits[1].starts.size());
  summary.dtype = narrow ? "uint16" : "uint32";
  summary.unit = corpus.unit;
  summary.corpus_bytes = corpus.bytes;
  summary.skipped_documents = corpus.skipped;

  OrderedJson meta;
  meta["format"] = "lowrank.tokens";
  meta["version"] = 1;
  meta["corpus"] = info.corpus;
  meta["unit"] = corpus.unit;
  meta["tokenizer"] = info.tokenizer;
  meta["vocab_size"] = vocab_size;
  meta["dtype"] = summary.dtype;
  meta["documents"] = {{"train", info.train_documents}, {"validation", info.validation_documents}};
  meta["tokens"] = {{"train", info.train_tokens}, {"validation", info.validation_tokens}};
  meta["validation_fraction"] = options.validation_fraction;
  meta["seed"] = options.seed;
  meta["eos_id"] = eos_id;
  meta["corpus_bytes"] = corpus.bytes;
  write_json_file(temp / "dataset.json", meta);

  staged.commit();
  return summary;
}

TokenDataset cached_dataset(const PrepareOptions& options, std::string_view who) {
  if (!fs::exists(options.out / "dataset.json")) {
    log::info(who, ": tokenizing ", options.corpus, " into ", options.out.string());
    prepare_dataset(options);
  }
  return TokenDataset::open(options.out);
}

}  // namespace lowrank::data
