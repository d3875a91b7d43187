// Tests of byte-level BPE training (lowrank/data/bpe_trainer.h): the vocabulary and merges
// must equal those Hugging Face `tokenizers`' BpeTrainer learned on the same corpus
// (tests/fixtures/tokenizers/*/tokenizer.json, made by make_fixtures.py), and a trained tokenizer
// must round-trip any text.
#include "lowrank/data/bpe_trainer.h"

#include <gtest/gtest.h>

#include "lowrank/core/error.h"
#include "lowrank/core/file.h"
#include "lowrank/core/json.h"
#include "tests/testing.h"

namespace lowrank::data {
namespace {

using testing::fixture;
using testing::TempDir;

struct TrainCase {
  std::string dir;
  std::string preset;
  int64_t vocab_size;
  std::vector<std::string> specials;
};

class BpeTrainerMatchesTokenizersTest : public ::testing::TestWithParam<TrainCase> {};

TEST_P(BpeTrainerMatchesTokenizersTest, SameVocabularyAndMerges) {
  const TrainCase& c = GetParam();
  BpeTrainer trainer({.vocab_size = c.vocab_size,
                      .min_frequency = 2,
                      .special_tokens = c.specials,
                      .pre_tokenizer = c.preset});
  trainer.feed_file(fixture("tokenizers/corpus.txt"));
  const Json ours = trainer.train_json();
  const Json theirs = read_json_file(fixture("tokenizers/" + c.dir + "/tokenizer.json"));
  EXPECT_EQ(ours["model"]["vocab"], theirs["model"]["vocab"]);
  ASSERT_EQ(ours["model"]["merges"].size(), theirs["model"]["merges"].size());
  for (std::size_t k = 0; k < ours["model"]["merges"].size(); ++k)
    ASSERT_EQ(ours["model"]["merges"][k], theirs["model"]["merges"][k]) << "merge " << k;
  EXPECT_EQ(ours["pre_tokenizer"], theirs["pre_tokenizer"]);
  EXPECT_EQ(ours["model"]["ignore_merges"], theirs["model"]["ignore_merges"]);
  for (std::size_t k = 0; k < c.specials.size(); ++k)
    EXPECT_EQ(ours["added_tokens"][k], theirs["added_tokens"][k]);
}

INSTANTIATE_TEST_SUITE_P(
    Presets, BpeTrainerMatchesTokenizersTest,
    ::testing::Values(
        TrainCase{"gpt2-trained", "gpt2", 600, {"<s>", "</s>", "<pad>"}},
        TrainCase{"llama3-style", "llama3", 700, {"<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>"}},
        TrainCase{"qwen2-style", "qwen2", 700, {"<|endoftext|>", "<|im_start|>", "<|im_end|>"}}),
    [](const auto& info) { return info.param.preset; });

TEST(BpeTrainerTest, FirstMergeIsTheMostFrequentPair) {
  // Words: "ab" x1, "Ġab" x2, "abc" x1 -> (a, b) occurs 4 times.
  const std::vector<std::string> texts{"ab ab ab", "abc"};
  BpeTrainer trainer({.vocab_size = 258});
  for (const auto& t : texts) trainer.feed(t);
  const Json spec = trainer.train_json();
  ASSERT_EQ(spec["model"]["merges"].size(), 2u);
  EXPECT_EQ(spec["model"]["merges"][0], Json::array({"a", "b"}));
  EXPECT_EQ(spec["model"]["merges"][1], Json::array({"\xC4\xA0", "ab"}));  // ("Ġ", "ab"), 2 times
  EXPECT_EQ(trainer.word_counts().at("\xC4\xA0"
                                     "ab"),
            2u);
}

TEST(BpeTrainerTest, TrainedTokenizerRoundTripsAnyText) {
  const std::vector<std::string> texts{"the cat sat on the mat", "the dog ate the cat's hat", "1234 5678"};
  const Tokenizer tok = train_bpe(texts, {.vocab_size = 300, .special_tokens = {"<s>", "</s>"}});
  EXPECT_EQ(tok.token_to_id("<s>"), 0);
  EXPECT_EQ(tok.token_to_id("</s>"), 1);
  EXPECT_TRUE(tok.is_special(0));
  EXPECT_LE(tok.vocab_size(), 300);
  EXPECT_GT(tok.vocab_size(), 258);
  for (const std::string text :
       {"the cat", "unseen words ünïcödé 🙂 你好", "", "  \n\t ", "<s>the</s>"})
    EXPECT_EQ(tok.decode(tok.encode(text)), text);
  const auto ids = tok.encode("<s>the cat</s>");
  EXPECT_EQ(ids.front(), 0);
  EXPECT_EQ(ids.back(), 1);
  EXPECT_EQ(tok.decode(ids, true), "the cat");
  // "the" is frequent enough to be one token with its leading space.
  EXPECT_EQ(tok.encode(" the").size(), 1u);
}

TEST(BpeTrainerTest, StopsAtMinFrequencyAndSmallVocabularies) {
  const std::vector<std::string> texts{"aaa bbb aaa", "aaa"};
  const Tokenizer rare = train_bpe(texts, {.vocab_size = 1000, .min_frequency = 100});
  EXPECT_EQ(rare.vocab_size(), 256);
  const Tokenizer tiny = train_bpe(texts, {.vocab_size = 10, .special_tokens = {"<pad>"}});
  EXPECT_EQ(tiny.vocab_size(), 257);  // the alphabet is always kept
  const Tokenizer some = train_bpe(texts, {.vocab_size = 1000});
  EXPECT_EQ(some.encode("aaa").size(), 1u);
}

TEST(BpeTrainerTest, SavedFileLoadsAndEncodesTheSame) {
  TrainCase c{"", "llama3", 400, {"<|begin_of_text|>"}};
  BpeTrainer trainer({.vocab_size = c.vocab_size, .special_tokens = c.specials, .pre_tokenizer = c.preset});
  trainer.feed_file(fixture("tokenizers/corpus.txt"));
  const Tokenizer tok = trainer.train();
  TempDir tmp;
  tok.save(tmp / "tokenizer.json");
  const Tokenizer loaded = Tokenizer::load(tmp / "tokenizer.json");
  for (const char* text : {"Hello WORLD it'S 123456", "<|begin_of_text|>x", "naïve\n\n  café"})
    EXPECT_EQ(loaded.encode(text), tok.encode(text)) << text;
}

TEST(BpeTrainerTest, RejectsBadOptionsAndInput) {
  EXPECT_THROW(BpeTrainer({.vocab_size = 0}), InvalidArgument);
  EXPECT_THROW(BpeTrainer({.min_frequency = -1}), InvalidArgument);
  EXPECT_THROW(BpeTrainer({.pre_tokenizer = "metaspace"}), InvalidArgument);
  EXPECT_THROW(BpeTrainer({.special_tokens = {"<s>", "<s>"}}), InvalidArgument);
  EXPECT_THROW(BpeTrainer({.special_tokens = {""}}), InvalidArgument);
  BpeTrainer trainer({});
  EXPECT_THROW(trainer.feed("bad \xFF"), InvalidArgument);
  EXPECT_THROW(trainer.feed_file("/nonexistent/corpus.txt"), NotFound);
  TempDir tmp;
  write_file_atomic(tmp / "c.txt", "good line\nbad \xC3 line\n");
  try {
    trainer.feed_file(tmp / "c.txt");
    ADD_FAILURE() << "no error";
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("c.txt:2"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace lowrank::data
