// Text-level pieces of the byte-level BPE tokenizer: UTF-8 validation and lossy decoding, the
// GPT-2 byte alphabet (Radford et al., 2019, `bytes_to_unicode`), the PCRE2 regex wrapper, the
// split behaviours and the pre-tokenizers of Hugging Face `tokenizers` (pre_tokenizers/
// byte_level.rs, split.rs, sequence.rs; tokenizer/normalizer.rs for NormalizedString::split).
#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <algorithm>
#include <mutex>

#include "lowrank/core/error.h"
#include "lowrank/data/tokenizer_internal.h"

namespace lowrank::data::detail {

// ---- UTF-8 -------------------------------------------------------------------------------------

namespace {

// Length of the valid UTF-8 prefix of a sequence starting at s[i] (Unicode Table 3-7), and
// whether it is a complete character.
std::pair<std::size_t, bool> utf8_valid_prefix(std::string_view s, std::size_t i) {
  const auto b = static_cast<unsigned char>(s[i]);
  if (b < 0x80) return {1, true};
  std::size_t need = 0;
  unsigned char lo = 0x80, hi = 0xBF;
  if (b >= 0xC2 && b <= 0xDF) {
    need = 1;
  } else if (b == 0xE0) {
    need = 2, lo = 0xA0;
  } else if ((b >= 0xE1 && b <= 0xEC) || b == 0xEE || b == 0xEF) {
    need = 2;
  } else if (b == 0xED) {
    need = 2, hi = 0x9F;
  } else if (b == 0xF0) {
    need = 3, lo = 0x90;
  } else if (b >= 0xF1 && b <= 0xF3) {
    need = 3;
  } else if (b == 0xF4) {
    need = 3, hi = 0x8F;
  } else {
    return {1, false};
  }
  std::size_t j = i + 1;
  for (std::size_t k = 0; k < need; ++k, ++j) {
    if (j >= s.size()) return {j - i, false};
    const auto c = static_cast<unsigned char>(s[j]);
    if (c < (k == 0 ? lo : 0x80) || c > (k == 0 ? hi : 0xBF)) return {j - i, false};
  }
  return {j - i, true};
}

}  // namespace

std::size_t find_invalid_utf8(std::string_view s) {
  std::size_t i = 0;
  while (i < s.size()) {
    if (static_cast<unsigned char>(s[i]) < 0x80) {
      ++i;
      continue;
    }
    auto [len, ok] = utf8_valid_prefix(s, i);
    if (!ok) return i;
    i += len;
  }
  return std::string_view::npos;
}

char32_t next_code_point(std::string_view s, std::size_t& i) {
  const auto b = static_cast<unsigned char>(s[i]);
  const std::size_t len = utf8_length(b);
  char32_t cp = len == 1 ? b : len == 2 ? (b & 0x1F) : len == 3 ? (b & 0x0F) : (b & 0x07);
  for (std::size_t k = 1; k < len; ++k) cp = (cp << 6) | (static_cast<unsigned char>(s[i + k]) & 0x3F);
  i += len;
  return cp;
}

void append_utf8(std::string& out, char32_t cp) {
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xC0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xE0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
}

std::string utf8_lossy(std::string_view bytes) {
  std::string out;
  out.reserve(bytes.size());
  std::size_t i = 0;
  while (i < bytes.size()) {
    auto [len, ok] = utf8_valid_prefix(bytes, i);
    if (ok)
      out.append(bytes.substr(i, len));
    else
      out += "\xEF\xBF\xBD";  // U+FFFD for the maximal invalid subpart
    i += len;
  }
  return out;
}

bool is_white_space(char32_t cp) {
  return (cp >= 0x09 && cp <= 0x0D) || cp == 0x20 || cp == 0x85 || cp == 0xA0 || cp == 0x1680 ||
         (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 || cp == 0x2029 || cp == 0x202F || cp == 0x205F ||
         cp == 0x3000;
}

// ---- GPT-2 byte-level alphabet ----------------------------------------------------------------

namespace {

struct ByteTables {
  std::array<std::string, 256> byte_to_char;
  std::array<int16_t, 512> char_to_byte;  // code points stay below 0x144
  ByteTables() {
    char_to_byte.fill(-1);
    // Bytes that are printable and not white space keep their own code point; the others, in
    // order, take 256, 257, ... (bytes_to_unicode).
    auto keeps = [](int b) { return (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE); };
    int n = 0;
    for (int b = 0; b < 256; ++b) {
      const char32_t cp = keeps(b) ? static_cast<char32_t>(b) : static_cast<char32_t>(256 + n++);
      append_utf8(byte_to_char[b], cp);
      char_to_byte[cp] = static_cast<int16_t>(b);
    }
  }
};

const ByteTables& byte_tables() {
  static const ByteTables tables;
  return tables;
}

}  // namespace

const std::string& byte_level_char(unsigned char b) {
  return byte_tables().byte_to_char[b];
}

std::string to_byte_level(std::string_view bytes) {
  const auto& t = byte_tables();
  std::string out;
  out.reserve(bytes.size() * 2);
  for (char c : bytes) out += t.byte_to_char[static_cast<unsigned char>(c)];
  return out;
}

bool from_byte_level(std::string_view token, std::string& out) {
  const auto& t = byte_tables();
  const std::size_t mark = out.size();
  if (find_invalid_utf8(token) != std::string_view::npos) return false;
  std::size_t i = 0;
  while (i < token.size()) {
    const char32_t cp = next_code_point(token, i);
    if (cp >= t.char_to_byte.size() || t.char_to_byte[cp] < 0) {
      out.resize(mark);
      return false;
    }
    out += static_cast<char>(t.char_to_byte[cp]);
  }
  return true;
}

std::vector<std::string> byte_level_alphabet() {
  const auto& t = byte_tables();
  std::vector<std::string> chars;
  for (std::size_t cp = 0; cp < t.char_to_byte.size(); ++cp)
    if (t.char_to_byte[cp] >= 0) chars.push_back(t.byte_to_char[t.char_to_byte[cp]]);
  return chars;
}

// ---- Regex ------------------------------------------------------------------------------------

namespace {

// Oniguruma's \s (Unicode White_Space), as the body of a character class.
constexpr std::string_view kOnigSpaceClass =
    R"(\t\n\x{0B}\f\r\x{20}\x{85}\x{A0}\x{1680}\x{2000}-\x{200A}\x{2028}\x{2029}\x{202F}\x{205F}\x{3000})";

std::string pcre2_message(int code) {
  PCRE2_UCHAR buffer[256];
  if (pcre2_get_error_message(code, buffer, sizeof buffer) < 0) return str("PCRE2 error ", code);
  return reinterpret_cast<const char*>(buffer);
}

}  // namespace

std::string oniguruma_to_pcre2(std::string_view p) {
  std::string out;
  out.reserve(p.size() + 64);
  int class_depth = 0;
  std::size_t i = 0;
  while (i < p.size()) {
    const char c = p[i];
    if (c == '\\' && i + 1 < p.size()) {
      const char e = p[i + 1];
      if (e == 'Q') {  // \Q...\E: copied verbatim
        const std::size_t end = p.find("\\E", i + 2);
        const std::size_t stop = end == std::string_view::npos ? p.size() : end + 2;
        out.append(p.substr(i, stop - i));
        i = stop;
        continue;
      }
      if (e == 's') {
        if (class_depth > 0)
          out.append(kOnigSpaceClass);
        else
          out.append("[").append(kOnigSpaceClass).append("]");
      } else if (e == 'S' && class_depth == 0) {
        out.append("[^").append(kOnigSpaceClass).append("]");
      } else {
        out += c;
        out += e;
      }
      i += 2;
      continue;
    }
    if (c == '[') {
      if (class_depth > 0 && i + 1 < p.size() && p[i + 1] == ':') {  // [:alpha:]
        const std::size_t end = p.find(":]", i + 2);
        const std::size_t stop = end == std::string_view::npos ? p.size() : end + 2;
        out.append(p.substr(i, stop - i));
        i = stop;
        continue;
      }
      ++class_depth;
      out += c;
      ++i;
      // A ']' right after '[' or '[^' is a literal.
      if (i < p.size() && p[i] == '^') out += p[i++];
      if (i < p.size() && p[i] == ']') out += p[i++];
      continue;
    }
    if (c == ']' && class_depth > 0) --class_depth;
    out += c;
    ++i;
  }
  return out;
}

Regex::Regex(std::string pattern, bool literal, std::string_view what) : pattern_(std::move(pattern)) {
  const std::string compiled = literal ? pattern_ : oniguruma_to_pcre2(pattern_);
  int error = 0;
  PCRE2_SIZE offset = 0;
  uint32_t options = PCRE2_UTF | PCRE2_UCP | (literal ? PCRE2_LITERAL : 0);
  code_ = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(compiled.data()), compiled.size(), options, &error,
                        &offset, nullptr);
  LR_CHECK(code_ != nullptr, Corruption, what, ": cannot compile the regex \"", pattern_, "\" (",
           pcre2_message(error), " at offset ", offset, ")");
  // JIT is an optimisation only: without it (or where it fails) pcre2_match interprets.
  pcre2_jit_compile(code_, PCRE2_JIT_COMPLETE);
}

Regex::~Regex() {
  if (code_ != nullptr) pcre2_code_free(code_);
}

std::vector<std::pair<std::size_t, std::size_t>> Regex::find_all(std::string_view text) const {
  std::vector<std::pair<std::size_t, std::size_t>> matches;
  std::unique_ptr<pcre2_match_data, decltype(&pcre2_match_data_free)> data(
      pcre2_match_data_create_from_pattern(code_, nullptr), &pcre2_match_data_free);
  LR_CHECK(data != nullptr, InternalError, "out of memory for PCRE2 match data");
  const auto* subject = reinterpret_cast<PCRE2_SPTR>(text.data());
  const std::size_t n = text.size();
  std::size_t last_end = 0;
  std::optional<std::size_t> last_match_end;
  while (last_end <= n) {
    int rc = pcre2_match(code_, subject, n, last_end, PCRE2_NO_UTF_CHECK, data.get(), nullptr);
    if (rc == PCRE2_ERROR_JIT_STACKLIMIT)
      rc = pcre2_match(code_, subject, n, last_end, PCRE2_NO_UTF_CHECK | PCRE2_NO_JIT, data.get(), nullptr);
    if (rc == PCRE2_ERROR_NOMATCH) break;
    LR_CHECK(rc >= 0, Unsupported, "regex \"", pattern_, "\" failed on a piece of ", n,
             " bytes: ", pcre2_message(rc));
    const PCRE2_SIZE* ovector = pcre2_get_ovector_pointer(data.get());
    const std::size_t s = ovector[0], e = std::max(ovector[0], ovector[1]);
    // Oniguruma's iterator: an empty match right where the previous match ended is skipped by
    // moving one character on.
    if (s == e && last_match_end == e) {
      last_end += last_end < n ? utf8_length(static_cast<unsigned char>(text[last_end])) : 1;
      continue;
    }
    last_end = e;
    last_match_end = e;
    matches.emplace_back(s, e);
  }
  return matches;
}

// ---- Splitting --------------------------------------------------------------------------------

SplitBehavior parse_split_behavior(std::string_view name, std::string_view what) {
  if (name == "Removed") return SplitBehavior::kRemoved;
  if (name == "Isolated") return SplitBehavior::kIsolated;
  if (name == "MergedWithPrevious") return SplitBehavior::kMergedWithPrevious;
  if (name == "MergedWithNext") return SplitBehavior::kMergedWithNext;
  if (name == "Contiguous") return SplitBehavior::kContiguous;
  throw Unsupported(str(what, ": split behavior \"", name,
                        "\" is not supported (Removed, Isolated, MergedWithPrevious, MergedWithNext, "
                        "Contiguous)"));
}

std::string_view split_behavior_name(SplitBehavior behavior) {
  switch (behavior) {
    case SplitBehavior::kRemoved:
      return "Removed";
    case SplitBehavior::kIsolated:
      return "Isolated";
    case SplitBehavior::kMergedWithPrevious:
      return "MergedWithPrevious";
    case SplitBehavior::kMergedWithNext:
      return "MergedWithNext";
    case SplitBehavior::kContiguous:
      return "Contiguous";
  }
  return "?";
}

void split_pieces(std::string_view text, const Regex& regex, SplitBehavior behavior, bool invert,
                  std::vector<std::string>& out) {
  if (text.empty()) return;
  struct Segment {
    std::size_t begin, end;
    bool flag;  // is a match (before the behaviour), remove (after)
  };
  // Pattern::find_matches: the matches and the gaps between them cover the text.
  std::vector<Segment> matches;
  std::size_t prev = 0;
  for (auto [s, e] : regex.find_all(text)) {
    if (prev != s) matches.push_back({prev, s, false});
    matches.push_back({s, e, true});
    prev = e;
  }
  if (prev != text.size()) matches.push_back({prev, text.size(), false});
  if (invert)
    for (auto& m : matches) m.flag = !m.flag;

  std::vector<Segment> splits;
  switch (behavior) {
    case SplitBehavior::kIsolated:
      for (auto m : matches) splits.push_back({m.begin, m.end, false});
      break;
    case SplitBehavior::kRemoved:
      splits = matches;
      break;
    case SplitBehavior::kContiguous: {
      bool previous_match = false;
      for (auto m : matches) {
        if (m.flag == previous_match && !splits.empty())
          splits.back().end = m.end;
        else
          splits.push_back({m.begin, m.end, false});
        previous_match = m.flag;
      }
      break;
    }
    case SplitBehavior::kMergedWithPrevious: {
      bool previous_match = false;
      for (auto m : matches) {
        if (m.flag && !previous_match && !splits.empty())
          splits.back().end = m.end;
        else
          splits.push_back({m.begin, m.end, false});
        previous_match = m.flag;
      }
      break;
    }
    case SplitBehavior::kMergedWithNext: {
      bool previous_match = false;
      for (auto it = matches.rbegin(); it != matches.rend(); ++it) {
        if (it->flag && !previous_match && !splits.empty())
          splits.back().begin = it->begin;
        else
          splits.push_back({it->begin, it->end, false});
        previous_match = it->flag;
      }
      std::reverse(splits.begin(), splits.end());
      break;
    }
  }
  for (const auto& s : splits)
    if (!s.flag && s.end > s.begin) out.emplace_back(text.substr(s.begin, s.end - s.begin));
}

// ---- Pre-tokenizer ----------------------------------------------------------------------------

namespace {

std::shared_ptr<const Regex> gpt2_regex() {
  static const auto regex = std::make_shared<const Regex>(std::string(kGpt2Pattern), false, "GPT-2 pattern");
  return regex;
}

void parse_pre_tokenizer(const Json& spec, std::string_view what, std::vector<PreTokenizerStep>& steps) {
  if (spec.is_null()) return;
  LR_CHECK(spec.is_object(), Corruption, what, ": pre_tokenizer must be an object or null");
  const auto type = json_get_or<std::string>(spec, "type", "", what);
  if (type == "Sequence") {
    const auto it = spec.find("pretokenizers");
    LR_CHECK(it != spec.end() && it->is_array(), Corruption, what,
             ": pre_tokenizer Sequence needs a \"pretokenizers\" list");
    for (const auto& member : *it) parse_pre_tokenizer(member, what, steps);
    return;
  }
  PreTokenizerStep step;
  if (type == "ByteLevel") {
    step.kind = PreTokenizerStep::Kind::kByteLevel;
    step.add_prefix_space = json_get_or<bool>(spec, "add_prefix_space", true, what);
    step.use_regex = json_get_or<bool>(spec, "use_regex", true, what);
    if (step.use_regex) step.regex = gpt2_regex();
  } else if (type == "Split") {
    step.kind = PreTokenizerStep::Kind::kSplit;
    const auto pattern = spec.find("pattern");
    LR_CHECK(pattern != spec.end() && pattern->is_object() && pattern->size() == 1, Corruption, what,
             ": pre_tokenizer Split needs a pattern {\"Regex\": ...} or {\"String\": ...}");
    const std::string kind = pattern->begin().key();
    const Json& value = pattern->begin().value();
    LR_CHECK(value.is_string(), Corruption, what, ": Split pattern must be a string");
    LR_CHECK(kind == "Regex" || kind == "String", Unsupported, what, ": Split pattern kind \"", kind,
             "\" is not supported (Regex, String)");
    step.regex = std::make_shared<const Regex>(value.get<std::string>(), kind == "String", what);
    step.behavior = parse_split_behavior(json_get<std::string>(spec, "behavior", what), what);
    step.invert = json_get_or<bool>(spec, "invert", false, what);
  } else {
    throw Unsupported(str(what, ": pre_tokenizer type \"", type,
                          "\" is not supported (supported: ByteLevel, Split, Sequence of those)"));
  }
  steps.push_back(std::move(step));
}

}  // namespace

PreTokenizer PreTokenizer::from_json(const Json& spec, std::string_view what) {
  PreTokenizer pre;
  parse_pre_tokenizer(spec, what, pre.steps_);
  return pre;
}

void PreTokenizer::run(std::string_view text, std::vector<std::string>& words) const {
  if (text.empty()) return;
  std::vector<std::string> pieces{std::string(text)}, next;
  for (const auto& step : steps_) {
    next.clear();
    if (step.kind == PreTokenizerStep::Kind::kByteLevel) {
      for (auto& piece : pieces) {
        if (step.add_prefix_space && piece.front() != ' ') piece.insert(piece.begin(), ' ');
        if (step.use_regex)
          split_pieces(piece, *step.regex, SplitBehavior::kIsolated, false, next);
        else
          next.push_back(std::move(piece));
      }
      for (auto& piece : next) piece = to_byte_level(piece);
    } else {
      for (const auto& piece : pieces) split_pieces(piece, *step.regex, step.behavior, step.invert, next);
    }
    std::swap(pieces, next);
  }
  for (auto& piece : pieces) words.push_back(std::move(piece));
}

}  // namespace lowrank::data::detail
