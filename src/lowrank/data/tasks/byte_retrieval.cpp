#include "lowrank/data/tasks/byte_retrieval.h"

#include "lowrank/core/error.h"
#include "lowrank/data/tasks/corpus_splits.h"
#include "lowrank/data/tasks/task_rng.h"

namespace lowrank::data::tasks {

namespace {

void generate_byte_retrieval(const TaskRequest& request) {
  TaskParams params(request);
  const auto sizes = params.split_sizes({8000, 1000, 1000});
  const auto corpora = params.list("corpora", {"bible", "cpp-headers"});
  const int64_t window = params.integer("window", 1024, 1, int64_t{1} << 26);
  params.finish();

  const std::vector<CorpusSplits> read = read_corpora(corpora, request.seed);
  // The long-enough documents of each corpus and split.
  std::vector<std::array<std::vector<const std::string*>, 3>> docs;
  for (std::size_t c = 0; c < corpora.size(); ++c) {
    std::array<std::vector<const std::string*>, 3> kept;
    for (int s = 0; s < 3; ++s) {
      for (const auto& d : read[c].documents[s]) {
        if (static_cast<int64_t>(d.size()) >= 2 * window) kept[s].push_back(&d);
      }
      LR_CHECK(kept[s].size() >= 2, InvalidArgument, "corpus ", corpora[c], ": ", kept[s].size(), " of its ",
               split_name(kSplits[s]), " documents hold 2 * --window = ", 2 * window,
               " bytes; byte-retrieval needs at least 2 (use a smaller --window or other --corpora)");
    }
    docs.push_back(std::move(kept));
  }

  TaskWriter writer(
      request.out,
      byte_task_header(request,
                       "byte-retrieval: same-document detection of byte windows (LRA Retrieval's shape)",
                       params.resolved(), {"different", "same"},
                       {{"kind", "pair"}, {"segments", {window, window}}}, read));

  TaskRng rng(request.seed, 1000);
  std::vector<int32_t> tokens(static_cast<std::size_t>(2 * window));
  auto copy_window = [&](const std::string& doc, int64_t offset, int64_t at) {
    for (int64_t i = 0; i < window; ++i) tokens[at + i] = static_cast<uint8_t>(doc[offset + i]);
  };
  write_splits(writer, sizes, "byte-retrieval", [&](Split split) {
    const int s = static_cast<int>(split);
    const auto& pool = docs[rng.below(docs.size())][s];
    const std::size_t d = rng.below(pool.size());
    const std::string& doc = *pool[d];
    const auto same = static_cast<int32_t>(rng.below(2));
    const bool swap = rng.below(2) == 1;
    const auto size = static_cast<int64_t>(doc.size());
    if (same == 1) {
      const int64_t a = rng.uniform_int(0, size - 2 * window);
      const int64_t b = rng.uniform_int(a + window, size - window);
      copy_window(doc, swap ? b : a, 0);
      copy_window(doc, swap ? a : b, window);
    } else {
      std::size_t e = rng.below(pool.size() - 1);
      if (e >= d) ++e;
      const std::string& other = *pool[e];
      const int64_t a = rng.uniform_int(0, size - window);
      const int64_t b = rng.uniform_int(0, static_cast<int64_t>(other.size()) - window);
      copy_window(swap ? other : doc, swap ? b : a, 0);
      copy_window(swap ? doc : other, swap ? a : b, window);
    }
    writer.add(split, tokens, std::span(&same, 1));
  });
}

}  // namespace

TaskDefinition byte_retrieval_task() {
  return task_definition(
      "byte-retrieval", "Two 1 KiB byte windows: from the same document? (LRA Retrieval's shape)", false,
      {{"corpora", "Comma-separated corpora whose documents are drawn (default bible,cpp-headers)"},
       {"window", "Bytes per window (default 1024)"}},
      generate_byte_retrieval);
}

}  // namespace lowrank::data::tasks
