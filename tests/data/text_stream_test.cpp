// TextStream (lowrank/data/text_stream.h): whole UTF-8 characters only, stop strings with the
// OpenAI API's semantics (excluded, nothing after them, a possible start held back), stop tokens,
// the token limit, and, with the real byte-level tokenizer, deltas that add up to the whole decode.
#include "lowrank/data/text_stream.h"

#include <gtest/gtest.h>

#include <map>

#include "lowrank/core/error.h"
#include "lowrank/data/tokenizer.h"
#include "tests/testing.h"

namespace lowrank::data {
namespace {

const std::string kReplacement = "\xEF\xBF\xBD";

// A decoder over a small vocabulary of byte strings (pieces may split a character), which like
// the real tokenizer turns an incomplete last character into U+FFFD. Test pieces are valid UTF-8
// apart from such a cut.
const std::map<int64_t, std::string> kPieces = {
    {1, "caf"},  {2, "\xC3"},      {3, "\xA9"},  {4, "!"},   {5, "\xF0\x9F"}, {6, "\x98"},
    {7, "\x80"}, {8, " and"},      {9, "E"},     {10, "N"},  {11, "D"},       {12, "Dxyz"},
    {13, "o"},   {14, "STOP now"}, {15, "hel"},  {16, "lo"}, {17, " world"},  {18, "a"},
    {19, "b"},   {20, "x"},        {21, "</s>"}, {22, "EN"}, {23, "c"},
};

std::string fake_decode(std::span<const int64_t> ids) {
  std::string bytes;
  for (int64_t id : ids) bytes += kPieces.at(id);
  // A lead byte without all its continuation bytes becomes U+FFFD (as a lossy UTF-8 decode).
  std::string out;
  size_t i = 0;
  while (i < bytes.size()) {
    const auto lead = static_cast<unsigned char>(bytes[i]);
    const size_t n = lead < 0x80 ? 1 : lead >= 0xF0 ? 4 : lead >= 0xE0 ? 3 : 2;
    size_t k = 1;
    while (k < n && i + k < bytes.size() && (static_cast<unsigned char>(bytes[i + k]) & 0xC0) == 0x80) ++k;
    out += k == n ? bytes.substr(i, n) : kReplacement;
    i += k;
  }
  return out;
}

TextStream stream(std::vector<std::string> stop = {}, std::vector<int64_t> stop_ids = {},
                  int64_t max_tokens = 0) {
  return TextStream(
      fake_decode,
      {.stop = std::move(stop), .stop_token_ids = std::move(stop_ids), .max_tokens = max_tokens});
}

// The text each push of `tokens` releases.
std::vector<std::string> deltas(TextStream& s, const std::vector<int64_t>& tokens) {
  std::vector<std::string> out;
  for (int64_t t : tokens) out.push_back(s.push(t));
  return out;
}

using Deltas = std::vector<std::string>;

TEST(TextStreamTest, MultiByteCharactersSplitAcrossTokensComeOutWhole) {
  TextStream s = stream();
  // "é" is C3 A9 over tokens 2 and 3; "😀" (F0 9F 98 80) over tokens 5, 6 and 7.
  EXPECT_EQ(deltas(s, {1, 2, 3, 4, 5, 6, 7, 8}),
            (Deltas{"caf", "", "\xC3\xA9", "!", "", "", "\xF0\x9F\x98\x80", " and"}));
  EXPECT_EQ(s.text(), "caf\xC3\xA9!\xF0\x9F\x98\x80 and");
  EXPECT_EQ(s.finish(), FinishReason::kNone);
}

TEST(TextStreamTest, AStopStringSpanningTokensIsExcludedAndEndsTheStream) {
  TextStream s = stream({"END"});
  // "E", "N" may start "END": held back; "Dxyz" completes it: nothing of it, nor "xyz", comes out.
  EXPECT_EQ(deltas(s, {18, 9, 10, 12}), (Deltas{"a", "", "", ""}));
  EXPECT_EQ(s.finish(), FinishReason::kStop);
  EXPECT_EQ(s.text(), "a");
  EXPECT_EQ(s.end(FinishReason::kCancelled), "");  // nothing held after a stop string
  EXPECT_EQ(s.finish(), FinishReason::kStop);
  EXPECT_THROW(s.push(18), InternalError);

  // A false start is released once it cannot be the stop string any more.
  TextStream t = stream({"END"});
  EXPECT_EQ(deltas(t, {9, 10, 13}), (Deltas{"", "", "ENo"}));
  EXPECT_EQ(t.finish(), FinishReason::kNone);
}

TEST(TextStreamTest, AStopStringAtTheVeryStartLeavesNoText) {
  TextStream s = stream({"STOP"});
  EXPECT_EQ(s.push(14), "");
  EXPECT_EQ(s.finish(), FinishReason::kStop);
  EXPECT_EQ(s.text(), "");
}

TEST(TextStreamTest, TheFirstOfSeveralStopStringsWins) {
  // "lo" appears before "world" in "hello world": the text stops at "hel".
  TextStream s = stream({"world", "lo"});
  EXPECT_EQ(deltas(s, {15, 16}), (Deltas{"he", "l"}));  // "l" may start "lo": held, then released
  EXPECT_EQ(s.finish(), FinishReason::kStop);
  EXPECT_EQ(s.text(), "hel");

  // The held-back tail is the longest one that may start any stop string: "EN" of "END", not only
  // the "N" of "No".
  TextStream t = stream({"No", "END"});
  EXPECT_EQ(deltas(t, {18, 22}), (Deltas{"a", ""}));
  EXPECT_EQ(t.push(23), "ENc");
}

TEST(TextStreamTest, MaxTokensEndsWithLengthAndReleasesWhatWasHeld) {
  // The third token is the last: "ab" (a possible start of "abc") comes out with it.
  TextStream s = stream({"abc"}, {}, 3);
  EXPECT_EQ(deltas(s, {20, 18, 19}), (Deltas{"x", "", "ab"}));
  EXPECT_EQ(s.finish(), FinishReason::kLength);
  EXPECT_EQ(s.text(), "xab");
  EXPECT_THROW(s.push(20), InternalError);

  // An incomplete last character comes out as U+FFFD, as decoding every token at once gives it.
  TextStream cut = stream({}, {}, 2);
  EXPECT_EQ(deltas(cut, {1, 2}), (Deltas{"caf", kReplacement}));
  EXPECT_EQ(cut.finish(), FinishReason::kLength);

  // A stop on the last allowed token is a stop.
  TextStream last = stream({"b"}, {}, 2);
  deltas(last, {18, 19});
  EXPECT_EQ(last.finish(), FinishReason::kStop);
  TextStream last_id = stream({}, {19}, 2);
  deltas(last_id, {18, 19});
  EXPECT_EQ(last_id.finish(), FinishReason::kStop);
}

TEST(TextStreamTest, StopTokensKeepTheirTextAndReleaseEverything) {
  TextStream s = stream({"</s>x"}, {21});
  EXPECT_EQ(deltas(s, {18, 2}), (Deltas{"a", ""}));
  // The stop token's own text stays (a tokenizer that skips special tokens gives none), and the
  // held "\xC3" and "</s>" (a start of the stop string) come out with it.
  EXPECT_EQ(s.push(21), kReplacement + "</s>");
  EXPECT_EQ(s.finish(), FinishReason::kStop);
}

TEST(TextStreamTest, EndingFromOutsideReleasesTheHeldText) {
  TextStream s = stream({"END"});
  EXPECT_EQ(deltas(s, {18, 9, 2}), (Deltas{"a", "", ""}));
  EXPECT_EQ(s.end(FinishReason::kCancelled), "E" + kReplacement);
  EXPECT_EQ(s.finish(), FinishReason::kCancelled);
  EXPECT_EQ(s.text(), "aE" + kReplacement);
  EXPECT_THROW(s.push(18), InternalError);
}

TEST(TextStreamTest, WithoutADecoderOnlyTokensCount) {
  TextStream s(TextStream::Decode(), {.stop = {}, .stop_token_ids = {9}, .max_tokens = 5});
  EXPECT_EQ(deltas(s, {1, 2, 9}), (Deltas{"", "", ""}));
  EXPECT_EQ(s.finish(), FinishReason::kStop);
  EXPECT_EQ(s.tokens(), (std::vector<int64_t>{1, 2, 9}));
  EXPECT_NE(testing::error_of([] {
              TextStream(TextStream::Decode(), {.stop = {"x"}, .stop_token_ids = {}, .max_tokens = 0});
            }).find("tokenizer"),
            std::string::npos);
  EXPECT_THROW(stream({""}), InvalidArgument);
}

TEST(TextStreamTest, DeltasOfTheRealTokenizerAddUpToTheWholeDecode) {
  const Tokenizer tokenizer = Tokenizer::load(testing::fixture("hf/bpe-gpt2style/tokenizer.json"));
  const std::vector<int32_t> ids =
      tokenizer.encode("naïve café — ünïcödé 😀 done", /*add_special_tokens=*/false);
  TextStream s(TextStream::decoder(tokenizer), {});
  std::string joined;
  for (int32_t id : ids) {
    const std::string delta = s.push(id);
    EXPECT_FALSE(delta.ends_with(kReplacement)) << "a delta ends in an incomplete character";
    joined += delta;
  }
  EXPECT_EQ(joined, tokenizer.decode(ids, /*skip_special_tokens=*/true));
  EXPECT_EQ(joined, "naïve café — ünïcödé 😀 done");
}

}  // namespace
}  // namespace lowrank::data
