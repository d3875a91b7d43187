// TokenConstraint — a byte-level automaton (regex_automaton.h) against a tokenizer's vocabulary:
// which tokens may come next in each automaton state, for structured output. After outlines'
// index (Willard & Louf, 2023, "Efficient Guided Generation for Large Language Models",
// arXiv:2307.09702, §3; dottxt-ai/outlines-core, src/index.rs), which vLLM's outlines backend
// uses: a token is allowed in state s when walking its bytes from s never leaves the automaton's
// live states; the end of sequence is allowed exactly in accepting states.
//
// Where outlines builds the whole index up front (every state × every token), the allowed set
// of a state is computed the first time a decoding reaches it and cached on the constraint:
// constrained requests touch a small part of a large automaton (a JSON schema's), and the first
// token of a new state pays one walk of the vocabulary's byte trie, pruned at the first dead
// byte, so a state costs the live part of the trie rather than V walks.
//
// Compiled constraints are cached by (kind, spec text) in an LRU (ConstraintCache), so requests
// that share a schema share its automaton and allowed sets.
//
// Vocabulary: a token's bytes are its byte-level BPE characters mapped back to bytes (GPT-2's
// bytes_to_unicode, data/tokenizer_internal.h); added tokens that are not special are their own
// text; special tokens (bos, eos, ...) have no text and are never allowed by the automaton (the
// sampler allows the stop ids in accepting states, sampler.h). A tokenizer without the ByteLevel
// decoder (tokens joined by spaces) cannot be constrained: Unsupported.
#pragma once

#include <cstdint>
#include <list>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "lowrank/serve/regex_automaton.h"

namespace lowrank::data {
class Tokenizer;
}

namespace lowrank::serve {

// The bytes of every token of a vocabulary, and their trie.
class TokenVocabulary {
 public:
  // `bytes[id]`: the token's bytes, or none for a token that is not text (special tokens).
  explicit TokenVocabulary(std::vector<std::optional<std::string>> bytes);
  // The vocabulary of `tokenizer` (built once per tokenizer and kept: tokenizers are few and
  // long-lived in a server). Throws Unsupported for a tokenizer without a byte-level decoder.
  static std::shared_ptr<const TokenVocabulary> of(const data::Tokenizer& tokenizer);

  int64_t size() const { return static_cast<int64_t>(bytes_.size()); }
  const std::optional<std::string>& bytes(int64_t id) const { return bytes_[static_cast<size_t>(id)]; }

  struct TrieNode {
    std::vector<std::pair<uint8_t, int32_t>> children;  // byte → node, sorted by byte
    std::vector<int32_t> tokens;                        // the tokens whose bytes end here
  };
  const std::vector<TrieNode>& trie() const { return trie_; }  // node 0: the root (no bytes)

 private:
  std::vector<std::optional<std::string>> bytes_;
  std::vector<TrieNode> trie_;
};

// The tokens allowed in one automaton state.
struct AllowedTokens {
  std::vector<int32_t> ids;  // sorted; text tokens only
  bool accepting = false;    // the text so far matches: the end of sequence is allowed
};

class TokenConstraint {
 public:
  using State = RegexAutomaton::State;
  static constexpr State kDead = RegexAutomaton::kDead;

  TokenConstraint(std::shared_ptr<RegexAutomaton> automaton,
                  std::shared_ptr<const TokenVocabulary> vocabulary);

  State start() const { return automaton_->start(); }
  // The tokens allowed in `state` (computed on first use, then cached; the reference stays valid
  // for the constraint's lifetime). Thread-safe.
  const AllowedTokens& allowed(State state);
  // The state after `token`'s bytes (kDead for a token that is not text or leaves the automaton).
  State advance(State state, int64_t token);
  bool accepting(State state) const { return automaton_->accepting(state); }

  RegexAutomaton& automaton() { return *automaton_; }
  const TokenVocabulary& vocabulary() const { return *vocabulary_; }
  // States whose allowed set has been computed (for tests and the cache's accounting).
  size_t cached_states() const;

 private:
  std::shared_ptr<RegexAutomaton> automaton_;
  std::shared_ptr<const TokenVocabulary> vocabulary_;
  mutable std::mutex mutex_;
  std::unordered_map<State, std::unique_ptr<AllowedTokens>> allowed_;
};

// What a request constrains its output with, as the API names it.
enum class ConstraintKind { kRegex, kChoice, kJsonSchema, kJsonObject };
std::string_view constraint_kind_name(ConstraintKind kind);

// Compiled constraints by (kind, spec text, vocabulary), least recently used evicted beyond
// `capacity`. Thread-safe; a constraint in use by a request stays alive after its eviction.
class ConstraintCache {
 public:
  explicit ConstraintCache(size_t capacity) : capacity_(capacity) {}
  // The cached constraint, or `regex` (the spec's regex, built only on a miss) compiled now.
  // Throws RegexError from the compilation (nothing is cached then).
  template <typename MakeRegex>
  std::shared_ptr<TokenConstraint> get(ConstraintKind kind, const std::string& spec,
                                       const std::shared_ptr<const TokenVocabulary>& vocabulary,
                                       MakeRegex&& regex) {
    const Key key{kind, spec, vocabulary.get()};
    if (auto hit = find(key)) return hit;
    auto constraint = std::make_shared<TokenConstraint>(RegexAutomaton::compile(regex()), vocabulary);
    insert(key, constraint);
    return constraint;
  }
  size_t size() const;
  int64_t hits() const;
  int64_t misses() const;

 private:
  struct Key {
    ConstraintKind kind;
    std::string spec;
    const TokenVocabulary* vocabulary;
    bool operator==(const Key&) const = default;
  };
  std::shared_ptr<TokenConstraint> find(const Key& key);
  void insert(const Key& key, std::shared_ptr<TokenConstraint> constraint);

  size_t capacity_;
  mutable std::mutex mutex_;
  std::list<std::pair<Key, std::shared_ptr<TokenConstraint>>> entries_;  // most recent first
  int64_t hits_ = 0, misses_ = 0;
};

// The server's cache (capacity kConstraintCacheCapacity).
inline constexpr size_t kConstraintCacheCapacity = 64;
ConstraintCache& constraint_cache();

}  // namespace lowrank::serve
