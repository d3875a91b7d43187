// The task suite (lowrank/data/tasks/): ListOps labels re-derived by an independent stack-machine
// evaluator, structural checks of every synthetic task, golden SHA-256 hashes (the same seed gives
// the same bytes), SHA-256 test vectors, and corrupted / truncated / bad-option errors.
#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <fstream>
#include <map>
#include <set>

#include "lowrank/core/error.h"
#include "lowrank/data/tasks/affine_digits.h"
#include "lowrank/data/tasks/fashion_mnist.h"
#include "lowrank/data/tasks/listops.h"
#include "lowrank/data/tasks/registry.h"
#include "lowrank/data/tasks/sha256.h"
#include "lowrank/data/tasks/task_format.h"
#include "tests/testing.h"

namespace lowrank::data::tasks {
namespace {

namespace fs = std::filesystem;
using testing::error_of;
using testing::TempDir;

std::string read_bytes(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

fs::path generate(const TempDir& tmp, const std::string& task, uint64_t seed,
                  std::map<std::string, std::string> options, const std::string& name = "task") {
  TaskRequest request;
  request.task = task;
  request.seed = seed;
  request.out = tmp / name;
  request.options = std::move(options);
  generate_task(request);
  return request.out;
}

// Each token sequence of a split, with its label row.
std::vector<std::pair<std::vector<int64_t>, std::vector<int64_t>>> rows(const TaskDataset& task,
                                                                        Split split) {
  std::vector<std::pair<std::vector<int64_t>, std::vector<int64_t>>> out;
  for (int64_t i = 0; i < task.tokens(split).rows(); ++i) {
    out.emplace_back(task.tokens(split).row(i), task.labels(split).row(i));
  }
  return out;
}

// --- SHA-256 -------------------------------------------------------------------------------

TEST(Sha256Test, MatchesFips180TestVectors) {
  EXPECT_EQ(sha256_hex(std::string_view("")),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(sha256_hex(std::string_view("abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(sha256_hex(std::string_view("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq")),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
  // The one-million 'a' vector, fed in uneven pieces (exercises the partial-block buffer).
  Sha256 hash;
  const std::string piece(997, 'a');
  int64_t left = 1000000;
  while (left > 0) {
    const auto n = static_cast<std::size_t>(std::min<int64_t>(left, 997));
    hash.update(std::string_view(piece.data(), n));
    left -= static_cast<int64_t>(n);
  }
  EXPECT_EQ(hash.hex_digest(), "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

// --- ListOps ---------------------------------------------------------------------------------

// Evaluates a ListOps token sequence with an explicit stack of open operator frames, counting
// digits for the median (no recursion, no sort): independent of the generator's evaluation.
int64_t evaluate_with_stack(const std::vector<int64_t>& tokens) {
  struct Frame {
    int64_t op;
    std::array<int64_t, 10> count{};
    int64_t n = 0;
  };
  std::vector<Frame> stack;
  int64_t result = -1;
  auto deliver = [&](int64_t value) {
    if (stack.empty()) {
      EXPECT_EQ(result, -1) << "two values at top level";
      result = value;
    } else {
      stack.back().count[value] += 1;
      stack.back().n += 1;
    }
  };
  for (int64_t t : tokens) {
    if (t >= 1 && t <= 10) {
      deliver(t - 1);
    } else if (t >= 11 && t <= 14) {
      stack.push_back(Frame{t});
    } else {
      EXPECT_EQ(t, 15) << "unexpected token";
      EXPECT_FALSE(stack.empty()) << "']' without an operator";
      const Frame f = stack.back();
      stack.pop_back();
      EXPECT_GE(f.n, 2);
      int64_t value = 0;
      if (f.op == 11) {
        value = 0;
        while (f.count[value] == 0) ++value;
      } else if (f.op == 12) {
        value = 9;
        while (f.count[value] == 0) --value;
      } else if (f.op == 14) {
        for (int d = 0; d < 10; ++d) value += d * f.count[d];
        value %= 10;
      } else {
        // k-th smallest by cumulative counts; even n: floor of the mean of the two middle ones.
        auto kth = [&](int64_t k) {
          int64_t seen = 0;
          for (int d = 0; d < 10; ++d) {
            seen += f.count[d];
            if (seen > k) return static_cast<int64_t>(d);
          }
          return int64_t{-1};
        };
        value = f.n % 2 == 1 ? kth(f.n / 2) : (kth(f.n / 2 - 1) + kth(f.n / 2)) / 2;
      }
      deliver(value);
    }
  }
  EXPECT_TRUE(stack.empty()) << "unclosed operator";
  return result;
}

TEST(ListOpsTest, LabelsMatchAnIndependentStackEvaluator) {
  TempDir tmp;
  const fs::path dir = generate(tmp, "listops", 7,
                                {{"train_size", "60"},
                                 {"val_size", "20"},
                                 {"test_size", "20"},
                                 {"min_length", "10"},
                                 {"max_length", "120"}});
  const TaskDataset task = TaskDataset::open(dir);
  EXPECT_EQ(task.info().header.vocabulary, listops_vocabulary());
  std::set<std::vector<int64_t>> distinct;
  std::array<int64_t, 10> label_counts{};
  for (Split split : kSplits) {
    for (const auto& [tokens, label] : rows(task, split)) {
      ASSERT_EQ(label.size(), 1u);
      EXPECT_EQ(evaluate_with_stack(tokens), label[0]);
      EXPECT_GT(tokens.size(), 10u);
      EXPECT_LT(tokens.size(), 120u);
      EXPECT_TRUE(distinct.insert(tokens).second) << "duplicate tree";
      label_counts[label[0]] += 1;
    }
  }
  EXPECT_EQ(distinct.size(), 100u);
  // Every operator and several labels occur (the generator is not stuck on one branch).
  EXPECT_GE(std::count_if(label_counts.begin(), label_counts.end(), [](int64_t c) { return c > 0; }), 5);
}

TEST(ListOpsTest, TreesRespectMaxDepthAndMaxArgs) {
  TaskRng rng(3);
  for (int i = 0; i < 200; ++i) {
    const ListOpsTree tree = generate_listops_tree(rng, 4, 3);
    int64_t depth = 0, max_depth = 0;
    std::vector<int64_t> args;
    for (int32_t t : tree.tokens) {
      if (t >= kListOpsMin && t <= kListOpsSumMod) {
        if (!args.empty()) ++args.back();
        args.push_back(0);
        max_depth = std::max(max_depth, ++depth);
      } else if (t == kListOpsEnd) {
        EXPECT_GE(args.back(), 2);
        EXPECT_LE(args.back(), 3);
        args.pop_back();
        --depth;
      } else if (!args.empty()) {
        ++args.back();
      }
    }
    // Operators sit at depths 1..max_depth - 1; the deepest level holds digits only.
    EXPECT_LE(max_depth, 3);
  }
}

// --- Synthetic tasks: structure ----------------------------------------------------------------

TEST(SelectiveCopyTest, TargetsAreTheNonNoiseTokensInOrder) {
  TempDir tmp;
  const fs::path dir = generate(tmp, "selective-copy", 11,
                                {{"train_size", "30"},
                                 {"val_size", "5"},
                                 {"test_size", "5"},
                                 {"seq_len", "40"},
                                 {"num_tokens", "6"},
                                 {"vocab_size", "10"}});
  const TaskDataset task = TaskDataset::open(dir);
  EXPECT_EQ(task.info().header.target, "tokens");
  for (Split split : kSplits) {
    for (const auto& [tokens, target] : rows(task, split)) {
      ASSERT_EQ(tokens.size(), 46u);
      std::vector<int64_t> data;
      for (int i = 0; i < 40; ++i) {
        EXPECT_NE(tokens[i], 9) << "marker among the data";
        if (tokens[i] != 0) data.push_back(tokens[i]);
      }
      for (int i = 40; i < 46; ++i) EXPECT_EQ(tokens[i], 9);
      EXPECT_EQ(data, target);
    }
  }
}

TEST(InductionTest, TargetFollowsTheFirstTrigger) {
  TempDir tmp;
  const fs::path dir = generate(
      tmp, "induction", 5, {{"train_size", "40"}, {"val_size", "5"}, {"test_size", "5"}, {"seq_len", "30"}});
  const TaskDataset task = TaskDataset::open(dir);
  const int64_t trigger = 14;  // vocab 16: ordinary 0..13, "=>" 14, "." 15
  for (Split split : kSplits) {
    for (const auto& [tokens, label] : rows(task, split)) {
      ASSERT_EQ(tokens.size(), 31u);
      EXPECT_EQ(tokens.back(), trigger);
      EXPECT_EQ(std::count(tokens.begin(), tokens.end(), trigger), 2);
      const auto first = std::find(tokens.begin(), tokens.end(), trigger) - tokens.begin();
      EXPECT_LT(first + 1, 30);
      EXPECT_EQ(label.at(0), tokens[first + 1]);
      EXPECT_LT(*std::max_element(tokens.begin(), tokens.end() - 1), 15) << "no-op token in the input";
    }
  }
}

TEST(AssocRecallTest, AnswerIsTheValueOfTheQueriedKey) {
  TempDir tmp;
  const fs::path dir =
      generate(tmp, "assoc-recall", 9, {{"train_size", "50"}, {"val_size", "5"}, {"test_size", "5"}});
  const TaskDataset task = TaskDataset::open(dir);
  // vocab 20: ordinary 0..17, keys 0..8, values 9..17, "=>" 18.
  for (Split split : kSplits) {
    for (const auto& [tokens, label] : rows(task, split)) {
      ASSERT_EQ(tokens.size(), 42u);
      std::map<int64_t, int64_t> value_of;
      for (int i = 0; i < 40; i += 2) {
        EXPECT_LT(tokens[i], 9);
        EXPECT_GE(tokens[i + 1], 9);
        auto [it, fresh] = value_of.emplace(tokens[i], tokens[i + 1]);
        EXPECT_EQ(it->second, tokens[i + 1]) << "a key with two values";
      }
      EXPECT_EQ(tokens[40], 18);
      ASSERT_TRUE(value_of.count(tokens[41])) << "query key absent from the context";
      EXPECT_EQ(label.at(0), value_of[tokens[41]]);
    }
  }
}

// Three small corpora of distinct text, one document per file.
fs::path write_corpora(const TempDir& tmp) {
  const char* words[3][4] = {{"alpha ", "beta ", "gamma ", "delta "},
                             {"one ", "two ", "three ", "four "},
                             {"red ", "green ", "blue ", "cyan "}};
  for (int c = 0; c < 3; ++c) {
    for (int d = 0; d < 20; ++d) {
      std::string text = "doc" + std::to_string(c) + "_" + std::to_string(d) + ": ";
      for (int w = 0; text.size() < 700; ++w)
        text += words[c][(w * 7 + d) % 4] + std::to_string(d * 1000 + w) + " ";
      testing::write_text_file(tmp / ("corpus" + std::to_string(c)) / ("d" + std::to_string(d) + ".txt"),
                               text);
    }
  }
  return tmp.path();
}

std::string as_bytes(const std::vector<int64_t>& tokens, std::size_t from, std::size_t n) {
  std::string s;
  for (std::size_t i = from; i < from + n; ++i) s.push_back(static_cast<char>(tokens[i]));
  return s;
}

TEST(ByteTextTest, WindowsComeFromTheLabelledCorpus) {
  TempDir tmp;
  const fs::path root = write_corpora(tmp);
  const std::string corpora =
      (root / "corpus0").string() + "," + (root / "corpus1").string() + "," + (root / "corpus2").string();
  const fs::path dir = generate(tmp, "byte-text", 4,
                                {{"train_size", "30"},
                                 {"val_size", "6"},
                                 {"test_size", "6"},
                                 {"corpora", corpora},
                                 {"min_window", "50"},
                                 {"max_window", "200"}});
  const TaskDataset task = TaskDataset::open(dir);
  std::array<std::string, 3> all;
  for (int c = 0; c < 3; ++c) {
    for (const auto& e : fs::directory_iterator(root / ("corpus" + std::to_string(c)))) {
      all[c] += read_bytes(e.path()) + "\n";
    }
  }
  for (Split split : kSplits) {
    for (const auto& [tokens, label] : rows(task, split)) {
      EXPECT_GE(tokens.size(), 50u);
      EXPECT_LE(tokens.size(), 200u);
      // Documents are joined with "\n" and a window may cross one: check each line piece.
      const std::string window = as_bytes(tokens, 0, tokens.size());
      std::size_t start = 0;
      while (start < window.size()) {
        const std::size_t end = std::min(window.find('\n', start), window.size());
        if (end > start) {
          const std::string piece = window.substr(start, end - start);
          for (int c = 0; c < 3; ++c) {
            EXPECT_EQ(all[c].find(piece) != std::string::npos, c == label[0]) << "class " << c;
          }
        }
        start = end + 1;
      }
    }
  }
}

TEST(ByteRetrievalTest, SameLabelMeansSameDocument) {
  TempDir tmp;
  const fs::path root = write_corpora(tmp);
  const std::string corpora = (root / "corpus0").string() + "," + (root / "corpus1").string();
  const fs::path dir = generate(
      tmp, "byte-retrieval", 2,
      {{"train_size", "40"}, {"val_size", "6"}, {"test_size", "6"}, {"corpora", corpora}, {"window", "100"}});
  const TaskDataset task = TaskDataset::open(dir);
  std::vector<std::string> docs;
  for (int c = 0; c < 2; ++c) {
    for (const auto& e : fs::directory_iterator(root / ("corpus" + std::to_string(c)))) {
      docs.push_back(read_bytes(e.path()));
    }
  }
  auto owner = [&](const std::string& window) {
    int found = -1;
    for (int d = 0; d < static_cast<int>(docs.size()); ++d) {
      if (docs[d].find(window) != std::string::npos) {
        EXPECT_EQ(found, -1) << "window in two documents";
        found = d;
      }
    }
    return found;
  };
  int positives = 0;
  for (Split split : kSplits) {
    for (const auto& [tokens, label] : rows(task, split)) {
      ASSERT_EQ(tokens.size(), 200u);
      const int a = owner(as_bytes(tokens, 0, 100)), b = owner(as_bytes(tokens, 100, 100));
      ASSERT_GE(a, 0);
      ASSERT_GE(b, 0);
      EXPECT_EQ(a == b, label[0] == 1);
      EXPECT_EQ(a / 20, b / 20) << "negative pair mixes corpora";
      positives += static_cast<int>(label[0]);
    }
  }
  EXPECT_GT(positives, 10);
  EXPECT_LT(positives, 42);
}

// --- Golden hashes: the same seed gives the same bytes ---------------------------------------

std::string split_hashes(const fs::path& dir) {
  const Json json = read_json_file(dir / "task.json");
  std::string out;
  for (const char* split : {"train", "val", "test"}) {
    for (const char* kind : {"tokens", "labels"}) {
      out += json["splits"][split][kind]["sha256"].get<std::string>().substr(0, 16) + " ";
    }
  }
  return out;
}

TEST(TaskGoldenTest, SmallTasksHaveCommittedHashes) {
  TempDir tmp;
  const std::map<std::string, std::string> small = {
      {"train_size", "20"}, {"val_size", "4"}, {"test_size", "4"}};
  auto with = [&](std::map<std::string, std::string> extra) {
    extra.insert(small.begin(), small.end());
    return extra;
  };
  struct Case {
    std::string task;
    std::map<std::string, std::string> options;
    std::string task_json_sha256;
    std::string files;
  };
  const std::vector<Case> cases = {
      {"listops", with({{"min_length", "10"}, {"max_length", "60"}}),
       "af13ea04478bb24d7a341428ed498f02f521317567d3df47f22dc7fba3f0f967",
       "246dafe663a4c5f5 6f0da64898e74e90 03e7be893b3335a0 c6299aa5ed4ccfcc a19c39c4d9906e4e "
       "12aa62f2d065a374 "},
      {"selective-copy", with({{"seq_len", "32"}}),
       "06b69ef8dbcad4a4a6d11d6913d8a21ca6b966325a5eb00f8c578e2b3a1c726e",
       "514e1bfa90b43ae2 b796ad6837a6bbcc f0bd37fb8ac0b656 f835738a853d3794 8f4717342fc1b717 "
       "d71f2bbce4435908 "},
      {"induction", with({{"seq_len", "32"}}),
       "b58d7c9454df03f888939170cd24422185d79ee5f7943fa38bcc0e5ea327f7f3",
       "63fb5d02c9e928a5 4acae8d55ec4b90d 2fcd626c01531f2c a17d47d89df96469 8bf525278ab7722b "
       "c9da8e1a2fc2e305 "},
      {"assoc-recall", with({}), "a24d9d02a75eea5aa62aea2398ccb0ba20fd09938fc9aa880e3ca1007f7a037c",
       "87f91ef0d9d1ed4c 226a647b56f6fd86 0f43909c8956f1b2 252725bcfd42f828 9127ce296b4e6427 "
       "5b95d6d14026da68 "},
  };
  for (const Case& c : cases) {
    const fs::path dir = generate(tmp, c.task, 1234, c.options, c.task);
    EXPECT_EQ(sha256_file(dir / "task.json"), c.task_json_sha256) << c.task;
    EXPECT_EQ(split_hashes(dir), c.files) << c.task;
    // And the task.json hashes are the files' own.
    EXPECT_NO_THROW(TaskDataset::open(dir, /*verify_hashes=*/true)) << c.task;
  }
  // Byte tasks over a written corpus (task.json names its temp path, so only the files are golden).
  const fs::path root = write_corpora(tmp);
  const fs::path text =
      generate(tmp, "byte-text", 1234,
               with({{"corpora", (root / "corpus0").string() + "," + (root / "corpus1").string()},
                     {"min_window", "20"},
                     {"max_window", "90"}}),
               "byte-text");
  EXPECT_EQ(split_hashes(text),
            "f58255bf5f089e82 5b3eb1ae9dd565fe 35e97772f36efb0c 8410666f260e7f0a e26fcce171976067 "
            "02115953bab2597d ");
  const fs::path retrieval =
      generate(tmp, "byte-retrieval", 1234,
               with({{"corpora", (root / "corpus2").string()}, {"window", "64"}}), "byte-retrieval");
  EXPECT_EQ(split_hashes(retrieval),
            "b56e5c7493373473 06775910686f891c 05e8103757cb9e2f da5b722304251e68 aff55b9ed3de9a73 "
            "e28887079c3c3bc6 ");
}

TEST(TaskGoldenTest, SeedChangesTheBytesAndRepeatsThem) {
  TempDir tmp;
  const std::map<std::string, std::string> o = {{"train_size", "10"}, {"val_size", "2"}, {"test_size", "2"}};
  const fs::path a = generate(tmp, "induction", 1, o, "a");
  const fs::path b = generate(tmp, "induction", 1, o, "b");
  const fs::path c = generate(tmp, "induction", 2, o, "c");
  EXPECT_EQ(read_bytes(a / "train.tokens.bin"), read_bytes(b / "train.tokens.bin"));
  EXPECT_NE(read_bytes(a / "train.tokens.bin"), read_bytes(c / "train.tokens.bin"));
}

TEST(FashionMnistTest, ImagesAndSequencesFromTheDebianPackage) {
  if (!fs::exists(fs::path(kFashionMnistDir) / "t10k-labels-idx1-ubyte.gz")) {
    GTEST_SKIP() << "Debian package dataset-fashion-mnist is not installed (scripts/setup installs it)";
  }
  TempDir tmp;
  const std::map<std::string, std::string> o = {
      {"train_size", "30"}, {"val_size", "10"}, {"test_size", "10"}};
  const TaskDataset image = TaskDataset::open(generate(tmp, "fmnist", 1, o, "fmnist"));
  const TaskDataset seq = TaskDataset::open(generate(tmp, "sfmnist", 1, o, "sfmnist"));
  EXPECT_EQ(image.info().header.layout["kind"], "image");
  EXPECT_EQ(seq.info().header.layout["kind"], "sequence");
  EXPECT_EQ(image.tokens(Split::kTrain).row_length(0), 784);
  // The test split is the t10k file in order: its first labels are the published ones
  // (Ankle boot, Pullover, Trouser, Trouser, Shirt).
  const std::vector<int64_t> first = {9, 2, 1, 1, 6};
  for (int i = 0; i < 5; ++i) EXPECT_EQ(seq.labels(Split::kTest).at(i, 0), first[i]);
  EXPECT_EQ(split_hashes(image.dir()), split_hashes(seq.dir()));
}

TEST(FashionMnistTest, MissingFilesNameThePackage) {
  TempDir tmp;
  const std::string message = error_of([&] {
    generate(tmp, "fmnist", 1, {{"data_dir", tmp.path().string()}});
  });
  EXPECT_NE(message.find("dataset-fashion-mnist"), std::string::npos) << message;
  EXPECT_NE(message.find("train-images-idx3-ubyte.gz"), std::string::npos) << message;
  try {
    read_idx_gz(tmp / "none.gz", "dataset-fashion-mnist");
    FAIL();
  } catch (const NotFound&) {
  }
}

// --- Affine digits --------------------------------------------------------------------------

// A digits CSV of `n` lines: pixel j of digit i is (i + j) mod 17, its label i mod 10.
fs::path synthetic_digits(const TempDir& tmp, int n) {
  std::ofstream out(tmp / "digits.csv");
  for (int i = 0; i < n; ++i) {
    for (int j = 0; j < 64; ++j) out << (i + j) % 17 << ",";
    out << i % 10 << "\n";
  }
  return tmp / "digits.csv";
}

TEST(AffineDigitsTest, PaddedDigitsAtIdentityPoseAndTransformedTests) {
  TempDir tmp;
  const fs::path csv = synthetic_digits(tmp, 20);
  std::map<std::string, std::string> o = {{"train_size", "10"},
                                          {"val_size", "5"},
                                          {"test_size", "5"},
                                          {"data_file", csv.string()},
                                          {"test_pose", "identity"}};
  const TaskDataset plain = TaskDataset::open(generate(tmp, "affine-digits", 2, o, "plain"));
  EXPECT_EQ(plain.info().header.layout["height"], 16);
  // Every image is some digit i of the file: value round((i + j) mod 17 · 255 / 16) at the centre,
  // zero in the 4-pixel border; its label names which.
  for (Split split : kSplits)
    for (const auto& [pixels, label] : rows(plain, split)) {
      ASSERT_EQ(pixels.size(), 256u);
      int64_t found = -1;
      for (int i = 0; i < 20 && found < 0; ++i) {
        bool same = i % 10 == label[0];
        for (int r = 0; r < 16 && same; ++r)
          for (int c = 0; c < 16 && same; ++c) {
            const bool inside = r >= 4 && r < 12 && c >= 4 && c < 12;
            const int64_t want = inside ? std::lround(((i + (r - 4) * 8 + (c - 4)) % 17) * 255.0 / 16.0) : 0;
            same = pixels[static_cast<size_t>(r * 16 + c)] == want;
          }
        if (same) found = i;
      }
      EXPECT_GE(found, 0);
    }
  // The affine test split: the same digits and labels, other pixels; train and val unchanged.
  o["test_pose"] = "affine";
  const TaskDataset affine = TaskDataset::open(generate(tmp, "affine-digits", 2, o, "affine"));
  EXPECT_EQ(rows(affine, Split::kTrain), rows(plain, Split::kTrain));
  const auto a = rows(affine, Split::kTest), p = rows(plain, Split::kTest);
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_EQ(a[i].second, p[i].second);
    EXPECT_NE(a[i].first, p[i].first);
  }
}

TEST(AffineDigitsTest, ResamplingIsExactForTheGridsOwnMaps) {
  std::vector<double> image(25);
  for (size_t i = 0; i < image.size(); ++i) image[i] = static_cast<double>(i * i % 7);
  EXPECT_EQ(affine_resample(image, 5, {1, 0, 0, 1}), image);
  // A = R(90°) about the centre: out[r][c] = in[4 − c][r].
  const std::vector<double> rotated = affine_resample(image, 5, {0, -1, 1, 0});
  for (int r = 0; r < 5; ++r)
    for (int c = 0; c < 5; ++c)
      EXPECT_NEAR(rotated[static_cast<size_t>(r * 5 + c)], image[static_cast<size_t>((4 - c) * 5 + r)],
                  1e-12);
  // Scaling by 2 reads the input at half the offset: out(centre ± 2) = in(centre ± 1).
  const std::vector<double> scaled = affine_resample(image, 5, {2, 0, 0, 2});
  EXPECT_NEAR(scaled[2 * 5 + 4], image[2 * 5 + 3], 1e-12);
  EXPECT_NEAR(scaled[2 * 5 + 3], 0.5 * (image[2 * 5 + 2] + image[2 * 5 + 3]), 1e-12);
}

TEST(AffineDigitsTest, BadFilesAndOptionsNameTheProblem) {
  TempDir tmp;
  std::string m = error_of([&] {
    generate(tmp, "affine-digits", 1, {{"data_file", (tmp / "none.csv").string()}});
  });
  EXPECT_NE(m.find("python3-sklearn"), std::string::npos) << m;
  {
    std::ofstream out(tmp / "bad.csv");
    for (int j = 0; j < 64; ++j) out << "0,";
    out << "3\n";
    for (int j = 0; j < 63; ++j) out << "0,";
    out << "17,3\n";
  }
  m = error_of([&] { generate(tmp, "affine-digits", 1, {{"data_file", (tmp / "bad.csv").string()}}); });
  EXPECT_NE(m.find("bad.csv:2: pixel 64 = 17"), std::string::npos) << m;
  const fs::path csv = synthetic_digits(tmp, 20);
  m = error_of([&] { generate(tmp, "affine-digits", 1, {{"data_file", csv.string()}}); });
  EXPECT_NE(m.find("holds 20 digits, fewer than the 1797"), std::string::npos) << m;
  m = error_of([&] {
    generate(tmp, "affine-digits", 1, {{"data_file", csv.string()}, {"scale", "1.2:0.8"}});
  });
  EXPECT_NE(m.find("--scale 1.2:0.8"), std::string::npos) << m;
}

TEST(AffineDigitsTest, TheDebianDigits) {
  if (!fs::exists(kSklearnDigitsFile))
    GTEST_SKIP() << "python3-sklearn is not installed (scripts/setup installs it)";
  TempDir tmp;
  const TaskDataset task = TaskDataset::open(generate(tmp, "affine-digits", 0, {}));
  EXPECT_EQ(task.tokens(Split::kTrain).rows(), 1000);
  EXPECT_EQ(task.tokens(Split::kVal).rows(), 200);
  EXPECT_EQ(task.tokens(Split::kTest).rows(), 597);
}

// --- Corrupted files and bad input -------------------------------------------------------------

fs::path small_task(const TempDir& tmp) {
  return generate(tmp, "induction", 3,
                  {{"train_size", "8"}, {"val_size", "2"}, {"test_size", "2"}, {"seq_len", "8"}});
}

TEST(TaskFormatTest, FlippedByteFailsTheHashNamingTheFile) {
  TempDir tmp;
  const fs::path dir = small_task(tmp);
  std::string bytes = read_bytes(dir / "train.tokens.bin");
  bytes[70] ^= 1;
  testing::write_text_file(dir / "train.tokens.bin", bytes);
  try {
    TaskDataset::open(dir);
    FAIL() << "no error";
  } catch (const Corruption& e) {
    EXPECT_NE(std::string(e.what()).find("train.tokens.bin"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("SHA-256"), std::string::npos) << e.what();
  }
}

TEST(TaskFormatTest, TruncatedAndMalformedFilesAreCorruption) {
  TempDir tmp;
  const fs::path dir = small_task(tmp);
  const std::string good = read_bytes(dir / "val.labels.bin");
  testing::write_text_file(dir / "val.labels.bin", good.substr(0, good.size() - 5));
  std::string message = error_of([&] { TaskDataset::open(dir, /*verify_hashes=*/false); });
  EXPECT_NE(message.find("val.labels.bin"), std::string::npos) << message;
  EXPECT_NE(message.find("truncated"), std::string::npos) << message;
  testing::write_text_file(dir / "val.labels.bin", "LRTASKS");
  message = error_of([&] { TaskDataset::open(dir, false); });
  EXPECT_NE(message.find("val.labels.bin: truncated"), std::string::npos) << message;
  std::string bad_magic = good;
  bad_magic[0] = 'X';
  testing::write_text_file(dir / "val.labels.bin", bad_magic);
  message = error_of([&] { TaskDataset::open(dir, false); });
  EXPECT_NE(message.find("bad magic"), std::string::npos) << message;
  // A label outside the classes (hash check off, so the value check must catch it).
  std::string bad_value = good;
  bad_value[64] = 99;
  testing::write_text_file(dir / "val.labels.bin", bad_value);
  message = error_of([&] { TaskDataset::open(dir, false); });
  EXPECT_NE(message.find("outside [0, 14)"), std::string::npos) << message;
  // An offset table that runs backwards.
  std::string bad_offsets = good;
  bad_offsets[bad_offsets.size() - 8] = 0;
  testing::write_text_file(dir / "val.labels.bin", bad_offsets);
  message = error_of([&] { TaskDataset::open(dir, false); });
  EXPECT_NE(message.find("val.labels.bin: row offset"), std::string::npos) << message;
  testing::write_text_file(dir / "val.labels.bin", good);
  EXPECT_NO_THROW(TaskDataset::open(dir));
  fs::remove(dir / "test.tokens.bin");
  try {
    TaskDataset::open(dir);
    FAIL();
  } catch (const NotFound& e) {
    EXPECT_NE(std::string(e.what()).find("test.tokens.bin"), std::string::npos);
  }
  testing::write_text_file(dir / "task.json", "{\"format\": \"lowrank-task\"}");
  message = error_of([&] { TaskDataset::open(dir); });
  EXPECT_NE(message.find("task.json: malformed"), std::string::npos) << message;
}

TEST(TaskFormatTest, ReaderIsBoundsChecked) {
  TempDir tmp;
  const TaskDataset task = TaskDataset::open(small_task(tmp));
  EXPECT_EQ(task.tokens(Split::kTrain).rows(), 8);
  EXPECT_NE(error_of([&] { task.tokens(Split::kTrain).row(8); }).find("row 8 out of range"),
            std::string::npos);
  EXPECT_NE(error_of([&] { task.tokens(Split::kTrain).at(0, 9); }).find("element 9 of row 0"),
            std::string::npos);
}

TEST(TaskOptionsTest, BadRequestsNameTheProblem) {
  TempDir tmp;
  auto error = [&](const std::string& task, std::map<std::string, std::string> options = {}, bool lra = false,
                   const fs::path& out = {}) {
    TaskRequest r;
    r.task = task;
    r.options = std::move(options);
    r.lra = lra;
    r.out = out.empty() ? tmp / "out" : out;
    return error_of([&] { generate_task(r); });
  };
  std::string m = error("listopz");
  EXPECT_NE(m.find("unknown task 'listopz'"), std::string::npos) << m;
  EXPECT_NE(
      m.find("listops, assoc-recall, selective-copy, induction, byte-text, byte-retrieval, fmnist, sfmnist"),
      std::string::npos)
      << m;
  m = error("induction", {{"max_depth", "3"}});
  EXPECT_NE(m.find("--max-depth: task induction has no such option"), std::string::npos) << m;
  m = error("listops", {{"max_args", "x1"}});
  EXPECT_NE(m.find("--max-args: 'x1' is not an integer"), std::string::npos) << m;
  m = error("listops", {{"max_args", "1"}});
  EXPECT_NE(m.find("--max-args 1"), std::string::npos) << m;
  m = error("induction", {}, true);
  EXPECT_NE(m.find("--lra"), std::string::npos) << m;
  m = error("selective-copy", {{"seq_len", "4"}, {"num_tokens", "5"}});
  EXPECT_NE(m.find("--num-tokens 5 exceeds --seq-len 4"), std::string::npos) << m;
  m = error("listops", {{"min_length", "50"}, {"max_length", "51"}});
  EXPECT_NE(m.find("window"), std::string::npos) << m;
  testing::write_text_file(tmp / "full" / "x", "x");
  m = error("induction", {}, false, tmp / "full");
  EXPECT_NE(m.find("already exists"), std::string::npos) << m;
  EXPECT_FALSE(fs::exists(tmp / "out")) << "a failed request left output behind";
}

}  // namespace
}  // namespace lowrank::data::tasks
