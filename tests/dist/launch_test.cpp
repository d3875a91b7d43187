// `lowrank pretrain` on 2 ranks end to end: --nproc 2 and torchrun's variables (the test starts
// both ranks) give the one-process run; a SIGKILLed rank stops the other within the timeout and
// leaves a checkpoint that resumes; every bad input of docs/distributed.md fails with its message
// and leaves no process behind.
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <thread>

#include <gtest/gtest.h>

#include "lowrank/core/file.h"
#include "lowrank/core/json.h"
#include "lowrank/core/net.h"
#include "lowrank/core/safetensors.h"
#include "lowrank/dist/group.h"
#include "tests/dist/dist_testing.h"
#include "tests/testing.h"

extern char** environ;

namespace lowrank::dist {
namespace {
namespace fs = std::filesystem;
using testing::read_jsonl;
using testing::run_command;

#define SKIP_WITHOUT_DIST() \
  if (!available()) GTEST_SKIP() << "built without data-parallel training (LOWRANK_DIST=OFF)"

constexpr int kParagraphs = 120;

// The command line of a tiny pretraining run on `corpus` (one thread per process: two ranks share
// the two cores).
std::string pretrain(const fs::path& corpus, const fs::path& out, int steps, const std::string& more = "",
                     int timeout_s = 20) {
  return str(testing::lowrank_binary().string(), " --threads 1 pretrain --preset tiny --corpus ",
             corpus.string(), " --max-documents 40 --seed 3 --checkpoint-every 2 --steps ", steps, " --out ",
             out.string(), " --dist-timeout ", timeout_s, " ", more);
}

// Both runs logged `steps` steps with losses within 1e-5 (relative) and exported weights within
// 5e-5: Adam divides each coordinate's step by that coordinate's own gradient scale, so float32
// summation noise in a small gradient reaches the weight at the full learning rate (3e-3 here).
void expect_same_run(const fs::path& a, const fs::path& b, int steps) {
  const auto la = read_jsonl(a / "run/metrics.jsonl"), lb = read_jsonl(b / "run/metrics.jsonl");
  ASSERT_EQ(la.size(), static_cast<size_t>(steps));
  ASSERT_EQ(lb.size(), static_cast<size_t>(steps));
  for (size_t i = 0; i < la.size(); ++i) {
    const double x = la[i]["loss"].get<double>(), y = lb[i]["loss"].get<double>();
    EXPECT_NEAR(x, y, 1e-5 * std::abs(y)) << "loss at step " << i + 1;
  }
  const SafetensorsFile wa = SafetensorsFile::open(a / "model/model.safetensors");
  const SafetensorsFile wb = SafetensorsFile::open(b / "model/model.safetensors");
  ASSERT_EQ(wa.tensors().size(), wb.tensors().size());
  for (const TensorInfo& info : wa.tensors())
    EXPECT_LE(testing::max_abs_diff(wa.load(info.name), wb.load(info.name)), 5e-5) << info.name;
}

bool process_exists(pid_t pid) {
  return ::kill(pid, 0) == 0;
}

// The children of `parent` (from /proc).
std::vector<pid_t> children_of(pid_t parent) {
  std::vector<pid_t> out;
  for (const auto& entry : fs::directory_iterator("/proc")) {
    const std::string name = entry.path().filename().string();
    if (name.find_first_not_of("0123456789") != std::string::npos) continue;
    std::ifstream stat(entry.path() / "stat");
    std::string line;
    if (!std::getline(stat, line)) continue;
    const size_t close = line.rfind(')');
    if (close == std::string::npos) continue;
    std::istringstream rest(line.substr(close + 2));
    char state;
    pid_t ppid = 0;
    rest >> state >> ppid;
    if (ppid == parent) out.push_back(std::stoi(name));
  }
  return out;
}

std::string environment_of(pid_t pid) {
  std::ifstream in(str("/proc/", pid, "/environ"), std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

class LaunchTest : public ::testing::Test {
 protected:
  void SetUp() override {
    SKIP_WITHOUT_DIST();
    corpus_ = testing::write_word_corpus(dir_ / "corpus.txt", kParagraphs);
  }
  testing::TempDir dir_;
  fs::path corpus_;
};

TEST_F(LaunchTest, NprocTwoAndTorchrunVariablesGiveTheOneProcessRun) {
  auto r = run_command(pretrain(corpus_, dir_ / "one", 4));
  ASSERT_EQ(r.exit_code, 0) << r.out;
  r = run_command(pretrain(corpus_, dir_ / "two", 4, "--nproc 2"));
  ASSERT_EQ(r.exit_code, 0) << r.out;
  EXPECT_NE(r.out.find("launched 2 ranks"), std::string::npos) << r.out;
  expect_same_run(dir_ / "two", dir_ / "one", 4);
  EXPECT_TRUE(fs::exists(dir_ / "two/pretrain.json"));
  EXPECT_EQ(read_json_file(dir_ / "two/run/checkpoints/step-00000004/trainer_state.json")["world_size"], 2);
  EXPECT_TRUE(fs::exists(dir_ / "two/run/logs/rank-1.log"));
  EXPECT_NE(read_text_file(dir_ / "two/run/logs/rank-1.log").find("rank 1 of 2"), std::string::npos);
  // ZeRO-1: the optimizer state partitioned over the two ranks, the same run.
  r = run_command(pretrain(corpus_, dir_ / "zero", 4, "--nproc 2 --zero 1"));
  ASSERT_EQ(r.exit_code, 0) << r.out;
  expect_same_run(dir_ / "zero", dir_ / "one", 4);
  const Json one_memory = read_json_file(dir_ / "one/pretrain.json")["memory"];
  const Json zero_memory = read_json_file(dir_ / "zero/pretrain.json")["memory"];  // rank 0's share
  EXPECT_LT(zero_memory["optimizer_states"].get<int64_t>(), one_memory["optimizer_states"].get<int64_t>());
  EXPECT_GT(zero_memory["optimizer_states"].get<int64_t>(), 0);

  // Environment-variable mode: the test starts both ranks itself (rank 0 hosts the store).
  const int port = free_loopback_port();
  const std::string env = str("WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT=", port, " ");
  r = run_command(str("bash -c '", env, "RANK=1 ", pretrain(corpus_, dir_ / "env", 4), " & rank1=$!; ", env,
                      "RANK=0 ", pretrain(corpus_, dir_ / "env", 4), "; rank0=$?; wait $rank1; rank1=$?; ",
                      "echo exit $rank0 $rank1'"));
  ASSERT_NE(r.out.find("exit 0 0"), std::string::npos) << r.out;
  expect_same_run(dir_ / "env", dir_ / "one", 4);
}

// finetune --nproc 2 (LoRA over a pretrained tiny model) gives the one-process adapter.
TEST_F(LaunchTest, FinetuneOnTwoRanksGivesTheOneProcessAdapter) {
  auto r = run_command(pretrain(corpus_, dir_ / "base", 2));
  ASSERT_EQ(r.exit_code, 0) << r.out;
  const auto finetune = [&](const char* out, const std::string& more, const char* method = "lora") {
    return str(testing::lowrank_binary().string(), " --threads 1 finetune --model ",
               (dir_ / "base/model").string(), " --method ", method, " --r 4 --data ", corpus_.string(),
               " --max-documents 40 --steps 4 --batch 4", " --seq-len 32 --out ", (dir_ / out).string(),
               " --dist-timeout 20 ", more);
  };
  r = run_command(finetune("one", ""));
  ASSERT_EQ(r.exit_code, 0) << r.out;
  r = run_command(finetune("two", "--nproc 2"));
  ASSERT_EQ(r.exit_code, 0) << r.out;
  const auto la = read_jsonl(dir_ / "two/run/metrics.jsonl"), lb = read_jsonl(dir_ / "one/run/metrics.jsonl");
  ASSERT_EQ(la.size(), 4u);
  ASSERT_EQ(lb.size(), 4u);
  for (size_t i = 0; i < la.size(); ++i)
    EXPECT_NEAR(la[i]["loss"].get<double>(), lb[i]["loss"].get<double>(), 1e-5 * lb[i]["loss"].get<double>());
  const SafetensorsFile wa = SafetensorsFile::open(dir_ / "two/adapter_model.safetensors");
  const SafetensorsFile wb = SafetensorsFile::open(dir_ / "one/adapter_model.safetensors");
  ASSERT_EQ(wa.tensors().size(), wb.tensors().size());
  for (const TensorInfo& info : wa.tensors())
    EXPECT_LE(testing::max_abs_diff(wa.load(info.name), wb.load(info.name)), 5e-5) << info.name;
  EXPECT_TRUE(fs::exists(dir_ / "two/finetune.json"));
  // The ranks trained as one world (each on half the batch), not as two one-process runs.
  EXPECT_EQ(read_json_file(dir_ / "two/run/checkpoints/step-00000004/trainer_state.json")["world_size"], 2);
  // LoRAM trains an aligned copy first, which is not data-parallel yet.
  r = run_command(finetune("loram", "--nproc 2", "loram"));
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.out.find("--method loram on 2 ranks"), std::string::npos) << r.out;
}

// torchrun restarts a failed group with TORCHELASTIC_RESTART_COUNT > 0 and the same command line
// (no --resume): pretrain and finetune continue from the newest checkpoint and end as the straight
// run. The test plays torchrun's part, starting both ranks in environment-variable mode.
TEST_F(LaunchTest, ATorchrunRestartContinuesFromTheCheckpoint) {
  auto both_ranks = [&](const std::string& env, const std::string& command) {
    const std::string ranks =
        str("WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT=", free_loopback_port(), " ", env);
    return run_command(str("bash -c '", ranks, " RANK=1 ", command, " & rank1=$!; ", ranks, " RANK=0 ",
                           command, "; rank0=$?; wait $rank1; rank1=$?; echo exit $rank0 $rank1'"));
  };
  auto r = run_command(pretrain(corpus_, dir_ / "one", 4));
  ASSERT_EQ(r.exit_code, 0) << r.out;
  // The first attempt dies after step 3; the checkpoint of step 2 is on disk.
  r = both_ranks("", pretrain(corpus_, dir_ / "restarted", 4, "--stop-after 3"));
  ASSERT_NE(r.out.find("exit 0 0"), std::string::npos) << r.out;
  ASSERT_FALSE(fs::exists(dir_ / "restarted/pretrain.json"));
  r = both_ranks("TORCHELASTIC_RESTART_COUNT=1", pretrain(corpus_, dir_ / "restarted", 4));
  ASSERT_NE(r.out.find("exit 0 0"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("at step 2"), std::string::npos) << r.out;  // "resuming from ... at step 2"
  expect_same_run(dir_ / "restarted", dir_ / "one", 4);

  // finetune: the same, for a LoRA adapter over the model just trained.
  const auto finetune = [&](const char* out, const std::string& more) {
    return str(testing::lowrank_binary().string(), " --threads 1 finetune --model ",
               (dir_ / "one/model").string(), " --method lora --r 4 --data ", corpus_.string(),
               " --max-documents 40 --steps 4 --batch 4 --seq-len 32 --checkpoint-every 2 --out ",
               (dir_ / out).string(), " --dist-timeout 20 ", more);
  };
  r = run_command(finetune("lora-one", ""));
  ASSERT_EQ(r.exit_code, 0) << r.out;
  r = both_ranks("", finetune("lora-restarted", "--stop-after 3"));
  ASSERT_NE(r.out.find("exit 0 0"), std::string::npos) << r.out;
  r = both_ranks("TORCHELASTIC_RESTART_COUNT=1", finetune("lora-restarted", ""));
  ASSERT_NE(r.out.find("exit 0 0"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("at step 2"), std::string::npos) << r.out;
  const auto la = read_jsonl(dir_ / "lora-restarted/run/metrics.jsonl");
  const auto lb = read_jsonl(dir_ / "lora-one/run/metrics.jsonl");
  ASSERT_EQ(la.size(), 4u);
  ASSERT_EQ(lb.size(), 4u);
  for (size_t i = 0; i < la.size(); ++i)
    EXPECT_NEAR(la[i]["loss"].get<double>(), lb[i]["loss"].get<double>(), 1e-5 * lb[i]["loss"].get<double>())
        << "step " << i + 1;
  const SafetensorsFile wa = SafetensorsFile::open(dir_ / "lora-restarted/adapter_model.safetensors");
  const SafetensorsFile wb = SafetensorsFile::open(dir_ / "lora-one/adapter_model.safetensors");
  for (const TensorInfo& info : wa.tensors())
    EXPECT_LE(testing::max_abs_diff(wa.load(info.name), wb.load(info.name)), 5e-5) << info.name;
}

TEST_F(LaunchTest, AKilledRankStopsTheOtherAndTheCheckpointResumes) {
  const fs::path out = dir_ / "killed", log = dir_ / "launcher.log";
  const std::string command = pretrain(corpus_, out, 60, "--nproc 2") + " > " + log.string() + " 2>&1";
  pid_t launcher = -1;
  std::vector<char*> argv{const_cast<char*>("/bin/sh"), const_cast<char*>("-c"),
                          const_cast<char*>(command.c_str()), nullptr};
  // exec: the shell becomes the launcher, so its children are the ranks.
  const std::string exec_command = "exec " + command;
  argv[2] = const_cast<char*>(exec_command.c_str());
  ASSERT_EQ(posix_spawn(&launcher, "/bin/sh", nullptr, nullptr, argv.data(), environ), 0);
  const fs::path latest = out / "run/checkpoints/latest";
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(90);
  while (!fs::exists(latest) && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  ASSERT_TRUE(fs::exists(latest)) << read_text_file(log);
  std::vector<pid_t> ranks = children_of(launcher);
  ASSERT_EQ(ranks.size(), 2u) << read_text_file(log);
  pid_t victim = -1, survivor = -1;
  for (pid_t pid : ranks) (environment_of(pid).find("RANK=1") != std::string::npos ? victim : survivor) = pid;
  ASSERT_GT(victim, 0);
  const auto killed_at = std::chrono::steady_clock::now();
  ::kill(victim, SIGKILL);
  int status = 0;
  ASSERT_EQ(::waitpid(launcher, &status, 0), launcher);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - killed_at).count();
  const std::string text = read_text_file(log);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) != 0) << text;
  EXPECT_LT(seconds, 30.0) << text;  // the survivor fails at once (peer closed) or at the 20 s timeout
  EXPECT_NE(text.find("rank 1 was killed by signal 9"), std::string::npos) << text;
  EXPECT_FALSE(process_exists(survivor));
  EXPECT_FALSE(fs::exists(out / "pretrain.json"));
  // The checkpoint left behind is whole: the run resumes from it and ends.
  auto r = run_command(pretrain(corpus_, out, 60, "--nproc 2 --resume"));
  ASSERT_EQ(r.exit_code, 0) << r.out;
  EXPECT_EQ(read_jsonl(out / "run/metrics.jsonl").size(), 60u);
  EXPECT_TRUE(fs::exists(out / "pretrain.json"));
}

// SIGTERM to the launcher reaches the ranks: all of them end, and the launcher exits 1 naming one.
TEST_F(LaunchTest, ASignalToTheLauncherReachesTheRanks) {
  const fs::path out = dir_ / "signalled", log = dir_ / "launcher.log";
  const std::string command =
      "exec " + pretrain(corpus_, out, 200, "--nproc 2") + " > " + log.string() + " 2>&1";
  std::vector<char*> argv{const_cast<char*>("/bin/sh"), const_cast<char*>("-c"),
                          const_cast<char*>(command.c_str()), nullptr};
  pid_t launcher = -1;
  ASSERT_EQ(posix_spawn(&launcher, "/bin/sh", nullptr, nullptr, argv.data(), environ), 0);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(90);
  while (!fs::exists(out / "run/checkpoints/latest") && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  const std::vector<pid_t> ranks = children_of(launcher);
  ASSERT_EQ(ranks.size(), 2u) << read_text_file(log);
  ::kill(launcher, SIGTERM);
  int status = 0;
  ASSERT_EQ(::waitpid(launcher, &status, 0), launcher);
  const std::string text = read_text_file(log);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 1) << text;
  EXPECT_NE(text.find("was killed by signal 15"), std::string::npos) << text;
  for (pid_t pid : ranks) EXPECT_FALSE(process_exists(pid));
}

// One test per refusal: exit 1, the message, nothing left running, nothing trained.
TEST_F(LaunchTest, BadInputsFailWithTheirMessage) {
  const auto expect_refused = [&](const std::string& command, const std::string& message) {
    const auto t0 = std::chrono::steady_clock::now();
    const auto r = run_command(command);
    EXPECT_EQ(r.exit_code, 1) << command << "\n" << r.out;
    EXPECT_NE(r.out.find(message), std::string::npos) << command << "\n" << r.out;
    EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(), 15.0) << command;
    EXPECT_EQ(children_of(::getpid()).size(), 0u) << command;  // popen's shell and the ranks are gone
  };
  const fs::path out = dir_ / "bad";
  const std::string env = "WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 ";
  // A busy port fails before any rank starts.
  const int busy = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof addr;
  ASSERT_EQ(::bind(busy, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  ASSERT_EQ(::listen(busy, 1), 0);
  ::getsockname(busy, reinterpret_cast<sockaddr*>(&addr), &len);
  const int busy_port = ntohs(addr.sin_port);
  expect_refused(pretrain(corpus_, out, 2, str("--nproc 2 --master-port ", busy_port)),
                 str("--master-port ", busy_port, ": cannot host the rendezvous store there"));
  ::close(busy);
  EXPECT_FALSE(fs::exists(out / "run/logs"));
  // torchrun's variables, missing or malformed.
  expect_refused(env + "RANK=0 " + pretrain(corpus_, out, 2), "environment variable MASTER_PORT is not set");
  expect_refused(env + "RANK=x MASTER_PORT=1234 " + pretrain(corpus_, out, 2),
                 "environment variable RANK=\"x\" is not an integer");
  expect_refused(env + "RANK=2 MASTER_PORT=1234 " + pretrain(corpus_, out, 2),
                 "environment variable RANK=2 must be less than WORLD_SIZE=2");
  // --nproc inside a launched rank.
  expect_refused(env + "RANK=0 MASTER_PORT=1234 " + pretrain(corpus_, out, 2, "--nproc 2"),
                 "--nproc inside a launched rank");
  expect_refused(pretrain(corpus_, out, 2, "--nproc 0"), "--nproc");
  // The global batch must split; per-layer updates cannot run on several ranks.
  expect_refused(pretrain(corpus_, out, 2, "--nproc 2 --batch-size 3"),
                 "the global batch of 3 windows does not split over 2 ranks");
  expect_refused(pretrain(corpus_, out, 2, "--nproc 2 --per-layer-updates --optimizer galore --rank 4"),
                 "per-layer updates");
  // A rank with nobody to meet gives up at --dist-timeout (TCPStore alone would retry past it).
  expect_refused(str(env, "RANK=1 MASTER_PORT=", free_loopback_port(), " ", pretrain(corpus_, out, 2, "", 2)),
                 "no rendezvous of 2 ranks at 127.0.0.1:");
  EXPECT_FALSE(fs::exists(out / "model"));
}

}  // namespace
}  // namespace lowrank::dist
