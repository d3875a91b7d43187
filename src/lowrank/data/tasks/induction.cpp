#include "lowrank/data/tasks/induction.h"

#include "lowrank/core/error.h"
#include "lowrank/data/tasks/task_rng.h"

namespace lowrank::data::tasks {

namespace {

void generate_induction(const TaskRequest& request) {
  TaskParams params(request);
  const auto sizes = params.split_sizes({5000, 500, 500});
  const int64_t seq_len = params.integer("seq_len", 256, 3, int64_t{1} << 24);
  const int64_t vocab_size = params.integer("vocab_size", 16, 4, int64_t{1} << 30);
  params.finish();
  const int64_t ordinary = vocab_size - 2;
  const auto trigger = static_cast<int32_t>(ordinary);

  TaskHeader header = header_for(
      request, "induction head: HazyResearch/safari src/dataloaders/synthetics.py generate_induction_head");
  header.parameters = params.resolved();
  set_recall_vocabulary(header, ordinary);
  header.layout = {{"kind", "sequence"}, {"trigger_id", trigger}};
  TaskWriter writer(request.out, std::move(header));

  TaskRng rng(request.seed);
  std::vector<int32_t> tokens(static_cast<std::size_t>(seq_len + 1));
  write_splits(writer, sizes, "induction", [&](Split split) {
    for (int64_t i = 0; i < seq_len; ++i) tokens[i] = static_cast<int32_t>(rng.below(ordinary));
    tokens[seq_len] = trigger;
    const auto p = static_cast<int64_t>(rng.below(seq_len - 2));  // rng.integers(L - (1 + induction_len))
    tokens[p] = trigger;
    const int32_t answer = tokens[p + 1];
    writer.add(split, tokens, std::span(&answer, 1));
  });
}

}  // namespace

TaskDefinition induction_task() {
  TaskDefinition t;
  t.name = "induction";
  t.summary = "Induction heads (H3, Mamba): after '=> b ... =>', answer b";
  t.options = split_size_options();
  t.options.push_back({"seq_len", "Random tokens before the final trigger (default 256)"});
  t.options.push_back({"vocab_size", "Vocabulary including the trigger and no-op tokens (default 16)"});
  t.generate = generate_induction;
  return t;
}

}  // namespace lowrank::data::tasks
