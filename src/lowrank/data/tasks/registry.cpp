#include "lowrank/data/tasks/registry.h"

#include <algorithm>
#include <charconv>
#include <mutex>

#include "lowrank/core/error.h"
#include "lowrank/core/progress.h"
#include "lowrank/data/tasks/affine_digits.h"
#include "lowrank/data/tasks/assoc_recall.h"
#include "lowrank/data/tasks/byte_retrieval.h"
#include "lowrank/data/tasks/byte_text.h"
#include "lowrank/data/tasks/fashion_mnist.h"
#include "lowrank/data/tasks/induction.h"
#include "lowrank/data/tasks/listops.h"
#include "lowrank/data/tasks/selective_copy.h"

namespace lowrank::data::tasks {

namespace {

std::vector<TaskDefinition> register_builtin_tasks() {
  std::vector<TaskDefinition> tasks;
  tasks.push_back(listops_task());
  tasks.push_back(assoc_recall_task());
  tasks.push_back(selective_copy_task());
  tasks.push_back(induction_task());
  tasks.push_back(byte_text_task());
  tasks.push_back(byte_retrieval_task());
  tasks.push_back(fashion_mnist_task(/*sequence=*/false));
  tasks.push_back(fashion_mnist_task(/*sequence=*/true));
  tasks.push_back(affine_digits_task());
  for (const TaskDefinition& t : tasks) {
    LR_CHECK(std::count_if(tasks.begin(), tasks.end(), [&](const auto& o) { return o.name == t.name; }) == 1,
             InternalError, "task '", t.name, "' registered twice");
  }
  return tasks;
}

std::string join(const std::vector<std::string>& items) {
  std::string out;
  for (const auto& item : items) out += (out.empty() ? "" : ", ") + item;
  return out;
}

}  // namespace

const std::vector<TaskDefinition>& task_registry() {
  static const std::vector<TaskDefinition> tasks = register_builtin_tasks();
  return tasks;
}

std::vector<std::string> task_names() {
  std::vector<std::string> names;
  for (const auto& t : task_registry()) names.push_back(t.name);
  return names;
}

const TaskDefinition& find_task(const std::string& name) {
  for (const auto& t : task_registry()) {
    if (t.name == name) return t;
  }
  throw InvalidArgument(str("unknown task '", name, "'; known tasks: ", join(task_names())));
}

void generate_task(const TaskRequest& request) {
  const TaskDefinition& task = find_task(request.task);
  LR_CHECK(!request.lra || task.has_lra, InvalidArgument, "--lra: task ", task.name,
           " has no paper-size settings; give its options instead");
  task.generate(request);
}

std::vector<TaskOption> split_size_options() {
  return {{"train_size", "Training examples"},
          {"val_size", "Validation examples"},
          {"test_size", "Test examples"}};
}

TaskDefinition task_definition(std::string name, std::string summary, bool has_lra,
                               std::vector<TaskOption> options,
                               std::function<void(const TaskRequest&)> generate) {
  TaskDefinition t;
  t.name = std::move(name);
  t.summary = std::move(summary);
  t.has_lra = has_lra;
  t.options = split_size_options();
  t.options.insert(t.options.end(), options.begin(), options.end());
  t.generate = std::move(generate);
  return t;
}

std::string option_flag(const std::string& key) {
  std::string flag = "--" + key;
  std::replace(flag.begin(), flag.end(), '_', '-');
  return flag;
}

TaskParams::TaskParams(const TaskRequest& request) : request_(request) {}

int64_t TaskParams::integer(const std::string& key, int64_t fallback, int64_t lo, int64_t hi) {
  read_.push_back(key);
  int64_t value = fallback;
  if (auto it = request_.options.find(key); it != request_.options.end()) {
    const std::string& text = it->second;
    const char* end = text.data() + text.size();
    const auto [ptr, ec] = std::from_chars(text.data(), end, value);
    LR_CHECK(ec == std::errc() && ptr == end, InvalidArgument, option_flag(key), ": '", text,
             "' is not an integer");
  }
  LR_CHECK(value >= lo && value <= hi, InvalidArgument, option_flag(key), " ", value, " for task ",
           request_.task, ": must be in [", lo, ", ", hi, "]");
  resolved_[key] = value;
  return value;
}

std::string TaskParams::text(const std::string& key, const std::string& fallback) {
  read_.push_back(key);
  auto it = request_.options.find(key);
  const std::string value = it == request_.options.end() ? fallback : it->second;
  LR_CHECK(!value.empty(), InvalidArgument, option_flag(key), ": empty value for task ", request_.task);
  resolved_[key] = value;
  return value;
}

std::vector<std::string> TaskParams::list(const std::string& key, const std::vector<std::string>& fallback) {
  read_.push_back(key);
  std::vector<std::string> items = fallback;
  if (auto it = request_.options.find(key); it != request_.options.end()) {
    items.clear();
    std::string_view rest = it->second;
    while (true) {
      const auto comma = rest.find(',');
      items.emplace_back(rest.substr(0, comma));
      LR_CHECK(!items.back().empty(), InvalidArgument, option_flag(key), ": '", it->second,
               "' has an empty item (expected a comma-separated list)");
      if (comma == std::string_view::npos) break;
      rest.remove_prefix(comma + 1);
    }
  }
  resolved_[key] = items;
  return items;
}

std::array<int64_t, 3> TaskParams::split_sizes(std::array<int64_t, 3> fallback) {
  return {integer("train_size", fallback[0], 1, int64_t{1} << 32),
          integer("val_size", fallback[1], 1, int64_t{1} << 32),
          integer("test_size", fallback[2], 1, int64_t{1} << 32)};
}

void TaskParams::finish() const {
  for (const auto& [key, value] : request_.options) {
    if (std::find(read_.begin(), read_.end(), key) != read_.end()) continue;
    std::vector<std::string> flags;
    for (const auto& k : read_) flags.push_back(option_flag(k));
    throw InvalidArgument(
        str(option_flag(key), ": task ", request_.task, " has no such option; its options: ", join(flags)));
  }
}

TaskHeader header_for(const TaskRequest& request, std::string generator) {
  TaskHeader header;
  header.task = request.task;
  header.generator = std::move(generator);
  header.seed = request.seed;
  header.lra = request.lra;
  return header;
}

void set_recall_vocabulary(TaskHeader& header, int64_t ordinary) {
  for (int64_t t = 0; t < ordinary; ++t) header.vocabulary.push_back(std::to_string(t));
  header.vocabulary.push_back("=>");
  header.vocabulary.push_back(".");
  header.vocab_size = ordinary + 2;
  header.classes.assign(header.vocabulary.begin(), header.vocabulary.begin() + ordinary);
  header.target = "class";
}

RecallOptions read_recall_options(const TaskRequest& request, int64_t seq_len, int64_t min_seq_len,
                                  int64_t vocab_size, int64_t min_vocab_size) {
  TaskParams params(request);
  RecallOptions o;
  o.sizes = params.split_sizes({5000, 500, 500});
  o.seq_len = params.integer("seq_len", seq_len, min_seq_len, int64_t{1} << 24);
  o.ordinary = params.integer("vocab_size", vocab_size, min_vocab_size, int64_t{1} << 30) - 2;
  params.finish();
  o.parameters = params.resolved();
  return o;
}

void write_recall_task(const TaskRequest& request, const RecallOptions& options, const std::string& name,
                       std::string generator, OrderedJson layout,
                       const std::function<int32_t(TaskRng& rng, std::vector<int32_t>& tokens)>& draw) {
  TaskHeader header = header_for(request, std::move(generator));
  header.parameters = options.parameters;
  set_recall_vocabulary(header, options.ordinary);
  header.layout = std::move(layout);
  TaskWriter writer(request.out, std::move(header));
  TaskRng rng(request.seed);
  std::vector<int32_t> tokens;
  write_splits(writer, options.sizes, name, [&](Split split) {
    const int32_t answer = draw(rng, tokens);
    writer.add(split, tokens, std::span(&answer, 1));
  });
}

void write_splits(TaskWriter& writer, const std::array<int64_t, 3>& sizes, const std::string& name,
                  const std::function<void(Split)>& add_example) {
  ProgressBar bar(sizes[0] + sizes[1] + sizes[2], name);
  for (Split split : kSplits) {
    for (int64_t n = 0; n < sizes[static_cast<int>(split)]; ++n) {
      add_example(split);
      bar.advance();
    }
  }
  bar.finish();
  writer.commit();
}

}  // namespace lowrank::data::tasks
