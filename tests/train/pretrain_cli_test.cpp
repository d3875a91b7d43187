// `lowrank pretrain` and `lowrank eval` end to end on a small generated text corpus: a run
// stopped mid-way (--stop-after, one logged step past its last checkpoint) and a run SIGKILLed
// once its first checkpoint exists both resume to the metrics and weights of an uninterrupted
// run; a rerun with the same arguments is cached; eval scores a text file (interval over
// windows) and the prepared dataset (interval over documents).
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <thread>

#include <gtest/gtest.h>

#include "lowrank/core/file.h"
#include "lowrank/core/json.h"
#include "lowrank/core/safetensors.h"
#include "tests/testing.h"

extern char** environ;

namespace lowrank::train {
namespace {
namespace fs = std::filesystem;
using testing::read_jsonl;
using testing::run_command;

// The runs below: the tiny preset on the first 40 paragraphs of the corpus, a checkpoint every
// 2 steps.
constexpr int kParagraphs = 120;

std::vector<std::string> lowrank_args(const std::vector<std::string>& args) {
  std::vector<std::string> out{testing::lowrank_binary().string(), "--threads", "2", "--quiet"};
  out.insert(out.end(), args.begin(), args.end());
  return out;
}

std::string shell(const std::vector<std::string>& args) {
  std::string out;
  for (const std::string& a : lowrank_args(args)) out += (out.empty() ? "" : " ") + a;
  return out;
}

std::vector<std::string> pretrain_args(const fs::path& corpus, int steps, const fs::path& out) {
  return {
      "pretrain",           "--preset", "tiny",   "--corpus", corpus.string(), "--max-documents",     "40",
      "--checkpoint-every", "2",        "--seed", "3",        "--steps",       std::to_string(steps), "--out",
      out.string()};
}

std::vector<std::string> with(std::vector<std::string> args, const std::vector<std::string>& more) {
  args.insert(args.end(), more.begin(), more.end());
  return args;
}

// Both runs logged all `steps` steps, with the same values (all fields but the timing).
void expect_same_metrics(const fs::path& a, const fs::path& b, int steps) {
  EXPECT_EQ(read_jsonl(a).size(), static_cast<size_t>(steps));
  EXPECT_EQ(read_jsonl(b).size(), static_cast<size_t>(steps));
  testing::expect_same_metrics(a, b);
}

// The exported models hold the same tensors, bit for bit.
void expect_same_weights(const fs::path& a_dir, const fs::path& b_dir) {
  const SafetensorsFile a = SafetensorsFile::open(a_dir / "model.safetensors");
  const SafetensorsFile b = SafetensorsFile::open(b_dir / "model.safetensors");
  ASSERT_EQ(a.tensors().size(), b.tensors().size());
  for (const TensorInfo& info : a.tensors())
    EXPECT_TRUE(at::equal(a.load(info.name), b.load(info.name))) << info.name;
}

// Starts `lowrank args...` as a child process with its output in `log`.
pid_t spawn_lowrank(const std::vector<std::string>& args, const fs::path& log) {
  std::vector<std::string> argv_strings = lowrank_args(args);
  std::vector<char*> argv;
  for (std::string& a : argv_strings) argv.push_back(a.data());
  argv.push_back(nullptr);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, STDOUT_FILENO, log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  posix_spawn_file_actions_adddup2(&actions, STDOUT_FILENO, STDERR_FILENO);
  pid_t pid = -1;
  const int rc = posix_spawn(&pid, argv[0], &actions, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  if (rc != 0) throw std::runtime_error("posix_spawn " + argv_strings[0] + " failed: " + std::to_string(rc));
  return pid;
}

TEST(PretrainCliTest, StoppedAndResumedRunMatchesAStraightRun) {
  testing::TempDir dir;
  const fs::path corpus = testing::write_word_corpus(dir / "corpus.txt", kParagraphs);
  // 4 steps; the stopped run ends after step 3, one logged step past its checkpoint at 2.
  const auto args = [&](const char* out) { return pretrain_args(corpus, 4, dir / out); };
  auto r = run_command(shell(args("straight")));
  ASSERT_EQ(r.exit_code, 0) << r.out;
  r = run_command(shell(with(args("resumed"), {"--stop-after", "3"})));
  ASSERT_EQ(r.exit_code, 0) << r.out;
  EXPECT_EQ(read_jsonl(dir / "resumed/run/metrics.jsonl").size(), 3u);
  EXPECT_FALSE(fs::exists(dir / "resumed/pretrain.json"));
  r = run_command(shell(with(args("resumed"), {"--resume"})));
  ASSERT_EQ(r.exit_code, 0) << r.out;

  expect_same_metrics(dir / "straight/run/metrics.jsonl", dir / "resumed/run/metrics.jsonl", 4);
  expect_same_weights(dir / "straight/model", dir / "resumed/model");
  for (const char* f : {"config.json", "model.safetensors", "tokenizer.json", "generation_config.json"})
    EXPECT_TRUE(fs::exists(dir / "straight/model" / f)) << f;

  // Same arguments again: served from the cache, without touching the run.
  const auto metrics_time = fs::last_write_time(dir / "straight/run/metrics.jsonl");
  r = run_command(shell(args("straight")));
  ASSERT_EQ(r.exit_code, 0) << r.out;
  EXPECT_NE(r.out.find("(cached)"), std::string::npos) << r.out;
  EXPECT_EQ(fs::last_write_time(dir / "straight/run/metrics.jsonl"), metrics_time);

  // A text file has no document boundaries: the interval is over windows.
  r = run_command(shell({"--json", "eval", "--model", (dir / "straight/model").string(), "--data",
                         corpus.string(), "--seq-len", "64", "--stride", "32", "--max-tokens", "2000"}));
  ASSERT_EQ(r.exit_code, 0) << r.out;
  Json e = Json::parse(r.out.substr(r.out.find('{')));
  EXPECT_GT(e["perplexity"].get<double>(), 1.0);
  EXPECT_LE(e["ci95"][0].get<double>(), e["ci95"][1].get<double>());
  EXPECT_EQ(e["ci_unit"], "window");
  // The prepared dataset's validation split has its documents.
  r = run_command(shell({"--json", "eval", "--model", (dir / "straight/model").string(), "--data",
                         (dir / "straight/dataset").string(), "--seq-len", "64"}));
  ASSERT_EQ(r.exit_code, 0) << r.out;
  e = Json::parse(r.out.substr(r.out.find('{')));
  EXPECT_EQ(e["ci_unit"], "document");
  const Json dataset = read_json_file(dir / "straight/dataset/dataset.json");
  EXPECT_EQ(e["ci_samples"], dataset["documents"]["validation"]);
  r = run_command(shell({"eval", "--model", (dir / "straight/model").string(), "--data",
                         (dir / "straight/dataset").string(), "--seq-len", "64"}));
  ASSERT_EQ(r.exit_code, 0) << r.out;
  EXPECT_NE(r.out.find("documents)"), std::string::npos) << r.out;
}

// A real kill: SIGKILL lands at whatever point the child has reached after its first checkpoint
// (mid-step, mid-checkpoint or between the two); --resume must still end where a straight run does.
TEST(PretrainCliTest, KilledAndResumedRunMatchesAStraightRun) {
  testing::TempDir dir;
  const fs::path corpus = testing::write_word_corpus(dir / "corpus.txt", kParagraphs);
  // 8 steps: the kill lands soon after the first checkpoint (step 2), with six steps to spare.
  const auto args = [&](const char* out) { return pretrain_args(corpus, 8, dir / out); };
  const fs::path log = dir / "killed.log";
  const pid_t pid = spawn_lowrank(args("killed"), log);
  const fs::path latest = dir / "killed/run/checkpoints/latest";
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  int status = 0;
  bool exited = false;
  while (!fs::exists(latest) && std::chrono::steady_clock::now() < deadline) {
    if (::waitpid(pid, &status, WNOHANG) == pid) {
      exited = true;
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  if (!exited) {
    ::kill(pid, SIGKILL);
    ::waitpid(pid, &status, 0);
  }
  ASSERT_TRUE(fs::exists(latest)) << "no checkpoint before the deadline or the exit:\n"
                                  << read_text_file(log);
  ASSERT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL)
      << "the run ended before it could be killed:\n"
      << read_text_file(log);
  EXPECT_FALSE(fs::exists(dir / "killed/pretrain.json"));

  auto r = run_command(shell(with(args("killed"), {"--resume"})));
  ASSERT_EQ(r.exit_code, 0) << r.out;
  r = run_command(shell(args("straight")));
  ASSERT_EQ(r.exit_code, 0) << r.out;
  expect_same_metrics(dir / "straight/run/metrics.jsonl", dir / "killed/run/metrics.jsonl", 8);
  expect_same_weights(dir / "straight/model", dir / "killed/model");
}

// --optimizer: a low-rank optimizer trains and reports its memory in pretrain.json; an unknown
// name or a low-rank option without one is refused before any stage writes to the output.
TEST(PretrainCliTest, LowRankOptimizerRunsAndBadOptimizerArgumentsFailEarly) {
  testing::TempDir dir;
  const fs::path corpus = testing::write_word_corpus(dir / "corpus.txt", kParagraphs);
  auto r = run_command(shell(with(pretrain_args(corpus, 3, dir / "galore"),
                                  {"--optimizer", "galore", "--rank", "8", "--update-gap", "2"})));
  ASSERT_EQ(r.exit_code, 0) << r.out;
  const Json summary = read_json_file(dir / "galore/pretrain.json");
  EXPECT_EQ(summary["trainer"]["optimizer"], "galore");
  EXPECT_EQ(summary["trainer"]["optimizer_options"]["rank"], 8);
  EXPECT_GT(summary["memory"]["projectors"].get<int64_t>(), 0);
  EXPECT_LT(summary["memory"]["optimizer_states"].get<int64_t>(),
            2 * summary["memory"]["weights"].get<int64_t>());

  // AdamW with 8-bit moments on every tensor (min_8bit_size 0): about a byte per value and moment,
  // against float32 AdamW's 8.
  r = run_command(shell(with(pretrain_args(corpus, 3, dir / "adamw8"),
                             {"--optimizer-options", "'{\"state_bits\": 8, \"min_8bit_size\": 0}'"})));
  ASSERT_EQ(r.exit_code, 0) << r.out;
  const Json adamw8 = read_json_file(dir / "adamw8/pretrain.json");
  EXPECT_EQ(adamw8["trainer"]["optimizer_options"]["state_bits"], 8);
  EXPECT_LT(adamw8["memory"]["optimizer_states"].get<int64_t>(),
            0.6 * adamw8["memory"]["weights"].get<double>());
  r = run_command(
      shell(with(pretrain_args(corpus, 3, dir / "adamw-rank"), {"--optimizer-options", "'{\"rank\": 8}'"})));
  EXPECT_EQ(r.exit_code, 1) << r.out;
  EXPECT_NE(r.out.find("min_8bit_size, not \"rank\""), std::string::npos) << r.out;

  r = run_command(shell(with(pretrain_args(corpus, 3, dir / "unknown"), {"--optimizer", "nope"})));
  EXPECT_EQ(r.exit_code, 1) << r.out;
  EXPECT_NE(r.out.find("nope"), std::string::npos) << r.out;
  EXPECT_FALSE(fs::exists(dir / "unknown"));
  r = run_command(shell(with(pretrain_args(corpus, 3, dir / "rank-only"), {"--rank", "8"})));
  EXPECT_EQ(r.exit_code, 1) << r.out;
  EXPECT_NE(r.out.find("--optimizer"), std::string::npos) << r.out;
  r = run_command(shell(
      with(pretrain_args(corpus, 3, dir / "rank-too-large"), {"--optimizer", "galore", "--rank", "4096"})));
  EXPECT_EQ(r.exit_code, 1) << r.out;
  EXPECT_NE(r.out.find("--rank 4096 is larger than model.layers.0.self_attn.q_proj"), std::string::npos)
      << r.out;
  EXPECT_FALSE(fs::exists(dir / "rank-too-large"));
  r = run_command(shell(with(pretrain_args(corpus, 3, dir / "autocast-fp8"), {"--autocast", "fp8"})));
  EXPECT_EQ(r.exit_code, 1) << r.out;
  EXPECT_NE(r.out.find("fp8"), std::string::npos) << r.out;
  EXPECT_FALSE(fs::exists(dir / "autocast-fp8"));
  r = run_command(shell(with(pretrain_args(corpus, 3, dir / "bad-device"), {"--device", "tpu"})));
  EXPECT_EQ(r.exit_code, 1) << r.out;
  EXPECT_NE(r.out.find("device \"tpu\" is not cpu, cuda or cuda:N"), std::string::npos) << r.out;
  EXPECT_FALSE(fs::exists(dir / "bad-device"));
  r = run_command(shell(with(pretrain_args(corpus, 3, dir / "bad-batch"), {"--batch-size", "-2"})));
  EXPECT_EQ(r.exit_code, 1) << r.out;
  EXPECT_NE(r.out.find("--batch-size must be positive, got -2"), std::string::npos) << r.out;
  EXPECT_FALSE(fs::exists(dir / "bad-batch"));
}

// --lr replaces the preset's peak learning rate (the cosine ends at a tenth of it): the logged
// learning rates are the schedule's for that peak. A negative one is refused before any stage.
TEST(PretrainCliTest, LearningRateFlagSetsThePeak) {
  testing::TempDir dir;
  const fs::path corpus = testing::write_word_corpus(dir / "corpus.txt", kParagraphs);
  auto r = run_command(shell(with(pretrain_args(corpus, 4, dir / "lr"), {"--lr", "0.02"})));
  ASSERT_EQ(r.exit_code, 0) << r.out;
  const Json summary = read_json_file(dir / "lr/pretrain.json");
  EXPECT_DOUBLE_EQ(summary["trainer"]["lr"].get<double>(), 0.02);
  EXPECT_DOUBLE_EQ(summary["trainer"]["min_lr"].get<double>(), 0.002);
  const auto metrics = testing::read_jsonl(dir / "lr/run/metrics.jsonl");
  ASSERT_EQ(metrics.size(), 4u);
  double peak = 0;
  for (const Json& m : metrics) peak = std::max(peak, m["lr"].get<double>());
  EXPECT_DOUBLE_EQ(peak, 0.02);  // warmup reaches the peak within the 4 steps
  r = run_command(shell(with(pretrain_args(corpus, 4, dir / "negative"), {"--lr", "-1"})));
  EXPECT_EQ(r.exit_code, 1) << r.out;
  EXPECT_NE(r.out.find("--lr"), std::string::npos) << r.out;
  EXPECT_FALSE(fs::exists(dir / "negative"));
}

// --seq-len sets the training windows and the model's positions together (a model trained on
// 48-token windows that could only place 128 would be as wrong as one trained on 128 that places
// 48). Zero or negative is refused before any stage.
TEST(PretrainCliTest, SeqLenFlagSetsTheWindowsAndThePositions) {
  testing::TempDir dir;
  const fs::path corpus = testing::write_word_corpus(dir / "corpus.txt", kParagraphs);
  auto r = run_command(shell(with(pretrain_args(corpus, 2, dir / "seq"), {"--seq-len", "48"})));
  ASSERT_EQ(r.exit_code, 0) << r.out;
  const Json summary = read_json_file(dir / "seq/pretrain.json");
  EXPECT_EQ(summary["trainer"]["seq_len"].get<int64_t>(), 48);
  EXPECT_EQ(read_json_file(dir / "seq/model/config.json")["max_position_embeddings"].get<int64_t>(), 48);
  EXPECT_EQ(summary["validation"]["seq_len"].get<int64_t>(), 48);
  r = run_command(shell(with(pretrain_args(corpus, 2, dir / "negative"), {"--seq-len", "-4"})));
  EXPECT_EQ(r.exit_code, 1) << r.out;
  EXPECT_NE(r.out.find("--seq-len must be positive, got -4"), std::string::npos) << r.out;
  EXPECT_FALSE(fs::exists(dir / "negative"));
}

}  // namespace
}  // namespace lowrank::train
