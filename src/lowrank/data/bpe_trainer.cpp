// Byte-level BPE training, step for step as Hugging Face `tokenizers` models/bpe/trainer.rs
// (BpeTrainer::do_train) and models/bpe/word.rs (Word::merge): Sennrich et al., 2016, Algorithm 1,
// over GPT-2's byte-level alphabet (Radford et al., 2019).
//
// The loop keeps `tokenizers`' bookkeeping so that the learned merges come out the same:
// pair counts are updated incrementally from the changes each merge makes in the words holding
// the pair; a max-heap holds (count, pair, words) entries, refreshed lazily (an entry whose count
// is stale is pushed back with the current count); ties go to the smaller (id, id) pair; the
// merged pair's own count is not decremented (it is never queued again unless re-formed).
#include "lowrank/data/bpe_trainer.h"

#include <algorithm>
#include <queue>
#include <set>

#include "lowrank/core/error.h"
#include "lowrank/core/file.h"
#include "lowrank/core/progress.h"
#include "lowrank/data/tokenizer_internal.h"

namespace lowrank::data {

namespace {

constexpr std::string_view kLlama3Pattern =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
constexpr std::string_view kQwen2Pattern =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

Json byte_level(bool use_regex) {
  return Json{
      {"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true}, {"use_regex", use_regex}};
}

Json split_then_byte_level(std::string_view pattern) {
  Json split{{"type", "Split"},
             {"pattern", {{"Regex", std::string(pattern)}}},
             {"behavior", "Isolated"},
             {"invert", false}};
  return Json{{"type", "Sequence"}, {"pretokenizers", Json::array({split, byte_level(false)})}};
}

Json preset_json(std::string_view name) {
  if (name == "gpt2") return byte_level(true);
  if (name == "llama3") return split_then_byte_level(kLlama3Pattern);
  if (name == "qwen2") return split_then_byte_level(kQwen2Pattern);
  throw InvalidArgument(str("unknown BPE pre-tokenizer preset \"", name, "\" (gpt2, llama3, qwen2)"));
}

uint64_t pair_key(int32_t a, int32_t b) {
  return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b);
}

struct QueueEntry {
  int64_t count;
  uint64_t pair;  // (a << 32 | b): comparing keys compares (a, b)
  std::vector<std::size_t> words;
};

// Max-heap order: higher count first; on ties the smaller pair first.
struct QueueLess {
  bool operator()(const QueueEntry& x, const QueueEntry& y) const {
    if (x.count != y.count) return x.count < y.count;
    return x.pair > y.pair;
  }
};

// Word::merge: replaces each (a, b) by `merged`, returning the pair count changes.
void merge_in_word(std::vector<int32_t>& s, int32_t a, int32_t b, int32_t merged,
                   std::vector<std::pair<uint64_t, int>>& changes) {
  std::size_t i = 0;
  while (i < s.size()) {
    if (s[i] == a && i + 1 < s.size() && s[i + 1] == b) {
      if (i > 0) {
        changes.emplace_back(pair_key(s[i - 1], a), -1);
        changes.emplace_back(pair_key(s[i - 1], merged), 1);
      }
      s[i] = merged;
      s.erase(s.begin() + static_cast<std::ptrdiff_t>(i) + 1);
      if (i + 1 < s.size()) {
        changes.emplace_back(pair_key(b, s[i + 1]), -1);
        changes.emplace_back(pair_key(merged, s[i + 1]), 1);
      }
    }
    ++i;
  }
}

}  // namespace

std::vector<std::string> bpe_pre_tokenizer_presets() {
  return {"gpt2", "llama3", "qwen2"};
}

BpeTrainer::BpeTrainer(BpeTrainerOptions options) : options_(std::move(options)) {
  LR_CHECK(options_.vocab_size >= 1, InvalidArgument, "BPE vocab_size must be at least 1, not ",
           options_.vocab_size);
  LR_CHECK(options_.min_frequency >= 0, InvalidArgument, "BPE min_frequency must be >= 0, not ",
           options_.min_frequency);
  for (std::size_t k = 0; k < options_.special_tokens.size(); ++k) {
    const auto& token = options_.special_tokens[k];
    LR_CHECK(!token.empty(), InvalidArgument, "special token ", k, " is empty");
    LR_CHECK(detail::find_invalid_utf8(token) == std::string::npos, InvalidArgument, "special token ", k,
             " is not valid UTF-8");
    LR_CHECK(std::find(options_.special_tokens.begin(), options_.special_tokens.begin() + k, token) ==
                 options_.special_tokens.begin() + k,
             InvalidArgument, "special token \"", token, "\" is given twice");
  }
  pre_tokenizer_spec_ = preset_json(options_.pre_tokenizer);
  pre_tokenizer_ = std::make_shared<const detail::PreTokenizer>(detail::PreTokenizer::from_json(
      pre_tokenizer_spec_, str("pre-tokenizer preset ", options_.pre_tokenizer)));
}

void BpeTrainer::feed(std::string_view text) {
  const std::size_t bad = detail::find_invalid_utf8(text);
  LR_CHECK(bad == std::string::npos, InvalidArgument, "training text is not valid UTF-8 (byte ", bad, ")");
  words_scratch_.clear();
  pre_tokenizer_->run(text, words_scratch_);
  for (auto& word : words_scratch_) ++word_counts_[std::move(word)];
}

void BpeTrainer::feed_file(const std::filesystem::path& path) {
  const std::string text = read_text_file(path);
  std::size_t begin = 0, line = 1;
  while (begin < text.size()) {
    std::size_t end = text.find('\n', begin);
    end = end == std::string::npos ? text.size() : end + 1;
    const std::string_view piece(text.data() + begin, end - begin);
    LR_CHECK(detail::find_invalid_utf8(piece) == std::string::npos, InvalidArgument, path.string(), ":", line,
             ": not valid UTF-8");
    feed(piece);
    begin = end;
    ++line;
  }
}

Json BpeTrainer::train_json() const {
  // 1. Special tokens, then the alphabet sorted by code point.
  std::vector<std::string> id_to_word;
  std::unordered_map<std::string, int32_t> word_to_id;
  auto add_token = [&](const std::string& token) {
    if (word_to_id.contains(token)) return;
    word_to_id.emplace(token, static_cast<int32_t>(id_to_word.size()));
    id_to_word.push_back(token);
  };
  for (const auto& token : options_.special_tokens) add_token(token);
  std::set<char32_t> alphabet;
  for (const auto& c : detail::byte_level_alphabet()) {
    std::size_t i = 0;
    alphabet.insert(detail::next_code_point(c, i));
  }
  for (const auto& [word, count] : word_counts_) {
    std::size_t i = 0;
    while (i < word.size()) alphabet.insert(detail::next_code_point(word, i));
  }
  for (char32_t cp : alphabet) {
    std::string c;
    detail::append_utf8(c, cp);
    add_token(c);
  }

  // 2. Words as symbol ids (sorted for a deterministic order) and their counts.
  std::vector<const std::pair<const std::string, uint64_t>*> sorted;
  sorted.reserve(word_counts_.size());
  for (const auto& entry : word_counts_) sorted.push_back(&entry);
  std::sort(sorted.begin(), sorted.end(), [](const auto* x, const auto* y) { return x->first < y->first; });
  std::vector<std::vector<int32_t>> words(sorted.size());
  std::vector<int64_t> counts(sorted.size());
  for (std::size_t w = 0; w < sorted.size(); ++w) {
    const std::string& word = sorted[w]->first;
    counts[w] = static_cast<int64_t>(sorted[w]->second);
    std::size_t i = 0;
    while (i < word.size()) {
      const std::size_t start = i;
      detail::next_code_point(word, i);
      words[w].push_back(word_to_id.at(word.substr(start, i - start)));
    }
  }

  // 3. Pair counts and where each pair occurs.
  std::unordered_map<uint64_t, int64_t> pair_counts;
  std::unordered_map<uint64_t, std::vector<std::size_t>> where;
  auto note = [&](uint64_t pair, std::size_t w) {
    auto& list = where[pair];
    if (list.empty() || list.back() != w) list.push_back(w);
  };
  for (std::size_t w = 0; w < words.size(); ++w)
    for (std::size_t k = 0; k + 1 < words[w].size(); ++k) {
      const uint64_t pair = pair_key(words[w][k], words[w][k + 1]);
      pair_counts[pair] += counts[w];
      note(pair, w);
    }
  std::priority_queue<QueueEntry, std::vector<QueueEntry>, QueueLess> queue;
  auto flush = [&] {
    for (auto& [pair, list] : where) {
      const int64_t count = pair_counts[pair];
      if (count > 0) {
        std::sort(list.begin(), list.end());
        list.erase(std::unique(list.begin(), list.end()), list.end());
        queue.push({count, pair, std::move(list)});
      }
    }
    where.clear();
  };
  flush();

  // 4. Merge the most frequent pair until the vocabulary is full.
  std::vector<std::pair<int32_t, int32_t>> merges;
  const auto target = static_cast<std::size_t>(options_.vocab_size);
  ProgressBar progress(static_cast<int64_t>(target > id_to_word.size() ? target - id_to_word.size() : 0),
                       "bpe merges");
  std::vector<std::pair<uint64_t, int>> changes;
  while (id_to_word.size() < target && !queue.empty()) {
    QueueEntry top = queue.top();
    queue.pop();
    const int64_t current = pair_counts[top.pair];
    if (top.count != current) {
      top.count = current;
      queue.push(std::move(top));
      continue;
    }
    if (top.count < 1 || options_.min_frequency > top.count) break;
    const auto a = static_cast<int32_t>(top.pair >> 32), b = static_cast<int32_t>(top.pair & 0xFFFFFFFFu);
    const std::string token = id_to_word[a] + id_to_word[b];
    const std::size_t before = id_to_word.size();
    add_token(token);
    const int32_t merged = word_to_id.at(token);
    merges.emplace_back(a, b);
    if (id_to_word.size() > before) progress.advance();
    for (std::size_t w : top.words) {
      changes.clear();
      merge_in_word(words[w], a, b, merged, changes);
      for (auto [pair, delta] : changes) {
        pair_counts[pair] += delta * counts[w];
        if (delta > 0) note(pair, w);
      }
    }
    flush();
  }
  progress.finish();

  // 5. The tokenizer.json.
  Json added = Json::array();
  for (const auto& token : options_.special_tokens)
    added.push_back(Json{{"id", word_to_id.at(token)},
                         {"content", token},
                         {"single_word", false},
                         {"lstrip", false},
                         {"rstrip", false},
                         {"normalized", false},
                         {"special", true}});
  Json vocab = Json::object();
  for (std::size_t id = 0; id < id_to_word.size(); ++id) vocab[id_to_word[id]] = id;
  Json merge_list = Json::array();
  for (auto [a, b] : merges) merge_list.push_back(Json::array({id_to_word[a], id_to_word[b]}));
  Json model{{"type", "BPE"},
             {"dropout", nullptr},
             {"unk_token", nullptr},
             {"continuing_subword_prefix", nullptr},
             {"end_of_word_suffix", nullptr},
             {"fuse_unk", false},
             {"byte_fallback", false},
             {"ignore_merges", options_.pre_tokenizer == "llama3"},
             {"vocab", std::move(vocab)},
             {"merges", std::move(merge_list)}};
  return Json{
      {"version", "1.0"},
      {"truncation", nullptr},
      {"padding", nullptr},
      {"added_tokens", std::move(added)},
      {"normalizer", nullptr},
      {"pre_tokenizer", pre_tokenizer_spec_},
      {"post_processor", nullptr},
      {"decoder",
       Json{{"type", "ByteLevel"}, {"add_prefix_space", true}, {"trim_offsets", true}, {"use_regex", true}}},
      {"model", std::move(model)}};
}

Tokenizer BpeTrainer::train() const {
  return Tokenizer::from_json(train_json(), str("BPE trained on ", word_counts_.size(), " distinct words"));
}

Tokenizer train_bpe(std::span<const std::string> texts, const BpeTrainerOptions& options) {
  BpeTrainer trainer(options);
  for (const auto& text : texts) trainer.feed(text);
  return trainer.train();
}

Tokenizer train_bpe_files(std::span<const std::filesystem::path> files, const BpeTrainerOptions& options) {
  BpeTrainer trainer(options);
  for (const auto& file : files) trainer.feed_file(file);
  return trainer.train();
}

}  // namespace lowrank::data
