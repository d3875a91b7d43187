#include "lowrank/data/tasks/selective_copy.h"

#include <algorithm>
#include <numeric>

#include "lowrank/core/error.h"
#include "lowrank/data/tasks/task_rng.h"

namespace lowrank::data::tasks {

namespace {

void generate_selective_copy(const TaskRequest& request) {
  TaskParams params(request);
  const auto sizes = params.split_sizes({10000, 1000, 1000});
  const int64_t seq_len = params.integer("seq_len", request.lra ? 4096 : 256, 2, int64_t{1} << 24);
  const int64_t num_tokens = params.integer("num_tokens", 16, 1, int64_t{1} << 20);
  const int64_t vocab_size = params.integer("vocab_size", 16, 3, int64_t{1} << 30);
  params.finish();
  LR_CHECK(num_tokens <= seq_len, InvalidArgument, "--num-tokens ", num_tokens, " exceeds --seq-len ",
           seq_len, " (the data tokens sit among the seq_len positions)");

  TaskHeader header = header_for(request,
                                 "selective copying: state-spaces/s4 src/dataloaders/datasets/copying.py "
                                 "(variable = True), as in the Mamba paper");
  header.parameters = params.resolved();
  header.vocabulary.push_back("<noise>");
  for (int64_t t = 1; t + 1 < vocab_size; ++t) header.vocabulary.push_back(std::to_string(t));
  header.vocabulary.push_back("<copy>");
  header.vocab_size = vocab_size;
  header.target = "tokens";
  header.layout = {{"kind", "sequence"}, {"noise_id", 0}, {"marker_id", vocab_size - 1}};
  TaskWriter writer(request.out, std::move(header));

  TaskRng rng(request.seed);
  const auto marker = static_cast<int32_t>(vocab_size - 1);
  std::vector<int32_t> positions(static_cast<std::size_t>(seq_len));
  std::vector<int32_t> tokens(static_cast<std::size_t>(seq_len + num_tokens));
  std::vector<int32_t> target(static_cast<std::size_t>(num_tokens));
  write_splits(writer, sizes, "selective-copy", [&](Split split) {
    for (auto& t : target) t = static_cast<int32_t>(rng.uniform_int(1, vocab_size - 2));
    std::iota(positions.begin(), positions.end(), 0);
    for (int64_t i = 0; i < num_tokens; ++i) {  // the first M of a uniform random permutation
      std::swap(positions[i], positions[i + static_cast<int64_t>(rng.below(seq_len - i))]);
    }
    std::sort(positions.begin(), positions.begin() + num_tokens);
    std::fill(tokens.begin(), tokens.begin() + seq_len, 0);
    for (int64_t i = 0; i < num_tokens; ++i) tokens[positions[i]] = target[i];
    std::fill(tokens.begin() + seq_len, tokens.end(), marker);
    writer.add(split, tokens, target);
  });
}

}  // namespace

TaskDefinition selective_copy_task() {
  return task_definition(
      "selective-copy",
      "Mamba's selective copying: output the data tokens scattered among noise, in order (--lra: the paper's "
      "length 4096)",
      true,
      {{"seq_len", "Positions holding data and noise, before the markers (default 256; --lra 4096)"},
       {"num_tokens", "Data tokens to copy (default 16)"},
       {"vocab_size", "Vocabulary including the noise and marker tokens (default 16)"}},
      generate_selective_copy);
}

}  // namespace lowrank::data::tasks
