// Inverse cloze retrieval pairs (Lee, Chang & Toutanova, 2019, "Latent Retrieval for Weakly
// Supervised Open Domain Question Answering", §5: "the query is a sentence and the document is its
// context, with the sentence removed"), built from dictionary entries: the data of the multi-vector
// retrieval repro (train/crisp.h).
//
// An entry is split into sentences (split_sentences). An entry qualifies when some sentence after
// its first has at least `min_query_words` words; the query is one such sentence, drawn by the
// seed, and the document is the entry with that sentence removed (the first sentence, which holds
// the headword, always stays in the document, so a query never has to name its headword).
// Qualifying entries are shuffled by the seed; the first `test_queries` give the test queries and
// their positive documents, the next `train_pairs` the training pairs, and the test corpus is
// filled up to `test_documents` with further entries (whole, as distractors) that appear in no
// training pair. Splits are disjoint by entry.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "lowrank/core/json.h"
#include "lowrank/data/corpus.h"

namespace lowrank::data {

// Sentences of `text`, whitespace collapsed to single spaces. A sentence ends at '.', '?' or '!'
// followed by a space and an upper-case letter or digit, when the word before the mark has at least
// three letters and is not capitalised; so the dictionary's abbreviations ("n.", "L.", "Anat.",
// "cf.") do not end sentences. Empty pieces are dropped.
std::vector<std::string> split_sentences(std::string_view text);

struct InverseClozeOptions {
  int64_t train_pairs = 20000;
  int64_t test_queries = 2000;
  int64_t test_documents = 10000;  // the test corpus, positives included
  int64_t min_query_words = 5;
  uint64_t seed = 0;
  OrderedJson to_json() const;
};

struct InverseClozeData {
  std::vector<std::string> train_queries, train_documents;  // pair i: (train_queries[i], train_documents[i])
  std::vector<std::string> test_queries;
  std::vector<std::string> test_documents;
  std::vector<int64_t>
      test_positives;  // test_positives[i]: the index in test_documents of query i's document
};

// Builds the splits from `corpus`. Throws InvalidArgument for a count below 1 (test_documents below
// test_queries) or a corpus with too few qualifying entries, naming how many it has.
InverseClozeData make_inverse_cloze(const Corpus& corpus, const InverseClozeOptions& options);

}  // namespace lowrank::data
