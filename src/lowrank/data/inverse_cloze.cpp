// Inverse cloze retrieval pairs from dictionary entries; see inverse_cloze.h.
#include "lowrank/data/inverse_cloze.h"

#include <cctype>
#include <utility>

#include "lowrank/core/error.h"
#include "lowrank/core/random.h"

namespace lowrank::data {

namespace {

std::string collapse_whitespace(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  bool space = false;
  for (const char c : text) {
    if (std::isspace(static_cast<unsigned char>(c))) {
      space = !out.empty();
      continue;
    }
    if (space) out.push_back(' ');
    space = false;
    out.push_back(c);
  }
  return out;
}

// Whether the word ending just before text[end] (the sentence mark) may end a sentence: at least
// three letters, the first not upper-case.
bool ends_sentence_word(std::string_view text, std::size_t end) {
  std::size_t begin = end;
  while (begin > 0 && text[begin - 1] != ' ') --begin;
  const std::string_view word = text.substr(begin, end - begin);
  int64_t letters = 0;
  for (const char c : word) letters += std::isalpha(static_cast<unsigned char>(c)) ? 1 : 0;
  return letters >= 3 && !std::isupper(static_cast<unsigned char>(word.front()));
}

int64_t word_count(std::string_view s) {
  int64_t n = s.empty() ? 0 : 1;
  for (const char c : s) n += c == ' ' ? 1 : 0;
  return n;
}

// Fisher–Yates with splitmix64 draws, so that the splits are the same on every platform.
void shuffle(std::vector<int64_t>& v, uint64_t seed) {
  uint64_t state = seed;
  for (int64_t i = static_cast<int64_t>(v.size()) - 1; i > 0; --i) {
    state = splitmix64(state);
    std::swap(v[static_cast<std::size_t>(i)],
              v[static_cast<std::size_t>(state % static_cast<uint64_t>(i + 1))]);
  }
}

std::string join_except(const std::vector<std::string>& sentences, std::size_t skip) {
  std::string out;
  for (std::size_t i = 0; i < sentences.size(); ++i) {
    if (i == skip) continue;
    if (!out.empty()) out.push_back(' ');
    out += sentences[i];
  }
  return out;
}

}  // namespace

std::vector<std::string> split_sentences(std::string_view text) {
  const std::string flat = collapse_whitespace(text);
  const std::string_view s(flat);
  std::vector<std::string> out;
  std::size_t start = 0;
  for (std::size_t i = 0; i + 2 < s.size(); ++i) {
    const char c = s[i];
    if ((c != '.' && c != '?' && c != '!') || s[i + 1] != ' ') continue;
    const unsigned char next = static_cast<unsigned char>(s[i + 2]);
    if (!std::isupper(next) && !std::isdigit(next)) continue;
    if (!ends_sentence_word(s, i)) continue;
    out.emplace_back(s.substr(start, i + 1 - start));
    start = i + 2;
  }
  if (start < s.size()) out.emplace_back(s.substr(start));
  return out;
}

OrderedJson InverseClozeOptions::to_json() const {
  return OrderedJson{{"train_pairs", train_pairs},
                     {"test_queries", test_queries},
                     {"test_documents", test_documents},
                     {"min_query_words", min_query_words},
                     {"seed", seed}};
}

InverseClozeData make_inverse_cloze(const Corpus& corpus, const InverseClozeOptions& o) {
  LR_CHECK(o.train_pairs >= 1 && o.test_queries >= 1 && o.test_documents >= o.test_queries &&
               o.min_query_words >= 1,
           InvalidArgument, "inverse cloze: train_pairs (", o.train_pairs, "), test_queries (",
           o.test_queries, ") and min_query_words (", o.min_query_words,
           ") must be >= 1 and test_documents (", o.test_documents, ") >= test_queries");
  const int64_t n = static_cast<int64_t>(corpus.documents.size());
  std::vector<std::vector<std::string>> sentences(static_cast<std::size_t>(n));
  std::vector<int64_t> qualifying, others;
  for (int64_t d = 0; d < n; ++d) {
    auto& s = sentences[static_cast<std::size_t>(d)];
    s = split_sentences(corpus.documents[static_cast<std::size_t>(d)].text);
    bool ok = false;
    for (std::size_t i = 1; i < s.size() && !ok; ++i) ok = word_count(s[i]) >= o.min_query_words;
    (ok ? qualifying : others).push_back(d);
  }
  const int64_t need = o.test_queries + o.train_pairs;
  LR_CHECK(static_cast<int64_t>(qualifying.size()) >= need, InvalidArgument, "inverse cloze: corpus ",
           corpus.name, " has ", qualifying.size(),
           " entries with a query sentence of >= ", o.min_query_words, " words; ", need,
           " are needed (test_queries + train_pairs)");
  LR_CHECK(n - o.train_pairs >= o.test_documents, InvalidArgument, "inverse cloze: corpus ", corpus.name,
           " has ", n, " entries; ", o.train_pairs + o.test_documents,
           " are needed (train_pairs + test_documents)");
  shuffle(qualifying, o.seed ^ 0x1c10e5eedull);
  uint64_t pick_state = splitmix64(o.seed ^ 0x9e3779b9ull);
  // One query sentence of entry d, drawn among its sentences after the first with enough words.
  auto pair_of = [&](int64_t d) {
    const auto& s = sentences[static_cast<std::size_t>(d)];
    std::vector<std::size_t> candidates;
    for (std::size_t i = 1; i < s.size(); ++i)
      if (word_count(s[i]) >= o.min_query_words) candidates.push_back(i);
    pick_state = splitmix64(pick_state);
    const std::size_t q = candidates[pick_state % candidates.size()];
    return std::pair{s[q], join_except(s, q)};
  };
  InverseClozeData out;
  std::size_t next = 0;
  for (int64_t i = 0; i < o.test_queries; ++i) {
    auto [query, document] = pair_of(qualifying[next++]);
    out.test_queries.push_back(std::move(query));
    out.test_documents.push_back(std::move(document));
  }
  for (int64_t i = 0; i < o.train_pairs; ++i) {
    auto [query, document] = pair_of(qualifying[next++]);
    out.train_queries.push_back(std::move(query));
    out.train_documents.push_back(std::move(document));
  }
  // Distractors: the remaining entries, whole, in a seeded order.
  std::vector<int64_t> rest(qualifying.begin() + static_cast<std::ptrdiff_t>(next), qualifying.end());
  rest.insert(rest.end(), others.begin(), others.end());
  shuffle(rest, o.seed ^ 0xd157ac7ull);
  for (std::size_t i = 0; static_cast<int64_t>(out.test_documents.size()) < o.test_documents; ++i) {
    LR_CHECK(i < rest.size(), InvalidArgument, "inverse cloze: corpus ", corpus.name,
             " has too few entries for ", o.test_documents, " test documents");
    std::string document = join_except(sentences[static_cast<std::size_t>(rest[i])], std::string::npos);
    if (!document.empty()) out.test_documents.push_back(std::move(document));
  }
  // The positives first, then the distractors, shuffled together so that position says nothing.
  std::vector<int64_t> order(out.test_documents.size());
  for (std::size_t i = 0; i < order.size(); ++i) order[i] = static_cast<int64_t>(i);
  shuffle(order, o.seed ^ 0x0dde5ull);
  std::vector<std::string> documents(order.size());
  std::vector<int64_t> where(order.size());
  for (std::size_t i = 0; i < order.size(); ++i) {
    documents[i] = std::move(out.test_documents[static_cast<std::size_t>(order[i])]);
    where[static_cast<std::size_t>(order[i])] = static_cast<int64_t>(i);
  }
  out.test_documents = std::move(documents);
  for (int64_t i = 0; i < o.test_queries; ++i)
    out.test_positives.push_back(where[static_cast<std::size_t>(i)]);
  return out;
}

}  // namespace lowrank::data
