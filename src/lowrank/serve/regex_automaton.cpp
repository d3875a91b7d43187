// A regex as a lazily built byte-level DFA; see regex_automaton.h for the construction and syntax.
#include "lowrank/serve/regex_automaton.h"

#include <algorithm>
#include <utility>

namespace lowrank::serve {
namespace {

constexpr char32_t kMaxCodePoint = 0x10FFFF;
using Ranges = std::vector<std::pair<char32_t, char32_t>>;  // code point ranges, inclusive

// The parse tree: a class of code points, a concatenation, an alternation or a repetition.
struct Node {
  enum class Kind { kEmpty, kClass, kConcat, kAlt, kRepeat } kind = Kind::kEmpty;
  Ranges ranges;               // kClass
  std::vector<Node> children;  // kConcat, kAlt; kRepeat: one
  int64_t min = 0, max = -1;   // kRepeat; max -1: unbounded
};

Ranges normalized(Ranges r) {
  std::sort(r.begin(), r.end());
  Ranges out;
  for (const auto& [lo, hi] : r) {
    if (!out.empty() && lo <= out.back().second + 1)
      out.back().second = std::max(out.back().second, hi);
    else
      out.emplace_back(lo, hi);
  }
  return out;
}

Ranges complement(const Ranges& r) {
  Ranges out;
  char32_t next = 0;
  for (const auto& [lo, hi] : normalized(r)) {
    if (lo > next) out.emplace_back(next, lo - 1);
    next = hi + 1;
  }
  if (next <= kMaxCodePoint) out.emplace_back(next, kMaxCodePoint);
  return out;
}

Node class_node(Ranges r) {
  Node n;
  n.kind = Node::Kind::kClass;
  n.ranges = normalized(std::move(r));
  return n;
}

const Ranges kDigit = {{'0', '9'}};
const Ranges kWord = {{'0', '9'}, {'A', 'Z'}, {'_', '_'}, {'a', 'z'}};
const Ranges kSpace = {{'\t', '\r'}, {' ', ' '}};  // \t \n \v \f \r and space

// Recursive-descent parser over the pattern's code points.
class Parser {
 public:
  explicit Parser(std::string_view pattern) : pattern_(pattern) { decode(pattern); }

  Node parse() {
    // ^ at the start and $ at the end are accepted: the whole text always has to match.
    if (!text_.empty() && text_.front() == '^') pos_ = 1;
    if (text_.size() > pos_ && text_.back() == '$' && !escaped_at(text_.size() - 1)) end_ = text_.size() - 1;
    Node n = parse_alt();
    if (pos_ < end_) fail(str("unbalanced ')' at offset ", pos_));
    return n;
  }

 private:
  [[noreturn]] void fail(const std::string& what) const {
    throw RegexError(str("regex: ", what, " in \"", pattern_, "\""));
  }

  void decode(std::string_view s) {
    for (size_t i = 0; i < s.size();) {
      const auto c = static_cast<unsigned char>(s[i]);
      const int len = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
      if (len == 0 || i + static_cast<size_t>(len) > s.size()) fail(str("invalid UTF-8 at byte ", i));
      char32_t cp = len == 1 ? c : c & (0x7F >> len);
      for (int k = 1; k < len; ++k) {
        const auto b = static_cast<unsigned char>(s[i + static_cast<size_t>(k)]);
        if ((b & 0xC0) != 0x80) fail(str("invalid UTF-8 at byte ", i));
        cp = (cp << 6) | (b & 0x3F);
      }
      text_.push_back(cp);
      i += static_cast<size_t>(len);
    }
    end_ = text_.size();
  }
  // True when text_[i] is preceded by an odd number of backslashes.
  bool escaped_at(size_t i) const {
    size_t n = 0;
    while (i > n && text_[i - n - 1] == '\\') ++n;
    return n % 2 == 1;
  }
  bool more() const { return pos_ < end_; }
  char32_t peek() const { return text_[pos_]; }

  Node parse_alt() {
    Node first = parse_concat();
    if (!more() || peek() != '|') return first;
    Node alt;
    alt.kind = Node::Kind::kAlt;
    alt.children.push_back(std::move(first));
    while (more() && peek() == '|') {
      ++pos_;
      alt.children.push_back(parse_concat());
    }
    return alt;
  }

  Node parse_concat() {
    Node cat;
    cat.kind = Node::Kind::kConcat;
    while (more() && peek() != '|' && peek() != ')') {
      Node atom = parse_atom();
      cat.children.push_back(parse_quantifiers(std::move(atom)));
    }
    if (cat.children.size() == 1) return std::move(cat.children[0]);
    if (cat.children.empty()) return Node{};
    return cat;
  }

  // {n}, {n,}, {n,m}, {,m} at pos_ (on '{'); false (pos_ unchanged) when it is not one, in
  // which case '{' is a literal, as in Python.
  bool counted(int64_t& min, int64_t& max) {
    size_t p = pos_ + 1;
    auto number = [&](int64_t& out) {
      const size_t start = p;
      out = 0;
      while (p < end_ && text_[p] >= '0' && text_[p] <= '9') {
        out = out * 10 + (text_[p] - '0');
        if (out > 100000) fail("a repetition count over 100000");
        ++p;
      }
      return p > start;
    };
    const bool has_min = number(min);
    if (!has_min) min = 0;
    if (p < end_ && text_[p] == '}') {
      if (!has_min) return false;
      max = min;
    } else if (p < end_ && text_[p] == ',') {
      ++p;
      if (!number(max)) max = -1;
      if (p >= end_ || text_[p] != '}') return false;
    } else {
      return false;
    }
    if (max >= 0 && max < min) fail(str("repetition {", min, ",", max, "} with max < min"));
    pos_ = p + 1;
    return true;
  }

  Node parse_quantifiers(Node atom) {
    bool quantified = false;
    while (more()) {
      int64_t min = 0, max = -1;
      const char32_t c = peek();
      if (c == '*') {
        ++pos_;
      } else if (c == '+') {
        min = 1;
        ++pos_;
      } else if (c == '?') {
        max = 1;
        ++pos_;
      } else if (c == '{' && counted(min, max)) {
      } else {
        break;
      }
      if (quantified) fail(str("multiple repeat at offset ", pos_ - 1));
      quantified = true;
      if (more() && peek() == '?') ++pos_;  // lazy: the same language
      if (more() && peek() == '+') fail(str("possessive quantifier at offset ", pos_));
      Node r;
      r.kind = Node::Kind::kRepeat;
      r.min = min;
      r.max = max;
      r.children.push_back(std::move(atom));
      atom = std::move(r);
    }
    return atom;
  }

  Node parse_atom() {
    const char32_t c = peek();
    const size_t at = pos_++;
    switch (c) {
      case '(': {
        if (more() && peek() == '?') {
          ++pos_;
          if (more() && peek() == ':') {
            ++pos_;
          } else if (more() && peek() == 'P' && pos_ + 1 < end_ && text_[pos_ + 1] == '<') {
            while (more() && peek() != '>') ++pos_;
            if (!more()) fail(str("unterminated group name at offset ", at));
            ++pos_;
          } else if (more() && (peek() == '=' || peek() == '!' || peek() == '<')) {
            fail(str("lookaround '(?", static_cast<char>(peek()), "' at offset ", at, " is not supported"));
          } else {
            fail(str("group construct '(?' at offset ", at, " is not supported"));
          }
        }
        Node inner = parse_alt();
        if (!more() || peek() != ')') fail(str("missing ')' for the group at offset ", at));
        ++pos_;
        return inner;
      }
      case '[':
        return parse_class(at);
      case '.':
        return class_node(complement({{'\n', '\n'}}));
      case '\\':
        return class_node(parse_escape(false));
      case '^':
        fail(str("'^' at offset ", at, " (anchors are supported only at the start)"));
      case '$':
        fail(str("'$' at offset ", at, " (anchors are supported only at the end)"));
      case '*':
      case '+':
      case '?':
        fail(str("nothing to repeat at offset ", at));
      default:
        return class_node({{c, c}});
    }
  }

  char32_t hex(int digits) {
    char32_t v = 0;
    for (int k = 0; k < digits; ++k) {
      if (!more()) fail("truncated hex escape");
      const char32_t d = text_[pos_++];
      int x = d >= '0' && d <= '9'   ? static_cast<int>(d - '0')
              : d >= 'a' && d <= 'f' ? static_cast<int>(d - 'a' + 10)
              : d >= 'A' && d <= 'F' ? static_cast<int>(d - 'A' + 10)
                                     : -1;
      if (x < 0) fail(str("bad hex digit in an escape at offset ", pos_ - 1));
      v = v * 16 + static_cast<char32_t>(x);
    }
    if (v > kMaxCodePoint) fail("an escape beyond U+10FFFF");
    return v;
  }

  // After a backslash: the class it stands for. `in_class`: \b is a backspace there.
  Ranges parse_escape(bool in_class) {
    if (!more()) fail("a trailing backslash");
    const char32_t c = text_[pos_++];
    auto one = [](char32_t x) { return Ranges{{x, x}}; };
    switch (c) {
      case 'd':
        return kDigit;
      case 'D':
        return complement(kDigit);
      case 'w':
        return kWord;
      case 'W':
        return complement(kWord);
      case 's':
        return kSpace;
      case 'S':
        return complement(kSpace);
      case 'n':
        return one('\n');
      case 't':
        return one('\t');
      case 'r':
        return one('\r');
      case 'f':
        return one('\f');
      case 'v':
        return one('\v');
      case 'a':
        return one('\a');
      case '0':
        return one(0);
      case 'x':
        return one(hex(2));
      case 'u':
        return one(hex(4));
      case 'U':
        return one(hex(8));
      case 'b':
        if (in_class) return one('\b');
        [[fallthrough]];
      default:
        break;
    }
    if (c >= '1' && c <= '9') fail(str("backreference '\\", static_cast<char>(c), "' is not supported"));
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'))
      fail(str("escape '\\", static_cast<char>(c), "' is not supported (assertions and unknown escapes)"));
    return one(c);  // escaped punctuation (or any other non-letter) stands for itself
  }

  Node parse_class(size_t at) {
    bool negate = false;
    if (more() && peek() == '^') {
      negate = true;
      ++pos_;
    }
    Ranges r;
    bool first = true;
    while (true) {
      if (!more()) fail(str("unterminated character class at offset ", at));
      char32_t c = peek();
      if (c == ']' && !first) {
        ++pos_;
        break;
      }
      first = false;
      ++pos_;
      Ranges item;
      if (c == '\\') {
        item = parse_escape(true);
      } else {
        if (c == '[' && more() && peek() == ':')
          fail(str("POSIX class at offset ", pos_ - 1, " is not supported"));
        item = {{c, c}};
      }
      // A range lo-hi: both ends single code points; '-' first or last is a literal.
      if (item.size() == 1 && item[0].first == item[0].second && more() && peek() == '-' && pos_ + 1 < end_ &&
          text_[pos_ + 1] != ']') {
        ++pos_;
        const char32_t hc = text_[pos_++];
        Ranges hi_item = hc == '\\' ? parse_escape(true) : Ranges{{hc, hc}};
        if (hi_item.size() != 1 || hi_item[0].first != hi_item[0].second)
          fail(str("bad range in the character class at offset ", at));
        if (hi_item[0].first < item[0].first)
          fail(str("reversed range in the character class at offset ", at));
        item = {{item[0].first, hi_item[0].first}};
      }
      r.insert(r.end(), item.begin(), item.end());
    }
    return class_node(negate ? complement(r) : r);
  }

  std::string_view pattern_;
  std::vector<char32_t> text_;
  size_t pos_ = 0, end_ = 0;
};

// ---- UTF-8 byte sequences of a code point range --------------------------------------------

using ByteSequence = std::vector<std::pair<uint8_t, uint8_t>>;

int encode_utf8(char32_t cp, uint8_t out[4]) {
  if (cp < 0x80) {
    out[0] = static_cast<uint8_t>(cp);
    return 1;
  }
  if (cp < 0x800) {
    out[0] = static_cast<uint8_t>(0xC0 | (cp >> 6));
    out[1] = static_cast<uint8_t>(0x80 | (cp & 0x3F));
    return 2;
  }
  if (cp < 0x10000) {
    out[0] = static_cast<uint8_t>(0xE0 | (cp >> 12));
    out[1] = static_cast<uint8_t>(0x80 | ((cp >> 6) & 0x3F));
    out[2] = static_cast<uint8_t>(0x80 | (cp & 0x3F));
    return 3;
  }
  out[0] = static_cast<uint8_t>(0xF0 | (cp >> 18));
  out[1] = static_cast<uint8_t>(0x80 | ((cp >> 12) & 0x3F));
  out[2] = static_cast<uint8_t>(0x80 | ((cp >> 6) & 0x3F));
  out[3] = static_cast<uint8_t>(0x80 | (cp & 0x3F));
  return 4;
}

// Appends the byte-range sequences whose union encodes exactly [lo, hi] (surrogates excluded):
// split where the encoded length changes, then where a continuation byte would not cover its
// whole range, until lo and hi differ only in byte ranges that every combination fills.
void utf8_sequences(char32_t lo, char32_t hi, std::vector<ByteSequence>& out) {
  if (lo > hi) return;
  if (lo <= 0xDFFF && hi >= 0xD800) {
    if (lo < 0xD800) utf8_sequences(lo, 0xD7FF, out);
    if (hi > 0xDFFF) utf8_sequences(0xE000, hi, out);
    return;
  }
  for (char32_t boundary : {char32_t{0x7F}, char32_t{0x7FF}, char32_t{0xFFFF}})
    if (lo <= boundary && hi > boundary) {
      utf8_sequences(lo, boundary, out);
      utf8_sequences(boundary + 1, hi, out);
      return;
    }
  for (int i = 1; i < 4; ++i) {
    const char32_t m = (char32_t{1} << (6 * i)) - 1;
    if ((lo & ~m) != (hi & ~m)) {
      if ((lo & m) != 0) {
        utf8_sequences(lo, lo | m, out);
        utf8_sequences((lo | m) + 1, hi, out);
        return;
      }
      if ((hi & m) != m) {
        utf8_sequences(lo, (hi & ~m) - 1, out);
        utf8_sequences(hi & ~m, hi, out);
        return;
      }
    }
  }
  uint8_t a[4], b[4];
  const int n = encode_utf8(lo, a);
  encode_utf8(hi, b);
  ByteSequence seq;
  for (int k = 0; k < n; ++k) seq.emplace_back(a[k], b[k]);
  out.push_back(std::move(seq));
}

// ---- Thompson's construction -----------------------------------------------------------------

using NfaState = RegexAutomaton::NfaState;

// A fragment: its entry and the dangling exits (state, true = its alt) to patch.
struct Fragment {
  int32_t start = -1;
  std::vector<std::pair<int32_t, bool>> exits;
};

class NfaBuilder {
 public:
  NfaBuilder(std::vector<NfaState>& states, size_t limit, std::string_view pattern)
      : states_(states), limit_(limit), pattern_(pattern) {}

  Fragment build(const Node& n) {
    switch (n.kind) {
      case Node::Kind::kEmpty:
        return epsilon();
      case Node::Kind::kClass:
        return char_class(n.ranges);
      case Node::Kind::kConcat: {
        Fragment f = build(n.children[0]);
        for (size_t i = 1; i < n.children.size(); ++i) f = concat(std::move(f), build(n.children[i]));
        return f;
      }
      case Node::Kind::kAlt: {
        std::vector<Fragment> parts;
        for (const Node& c : n.children) parts.push_back(build(c));
        return alternation(std::move(parts));
      }
      case Node::Kind::kRepeat:
        return repeat(n.children[0], n.min, n.max);
    }
    return epsilon();
  }

  void patch(const Fragment& f, int32_t target) {
    for (const auto& [s, alt] : f.exits)
      (alt ? states_[static_cast<size_t>(s)].alt : states_[static_cast<size_t>(s)].out) = target;
  }

  int32_t add(NfaState s) {
    if (states_.size() >= limit_)
      throw RegexError(str("regex: the automaton needs more than ", limit_,
                           " states (a counted repetition too large) in \"", pattern_, "\""));
    states_.push_back(s);
    return static_cast<int32_t>(states_.size() - 1);
  }

 private:
  Fragment epsilon() {
    const int32_t s = add({.kind = NfaState::Kind::kSplit});
    return {s, {{s, false}}};
  }

  Fragment concat(Fragment a, Fragment b) {
    patch(a, b.start);
    return {a.start, std::move(b.exits)};
  }

  Fragment alternation(std::vector<Fragment> parts) {
    Fragment f = std::move(parts.back());
    for (size_t i = parts.size() - 1; i-- > 0;) {
      const int32_t s = add({.kind = NfaState::Kind::kSplit, .out = parts[i].start, .alt = f.start});
      std::vector<std::pair<int32_t, bool>> exits = std::move(parts[i].exits);
      exits.insert(exits.end(), f.exits.begin(), f.exits.end());
      f = {s, std::move(exits)};
    }
    return f;
  }

  Fragment char_class(const Ranges& ranges) {
    std::vector<ByteSequence> seqs;
    for (const auto& [lo, hi] : ranges) utf8_sequences(lo, hi, seqs);
    if (seqs.empty()) {  // matches nothing: a range no byte falls in
      const int32_t s = add({.kind = NfaState::Kind::kRange, .lo = 1, .hi = 0});
      return {s, {{s, false}}};
    }
    std::vector<Fragment> parts;
    for (const ByteSequence& seq : seqs) {
      Fragment f;
      int32_t previous = -1;
      for (const auto& [lo, hi] : seq) {
        const int32_t s = add({.kind = NfaState::Kind::kRange, .lo = lo, .hi = hi});
        if (previous < 0)
          f.start = s;
        else
          states_[static_cast<size_t>(previous)].out = s;
        previous = s;
      }
      f.exits = {{previous, false}};
      parts.push_back(std::move(f));
    }
    return alternation(std::move(parts));
  }

  // x{min,max}: min copies, then max - min nested optional copies (x(x(x)?)?)?, or a star.
  Fragment repeat(const Node& x, int64_t min, int64_t max) {
    Fragment f = epsilon();
    for (int64_t i = 0; i < min; ++i) f = concat(std::move(f), build(x));
    if (max < 0) {
      const Fragment body = build(x);
      const int32_t loop = add({.kind = NfaState::Kind::kSplit, .out = body.start});
      patch(body, loop);
      return concat(std::move(f), Fragment{loop, {{loop, true}}});
    }
    // Optional copies, innermost last: each one's split skips to the common exit.
    std::vector<std::pair<int32_t, bool>> exits;
    Fragment tail;
    for (int64_t i = min; i < max; ++i) {
      const Fragment body = build(x);
      const int32_t skip = add({.kind = NfaState::Kind::kSplit, .out = body.start});
      exits.emplace_back(skip, true);
      if (tail.start >= 0)
        patch(tail, skip);
      else
        f = concat(std::move(f), Fragment{skip, {}});
      tail = body;
    }
    if (tail.start >= 0) {
      exits.insert(exits.end(), tail.exits.begin(), tail.exits.end());
      // f's exits were consumed by the first optional copy; the exits are the skips and the
      // last copy's.
      return {f.start, std::move(exits)};
    }
    return f;
  }

  std::vector<NfaState>& states_;
  size_t limit_;
  std::string_view pattern_;
};

}  // namespace

std::shared_ptr<RegexAutomaton> RegexAutomaton::compile(std::string_view pattern, size_t max_nfa_states) {
  const Node tree = Parser(pattern).parse();
  std::shared_ptr<RegexAutomaton> a(new RegexAutomaton());
  NfaBuilder builder(a->nfa_, max_nfa_states, pattern);
  const Fragment f = builder.build(tree);
  const int32_t match = builder.add({.kind = NfaState::Kind::kMatch});
  builder.patch(f, match);
  a->nfa_start_ = f.start;
  std::vector<int32_t> start{f.start};
  a->closure_of(start);
  std::lock_guard lock(a->mutex_);
  a->state_of(std::move(start));  // state 0
  return a;
}

void RegexAutomaton::closure_of(std::vector<int32_t>& states) const {
  std::vector<int32_t> stack = std::move(states);
  states.clear();
  std::vector<bool> seen(nfa_.size(), false);
  while (!stack.empty()) {
    const int32_t s = stack.back();
    stack.pop_back();
    if (s < 0 || seen[static_cast<size_t>(s)]) continue;
    seen[static_cast<size_t>(s)] = true;
    const NfaState& n = nfa_[static_cast<size_t>(s)];
    if (n.kind == NfaState::Kind::kSplit) {
      stack.push_back(n.alt);
      stack.push_back(n.out);
    } else {
      states.push_back(s);
    }
  }
  std::sort(states.begin(), states.end());
}

RegexAutomaton::State RegexAutomaton::state_of(std::vector<int32_t> closure) {
  if (closure.empty()) return kDead;
  auto it = dfa_index_.find(closure);
  if (it != dfa_index_.end()) return it->second;
  const auto id = static_cast<State>(dfa_sets_.size());
  bool accepting = false;
  for (int32_t s : closure) accepting |= nfa_[static_cast<size_t>(s)].kind == NfaState::Kind::kMatch;
  dfa_index_.emplace(closure, id);
  dfa_sets_.push_back(std::move(closure));
  std::array<State, 256> unknown;
  unknown.fill(kUnknown);
  dfa_next_.push_back(unknown);
  dfa_accepting_.push_back(accepting);
  return id;
}

RegexAutomaton::State RegexAutomaton::next(State state, uint8_t byte) {
  if (state < 0) return kDead;
  std::lock_guard lock(mutex_);
  State& slot = dfa_next_[static_cast<size_t>(state)][byte];
  if (slot != kUnknown) return slot;
  std::vector<int32_t> moved;
  for (int32_t s : dfa_sets_[static_cast<size_t>(state)]) {
    const NfaState& n = nfa_[static_cast<size_t>(s)];
    if (n.kind == NfaState::Kind::kRange && n.lo <= byte && byte <= n.hi) moved.push_back(n.out);
  }
  closure_of(moved);
  const State target = state_of(std::move(moved));
  dfa_next_[static_cast<size_t>(state)][byte] = target;  // state_of may have reallocated
  return target;
}

RegexAutomaton::State RegexAutomaton::walk(State state, std::string_view bytes) {
  for (char c : bytes) {
    state = next(state, static_cast<uint8_t>(c));
    if (state == kDead) break;
  }
  return state;
}

bool RegexAutomaton::accepting(State state) const {
  if (state < 0) return false;
  std::lock_guard lock(mutex_);
  return dfa_accepting_[static_cast<size_t>(state)];
}

size_t RegexAutomaton::num_states() const {
  std::lock_guard lock(mutex_);
  return dfa_sets_.size();
}

std::string regex_escape(std::string_view text) {
  std::string out;
  for (char c : text) {
    if (std::string_view("\\.^$*+?()[]{}|-/#&~").find(c) != std::string_view::npos) out += '\\';
    out += c;
  }
  return out;
}

}  // namespace lowrank::serve
