// Automaton × vocabulary: allowed tokens per state and the constraint cache (token_constraint.h).
#include "lowrank/serve/token_constraint.h"

#include <algorithm>
#include <map>

#include "lowrank/data/tokenizer.h"
#include "lowrank/data/tokenizer_internal.h"

namespace lowrank::serve {

TokenVocabulary::TokenVocabulary(std::vector<std::optional<std::string>> bytes) : bytes_(std::move(bytes)) {
  trie_.emplace_back();
  for (size_t id = 0; id < bytes_.size(); ++id) {
    // A token without bytes would be allowed everywhere and change nothing: never allowed.
    if (!bytes_[id] || bytes_[id]->empty()) continue;
    int32_t node = 0;
    for (char c : *bytes_[id]) {
      const auto b = static_cast<uint8_t>(c);
      auto& children = trie_[static_cast<size_t>(node)].children;
      auto it = std::lower_bound(children.begin(), children.end(), std::pair<uint8_t, int32_t>{b, -1});
      if (it != children.end() && it->first == b) {
        node = it->second;
      } else {
        const auto child = static_cast<int32_t>(trie_.size());
        children.insert(it, {b, child});
        trie_.emplace_back();  // invalidates `children`; not used after
        node = child;
      }
    }
    trie_[static_cast<size_t>(node)].tokens.push_back(static_cast<int32_t>(id));
  }
}

std::shared_ptr<const TokenVocabulary> TokenVocabulary::of(const data::Tokenizer& tokenizer) {
  // Keyed by the tokenizer's shared state, which the entry keeps alive (so the key is never
  // reused by another tokenizer).
  static std::mutex mutex;
  static std::map<const void*, std::pair<data::Tokenizer, std::shared_ptr<const TokenVocabulary>>> cache;
  std::lock_guard lock(mutex);
  const void* key = &tokenizer.impl();
  if (auto it = cache.find(key); it != cache.end()) return it->second.second;
  LR_CHECK(tokenizer.impl().decoder == data::detail::DecoderKind::kByteLevel, Unsupported,
           "structured output needs a byte-level BPE tokenizer (ByteLevel decoder); ", tokenizer.impl().what,
           " has none");
  std::vector<std::optional<std::string>> bytes(static_cast<size_t>(tokenizer.vocab_size()));
  for (int64_t id = 0; id < tokenizer.vocab_size(); ++id) {
    const auto id32 = static_cast<int32_t>(id);
    if (tokenizer.is_special(id32)) continue;
    std::string token;
    try {
      token = tokenizer.id_to_token(id32);
    } catch (const InvalidArgument&) {
      continue;  // an id no token has (a hole between the vocabulary and added tokens)
    }
    std::string out;
    if (!data::detail::from_byte_level(token, out)) out = token;  // an added token: its own text
    bytes[static_cast<size_t>(id)] = std::move(out);
  }
  auto vocabulary = std::make_shared<const TokenVocabulary>(std::move(bytes));
  cache.emplace(key, std::pair{tokenizer, vocabulary});
  return vocabulary;
}

TokenConstraint::TokenConstraint(std::shared_ptr<RegexAutomaton> automaton,
                                 std::shared_ptr<const TokenVocabulary> vocabulary)
    : automaton_(std::move(automaton)), vocabulary_(std::move(vocabulary)) {}

const AllowedTokens& TokenConstraint::allowed(State state) {
  std::lock_guard lock(mutex_);
  auto& slot = allowed_[state];
  if (slot) return *slot;
  auto result = std::make_unique<AllowedTokens>();
  result->accepting = automaton_->accepting(state);
  if (state != kDead) {
    // Depth-first over the trie, carrying the automaton state; a dead byte prunes its subtree.
    const auto& trie = vocabulary_->trie();
    std::vector<std::pair<int32_t, State>> stack{{0, state}};
    while (!stack.empty()) {
      const auto [node, s] = stack.back();
      stack.pop_back();
      for (const auto& [byte, child] : trie[static_cast<size_t>(node)].children) {
        const State t = automaton_->next(s, byte);
        if (t == kDead) continue;
        const auto& tokens = trie[static_cast<size_t>(child)].tokens;
        result->ids.insert(result->ids.end(), tokens.begin(), tokens.end());
        stack.emplace_back(child, t);
      }
    }
    std::sort(result->ids.begin(), result->ids.end());
  }
  slot = std::move(result);
  return *slot;
}

TokenConstraint::State TokenConstraint::advance(State state, int64_t token) {
  if (token < 0 || token >= vocabulary_->size()) return kDead;
  const auto& bytes = vocabulary_->bytes(token);
  if (!bytes || bytes->empty()) return kDead;
  return automaton_->walk(state, *bytes);
}

size_t TokenConstraint::cached_states() const {
  std::lock_guard lock(mutex_);
  return allowed_.size();
}

std::string_view constraint_kind_name(ConstraintKind kind) {
  switch (kind) {
    case ConstraintKind::kRegex:
      return "regex";
    case ConstraintKind::kChoice:
      return "choice";
    case ConstraintKind::kJsonSchema:
      return "json_schema";
    case ConstraintKind::kJsonObject:
      return "json_object";
  }
  return "?";
}

std::shared_ptr<TokenConstraint> ConstraintCache::find(const Key& key) {
  std::lock_guard lock(mutex_);
  for (auto it = entries_.begin(); it != entries_.end(); ++it)
    if (it->first == key) {
      entries_.splice(entries_.begin(), entries_, it);
      ++hits_;
      return entries_.front().second;
    }
  ++misses_;
  return nullptr;
}

void ConstraintCache::insert(const Key& key, std::shared_ptr<TokenConstraint> constraint) {
  std::lock_guard lock(mutex_);
  for (auto it = entries_.begin(); it != entries_.end(); ++it)
    if (it->first == key) {  // compiled twice concurrently: the newer replaces it
      entries_.erase(it);
      break;
    }
  entries_.emplace_front(key, std::move(constraint));
  while (entries_.size() > capacity_) entries_.pop_back();
}

size_t ConstraintCache::size() const {
  std::lock_guard lock(mutex_);
  return entries_.size();
}
int64_t ConstraintCache::hits() const {
  std::lock_guard lock(mutex_);
  return hits_;
}
int64_t ConstraintCache::misses() const {
  std::lock_guard lock(mutex_);
  return misses_;
}

ConstraintCache& constraint_cache() {
  static ConstraintCache cache(kConstraintCacheCapacity);
  return cache;
}

}  // namespace lowrank::serve
