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

  std::vector<CorpusSplits> read;
  std::vector<std::array<std::string, 3>> texts;
  for (std::size_t c = 0; c < corpora.size(); ++c) {
    read.push_back(read_corpus_splits(corpora[c], request.seed, c));
    std::array<std::string, 3> split_texts;
    for (int s = 0; s < 3; ++s) {
      split_texts[s] = join_documents(read.back().documents[s]);
      LR_CHECK(static_cast<int64_t>(split_texts[s].size()) >= max_window, InvalidArgument, "corpus ",
               corpora[c], ": its ", split_name(kSplits[s]), " documents hold ", split_texts[s].size(),
               " bytes, fewer than --max-window ", max_window);
    }
    texts.push_back(std::move(split_texts));
  }

  TaskHeader header =
      header_for(request, "byte-text: corpus identification of byte windows (LRA Text's shape)");
  header.parameters = params.resolved();
  header.vocab_size = 256;
  header.token_type = ElementType::kUint8;
  header.target = "class";
  header.classes = corpora;
  header.layout = {{"kind", "sequence"}};
  header.sources = {{"corpora", corpus_sources(read)}};
  TaskWriter writer(request.out, std::move(header));

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
  TaskDefinition t;
  t.name = "byte-text";
  t.summary = "Which Debian corpus a 1-4 KiB byte window came from (LRA Text's shape)";
  t.options = split_size_options();
  t.options.push_back(
      {"corpora", "Comma-separated corpora, one class each (default bible,gcide,fortunes,cpp-headers)"});
  t.options.push_back({"min_window", "Shortest window in bytes (default 1024)"});
  t.options.push_back({"max_window", "Longest window in bytes (default 4096)"});
  t.generate = generate_byte_text;
  return t;
}

}  // namespace lowrank::data::tasks
