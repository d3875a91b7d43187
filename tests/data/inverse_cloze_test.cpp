// Inverse cloze pairs (data/inverse_cloze.h): sentence splitting on hand examples, and the pairs and
// splits checked against the entries they come from.
#include <gtest/gtest.h>

#include <set>

#include "lowrank/core/error.h"
#include "lowrank/data/inverse_cloze.h"

namespace lowrank::data {
namespace {

TEST(InverseCloze, SplitsSentencesButNotAbbreviations) {
  const auto s = split_sentences(
      "Abdomen, n. [L. abdomen: cf. F. abdomen.]\n   1. (Anat.) The belly. Also, the cavity of\n the belly. "
      "Is it? Yes! 2. The posterior section.");
  const std::vector<std::string> expected{"Abdomen, n. [L. abdomen: cf. F. abdomen.] 1. (Anat.) The belly.",
                                          "Also, the cavity of the belly.",
                                          // "it" is too short and "Yes" capitalised to end a sentence
                                          "Is it? Yes! 2. The posterior section."};
  EXPECT_EQ(s, expected);
  EXPECT_TRUE(split_sentences("  ").empty());
}

Corpus synthetic(int64_t entries) {
  Corpus c;
  c.name = "synthetic";
  for (int64_t i = 0; i < entries; ++i)
    c.documents.push_back({str("e", i), str("Word", i, ", n. The head sentence of entry ", i,
                                            " today. Another sentence about entry ", i,
                                            " here. A third sentence naming entry ", i, " again.")});
  for (int64_t i = 0; i < 10; ++i) c.documents.push_back({str("s", i), str("Short", i, ", a. Tiny.")});
  return c;
}

TEST(InverseCloze, QueriesAreRemovedSentencesOfTheirDocumentsEntry) {
  const Corpus c = synthetic(60);
  InverseClozeOptions o;
  o.train_pairs = 30;
  o.test_queries = 10;
  o.test_documents = 25;
  o.min_query_words = 4;
  o.seed = 3;
  const InverseClozeData d = make_inverse_cloze(c, o);
  ASSERT_EQ(d.train_queries.size(), 30u);
  ASSERT_EQ(d.test_documents.size(), 25u);
  ASSERT_EQ(d.test_positives.size(), 10u);
  std::set<std::string> train_entries;
  auto entry_of = [](const std::string& text) {  // the entry number the text names
    const std::size_t p = text.find("entry");
    return text.substr(p + 6, text.find_first_of(" .", p + 6) - p - 6);
  };
  for (std::size_t i = 0; i < d.train_queries.size(); ++i) {
    EXPECT_EQ(d.train_documents[i].find(d.train_queries[i]), std::string::npos);  // removed
    EXPECT_EQ(entry_of(d.train_queries[i]), entry_of(d.train_documents[i]));      // from its entry
    EXPECT_TRUE(d.train_documents[i].starts_with("Word"));                        // head kept
    train_entries.insert(entry_of(d.train_documents[i]));
  }
  for (std::size_t i = 0; i < d.test_queries.size(); ++i) {
    const std::string& doc = d.test_documents[static_cast<std::size_t>(d.test_positives[i])];
    EXPECT_EQ(entry_of(d.test_queries[i]), entry_of(doc));
    EXPECT_EQ(doc.find(d.test_queries[i]), std::string::npos);
    EXPECT_EQ(train_entries.count(entry_of(doc)), 0u);  // disjoint from training
  }
  for (const std::string& doc : d.test_documents)
    if (doc.starts_with("Word")) EXPECT_EQ(train_entries.count(entry_of(doc)), 0u);
  // Deterministic in the seed, different across seeds.
  EXPECT_EQ(make_inverse_cloze(c, o).train_queries, d.train_queries);
  o.seed = 4;
  EXPECT_NE(make_inverse_cloze(c, o).train_queries, d.train_queries);
}

TEST(InverseCloze, TooFewEntriesNamesTheCount) {
  InverseClozeOptions o;
  o.train_pairs = 100;
  o.test_queries = 10;
  o.test_documents = 20;
  try {
    make_inverse_cloze(synthetic(50), o);
    FAIL() << "no error";
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("has 50 entries"), std::string::npos) << e.what();
  }
  o.test_documents = 5;
  EXPECT_THROW(make_inverse_cloze(synthetic(500), o), InvalidArgument);
}

}  // namespace
}  // namespace lowrank::data
