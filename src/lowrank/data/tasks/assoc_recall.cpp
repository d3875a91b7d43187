#include "lowrank/data/tasks/assoc_recall.h"

#include <algorithm>

#include "lowrank/core/error.h"
#include "lowrank/data/tasks/task_rng.h"

namespace lowrank::data::tasks {

namespace {

void generate_assoc_recall(const TaskRequest& request) {
  const RecallOptions options = read_recall_options(request, 40, 2, 20, 6);
  const int64_t ordinary = options.ordinary;
  const int64_t num_keys = ordinary / 2;
  const int64_t num_values = ordinary - num_keys;
  const auto arrow = static_cast<int32_t>(ordinary);
  const int64_t pairs = options.seq_len / 2;
  std::vector<int32_t> value_of(static_cast<std::size_t>(num_keys));
  std::vector<int32_t> present;  // keys in order of first occurrence
  write_recall_task(
      request, options, "assoc-recall",
      "associative recall: HazyResearch/safari src/dataloaders/synthetics.py generate_assoc_recall",
      {{"kind", "sequence"}, {"query_id", arrow}, {"num_keys", num_keys}},
      [&](TaskRng& rng, std::vector<int32_t>& tokens) {
        for (auto& v : value_of)
          v = static_cast<int32_t>(num_keys + static_cast<int64_t>(rng.below(num_values)));
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
        return value_of[query];
      });
}

}  // namespace

TaskDefinition assoc_recall_task() {
  return task_definition("assoc-recall",
                         "Associative recall (H3): key-value pairs, then '=> k'; answer k's value", false,
                         {{"seq_len", "Tokens of key-value pairs before the query (default 40)"},
                          {"vocab_size", "Vocabulary including the '=>' and '.' tokens (default 20)"}},
                         generate_assoc_recall);
}

}  // namespace lowrank::data::tasks
