#include "lowrank/data/tasks/assoc_recall.h"

#include <algorithm>

#include "lowrank/core/error.h"
#include "lowrank/data/tasks/task_rng.h"

namespace lowrank::data::tasks {

namespace {

void generate_assoc_recall(const TaskRequest& request) {
  TaskParams params(request);
  const auto sizes = params.split_sizes({5000, 500, 500});
  const int64_t seq_len = params.integer("seq_len", 40, 2, int64_t{1} << 24);
  const int64_t vocab_size = params.integer("vocab_size", 20, 6, int64_t{1} << 30);
  params.finish();
  const int64_t ordinary = vocab_size - 2;
  const int64_t num_keys = ordinary / 2;
  const int64_t num_values = ordinary - num_keys;
  const auto arrow = static_cast<int32_t>(ordinary);

  TaskHeader header = header_for(
      request, "associative recall: HazyResearch/safari src/dataloaders/synthetics.py generate_assoc_recall");
  header.parameters = params.resolved();
  set_recall_vocabulary(header, ordinary);
  header.layout = {{"kind", "sequence"}, {"query_id", arrow}, {"num_keys", num_keys}};
  TaskWriter writer(request.out, std::move(header));

  TaskRng rng(request.seed);
  const int64_t pairs = seq_len / 2;
  std::vector<int32_t> value_of(static_cast<std::size_t>(num_keys));
  std::vector<int32_t> present;  // keys in order of first occurrence
  std::vector<int32_t> tokens;
  write_splits(writer, sizes, "assoc-recall", [&](Split split) {
    for (auto& v : value_of) v = static_cast<int32_t>(num_keys + static_cast<int64_t>(rng.below(num_values)));
    tokens.clear();
    present.clear();
    for (int64_t i = 0; i < pairs; ++i) {
      const auto key = static_cast<int32_t>(rng.below(num_keys));
      tokens.push_back(key);
      tokens.push_back(value_of[key]);
      if (std::find(present.begin(), present.end(), key) == present.end()) present.push_back(key);
    }
    auto query = static_cast<int32_t>(rng.below(num_keys));
    if (std::find(present.begin(), present.end(), query) == present.end())
      query = present[rng.below(present.size())];
    tokens.push_back(arrow);
    tokens.push_back(query);
    const int32_t answer = value_of[query];
    writer.add(split, tokens, std::span(&answer, 1));
  });
}

}  // namespace

TaskDefinition assoc_recall_task() {
  TaskDefinition t;
  t.name = "assoc-recall";
  t.summary = "Associative recall (H3): key-value pairs, then '=> k'; answer k's value";
  t.options = split_size_options();
  t.options.push_back({"seq_len", "Tokens of key-value pairs before the query (default 40)"});
  t.options.push_back({"vocab_size", "Vocabulary including the '=>' and '.' tokens (default 20)"});
  t.generate = generate_assoc_recall;
  return t;
}

}  // namespace lowrank::data::tasks
