#include "lowrank/data/tasks/corpus_splits.h"

#include <numeric>

#include "lowrank/core/error.h"
#include "lowrank/data/corpus.h"
#include "lowrank/data/tasks/sha256.h"
#include "lowrank/data/tasks/task_rng.h"

namespace lowrank::data::tasks {

CorpusSplits read_corpus_splits(const std::string& name, uint64_t seed, uint64_t stream) {
  Corpus corpus = read_corpus(name);
  const auto n = static_cast<int64_t>(corpus.documents.size());
  LR_CHECK(n >= 3, InvalidArgument, "corpus ", name, ": ", n,
           " documents; a task needs at least 3 (one per split)");
  CorpusSplits out;
  out.name = name;
  out.documents_read = n;
  Sha256 hash;
  for (const Document& doc : corpus.documents) {
    hash.update(doc.text);
    hash.update(std::string_view("\0", 1));
  }
  out.sha256 = hash.hex_digest();
  std::vector<int64_t> order(static_cast<std::size_t>(n));
  std::iota(order.begin(), order.end(), 0);
  TaskRng rng(seed, stream);
  rng.shuffle(std::span(order));
  const int64_t val_from = std::clamp<int64_t>(n * 8 / 10, 1, n - 2);
  const int64_t test_from = std::clamp<int64_t>(n * 9 / 10, val_from + 1, n - 1);
  for (int64_t i = 0; i < n; ++i) {
    const int split = i < val_from ? 0 : i < test_from ? 1 : 2;
    out.documents[split].push_back(std::move(corpus.documents[order[i]].text));
  }
  return out;
}

OrderedJson corpus_sources(const std::vector<CorpusSplits>& corpora) {
  OrderedJson sources = OrderedJson::array();
  for (const auto& c : corpora) {
    sources.push_back(
        {{"corpus", c.name},
         {"documents", c.documents_read},
         {"split_documents", {c.documents[0].size(), c.documents[1].size(), c.documents[2].size()}},
         {"sha256", c.sha256}});
  }
  return sources;
}

std::vector<CorpusSplits> read_corpora(const std::vector<std::string>& names, uint64_t seed) {
  std::vector<CorpusSplits> read;
  for (std::size_t c = 0; c < names.size(); ++c) read.push_back(read_corpus_splits(names[c], seed, c));
  return read;
}

TaskHeader byte_task_header(const TaskRequest& request, std::string generator, const OrderedJson& parameters,
                            std::vector<std::string> classes, OrderedJson layout,
                            const std::vector<CorpusSplits>& corpora) {
  TaskHeader header = header_for(request, std::move(generator));
  header.parameters = parameters;
  header.vocab_size = 256;
  header.token_type = ElementType::kUint8;
  header.target = "class";
  header.classes = std::move(classes);
  header.layout = std::move(layout);
  header.sources = {{"corpora", corpus_sources(corpora)}};
  return header;
}

}  // namespace lowrank::data::tasks
