#include "lowrank/data/tasks/byte_text.h"

#include "lowrank/core/error.h"
#include "lowrank/data/tasks/corpus_splits.h"
#include "lowrank/data/tasks/task_rng.h"

namespace lowrank::data::tasks {

namespace {

std::string join_documents(const std::vector<std::string>& docs) {
  std::string text;
  for (const auto& d : docs) {
    if (!text.empty()) text.push_back('\n');
    text += d;
  }
  return text;
}

void generate_byte_text(const TaskRequest& request) {
  TaskParams params(request);
  const auto sizes = params.split_sizes({8000, 1000, 1000});
  const auto corpora = params.list("corpora", {"bible", "gcide", "fortunes", "cpp-headers"});
  const int64_t min_window = params.integer("min_window", 1024, 1, int64_t{1} << 26);
  const int64_t max_window = params.integer("max_window", 4096, 1, int64_t{1} << 26);
  params.finish();
  LR_CHECK(min_window <= max_window, InvalidArgument, "--min-window ", min_window, " exceeds --max-window ",
           max_window);
  LR_CHECK(corpora.size() >= 2, InvalidArgument, "--corpora: byte-text needs at least two corpora (classes)");

  const std::vector<CorpusSplits> read = read_corpora(corpora, request.seed);
  std::vector<std::array<std::string, 3>> texts;
  for (std::size_t c = 0; c < corpora.size(); ++c) {
    std::array<std::string, 3> split_texts;
    for (int s = 0; s < 3; ++s) {
      split_texts[s] = join_documents(read[c].documents[s]);
      LR_CHECK(static_cast<int64_t>(split_texts[s].size()) >= max_window, InvalidArgument, "corpus ",
               corpora[c], ": its ", split_name(kSplits[s]), " documents hold ", split_texts[s].size(),
               " bytes, fewer than --max-window ", max_window);
    }
    texts.push_back(std::move(split_texts));
  }

  TaskWriter writer(
      request.out,
      byte_task_header(request, "byte-text: corpus identification of byte windows (LRA Text's shape)",
                       params.resolved(), corpora, {{"kind", "sequence"}}, read));

  TaskRng rng(request.seed, 1000);
  std::vector<int32_t> tokens;
  write_splits(writer, sizes, "byte-text", [&](Split split) {
    const auto c = static_cast<int32_t>(rng.below(corpora.size()));
    const int64_t w = rng.uniform_int(min_window, max_window);
    const std::string& text = texts[c][static_cast<int>(split)];
    const auto offset = static_cast<int64_t>(rng.below(text.size() - static_cast<std::size_t>(w) + 1));
    tokens.resize(static_cast<std::size_t>(w));
    for (int64_t i = 0; i < w; ++i) tokens[i] = static_cast<uint8_t>(text[offset + i]);
    writer.add(split, tokens, std::span(&c, 1));
  });
}

}  // namespace

TaskDefinition byte_text_task() {
  return task_definition(
      "byte-text", "Which Debian corpus a 1-4 KiB byte window came from (LRA Text's shape)", false,
      {{"corpora", "Comma-separated corpora, one class each (default bible,gcide,fortunes,cpp-headers)"},
       {"min_window", "Shortest window in bytes (default 1024)"},
       {"max_window", "Longest window in bytes (default 4096)"}},
      generate_byte_text);
}

}  // namespace lowrank::data::tasks
