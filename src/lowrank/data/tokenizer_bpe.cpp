// The BPE model and the added-token vocabulary of the byte-level BPE tokenizer.
//
// BPE (Sennrich et al., 2016, "Neural Machine Translation of Rare Words with Subword Units"):
// a word starts as its characters; the adjacent pair with the lowest merge rank is merged,
// leftmost first, until no pair has a merge. This follows Hugging Face `tokenizers`
// models/bpe/model.rs (merge_word, tokenize_with_cache, ignore_merges, unk handling) and
// models/bpe/word.rs (merge_all: a min-heap on (rank, position) with stale entries skipped).
// Added tokens follow tokenizer/added_vocabulary.rs (find_matches: aho-corasick LeftmostLongest
// over the raw text, then single_word / lstrip / rstrip).
#include <algorithm>
#include <mutex>
#include <queue>

#include "lowrank/core/error.h"
#include "lowrank/data/tokenizer_internal.h"

namespace lowrank::data::detail {

namespace {

uint64_t pair_key(int32_t a, int32_t b) {
  return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b);
}

bool null_or_empty(const Json& spec, std::string_view key) {
  auto it = spec.find(key);
  return it == spec.end() || it->is_null() || (it->is_string() && it->get<std::string>().empty());
}

}  // namespace

// ---- BPE model --------------------------------------------------------------------------------

std::unique_ptr<BpeModel> BpeModel::from_json(const Json& spec, std::string_view what) {
  LR_CHECK(spec.is_object(), Corruption, what, ": \"model\" must be an object");
  const auto type = json_get_or<std::string>(spec, "type", spec.contains("merges") ? "BPE" : "", what);
  LR_CHECK(type == "BPE", Unsupported, what, ": model type \"", type,
           "\" is not supported (only BPE; Unigram, WordPiece and WordLevel are not)");
  const auto dropout = spec.find("dropout");
  LR_CHECK(
      dropout == spec.end() || dropout->is_null() || (dropout->is_number() && dropout->get<double>() == 0.0),
      Unsupported, what, ": BPE dropout is not supported (it makes encoding random)");
  LR_CHECK(null_or_empty(spec, "continuing_subword_prefix"), Unsupported, what,
           ": BPE continuing_subword_prefix is not supported (byte-level BPE does not use it)");
  LR_CHECK(null_or_empty(spec, "end_of_word_suffix"), Unsupported, what,
           ": BPE end_of_word_suffix is not supported (byte-level BPE does not use it)");
  LR_CHECK(!json_get_or<bool>(spec, "byte_fallback", false, what), Unsupported, what,
           ": BPE byte_fallback is not supported (a SentencePiece-style model, not byte-level BPE)");

  auto model = std::make_unique<BpeModel>();
  model->fuse_unk_ = json_get_or<bool>(spec, "fuse_unk", false, what);
  model->ignore_merges_ = json_get_or<bool>(spec, "ignore_merges", false, what);

  const auto vocab = spec.find("vocab");
  LR_CHECK(vocab != spec.end() && vocab->is_object(), Corruption, what, ": model.vocab must be an object");
  model->vocab_.reserve(vocab->size());
  int64_t max_id = -1;
  for (const auto& [token, id] : vocab->items()) {
    LR_CHECK(id.is_number_integer() && id.get<int64_t>() >= 0 && id.get<int64_t>() < (int64_t{1} << 31),
             Corruption, what, ": model.vocab[\"", token, "\"] must be an id in [0, 2^31), not ", id.dump());
    model->vocab_.emplace(token, id.get<int32_t>());
    max_id = std::max(max_id, id.get<int64_t>());
  }
  model->id_to_token_.resize(static_cast<std::size_t>(max_id + 1));
  model->has_id_.assign(static_cast<std::size_t>(max_id + 1), 0);
  for (const auto& [token, id] : model->vocab_) {
    LR_CHECK(!model->has_id_[id], Corruption, what, ": model.vocab gives id ", id, " to both \"",
             model->id_to_token_[id], "\" and \"", token, "\"");
    model->id_to_token_[id] = token;
    model->has_id_[id] = 1;
  }

  const auto unk = spec.find("unk_token");
  if (unk != spec.end() && !unk->is_null()) {
    LR_CHECK(unk->is_string(), Corruption, what, ": model.unk_token must be a string or null");
    auto it = model->vocab_.find(unk->get<std::string>());
    LR_CHECK(it != model->vocab_.end(), Corruption, what, ": model.unk_token \"", unk->get<std::string>(),
             "\" is not in model.vocab");
    model->unk_id_ = it->second;
  }

  const auto merges = spec.find("merges");
  LR_CHECK(merges != spec.end() && merges->is_array(), Corruption, what, ": model.merges must be a list");
  model->merges_.reserve(merges->size());
  model->merge_list_.reserve(merges->size());
  int32_t rank = 0;
  for (const auto& merge : *merges) {
    std::string a, b;
    if (merge.is_string()) {  // legacy "a b"
      const auto& line = merge.get_ref<const std::string&>();
      const auto space = line.find(' ');
      LR_CHECK(space != std::string::npos && line.find(' ', space + 1) == std::string::npos, Corruption, what,
               ": model.merges[", rank, "] \"", line, "\" is not two tokens separated by one space");
      a = line.substr(0, space);
      b = line.substr(space + 1);
    } else {
      LR_CHECK(merge.is_array() && merge.size() == 2 && merge[0].is_string() && merge[1].is_string(),
               Corruption, what, ": model.merges[", rank, "] must be \"a b\" or [\"a\", \"b\"], not ",
               merge.dump());
      a = merge[0].get<std::string>();
      b = merge[1].get<std::string>();
    }
    auto ia = model->vocab_.find(a), ib = model->vocab_.find(b), ic = model->vocab_.find(a + b);
    LR_CHECK(ia != model->vocab_.end(), Corruption, what, ": model.merges[", rank, "] uses \"", a,
             "\", which is not in model.vocab");
    LR_CHECK(ib != model->vocab_.end(), Corruption, what, ": model.merges[", rank, "] uses \"", b,
             "\", which is not in model.vocab");
    LR_CHECK(ic != model->vocab_.end(), Corruption, what, ": model.merges[", rank, "] makes \"", a + b,
             "\", which is not in model.vocab");
    // A repeated pair keeps its last rank, as `tokenizers` collects merges into a map.
    model->merges_[pair_key(ia->second, ib->second)] = {rank, ic->second};
    model->merge_list_.emplace_back(ia->second, ib->second);
    ++rank;
  }
  return model;
}

std::optional<int32_t> BpeModel::token_to_id(std::string_view token) const {
  auto it = vocab_.find(token);
  if (it == vocab_.end()) return std::nullopt;
  return it->second;
}

const std::string* BpeModel::id_to_token(int32_t id) const {
  if (id < 0 || static_cast<std::size_t>(id) >= id_to_token_.size() || !has_id_[id]) return nullptr;
  return &id_to_token_[id];
}

void BpeModel::merge_word(std::string_view word, std::vector<int32_t>& ids) const {
  struct Symbol {
    int32_t id;
    int32_t prev;
    int32_t next;
    std::size_t len;  // bytes; 0 once merged into its left neighbour
  };
  std::vector<Symbol> symbols;
  symbols.reserve(word.size());
  auto add = [&](int32_t id, std::size_t len) {
    const auto n = static_cast<int32_t>(symbols.size());
    if (n > 0) symbols.back().next = n;
    symbols.push_back({id, n - 1, -1, len});
  };
  // Characters to symbols; unknown characters become unk (fused when fuse_unk) or vanish.
  std::optional<std::pair<int32_t, std::size_t>> unk;
  std::size_t i = 0;
  while (i < word.size()) {
    const std::size_t len = utf8_length(static_cast<unsigned char>(word[i]));
    auto it = vocab_.find(word.substr(i, len));
    if (it != vocab_.end()) {
      if (unk) add(unk->first, unk->second), unk.reset();
      add(it->second, len);
    } else if (unk_id_) {
      if (unk && fuse_unk_) {
        unk->second += len;
      } else {
        if (unk) add(unk->first, unk->second);
        unk = std::make_pair(*unk_id_, len);
      }
    }
    i += len;
  }
  if (unk) add(unk->first, unk->second);

  struct Merge {
    int32_t rank;
    int32_t pos;
    int32_t new_id;
    bool operator>(const Merge& o) const { return rank != o.rank ? rank > o.rank : pos > o.pos; }
  };
  std::priority_queue<Merge, std::vector<Merge>, std::greater<>> queue;
  auto lookup = [&](int32_t a, int32_t b) -> const std::pair<int32_t, int32_t>* {
    auto it = merges_.find(pair_key(a, b));
    return it == merges_.end() ? nullptr : &it->second;
  };
  for (std::size_t k = 0; k + 1 < symbols.size(); ++k)
    if (auto m = lookup(symbols[k].id, symbols[k + 1].id))
      queue.push({m->first, static_cast<int32_t>(k), m->second});

  while (!queue.empty()) {
    const Merge top = queue.top();
    queue.pop();
    if (symbols[top.pos].len == 0 || symbols[top.pos].next == -1) continue;
    const int32_t right_pos = symbols[top.pos].next;
    const Symbol right = symbols[right_pos];
    // A stale entry: the pair at this position changed since it was queued.
    auto m = lookup(symbols[top.pos].id, right.id);
    if (m == nullptr || m->second != top.new_id) continue;
    Symbol& current = symbols[top.pos];
    current.id = top.new_id;
    current.len += right.len;
    current.next = right.next;
    symbols[right_pos].len = 0;
    if (right.next >= 0) symbols[right.next].prev = top.pos;
    if (current.prev >= 0)
      if (auto p = lookup(symbols[current.prev].id, current.id))
        queue.push({p->first, current.prev, p->second});
    if (current.next >= 0)
      if (auto p = lookup(current.id, symbols[current.next].id)) queue.push({p->first, top.pos, p->second});
  }
  for (const auto& s : symbols)
    if (s.len != 0) ids.push_back(s.id);
}

void BpeModel::encode_word(std::string_view word, std::vector<int32_t>& ids) const {
  if (word.empty()) return;
  if (ignore_merges_) {
    if (auto it = vocab_.find(word); it != vocab_.end()) {
      ids.push_back(it->second);
      return;
    }
  }
  {
    std::shared_lock lock(cache_mutex_);
    if (auto it = cache_.find(word); it != cache_.end()) {
      ids.insert(ids.end(), it->second.begin(), it->second.end());
      return;
    }
  }
  std::vector<int32_t> word_ids;
  merge_word(word, word_ids);
  ids.insert(ids.end(), word_ids.begin(), word_ids.end());
  if (word.size() < kCacheMaxWordBytes) {
    std::unique_lock lock(cache_mutex_);
    if (cache_.size() < kCacheCapacity) cache_.emplace(std::string(word), std::move(word_ids));
  }
}

void BpeModel::append_vocab_json(std::string& out, const std::string& indent) const {
  out += "{";
  bool first = true;
  for (std::size_t id = 0; id < id_to_token_.size(); ++id) {
    if (!has_id_[id]) continue;
    out += first ? "\n" : ",\n";
    first = false;
    out += indent + "  " + Json(id_to_token_[id]).dump() + ": " + std::to_string(id);
  }
  out += first ? "}" : "\n" + indent + "}";
}

void BpeModel::append_merges_json(std::string& out, const std::string& indent) const {
  out += "[";
  bool first = true;
  for (auto [a, b] : merge_list_) {
    out += first ? "\n" : ",\n";
    first = false;
    out += indent + "  [" + Json(id_to_token_[a]).dump() + ", " + Json(id_to_token_[b]).dump() + "]";
  }
  out += first ? "]" : "\n" + indent + "]";
}

// ---- Added tokens -----------------------------------------------------------------------------

namespace {

// Rust regex's Unicode \w: Alphabetic, marks, decimal digits, connector punctuation, join controls.
bool is_word_char(char32_t cp) {
  if (cp < 0x80)
    return (cp >= 'a' && cp <= 'z') || (cp >= 'A' && cp <= 'Z') || (cp >= '0' && cp <= '9') || cp == '_';
  static const Regex word(R"([\p{Alphabetic}\p{M}\p{Nd}\p{Pc}\p{Join_Control}])", false, "word class");
  std::string s;
  append_utf8(s, cp);
  return !word.find_all(s).empty();
}

char32_t last_code_point(std::string_view s) {
  std::size_t i = s.size() - 1;
  while (i > 0 && (static_cast<unsigned char>(s[i]) & 0xC0) == 0x80) --i;
  return next_code_point(s, i);
}

}  // namespace

void AddedVocabulary::Trie::insert(std::string_view s, int32_t token) {
  int32_t node = 0;
  for (char ch : s) {
    const auto c = static_cast<unsigned char>(ch);
    auto& next = nodes[node].next;
    auto it = std::lower_bound(next.begin(), next.end(), c,
                               [](const auto& e, unsigned char v) { return e.first < v; });
    if (it != next.end() && it->first == c) {
      node = it->second;
    } else {
      const auto child = static_cast<int32_t>(nodes.size());
      nodes[node].next.insert(it, {c, child});
      nodes.emplace_back();
      node = child;
    }
  }
  nodes[node].token = token;
}

std::pair<int32_t, std::size_t> AddedVocabulary::Trie::longest(std::string_view text, std::size_t pos) const {
  std::pair<int32_t, std::size_t> best{-1, 0};
  int32_t node = 0;
  for (std::size_t i = pos; i < text.size(); ++i) {
    const auto c = static_cast<unsigned char>(text[i]);
    const auto& next = nodes[node].next;
    auto it = std::lower_bound(next.begin(), next.end(), c,
                               [](const auto& e, unsigned char v) { return e.first < v; });
    if (it == next.end() || it->first != c) break;
    node = it->second;
    if (nodes[node].token >= 0) best = {nodes[node].token, i + 1 - pos};
  }
  return best;
}

void AddedVocabulary::add(AddedToken token) {
  if (token.content.empty()) return;  // `tokenizers` ignores empty added tokens
  if (auto it = by_content_.find(token.content); it != by_content_.end()) {
    AddedToken& existing = tokens_[it->second];
    by_id_.erase(existing.id);
    existing = std::move(token);
    by_id_[existing.id] = it->second;
    return;
  }
  by_content_.emplace(token.content, tokens_.size());
  by_id_[token.id] = tokens_.size();
  tokens_.push_back(std::move(token));
}

void AddedVocabulary::build(bool nfc_normalized) {
  raw_trie_ = Trie{};
  normalized_trie_ = Trie{};
  for (std::size_t k = 0; k < tokens_.size(); ++k) {
    const AddedToken& t = tokens_[k];
    if (!t.normalized)
      raw_trie_.insert(t.content, static_cast<int32_t>(k));
    else
      normalized_trie_.insert(nfc_normalized ? nfc(t.content) : t.content, static_cast<int32_t>(k));
  }
}

const AddedToken* AddedVocabulary::find_id(int32_t id) const {
  auto it = by_id_.find(id);
  return it == by_id_.end() ? nullptr : &tokens_[it->second];
}

const AddedToken* AddedVocabulary::find_content(std::string_view content) const {
  auto it = by_content_.find(content);
  return it == by_content_.end() ? nullptr : &tokens_[it->second];
}

bool AddedVocabulary::is_special_content(std::string_view content) const {
  const AddedToken* t = find_content(content);
  return t != nullptr && t->special;
}

std::vector<TextPiece> AddedVocabulary::split(std::string_view text, bool normalized) const {
  std::vector<TextPiece> pieces;
  if (text.empty()) return pieces;
  const Trie& trie = normalized ? normalized_trie_ : raw_trie_;
  const std::size_t n = text.size();
  std::size_t start_offset = 0;
  std::size_t pos = 0;
  while (pos < n) {
    auto [index, length] = trie.longest(text, pos);
    if (index < 0) {
      ++pos;
      continue;
    }
    std::size_t start = pos, stop = pos + length;
    pos = stop;  // the matcher resumes after the match, kept or not
    const AddedToken& token = tokens_[index];
    if (token.single_word) {
      const bool start_space = start == 0 || !is_word_char(last_code_point(text.substr(0, start)));
      std::size_t k = stop;
      const bool stop_space = stop == n || !is_word_char(next_code_point(text, k));
      if (!start_space || !stop_space) continue;
    }
    if (token.lstrip) {
      std::size_t new_start = start;
      while (new_start > 0) {
        const char32_t cp = last_code_point(text.substr(0, new_start));
        if (!is_white_space(cp)) break;
        std::size_t back = new_start - 1;
        while (back > 0 && (static_cast<unsigned char>(text[back]) & 0xC0) == 0x80) --back;
        new_start = back;
      }
      start = std::max(new_start, start_offset);
    }
    if (token.rstrip) {
      std::size_t k = stop;
      while (k < n) {
        std::size_t next = k;
        if (!is_white_space(next_code_point(text, next))) break;
        k = next;
      }
      stop = k;
    }
    if (start_offset < start) pieces.push_back({start_offset, start, std::nullopt});
    pieces.push_back({start, stop, token.id});
    start_offset = stop;
  }
  if (start_offset != n) pieces.push_back({start_offset, n, std::nullopt});
  return pieces;
}

OrderedJson added_token_json(const AddedToken& token) {
  OrderedJson j;
  j["id"] = token.id;
  j["content"] = token.content;
  j["single_word"] = token.single_word;
  j["lstrip"] = token.lstrip;
  j["rstrip"] = token.rstrip;
  j["normalized"] = token.normalized;
  j["special"] = token.special;
  return j;
}

}  // namespace lowrank::data::detail
