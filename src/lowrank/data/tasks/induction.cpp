#include "lowrank/data/tasks/induction.h"

#include "lowrank/core/error.h"
#include "lowrank/data/tasks/task_rng.h"

namespace lowrank::data::tasks {

namespace {

void generate_induction(const TaskRequest& request) {
  const RecallOptions options = read_recall_options(request, 256, 3, 16, 4);
  const int64_t seq_len = options.seq_len;
  const int64_t ordinary = options.ordinary;
  const auto trigger = static_cast<int32_t>(ordinary);
  write_recall_task(
      request, options, "induction",
      "induction head: HazyResearch/safari src/dataloaders/synthetics.py generate_induction_head",
      {{"kind", "sequence"}, {"trigger_id", trigger}}, [&](TaskRng& rng, std::vector<int32_t>& tokens) {
        tokens.resize(static_cast<std::size_t>(seq_len + 1));
        for (int64_t i = 0; i < seq_len; ++i) tokens[i] = static_cast<int32_t>(rng.below(ordinary));
        tokens[seq_len] = trigger;
        const auto p = static_cast<int64_t>(rng.below(seq_len - 2));  // rng.integers(L - (1 + induction_len))
        tokens[p] = trigger;
        return tokens[p + 1];
      });
}

}  // namespace

TaskDefinition induction_task() {
  return task_definition("induction", "Induction heads (H3, Mamba): after '=> b ... =>', answer b", false,
                         {{"seq_len", "Random tokens before the final trigger (default 256)"},
                          {"vocab_size", "Vocabulary including the trigger and no-op tokens (default 16)"}},
                         generate_induction);
}

}  // namespace lowrank::data::tasks
