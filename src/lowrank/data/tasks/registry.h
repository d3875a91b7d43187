// The task suite of `lowrank task generate`: long-sequence classification and synthetic recall
// tasks, generated offline and deterministically (the same seed gives the same bytes on every
// machine). One file pair per task; register_builtin_tasks() lists them once.
//
//   listops         LRA ListOps (Tay et al., 2021), listops.h
//   assoc-recall    associative recall (H3, Fu et al., 2023), assoc_recall.h
//   selective-copy  selective copying (Mamba, Gu & Dao, 2023), selective_copy.h
//   induction       induction heads (H3; Mamba §4.1.1), induction.h
//   byte-text       which Debian corpus a byte window came from, byte_text.h
//   byte-retrieval  are two byte windows from the same document (LRA Retrieval's shape), byte_retrieval.h
//   fmnist, sfmnist Fashion-MNIST as 28x28 images / 784-pixel sequences, fashion_mnist.h
//   affine-digits   8x8 digits padded to 16x16, the test split under random affine maps, affine_digits.h
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "lowrank/core/json.h"
#include "lowrank/data/tasks/task_format.h"
#include "lowrank/data/tasks/task_rng.h"

namespace lowrank::data::tasks {

// One task option. `key` is snake_case in task.json ("max_depth") and --kebab-case on the
// command line ("--max-depth").
struct TaskOption {
  std::string key;
  std::string help;
};

struct TaskRequest {
  std::string task;
  bool lra = false;  // the paper's full-size settings (tasks that have them)
  uint64_t seed = 0;
  std::filesystem::path out;
  // The options the user gave, snake_case keys; values are strings or numbers. Every other
  // option takes the task's default.
  std::map<std::string, std::string> options;
};

struct TaskDefinition {
  std::string name;
  std::string summary;
  bool has_lra = false;  // --lra means something for this task
  std::vector<TaskOption> options;
  // Generates the task into request.out (atomically). Throws InvalidArgument naming the option
  // for bad options, before any work.
  std::function<void(const TaskRequest&)> generate;
};

// Every task, in registration order.
const std::vector<TaskDefinition>& task_registry();
std::vector<std::string> task_names();
// Throws InvalidArgument listing the known tasks for an unknown name.
const TaskDefinition& find_task(const std::string& name);

// Validates the request (task name, --lra, option names and values), then generates.
void generate_task(const TaskRequest& request);

// The options every task takes: split sizes.
std::vector<TaskOption> split_size_options();

// A task's definition: split_size_options() followed by the task's own `options`.
TaskDefinition task_definition(std::string name, std::string summary, bool has_lra,
                               std::vector<TaskOption> options,
                               std::function<void(const TaskRequest&)> generate);

// Typed, checked access to a request's options; records every resolved value (defaults
// included) for task.json. finish() rejects options the task did not read.
class TaskParams {
 public:
  explicit TaskParams(const TaskRequest& request);
  // An integer option in [lo, hi]; InvalidArgument naming --option and the value otherwise.
  int64_t integer(const std::string& key, int64_t fallback, int64_t lo, int64_t hi);
  std::string text(const std::string& key, const std::string& fallback);
  // A comma-separated list.
  std::vector<std::string> list(const std::string& key, const std::vector<std::string>& fallback);
  // The three split sizes (options train_size, val_size, test_size).
  std::array<int64_t, 3> split_sizes(std::array<int64_t, 3> fallback);
  // Throws InvalidArgument for an option no getter read, naming it and the task's options.
  void finish() const;
  const OrderedJson& resolved() const { return resolved_; }

 private:
  const TaskRequest& request_;
  OrderedJson resolved_ = OrderedJson::object();
  std::vector<std::string> read_;
};

// "--max-depth" for "max_depth".
std::string option_flag(const std::string& key);

// A header with the request's task, seed and --lra filled in.
TaskHeader header_for(const TaskRequest& request, std::string generator);

// The vocabulary of the recall tasks (induction, associative recall): tokens "0" … "ordinary − 1",
// then "=>" and "."; the ordinary tokens are the classes.
void set_recall_vocabulary(TaskHeader& header, int64_t ordinary);

// The options of a recall task (induction, associative recall) as read from its request: the split
// sizes (default 5000/500/500), `seq_len` and `vocab_size` (in [min, 2^24] and [min, 2^30]).
struct RecallOptions {
  std::array<int64_t, 3> sizes{};
  int64_t seq_len = 0;
  int64_t ordinary = 0;  // vocab_size − 2: the tokens other than "=>" and "."
  OrderedJson parameters;
};
RecallOptions read_recall_options(const TaskRequest& request, int64_t seq_len, int64_t min_seq_len,
                                  int64_t vocab_size, int64_t min_vocab_size);
// Writes a recall task: its header (`generator`, the recall vocabulary, `layout`), then every split,
// each example drawn by draw(rng, tokens), which fills `tokens` and returns the one target token.
// The random stream is TaskRng(request.seed).
void write_recall_task(const TaskRequest& request, const RecallOptions& options, const std::string& name,
                       std::string generator, OrderedJson layout,
                       const std::function<int32_t(TaskRng& rng, std::vector<int32_t>& tokens)>& draw);

// Fills every split in order (train, val, test) with sizes[split] examples, one add_example(split)
// call each (it draws the example and calls writer.add once), under a progress bar named `name`,
// then commits the task.
void write_splits(TaskWriter& writer, const std::array<int64_t, 3>& sizes, const std::string& name,
                  const std::function<void(Split)>& add_example);

}  // namespace lowrank::data::tasks
