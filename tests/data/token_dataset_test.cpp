// prepare_dataset + TokenDataset: the round trip back to the documents' text, the split, the
// validation of a dataset directory on open, and that a failure leaves nothing behind.
#include "lowrank/data/token_dataset.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>

#include "lowrank/core/error.h"
#include "lowrank/core/file.h"
#include "lowrank/core/json.h"
#include "lowrank/data/corpus.h"
#include "lowrank/data/prepare.h"
#include "lowrank/data/tokenizer.h"
#include "tests/testing.h"

namespace lowrank::data {
namespace {

namespace fs = std::filesystem;
using testing::error_of;
using testing::fixture;
using testing::TempDir;
using testing::write_text_file;

const fs::path kTokenizer = fixture("hf/bpe-gpt2style/tokenizer.json");

// A corpus of n paragraphs "Document k says hello."
fs::path write_corpus(const TempDir& dir, int n) {
  std::string text;
  for (int k = 0; k < n; ++k) text += "Document " + std::to_string(k) + " says hello, world!\n\n";
  write_text_file(dir / "corpus.txt", text);
  return dir / "corpus.txt";
}

PrepareOptions options_for(const fs::path& corpus, const fs::path& out) {
  PrepareOptions options;
  options.corpus = corpus.string();
  options.tokenizer = kTokenizer;
  options.out = out;
  return options;
}

// The tokens of document d of a split, without its trailing eos.
std::vector<int32_t> document_tokens(const TokenDataset& dataset, std::string_view split, std::size_t d) {
  const auto starts = dataset.document_starts(split);
  const int64_t end = d + 1 < starts.size() ? starts[d + 1] : dataset.size(split);
  at::Tensor t = dataset.slice(split, starts[d], end - starts[d]);
  std::vector<int32_t> ids(t.data_ptr<int64_t>(), t.data_ptr<int64_t>() + t.numel());
  EXPECT_FALSE(ids.empty());
  EXPECT_EQ(ids.back(), dataset.info().eos_id);
  ids.pop_back();
  return ids;
}

TEST(TokenDatasetTest, PrepareAndOpenRoundTripToTheDocumentText) {
  TempDir dir;
  const fs::path corpus_path = write_corpus(dir, 40);
  PrepareOptions options = options_for(corpus_path, dir / "ds");
  options.validation_fraction = 0.25;
  const PrepareSummary summary = prepare_dataset(options);
  EXPECT_EQ(summary.dtype, "uint16");
  EXPECT_EQ(summary.unit, "paragraph");

  const TokenDataset dataset = TokenDataset::open(dir / "ds");
  const Tokenizer tokenizer = Tokenizer::load(kTokenizer);
  const TokenDatasetInfo& info = dataset.info();
  EXPECT_EQ(info.vocab_size, tokenizer.vocab_size());
  EXPECT_EQ(info.eos_id, tokenizer.eos_id().value());
  EXPECT_EQ(info.train_documents + info.validation_documents, 40);
  EXPECT_EQ(info.train_documents, summary.info.train_documents);
  EXPECT_EQ(info.train_tokens, dataset.size("train"));
  EXPECT_GT(info.validation_documents, 0);
  EXPECT_EQ(fs::file_size(dir / "ds/train.bin"), static_cast<uintmax_t>(2 * info.train_tokens));
  EXPECT_TRUE(fs::exists(dir / "ds/tokenizer.json"));

  // Every document decodes back to its text, in corpus order within each split.
  const Corpus corpus = read_corpus(corpus_path.string());
  std::size_t next[2] = {0, 0};
  for (std::size_t k = 0; k < corpus.documents.size(); ++k) {
    const int s = in_validation(static_cast<int64_t>(k), options.seed, options.validation_fraction);
    const std::string_view split = s ? "validation" : "train";
    const auto ids = document_tokens(dataset, split, next[s]++);
    EXPECT_EQ(tokenizer.decode(ids), corpus.documents[k].text) << "document " << k;
  }
  EXPECT_EQ(next[0], dataset.document_starts("train").size());
  EXPECT_EQ(next[1], dataset.document_starts("validation").size());

  const Json meta = read_json_file(dir / "ds/dataset.json");
  EXPECT_EQ(meta["format"], "lowrank.tokens");
  EXPECT_EQ(meta["dtype"], "uint16");
  EXPECT_EQ(meta["documents"]["validation"], info.validation_documents);
}

TEST(TokenDatasetTest, SplitIsDeterministicSeededAndNearTheFraction) {
  int64_t hits = 0, agree = 0;
  const int64_t n = 20000;
  for (int64_t k = 0; k < n; ++k) {
    EXPECT_EQ(in_validation(k, 7, 0.1), in_validation(k, 7, 0.1));
    hits += in_validation(k, 7, 0.1);
    agree += in_validation(k, 7, 0.1) == in_validation(k, 8, 0.1);
  }
  EXPECT_NEAR(static_cast<double>(hits) / n, 0.1, 0.01);
  EXPECT_LT(agree, n - 500);  // another seed gives another split
  // Spread out: both halves of the corpus get validation documents.
  int64_t first_half = 0;
  for (int64_t k = 0; k < n / 2; ++k) first_half += in_validation(k, 7, 0.1);
  EXPECT_NEAR(static_cast<double>(first_half) / hits, 0.5, 0.05);
  for (int64_t k = 0; k < 100; ++k) EXPECT_FALSE(in_validation(k, 7, 0.0));

  TempDir dir;
  const fs::path corpus = write_corpus(dir, 30);
  PrepareOptions a = options_for(corpus, dir / "a"), b = options_for(corpus, dir / "b");
  a.validation_fraction = b.validation_fraction = 0.3;
  prepare_dataset(a);
  prepare_dataset(b);
  for (const char* file : {"train.bin", "validation.bin", "train.docs.bin", "validation.docs.bin"}) {
    EXPECT_EQ(read_text_file(dir / "a" / file), read_text_file(dir / "b" / file)) << file;
  }
}

TEST(TokenDatasetTest, BadInputsGiveClearErrorsAndLeaveNothingBehind) {
  TempDir dir;
  const fs::path corpus = write_corpus(dir, 5);
  auto leftovers = [&] {
    int n = 0;
    for (const auto& entry : fs::directory_iterator(dir.path()))
      n += entry.path().filename().string().starts_with(".ds.tmp") || entry.path().filename() == "ds";
    return n;
  };

  PrepareOptions bad_fraction = options_for(corpus, dir / "ds");
  bad_fraction.validation_fraction = 1.0;
  EXPECT_NE(error_of([&] { prepare_dataset(bad_fraction); }).find("--validation-fraction"),
            std::string::npos);

  PrepareOptions unknown = options_for(dir / "nope", dir / "ds");
  EXPECT_NE(error_of([&] { prepare_dataset(unknown); }).find("neither a known corpus"), std::string::npos);

  PrepareOptions no_tokenizer = options_for(corpus, dir / "ds");
  no_tokenizer.tokenizer = dir / "missing.json";
  EXPECT_THROW(prepare_dataset(no_tokenizer), NotFound);

  // Invalid UTF-8 in a file corpus is skipped; a corpus of only such documents is empty.
  write_text_file(dir / "bad.txt", "caf\xE9\n");
  EXPECT_NE(
      error_of([&] { prepare_dataset(options_for(dir / "bad.txt", dir / "ds")); }).find("holds no documents"),
      std::string::npos);
  EXPECT_EQ(leftovers(), 0);

  fs::create_directory(dir / "ds");
  EXPECT_NE(error_of([&] { prepare_dataset(options_for(corpus, dir / "ds")); }).find("already exists"),
            std::string::npos);
  fs::remove(dir / "ds");

  // A failure while writing (a read-only parent) leaves neither the target nor a temp dir.
  if (::geteuid() != 0) {
    fs::create_directory(dir / "ro");
    fs::permissions(dir / "ro", fs::perms::owner_read | fs::perms::owner_exec);
    EXPECT_ANY_THROW(prepare_dataset(options_for(corpus, dir / "ro/ds")));
    EXPECT_TRUE(fs::is_empty(dir / "ro"));
    fs::permissions(dir / "ro", fs::perms::owner_all);
  }
  EXPECT_EQ(leftovers(), 0);
}

class OpenCorruptTest : public ::testing::Test {
 protected:
  void SetUp() override {
    PrepareOptions options = options_for(write_corpus(dir_, 20), dir_ / "ds");
    options.validation_fraction = 0.2;
    prepare_dataset(options);
  }
  std::string open_error() {
    return error_of([&] { TokenDataset::open(dir_ / "ds"); });
  }
  TempDir dir_;
};

TEST_F(OpenCorruptTest, TruncatedTokenFileNamesTheFile) {
  const fs::path path = dir_ / "ds/train.bin";
  fs::resize_file(path, fs::file_size(path) - 1);
  const std::string message = open_error();
  EXPECT_NE(message.find("train.bin"), std::string::npos) << message;
  EXPECT_NE(message.find("multiple"), std::string::npos) << message;
  fs::resize_file(path, fs::file_size(path) - 1);
  EXPECT_NE(open_error().find("dataset.json says"), std::string::npos);
}

TEST_F(OpenCorruptTest, IdOutsideTheVocabularyNamesTheFile) {
  const fs::path path = dir_ / "ds/validation.bin";
  std::string bytes = read_text_file(path);
  ASSERT_GE(bytes.size(), 2u);
  bytes[0] = bytes[1] = '\xFF';  // 65535 >= vocab_size 512
  write_text_file(path, bytes);
  const std::string message = open_error();
  EXPECT_NE(message.find("validation.bin"), std::string::npos) << message;
  EXPECT_NE(message.find("outside the vocabulary"), std::string::npos) << message;
  EXPECT_THROW(TokenDataset::open(dir_ / "ds"), Corruption);
}

TEST_F(OpenCorruptTest, NonMonotoneDocumentOffsetsNameTheFile) {
  const fs::path path = dir_ / "ds/train.docs.bin";
  std::string bytes = read_text_file(path);
  ASSERT_GE(bytes.size(), 16u);
  std::swap_ranges(bytes.begin() + 8, bytes.begin() + 16, bytes.end() - 8);  // second <-> last
  write_text_file(path, bytes);
  const std::string message = open_error();
  EXPECT_NE(message.find("train.docs.bin"), std::string::npos) << message;
}

TEST_F(OpenCorruptTest, MissingFilesAndBadMetadata) {
  fs::remove(dir_ / "ds/validation.docs.bin");
  EXPECT_NE(open_error().find("validation.docs.bin: missing"), std::string::npos);
  write_text_file(dir_ / "ds/dataset.json", "{\"format\": \"other\"}");
  EXPECT_NE(open_error().find("lowrank.tokens"), std::string::npos);
  write_text_file(dir_ / "ds/dataset.json", "not json");
  EXPECT_THROW(TokenDataset::open(dir_ / "ds"), Corruption);
  EXPECT_THROW(TokenDataset::open(dir_ / "nothing"), NotFound);
}

TEST_F(OpenCorruptTest, SliceAndSplitNamesAreChecked) {
  const TokenDataset dataset = TokenDataset::open(dir_ / "ds");
  EXPECT_THROW(dataset.size("test"), InvalidArgument);
  EXPECT_THROW(dataset.slice("train", dataset.size("train") - 1, 2), InvalidArgument);
  EXPECT_EQ(dataset.slice("train", dataset.size("train"), 0).numel(), 0);
  EXPECT_EQ(dataset.slice("train", 0, 3).scalar_type(), at::kLong);
}

// The CLI: `lowrank data prepare --json` and its error exit code.
TEST(DataCliTest, PrepareWritesADatasetAndAJsonSummary) {
  TempDir dir;
  const fs::path corpus = write_corpus(dir, 12);
  const std::string base = testing::lowrank_binary().string() + " data prepare --tokenizer " +
                           kTokenizer.string() + " --corpus " + corpus.string();
  auto r =
      testing::run_command(base + " --out " + (dir / "ds").string() + " --validation-fraction 0.2 --json");
  ASSERT_EQ(r.exit_code, 0) << r.out;
  const Json out = parse_json(r.out, "stdout");
  EXPECT_EQ(out["dtype"], "uint16");
  EXPECT_EQ(out["documents"]["train"].get<int64_t>() + out["documents"]["validation"].get<int64_t>(), 12);
  EXPECT_EQ(TokenDataset::open(dir / "ds").info().train_tokens, out["tokens"]["train"].get<int64_t>());

  r = testing::run_command(base + " --out " + (dir / "ds").string());
  EXPECT_EQ(r.exit_code, 1) << r.out;
  EXPECT_NE(r.out.find("already exists"), std::string::npos) << r.out;
  r = testing::run_command(testing::lowrank_binary().string() +
                           " data prepare --corpus nonesuch --tokenizer " + kTokenizer.string() + " --out " +
                           (dir / "x").string());
  EXPECT_EQ(r.exit_code, 1) << r.out;
  EXPECT_NE(r.out.find("bible, gcide, fortunes, cpp-headers"), std::string::npos) << r.out;
}

}  // namespace
}  // namespace lowrank::data
