// Tests of the byte-level BPE tokenizer (lowrank/data/tokenizer.h) against Hugging Face
// `tokenizers`: the ids, tokens and decoded text it produced for fixture tokenizers
// (tests/fixtures/hf/bpe-gpt2style, tests/fixtures/tokenizers/*, made by make_fixtures.py), the
// pieces of its Split pre-tokenizer, and malformed or unsupported files.
#include "lowrank/data/tokenizer.h"

#include <gtest/gtest.h>

#include <set>
#include <thread>

#include "lowrank/core/error.h"
#include "lowrank/core/file.h"
#include "lowrank/core/json.h"
#include "lowrank/data/tokenizer_internal.h"
#include "tests/testing.h"

namespace lowrank::data {
namespace {

using testing::fixture;
using testing::TempDir;

std::string show(const std::string& text) {
  return Json(text).dump();
}

// ---- Building blocks --------------------------------------------------------------------------

TEST(TokenizerTextTest, ByteLevelAlphabetIsGpt2BytesToUnicode) {
  std::set<std::string> chars;
  for (int b = 0; b < 256; ++b) chars.insert(detail::byte_level_char(static_cast<unsigned char>(b)));
  EXPECT_EQ(chars.size(), 256u);
  EXPECT_EQ(detail::byte_level_char(' '), "\xC4\xA0");   // U+0120 'Ġ'
  EXPECT_EQ(detail::byte_level_char('\n'), "\xC4\x8A");  // U+010A 'Ċ'
  EXPECT_EQ(detail::byte_level_char('a'), "a");
  EXPECT_EQ(detail::byte_level_char(0xAD), "\xC5\x83");  // the soft hyphen is remapped (U+0143)
  std::string all, back;
  for (int b = 0; b < 256; ++b) all += static_cast<char>(b);
  ASSERT_TRUE(detail::from_byte_level(detail::to_byte_level(all), back));
  EXPECT_EQ(back, all);
  EXPECT_FALSE(detail::from_byte_level("a b", back));  // ' ' is not in the alphabet
  EXPECT_EQ(detail::byte_level_alphabet().size(), 256u);
}

TEST(TokenizerTextTest, LossyDecodingReplacesMaximalInvalidSubparts) {
  EXPECT_EQ(detail::utf8_lossy("plain"), "plain");
  EXPECT_EQ(detail::utf8_lossy("\xF0\x9F"), "\xEF\xBF\xBD");  // cut 4-byte
  EXPECT_EQ(detail::utf8_lossy("\xFF"
                               "a"),
            "\xEF\xBF\xBD"
            "a");                                                                         // bad lead
  EXPECT_EQ(detail::utf8_lossy("\xED\xA0\x80"), "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD");  // surrogate
  EXPECT_EQ(detail::utf8_lossy("\xE2\x82\xE2\x82\xAC"), "\xEF\xBF\xBD\xE2\x82\xAC");      // cut, then €
  EXPECT_EQ(detail::find_invalid_utf8("ok\xC3"), 2u);
  EXPECT_EQ(detail::find_invalid_utf8("h\xC3\xA9"), std::string_view::npos);
}

// Oniguruma's \s is Unicode White_Space; PCRE2's also has U+180E, which the rewrite removes.
TEST(TokenizerTextTest, RegexWhiteSpaceMatchesOniguruma) {
  std::string all;
  std::vector<char32_t> cps;
  for (char32_t cp = 1; cp < 0x3100; ++cp) {
    detail::append_utf8(all, cp);
    cps.push_back(cp);
  }
  detail::Regex space(R"(\s)", false, "test");
  std::set<std::size_t> starts;
  for (auto [b, e] : space.find_all(all)) starts.insert(b);
  std::size_t offset = 0;
  for (char32_t cp : cps) {
    EXPECT_EQ(starts.contains(offset), detail::is_white_space(cp)) << "U+" << std::hex << uint32_t(cp);
    std::size_t i = offset;
    detail::next_code_point(all, i);
    offset = i;
  }
  // Inside a negated class too: U+180E is "not space, not letter, not number".
  detail::Regex other(R"([^\s\p{L}\p{N}]+)", false, "test");
  EXPECT_EQ(other.find_all("\xE1\xA0\x8E").size(), 1u);
}

TEST(TokenizerTextTest, NfcMatchesTokenizers) {
  const Json cases = read_json_file(fixture("tokenizers/nfc_cases.json"));
  ASSERT_GT(cases["singles"].size(), 1000u);
  for (const auto& c : cases["singles"]) {
    const auto in = c[0].get<std::string>();
    EXPECT_EQ(detail::nfc(in), c[1].get<std::string>()) << show(in);
  }
  for (const auto& c : cases["strings"]) {
    const auto in = c[0].get<std::string>();
    const auto out = detail::nfc(in);
    EXPECT_EQ(out, c[1].get<std::string>()) << show(in);
    EXPECT_EQ(detail::nfc(out), out) << show(in);
  }
  for (const std::string text : {"", "ascii only", "caf\xC3\xA9 na\xC3\xAFve", "\xE4\xBD\xA0\xE5\xA5\xBD"})
    EXPECT_EQ(detail::nfc(text), text);
}

TEST(TokenizerTextTest, SplitBehaviorsMatchTokenizers) {
  const Json cases = read_json_file(fixture("tokenizers/split_behaviors.json"));
  ASSERT_FALSE(cases.empty());
  const std::map<std::string, std::string> names{{"removed", "Removed"},
                                                 {"isolated", "Isolated"},
                                                 {"merged_with_previous", "MergedWithPrevious"},
                                                 {"merged_with_next", "MergedWithNext"},
                                                 {"contiguous", "Contiguous"}};
  for (const auto& c : cases) {
    detail::Regex regex(c["pattern"].get<std::string>(), false, "test");
    const auto behavior = detail::parse_split_behavior(names.at(c["behavior"].get<std::string>()), "test");
    std::vector<std::string> pieces;
    detail::split_pieces(c["text"].get<std::string>(), regex, behavior, c["invert"].get<bool>(), pieces);
    EXPECT_EQ(pieces, c["pieces"].get<std::vector<std::string>>())
        << c["pattern"] << " " << c["behavior"] << " invert=" << c["invert"] << " on " << c["text"];
  }
}

// ---- Fixtures from `tokenizers` ---------------------------------------------------------------

TEST(TokenizerTest, ReproducesGpt2StyleFixture) {
  const Tokenizer tok = Tokenizer::load(fixture("hf/bpe-gpt2style/tokenizer.json"));
  const Json expected = read_json_file(fixture("hf/bpe-gpt2style/expected.json"));
  ASSERT_EQ(expected.size(), 14u);
  for (const auto& c : expected) {
    const auto text = c["text"].get<std::string>();
    const auto ids = c["ids"].get<std::vector<int32_t>>();
    EXPECT_EQ(tok.encode(text), ids) << show(text);
    EXPECT_EQ(tok.decode(ids), c["decoded"].get<std::string>()) << show(text);
  }
  EXPECT_EQ(tok.vocab_size(), 512);
  EXPECT_EQ(tok.bos_id(), 1);
  EXPECT_EQ(tok.eos_id(), 2);
  EXPECT_EQ(tok.token_to_id("<s>"), 1);
  EXPECT_TRUE(tok.is_special(2));
  EXPECT_FALSE(tok.is_special(42));
  EXPECT_EQ(tok.token_to_id("no such token"), std::nullopt);
}

class TokenizerFixtureTest : public ::testing::TestWithParam<std::string> {};

TEST_P(TokenizerFixtureTest, ReproducesEveryCase) {
  const auto dir = fixture("tokenizers/" + GetParam());
  const Tokenizer tok = Tokenizer::load(dir);  // a directory holding tokenizer.json
  const Json expected = read_json_file(dir / "expected.json");
  ASSERT_GE(expected["cases"].size(), 30u);
  for (const auto& c : expected["cases"]) {
    const auto text = c["text"].get<std::string>();
    const auto ids = c["ids"].get<std::vector<int32_t>>();
    EXPECT_EQ(tok.encode(text), ids) << show(text);
    EXPECT_EQ(tok.encode(text, true), c["ids_special"].get<std::vector<int32_t>>()) << show(text);
    EXPECT_EQ(tok.decode(ids), c["decoded"].get<std::string>()) << show(text);
    EXPECT_EQ(tok.decode(ids, true), c["decoded_skip_special"].get<std::string>()) << show(text);
    const auto tokens = c["tokens"].get<std::vector<std::string>>();
    for (std::size_t k = 0; k < ids.size() && k < tokens.size(); ++k)
      if (!tok.is_special(ids[k]) && tokens[k].find(' ') == std::string::npos) {
        EXPECT_EQ(tok.id_to_token(ids[k]), tokens[k]) << show(text) << " token " << k;
      }
  }
  for (const auto& c : expected["decode_cases"]) {
    const auto ids = c["ids"].get<std::vector<int32_t>>();
    EXPECT_EQ(tok.decode(ids), c["decoded"].get<std::string>()) << c["ids"];
    EXPECT_EQ(tok.decode(ids, true), c["decoded_skip_special"].get<std::string>()) << c["ids"];
  }
}

TEST_P(TokenizerFixtureTest, SaveThenLoadKeepsTheFile) {
  const auto dir = fixture("tokenizers/" + GetParam());
  const Tokenizer tok = Tokenizer::load(dir / "tokenizer.json");
  TempDir tmp;
  tok.save(tmp.path());  // a directory: writes tokenizer.json inside
  const Json original = read_json_file(dir / "tokenizer.json");
  const Json saved = read_json_file(tmp / "tokenizer.json");
  for (const char* key :
       {"added_tokens", "normalizer", "pre_tokenizer", "post_processor", "decoder", "model"})
    EXPECT_EQ(saved[key], original[key]) << key;
  const Tokenizer again = Tokenizer::load(tmp / "tokenizer.json");
  for (const auto& c : read_json_file(dir / "expected.json")["cases"])
    EXPECT_EQ(again.encode(c["text"].get<std::string>(), true), c["ids_special"].get<std::vector<int32_t>>());
}

INSTANTIATE_TEST_SUITE_P(Tokenizers, TokenizerFixtureTest,
                         ::testing::Values("gpt2-trained", "llama3-style", "qwen2-style"),
                         [](const auto& info) {
                           std::string name = info.param;
                           for (auto& ch : name)
                             if (ch == '-') ch = '_';
                           return name;
                         });

TEST(TokenizerTest, LegacyStringMergesLoadLikePairs) {
  Json spec = read_json_file(fixture("tokenizers/llama3-style/tokenizer.json"));
  for (auto& merge : spec["model"]["merges"])
    merge = merge[0].get<std::string>() + " " + merge[1].get<std::string>();
  const Tokenizer legacy = Tokenizer::from_json(spec, "legacy merges");
  const Tokenizer pairs = Tokenizer::load(fixture("tokenizers/llama3-style/tokenizer.json"));
  for (const char* text : {"Hello, world! 12345", "don't stop", "naïve café"})
    EXPECT_EQ(legacy.encode(text), pairs.encode(text)) << text;
}

TEST(TokenizerTest, SpecialIdsFromNamesAndTokenizerConfig) {
  const Tokenizer llama = Tokenizer::load(fixture("tokenizers/llama3-style"));
  EXPECT_EQ(llama.bos_id(), llama.token_to_id("<|begin_of_text|>"));
  EXPECT_EQ(llama.eos_id(), llama.token_to_id("<|end_of_text|>"));
  TempDir tmp;
  llama.save(tmp / "tokenizer.json");
  write_json_file(tmp / "tokenizer_config.json",
                  Json{{"bos_token", "<|begin_of_text|>"}, {"eos_token", {{"content", "<|eot_id|>"}}}});
  const Tokenizer instruct = Tokenizer::load(tmp.path());
  EXPECT_EQ(instruct.eos_id(), llama.token_to_id("<|eot_id|>"));
  EXPECT_EQ(instruct.bos_id(), llama.token_to_id("<|begin_of_text|>"));
}

TEST(TokenizerTest, EncodesConcurrently) {
  const Tokenizer tok = Tokenizer::load(fixture("tokenizers/qwen2-style"));
  const Json expected = read_json_file(fixture("tokenizers/qwen2-style/expected.json"));
  std::vector<std::thread> threads;
  std::vector<int> failures(4, 0);
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([&, t] {
      for (int round = 0; round < 20; ++round)
        for (const auto& c : expected["cases"])
          if (tok.encode(c["text"].get<std::string>()) != c["ids"].get<std::vector<int32_t>>()) ++failures[t];
    });
  for (auto& th : threads) th.join();
  EXPECT_EQ(failures, std::vector<int>(4, 0));
}

TEST(TokenizerTest, LongInputsStayFast) {
  const Tokenizer tok = Tokenizer::load(fixture("tokenizers/llama3-style"));
  const std::string spaces(100000, ' ');
  const auto ids = tok.encode("a" + spaces + "b");
  EXPECT_EQ(tok.decode(ids), "a" + spaces + "b");
  std::string word(20000, 'x');
  EXPECT_EQ(tok.decode(tok.encode(word)), word);
}

// ---- Errors -----------------------------------------------------------------------------------

Json small_spec() {
  return read_json_file(fixture("hf/bpe-gpt2style/tokenizer.json"));
}

template <typename E>
void expect_error(const Json& spec, const std::string& needle) {
  try {
    Tokenizer::from_json(spec, "spec.json");
    ADD_FAILURE() << "no error; expected one mentioning " << needle;
  } catch (const E& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("spec.json"), std::string::npos) << e.what();
  } catch (const std::exception& e) {
    ADD_FAILURE() << "wrong error type: " << e.what();
  }
}

TEST(TokenizerErrorsTest, MissingFileIsNotFound) {
  EXPECT_THROW(Tokenizer::load("/nonexistent/tokenizer.json"), NotFound);
  TempDir tmp;
  EXPECT_THROW(Tokenizer::load(tmp.path()), NotFound);  // a directory without tokenizer.json
}

TEST(TokenizerErrorsTest, NotJsonIsCorruption) {
  TempDir tmp;
  write_file_atomic(tmp / "tokenizer.json", "{\"model\": [1, 2");
  EXPECT_THROW(Tokenizer::load(tmp / "tokenizer.json"), Corruption);
}

TEST(TokenizerErrorsTest, UnknownComponentsAreUnsupported) {
  Json spec = small_spec();
  spec["pre_tokenizer"] = Json{{"type", "Metaspace"}, {"replacement", "▁"}, {"prepend_scheme", "always"}};
  expect_error<Unsupported>(spec, "Metaspace");

  spec = small_spec();
  spec["model"] = Json{{"type", "Unigram"}, {"unk_id", 0}, {"vocab", Json::array()}};
  expect_error<Unsupported>(spec, "Unigram");

  spec = small_spec();
  spec["normalizer"] = Json{{"type", "Sequence"}, {"normalizers", Json::array({Json{{"type", "NFKC"}}})}};
  expect_error<Unsupported>(spec, "NFKC");

  spec = small_spec();
  spec["decoder"] = Json{{"type", "WordPiece"}, {"prefix", "##"}};
  expect_error<Unsupported>(spec, "WordPiece");

  spec = small_spec();
  spec["post_processor"] = Json{{"type", "Mystery"}};
  expect_error<Unsupported>(spec, "Mystery");

  spec = small_spec();
  spec["truncation"] = Json{{"max_length", 8}};
  expect_error<Unsupported>(spec, "truncation");

  spec = small_spec();
  spec["model"]["byte_fallback"] = true;
  expect_error<Unsupported>(spec, "byte_fallback");

  spec = small_spec();
  spec["pre_tokenizer"] =
      Json{{"type", "Split"}, {"pattern", {{"Regex", "\\s"}}}, {"behavior", "Sideways"}, {"invert", false}};
  expect_error<Unsupported>(spec, "Sideways");
}

TEST(TokenizerErrorsTest, InconsistentFilesAreCorruption) {
  Json spec = small_spec();
  spec["model"]["merges"].push_back(Json::array({"nosuch", "t"}));
  expect_error<Corruption>(spec, "nosuch");

  spec = small_spec();
  spec["model"]["merges"].push_back("a b c");
  expect_error<Corruption>(spec, "a b c");

  spec = small_spec();
  spec["model"]["vocab"]["dup"] = 5;
  expect_error<Corruption>(spec, "id 5");

  spec = small_spec();
  spec["model"]["vocab"]["neg"] = -1;
  expect_error<Corruption>(spec, "neg");

  spec = small_spec();
  spec.erase("model");
  expect_error<Corruption>(spec, "model");

  spec = small_spec();
  spec["pre_tokenizer"] = Json{
      {"type", "Split"}, {"pattern", {{"Regex", "(unclosed"}}}, {"behavior", "Isolated"}, {"invert", false}};
  expect_error<Corruption>(spec, "(unclosed");

  spec = small_spec();
  spec["added_tokens"].push_back(Json{{"id", 42}, {"content", "<new>"}, {"special", true}});
  expect_error<Corruption>(spec, "<new>");
}

TEST(TokenizerErrorsTest, BadInputsAreInvalidArgument) {
  const Tokenizer tok = Tokenizer::load(fixture("hf/bpe-gpt2style"));
  EXPECT_THROW(tok.encode("bad \xC3("), InvalidArgument);
  const std::vector<int32_t> unknown{3, 99999};
  EXPECT_THROW(tok.decode(unknown), InvalidArgument);
  EXPECT_THROW(tok.id_to_token(-1), InvalidArgument);
}

}  // namespace
}  // namespace lowrank::data
