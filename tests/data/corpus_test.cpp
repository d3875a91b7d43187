// Corpus readers: user files and directories, the strfile and GCIDE parsers, the errors, and a
// smoke test of each named corpus when its Debian package is installed.
#include "lowrank/data/corpus.h"

#include <gtest/gtest.h>

#include <filesystem>

#include "lowrank/core/error.h"
#include "tests/testing.h"

namespace lowrank::data {
namespace {

namespace fs = std::filesystem;
using testing::error_of;
using testing::TempDir;
using testing::write_text_file;

TEST(CorpusTest, DirectoryGivesOneDocumentPerFileSortedAndSkipsBinary) {
  TempDir dir;
  write_text_file(dir / "b.txt", "second file\n");
  write_text_file(dir / "a.txt", "first file\n");
  write_text_file(dir / "sub/c.md", "nested\n");
  write_text_file(dir / "blob.bin", std::string("bin\0ary", 7));
  write_text_file(dir / "latin1.txt", "caf\xE9\n");
  write_text_file(dir / "empty.txt", "\n\n");
  const Corpus corpus = read_corpus(dir.path().string());
  EXPECT_EQ(corpus.unit, "file");
  ASSERT_EQ(corpus.documents.size(), 3u);
  EXPECT_EQ(corpus.documents[0].text, "first file\n");
  EXPECT_EQ(corpus.documents[1].text, "second file\n");
  EXPECT_EQ(corpus.documents[2].text, "nested\n");
  EXPECT_EQ(corpus.skipped, 3);
  EXPECT_EQ(corpus.bytes, 11 + 12 + 7);
}

TEST(CorpusTest, FileGivesOneDocumentPerParagraph) {
  TempDir dir;
  write_text_file(dir / "book.txt", "\n\nOne line\nand two.\n\n\n  \nSecond paragraph.\n\nThird.");
  const Corpus corpus = read_corpus((dir / "book.txt").string());
  EXPECT_EQ(corpus.unit, "paragraph");
  ASSERT_EQ(corpus.documents.size(), 3u);
  EXPECT_EQ(corpus.documents[0].text, "One line\nand two.");
  EXPECT_EQ(corpus.documents[1].text, "Second paragraph.");
  EXPECT_EQ(corpus.documents[2].text, "Third.");
}

TEST(CorpusTest, MaxDocumentsKeepsTheFirst) {
  TempDir dir;
  write_text_file(dir / "book.txt", "a\n\nb\n\nc\n\nd\n");
  const Corpus corpus = read_corpus((dir / "book.txt").string(), 2);
  ASSERT_EQ(corpus.documents.size(), 2u);
  EXPECT_EQ(corpus.documents[1].text, "b");
}

TEST(CorpusTest, SplitsFortunesOnPercentLines) {
  const auto pieces = split_fortunes("First fortune.\n%\n\nSecond\n  -- someone\n%\n%\nThird 50% off\n%\n");
  ASSERT_EQ(pieces.size(), 3u);
  EXPECT_EQ(pieces[0], "First fortune.");
  EXPECT_EQ(pieces[1], "Second\n  -- someone");
  EXPECT_EQ(pieces[2], "Third 50% off");
}

TEST(CorpusTest, CleansGcideMarkup) {
  const std::string entry =
      "Abacus \\Ab\"a*cus\\ (ab), n.; pl. {Abaci}.\n"
      "   1. A table strewn with sand. See {Column}.\n"
      "      [1913 Webster]\n"
      "\n"
      "\n"
      "   2. A calculating frame.\n"
      "      [Webster 1913 Suppl.]\n";
  EXPECT_EQ(
      clean_gcide_entry(entry),
      "Abacus (ab), n.; pl. Abaci.\n1. A table strewn with sand. See Column.\n\n2. A calculating frame.");
}

TEST(CorpusTest, ValidatesUtf8) {
  EXPECT_TRUE(is_valid_utf8("plain"));
  EXPECT_TRUE(is_valid_utf8("caf\xC3\xA9 \xF0\x9F\x98\x80"));
  EXPECT_FALSE(is_valid_utf8("caf\xE9"));
  EXPECT_FALSE(is_valid_utf8("\xC0\xAF"));      // overlong
  EXPECT_FALSE(is_valid_utf8("\xED\xA0\x80"));  // surrogate
  EXPECT_FALSE(is_valid_utf8("\xE2\x82"));      // truncated
}

TEST(CorpusTest, UnknownNameListsTheKnownCorpora) {
  const std::string message = error_of([] { read_corpus("no-such-corpus-xyz"); });
  EXPECT_NE(message.find("no-such-corpus-xyz"), std::string::npos) << message;
  EXPECT_NE(message.find("bible, gcide, fortunes, cpp-headers"), std::string::npos) << message;
  EXPECT_THROW(read_corpus("no-such-corpus-xyz"), InvalidArgument);
}

TEST(CorpusTest, EmptyCorpusIsAnError) {
  TempDir dir;
  EXPECT_THROW(read_corpus(dir.path().string()), InvalidArgument);
  write_text_file(dir / "blank.txt", "\n \n");
  const std::string message = error_of([&] { read_corpus((dir / "blank.txt").string()); });
  EXPECT_NE(message.find("holds no documents"), std::string::npos) << message;
}

// Named corpora: only where the Debian packages are installed (scripts/setup installs them).
struct NamedCorpus {
  const char* name;
  const char* probe;  // a file the package installs
  const char* package;
};

class NamedCorpusTest : public ::testing::TestWithParam<NamedCorpus> {};

TEST_P(NamedCorpusTest, YieldsDocuments) {
  const NamedCorpus& c = GetParam();
  if (!fs::exists(c.probe)) GTEST_SKIP() << c.probe << " missing: apt-get install " << c.package;
  const Corpus corpus = read_corpus(c.name, 50);
  EXPECT_EQ(corpus.documents.size(), 50u);
  for (const auto& doc : corpus.documents) {
    EXPECT_FALSE(doc.text.empty()) << doc.source;
    EXPECT_TRUE(is_valid_utf8(doc.text)) << doc.source;
  }
}

INSTANTIATE_TEST_SUITE_P(
    Debian, NamedCorpusTest,
    ::testing::Values(NamedCorpus{"bible", "/usr/bin/bible", "bible-kjv"},
                      NamedCorpus{"gcide", "/usr/share/dictd/gcide.index", "dict-gcide"},
                      NamedCorpus{"fortunes", "/usr/share/games/fortunes/fortunes", "fortunes-min"},
                      NamedCorpus{"cpp-headers", "/usr/include/c++", "libstdc++-12-dev"}),
    [](const auto& info) {
      std::string name = info.param.name;
      for (char& ch : name)
        if (ch == '-') ch = '_';
      return name;
    });

TEST(CorpusTest, BibleChaptersStartAtGenesis) {
  if (!fs::exists("/usr/bin/bible") && !fs::exists("/usr/games/bible"))
    GTEST_SKIP() << "apt-get install bible-kjv";
  const Corpus corpus = read_corpus("bible", 2);
  ASSERT_EQ(corpus.documents.size(), 2u);
  EXPECT_EQ(corpus.documents[0].source, "Ge1");
  EXPECT_TRUE(corpus.documents[0].text.starts_with("Ge1:1 In the beginning God created"))
      << corpus.documents[0].text;
  EXPECT_EQ(corpus.documents[1].source, "Ge2");
}

}  // namespace
}  // namespace lowrank::data
