// RegexAutomaton — a regular expression compiled to a byte-level automaton that can be stepped one
// byte at a time, for constrained decoding (token_constraint.h). The pipeline is the one of
// outlines (Willard & Louf, 2023, "Efficient Guided Generation for Large Language Models",
// arXiv:2307.09702; dottxt-ai/outlines-core, src/index.rs): regex → finite automaton over the
// bytes of the text → per automaton state, the vocabulary tokens whose bytes keep it alive.
//
// Construction:
//   1. the pattern is parsed into a tree over Unicode code points (classes are sets of code point
//      ranges);
//   2. Thompson's construction (Thompson, 1968, "Regular expression search algorithm", CACM 11(6))
//      builds an NFA over bytes: a class becomes the alternation of the UTF-8 byte-range
//      sequences that encode its code points (the range splitting of RE2's and Rust regex's UTF-8
//      compilers: split at the encoding-length boundaries, then where continuation bytes would not
//      span their full 0x80..0xBF range), a counted repetition {n,m} is unrolled;
//   3. the DFA is built lazily by the subset construction (Rabin & Scott, 1959): a DFA state is
//      the epsilon closure of a set of NFA states, created the first time a byte leads to it, with
//      its 256 transitions filled on demand. Only the states a decoding actually reaches exist.
// Why not RE2 (or another library): constrained decoding needs the automaton's state after a
// prefix and the set of bytes that keep it alive, step by step; RE2 has no public API for its
// incremental DFA state, std::regex and PCRE2 match whole strings only (PCRE2's partial matching
// answers one string at a time, which costs a full match per token per step).
//
// Syntax: Python's `re` / the JSON-schema `pattern` subset outlines accepts — literals; `.` (any
// code point but \n); classes `[...]` with ranges, negation and escapes; \d \D \w \W \s \S
// (ASCII meanings: [0-9], [A-Za-z0-9_], [ \t\n\r\f\v]); escapes \n \t \r \f \v \0 \xHH \uHHHH
// and escaped punctuation; groups `(...)`, `(?:...)`, `(?P<name>...)`; alternation; quantifiers
// * + ? {n} {n,} {n,m} {,m} (a lazy `?` after one is accepted and changes nothing: the language is
// the same); `^` at the very start and `$` at the very end (the whole text always has to match).
// Refused with RegexError naming the construct: lookaround, backreferences, \b and other
// assertions, possessive quantifiers, anchors elsewhere, inline flags.
//
// Thread safety: the lazily built DFA is shared by every request using the same pattern, so its
// growth is under a mutex; next() takes it.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "lowrank/core/error.h"

namespace lowrank::serve {

// A pattern that cannot be compiled; the message names the construct (and where it is).
class RegexError : public InvalidArgument {
 public:
  using InvalidArgument::InvalidArgument;
};

class RegexAutomaton {
 public:
  using State = int32_t;
  static constexpr State kDead = -1;  // no continuation can match

  // Compiles `pattern`; throws RegexError for a construct outside the syntax above or an NFA of
  // more than `max_nfa_states` states (a counted repetition unrolled too far).
  static std::shared_ptr<RegexAutomaton> compile(std::string_view pattern, size_t max_nfa_states = 250000);

  State start() const { return 0; }
  // The state after `byte` from `state` (kDead: the text can no longer match).
  State next(State state, uint8_t byte);
  // The state after every byte of `bytes` (kDead as soon as one leads nowhere).
  State walk(State state, std::string_view bytes);
  // True when the text read up to `state` matches the whole pattern.
  bool accepting(State state) const;
  // DFA states built so far (for tests and metrics).
  size_t num_states() const;
  size_t num_nfa_states() const { return nfa_.size(); }

  // One NFA state: a byte range to `out`, an epsilon split to `out` and `alt`, or the match.
  struct NfaState {
    enum class Kind : uint8_t { kRange, kSplit, kMatch } kind = Kind::kMatch;
    uint8_t lo = 0, hi = 0;
    int32_t out = -1, alt = -1;
  };

 private:
  RegexAutomaton() = default;
  State state_of(std::vector<int32_t> closure);  // mutex held
  void closure_of(std::vector<int32_t>& states) const;

  std::vector<NfaState> nfa_;
  int32_t nfa_start_ = 0;
  mutable std::mutex mutex_;
  std::vector<std::vector<int32_t>> dfa_sets_;    // per DFA state: its sorted NFA set
  std::vector<std::array<State, 256>> dfa_next_;  // kUnknown until computed
  std::vector<bool> dfa_accepting_;
  std::map<std::vector<int32_t>, State> dfa_index_;  // NFA set → DFA state
  static constexpr State kUnknown = -2;
};

// `text` with every regex metacharacter escaped (a literal in a pattern), as Python's re.escape.
std::string regex_escape(std::string_view text);

}  // namespace lowrank::serve
