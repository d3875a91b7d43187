#include "lowrank/data/tasks/listops.h"

#include <algorithm>
#include <string>
#include <unordered_set>

#include "lowrank/core/error.h"
#include "lowrank/core/progress.h"

namespace lowrank::data::tasks {

namespace {

constexpr int32_t kOperators[4] = {kListOpsMin, kListOpsMax, kListOpsMed, kListOpsSumMod};

// Appends the subtree's tokens and returns its value (to_value of the reference, evaluated while
// the tree is built).
int32_t grow(TaskRng& rng, int64_t depth, int64_t max_depth, int64_t max_args, std::vector<int32_t>& tokens) {
  const double r = depth < max_depth ? rng.uniform01() : 1.0;
  if (r > kListOpsValueP) {
    const auto digit = static_cast<int32_t>(rng.below(10));
    tokens.push_back(kListOpsDigit0 + digit);
    return digit;
  }
  const int64_t num_args = rng.uniform_int(2, max_args);
  const std::size_t op_at = tokens.size();
  tokens.push_back(0);  // the operator, drawn after the arguments as in the reference
  std::vector<int32_t> args;
  args.reserve(static_cast<std::size_t>(num_args));
  for (int64_t i = 0; i < num_args; ++i) args.push_back(grow(rng, depth + 1, max_depth, max_args, tokens));
  const int32_t op = kOperators[rng.below(4)];
  tokens[op_at] = op;
  tokens.push_back(kListOpsEnd);
  switch (op) {
    case kListOpsMin:
      return *std::min_element(args.begin(), args.end());
    case kListOpsMax:
      return *std::max_element(args.begin(), args.end());
    case kListOpsMed: {
      std::sort(args.begin(), args.end());
      const std::size_t n = args.size();
      // int(np.median(...)): the middle value, or the truncated mean of the two middle ones.
      return n % 2 == 1 ? args[n / 2] : (args[n / 2 - 1] + args[n / 2]) / 2;
    }
    default: {
      int32_t sum = 0;
      for (int32_t a : args) sum += a;
      return sum % 10;
    }
  }
}

void generate_listops(const TaskRequest& request) {
  TaskParams params(request);
  const bool lra = request.lra;
  const auto sizes = params.split_sizes(lra ? std::array<int64_t, 3>{96000, 2000, 2000}
                                            : std::array<int64_t, 3>{10000, 1000, 1000});
  const int64_t max_depth = params.integer("max_depth", 10, 1, 64);
  const int64_t max_args = params.integer("max_args", 10, 2, 1000);
  const int64_t min_length = params.integer("min_length", lra ? 500 : 100, 0, int64_t{1} << 24);
  const int64_t max_length = params.integer("max_length", lra ? 2000 : 500, 2, int64_t{1} << 24);
  params.finish();
  LR_CHECK(max_length - min_length >= 2, InvalidArgument, "--min-length ", min_length, " and --max-length ",
           max_length, ": the window min_length < length < max_length is empty");

  TaskHeader header =
      header_for(request, "LRA ListOps: google-research/long-range-arena lra_benchmarks/data/listops.py");
  header.parameters = params.resolved();
  header.parameters["value_p"] = kListOpsValueP;
  header.vocabulary = listops_vocabulary();
  header.vocab_size = static_cast<int64_t>(header.vocabulary.size());
  header.pad_id = 0;
  header.token_type = ElementType::kInt32;
  header.target = "class";
  for (int d = 0; d < 10; ++d) header.classes.push_back(std::to_string(d));
  header.layout = {{"kind", "sequence"}};
  TaskWriter writer(request.out, std::move(header));

  TaskRng rng(request.seed);
  std::unordered_set<std::string> seen;  // the token sequences kept so far (the reference's set)
  const int64_t total = sizes[0] + sizes[1] + sizes[2];
  ProgressBar bar(total, "listops");
  int64_t kept = 0;
  // With a window no tree can reach (a tiny max_depth) the loop would never end: give up after
  // this many draws without a hit and name the options.
  const int64_t max_misses = 10'000'000;
  int64_t misses = 0;
  std::vector<int32_t> tokens;
  while (kept < total) {
    tokens.clear();
    const int32_t value = grow(rng, 1, max_depth, max_args, tokens);
    const auto length = static_cast<int64_t>(tokens.size());
    if (length <= min_length || length >= max_length) {
      LR_CHECK(++misses < max_misses, InvalidArgument, "listops: no tree in ", max_misses,
               " draws fell in the window ", min_length, " < length < ", max_length, " (--max-depth ",
               max_depth, ", --max-args ", max_args, "); widen the window or allow deeper trees");
      continue;
    }
    misses = 0;
    std::string key(reinterpret_cast<const char*>(tokens.data()), tokens.size() * sizeof(int32_t));
    if (!seen.insert(std::move(key)).second) continue;
    const Split split = kept < sizes[0]              ? Split::kTrain
                        : kept < sizes[0] + sizes[1] ? Split::kVal
                                                     : Split::kTest;
    const int32_t label = value;
    writer.add(split, tokens, std::span(&label, 1));
    ++kept;
    bar.advance();
  }
  bar.finish();
  writer.commit();
}

}  // namespace

std::vector<std::string> listops_vocabulary() {
  std::vector<std::string> vocab = {"<pad>"};
  for (int d = 0; d < 10; ++d) vocab.push_back(std::to_string(d));
  for (const char* t : {"MIN", "MAX", "MED", "SM", "X"}) vocab.emplace_back(t);
  return vocab;
}

ListOpsTree generate_listops_tree(TaskRng& rng, int64_t max_depth, int64_t max_args) {
  ListOpsTree tree;
  tree.value = grow(rng, 1, max_depth, max_args, tree.tokens);
  return tree;
}

TaskDefinition listops_task() {
  return task_definition(
      "listops",
      "LRA ListOps: nested MIN/MAX/MED/SM over digits, 10 classes (--lra: 500-2000 tokens, 96K/2K/2K)", true,
      {{"max_depth", "Maximum tree depth (default 10)"},
       {"max_args", "Maximum arguments per operator (default 10)"},
       {"min_length", "Keep trees longer than this many tokens (default 100; --lra 500)"},
       {"max_length", "Keep trees shorter than this many tokens (default 500; --lra 2000)"}},
      generate_listops);
}

}  // namespace lowrank::data::tasks
