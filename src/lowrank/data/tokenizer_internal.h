// Internals of the byte-level BPE tokenizer (tokenizer.h): UTF-8 helpers, the GPT-2 byte
// alphabet, the PCRE2 regex wrapper, pre-tokenizers, the BPE model, added tokens and the
// post-processor. Shared by tokenizer.cpp and bpe_trainer.cpp; not for other modules.
//
// Each piece mirrors a component of Hugging Face `tokenizers` (v0.23), named after it:
// - utf8_lossy: Rust String::from_utf8_lossy (one U+FFFD per maximal invalid subpart);
// - byte_level_*: pre_tokenizers/byte_level.rs, bytes_char() = GPT-2's bytes_to_unicode
//   (Radford et al., 2019);
// - Regex::find_all: onig::Regex::find_iter as utils/onig.rs uses it (empty matches allowed, but
//   never right after the previous match);
// - split_pieces: NormalizedString::split with SplitDelimiterBehavior, empty pieces dropped as
//   PreTokenizedString::split does;
// - BpeModel: models/bpe/model.rs + word.rs (Sennrich et al., 2016: merge the pair of lowest
//   rank, leftmost first; word cache);
// - AddedVocabulary: tokenizer/added_vocabulary.rs (aho-corasick LeftmostLongest matching).
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <optional>
#include <shared_mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "lowrank/core/json.h"

struct pcre2_real_code_8;

namespace lowrank::data::detail {

// ---- UTF-8 -------------------------------------------------------------------------------------

// Byte offset of the first byte that does not start a valid UTF-8 sequence, or npos.
std::size_t find_invalid_utf8(std::string_view s);
// Decodes the code point at byte `i` of valid UTF-8 `s` and advances `i` past it.
char32_t next_code_point(std::string_view s, std::size_t& i);
// Byte length of the UTF-8 sequence starting with lead byte `lead`.
inline std::size_t utf8_length(unsigned char lead) {
  return lead < 0x80 ? 1 : lead < 0xE0 ? 2 : lead < 0xF0 ? 3 : 4;
}
void append_utf8(std::string& out, char32_t cp);
// `bytes` as valid UTF-8, each maximal invalid subpart replaced by U+FFFD.
std::string utf8_lossy(std::string_view bytes);
// The Unicode White_Space property (Rust's char::is_whitespace, Oniguruma's \s).
bool is_white_space(char32_t cp);
// Unicode Normalization Form C of valid UTF-8 `text` (tokenizer_nfc.cpp).
std::string nfc(std::string_view text);

// ---- GPT-2 byte-level alphabet ----------------------------------------------------------------

// The printable character standing for byte b (bytes_to_unicode), as UTF-8.
const std::string& byte_level_char(unsigned char b);
// Maps every byte of `bytes` to its character.
std::string to_byte_level(std::string_view bytes);
// Maps the characters of `token` back to bytes, appending to `out`. Returns false (out
// unchanged) when a character is not in the alphabet.
bool from_byte_level(std::string_view token, std::string& out);
// The 256 characters, sorted by code point (the trainer's initial alphabet).
std::vector<std::string> byte_level_alphabet();

// ---- Regex (PCRE2) ----------------------------------------------------------------------------

// The GPT-2 pre-tokenizer pattern, as `tokenizers` spells it (pre_tokenizers/byte_level.rs).
inline constexpr std::string_view kGpt2Pattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

// A compiled pattern. Immutable after construction; find_all may run concurrently.
class Regex {
 public:
  // Compiles an Oniguruma-syntax `pattern` (or, with `literal`, a plain string) in UTF + UCP
  // mode, JIT-compiled when PCRE2 supports it. Throws Corruption naming `what` and the offset
  // PCRE2 rejects.
  Regex(std::string pattern, bool literal, std::string_view what);
  ~Regex();
  Regex(const Regex&) = delete;
  Regex& operator=(const Regex&) = delete;

  // (begin, end) byte offsets of the successive non-overlapping matches in `text` (valid
  // UTF-8), as Oniguruma's find_iter yields them.
  std::vector<std::pair<std::size_t, std::size_t>> find_all(std::string_view text) const;
  const std::string& pattern() const { return pattern_; }

 private:
  std::string pattern_;
  pcre2_real_code_8* code_ = nullptr;
};

// Rewrites `\s` / `\S` to Oniguruma's white space set (PCRE2's \s also matches U+180E).
std::string oniguruma_to_pcre2(std::string_view pattern);

// ---- Splitting --------------------------------------------------------------------------------

enum class SplitBehavior { kRemoved, kIsolated, kMergedWithPrevious, kMergedWithNext, kContiguous };
// Parses "Removed", "Isolated", ...; throws Unsupported naming `what` otherwise.
SplitBehavior parse_split_behavior(std::string_view name, std::string_view what);
std::string_view split_behavior_name(SplitBehavior behavior);

// Splits `text` at the matches of `regex` (flipped with `invert`) the way `behavior` says and
// appends the non-empty pieces to `out`.
void split_pieces(std::string_view text, const Regex& regex, SplitBehavior behavior, bool invert,
                  std::vector<std::string>& out);

// ---- Pre-tokenizer ----------------------------------------------------------------------------

struct PreTokenizerStep {
  enum class Kind { kByteLevel, kSplit };
  Kind kind = Kind::kByteLevel;
  // ByteLevel
  bool add_prefix_space = false;
  bool use_regex = true;
  // Split (and ByteLevel with use_regex: the GPT-2 pattern, Isolated)
  std::shared_ptr<const Regex> regex;
  SplitBehavior behavior = SplitBehavior::kIsolated;
  bool invert = false;
};

// A flattened list of steps (a `Sequence` applies its members in turn, so nesting adds nothing).
class PreTokenizer {
 public:
  // Parses the "pre_tokenizer" value (null: no steps). Throws Unsupported for other types.
  static PreTokenizer from_json(const Json& spec, std::string_view what);
  // The words of `text`, appended to `words`.
  void run(std::string_view text, std::vector<std::string>& words) const;
  bool empty() const { return steps_.empty(); }

 private:
  std::vector<PreTokenizerStep> steps_;
};

// ---- BPE model --------------------------------------------------------------------------------

struct StringHash {
  using is_transparent = void;
  std::size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
};
using TokenMap = std::unordered_map<std::string, int32_t, StringHash, std::equal_to<>>;

class BpeModel {
 public:
  // Parses the "model" object (type BPE). Throws Corruption / Unsupported naming `what`.
  static std::unique_ptr<BpeModel> from_json(const Json& spec, std::string_view what);

  // Appends the ids of one pre-tokenized word.
  void encode_word(std::string_view word, std::vector<int32_t>& ids) const;
  std::optional<int32_t> token_to_id(std::string_view token) const;
  // nullptr when no token has `id`.
  const std::string* id_to_token(int32_t id) const;
  int64_t id_bound() const { return static_cast<int64_t>(id_to_token_.size()); }

  // For save(): the vocabulary (id order) and merges (file order) as JSON text.
  void append_vocab_json(std::string& out, const std::string& indent) const;
  void append_merges_json(std::string& out, const std::string& indent) const;

  static constexpr std::size_t kCacheCapacity = 10000;  // as tokenizers' DEFAULT_CACHE_CAPACITY
  static constexpr std::size_t kCacheMaxWordBytes = 256;

 private:
  void merge_word(std::string_view word, std::vector<int32_t>& symbols) const;

  TokenMap vocab_;
  std::vector<std::string> id_to_token_;
  std::vector<char> has_id_;
  // (left id << 32 | right id) -> (rank, merged id)
  std::unordered_map<uint64_t, std::pair<int32_t, int32_t>> merges_;
  std::vector<std::pair<int32_t, int32_t>> merge_list_;
  std::optional<int32_t> unk_id_;
  bool fuse_unk_ = false;
  bool ignore_merges_ = false;

  mutable std::shared_mutex cache_mutex_;
  mutable std::unordered_map<std::string, std::vector<int32_t>, StringHash, std::equal_to<>> cache_;
};

// ---- Added tokens -----------------------------------------------------------------------------

struct AddedToken {
  std::string content;
  int32_t id = 0;
  bool single_word = false;
  bool lstrip = false;
  bool rstrip = false;
  bool normalized = true;
  bool special = false;
};

// A piece of text: [begin, end) bytes, and the added token it is, if any.
struct TextPiece {
  std::size_t begin;
  std::size_t end;
  std::optional<int32_t> id;
};

class AddedVocabulary {
 public:
  void add(AddedToken token);
  // Finishes construction: builds the two matchers (normalized: false / true); with
  // `nfc_normalized`, the contents of normalized tokens are matched in NFC.
  void build(bool nfc_normalized);

  // Splits `text` on the tokens with normalized == `normalized` (find_matches).
  std::vector<TextPiece> split(std::string_view text, bool normalized) const;

  const std::vector<AddedToken>& tokens() const { return tokens_; }
  const AddedToken* find_id(int32_t id) const;
  const AddedToken* find_content(std::string_view content) const;
  bool is_special_content(std::string_view content) const;
  bool empty() const { return tokens_.empty(); }

 private:
  struct Trie {
    struct Node {
      std::vector<std::pair<unsigned char, int32_t>> next;  // sorted by byte
      int32_t token = -1;                                   // index into tokens_
    };
    std::vector<Node> nodes{Node{}};
    void insert(std::string_view s, int32_t token);
    // Longest token matching at `pos`: (index, length); index -1 when none.
    std::pair<int32_t, std::size_t> longest(std::string_view text, std::size_t pos) const;
  };

  std::vector<AddedToken> tokens_;
  std::unordered_map<int32_t, std::size_t> by_id_;
  std::unordered_map<std::string, std::size_t, StringHash, std::equal_to<>> by_content_;
  Trie raw_trie_;
  Trie normalized_trie_;
};

// ---- Post-processor ---------------------------------------------------------------------------

// The single-sequence template of the post-processor: the ids before and after the sequence.
// (TemplateProcessing, RobertaProcessing and BertProcessing all reduce to this for one text;
// ByteLevel only moves offsets.)
struct PostProcessor {
  std::vector<int32_t> prefix;
  std::vector<int32_t> suffix;
  static PostProcessor from_json(const Json& spec, std::string_view what);
};

// ---- The whole tokenizer ----------------------------------------------------------------------

enum class DecoderKind { kNone, kByteLevel };
enum class NormalizerKind { kNone, kNfc };

struct TokenizerImpl {
  std::string what;  // the source, for messages
  Json spec;         // tokenizer.json without model.vocab and model.merges
  AddedVocabulary added;
  NormalizerKind normalizer = NormalizerKind::kNone;
  PreTokenizer pre_tokenizer;
  std::unique_ptr<BpeModel> model;
  PostProcessor post_processor;
  DecoderKind decoder = DecoderKind::kNone;
  std::optional<int32_t> bos;
  std::optional<int32_t> eos;
  int64_t vocab_size = 0;
};

// The ordered JSON of an added token, keys as `tokenizers` writes them.
OrderedJson added_token_json(const AddedToken& token);

}  // namespace lowrank::data::detail
