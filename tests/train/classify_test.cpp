// Sequence classification (nn/classifier.h) and its trainer (train/classify.h): the pooling against
// a hand computation with padding; an all-attention classifier against the independent float64
// reference of tests/nn/reference.h plus a hand-written pool and head; save/load and bad input; a
// bidirectional mixer allowed in a classifier and refused in a language model; param_groups
// reaching the optimizer; a tiny task learned above chance; exact resume; the Wilson interval
// against published values; the CLI (task train, eval --task, pretrain --mixer).
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <mutex>

#include "lowrank/core/error.h"
#include "lowrank/core/file.h"
#include "lowrank/core/json.h"
#include "lowrank/core/safetensors.h"
#include "lowrank/data/tasks/task_format.h"
#include "lowrank/nn/classifier.h"
#include "lowrank/nn/token_mixer.h"
#include "lowrank/train/classify.h"
#include "tests/nn/reference.h"
#include "tests/nn/test_mixers.h"
#include "tests/testing.h"

namespace lowrank::train {
namespace {

namespace fs = std::filesystem;
using data::tasks::Split;

// y_t = W · mean_{s valid} x_s + b for every t: bidirectional (every output sees every input).
// W is the slot `<prefix>.proj`; b the tensor `<prefix>.offset`, whose param group asks for
// 5× the run's peak learning rate and no weight decay.
class GlobalMeanMixer final : public nn::TokenMixer {
 public:
  explicit GlobalMeanMixer(const nn::MixerSpec& spec)
      : proj_(spec.prefix + ".proj", spec.projection(spec.prefix + ".proj", spec.config.hidden_size,
                                                     spec.config.hidden_size, false)),
        offset_name_(spec.prefix + ".offset"),
        offset_lr_(spec.options.value("offset_lr", 5e-3)) {
    offset_ = spec.tensor(offset_name_, {spec.config.hidden_size}, nn::ParamInit::kNormal, {});
  }
  std::string name() const override { return "test_global_mean"; }
  at::Tensor forward(const at::Tensor& x, const nn::MixerContext& context) const override {
    at::Tensor w = context.valid.defined() ? context.valid.to(x.scalar_type()).unsqueeze(-1)
                                           : at::ones({x.size(0), x.size(1), 1}, x.options());
    const at::Tensor mean = x.mul(w).sum(1, true).div(w.sum(1, true));
    return proj_.forward(mean.expand_as(x), context.routing) + offset_;
  }
  bool causal() const override { return false; }
  std::vector<nn::LinearSlot*> slots() override { return {&proj_}; }
  using nn::TokenMixer::slots;
  nn::NamedTensors tensors() const override { return {{offset_name_, offset_}}; }
  std::vector<nn::ParamGroup> param_groups() const override { return {{offset_name_, offset_lr_, 0.0}}; }

 private:
  nn::LinearSlot proj_;
  std::string offset_name_;
  double offset_lr_;
  at::Tensor offset_;
};

void register_global_mean() {
  static std::once_flag once;
  std::call_once(once, [] {
    nn::mixer_registry().add(
        {"test_global_mean", "bidirectional mean (test only)", "", {{"offset_lr", "b's lr"}}},
        [](const nn::MixerSpec& spec) { return std::make_unique<GlobalMeanMixer>(spec); });
  });
}

Json classifier_json(const testing::TinySpec& s, const Json& layer_mixers, const std::string& pooling,
                     int64_t labels) {
  Json c = nn::testing_mixers::classifier_config(s, layer_mixers, labels, pooling);
  c["a_key_lowrank_does_not_know"] = "kept";
  return c;
}

testing::TinySpec small_spec() {
  return nn::testing_mixers::tiny_shape(11, 8, 12, 2, 2, 4);
}

// A learnable task in the task format: sequences of 4..7 tokens over 8 ids, padded with id 8;
// the class is whether id 3 occurs (balanced by construction).
fs::path write_occurs_task(const fs::path& dir, int64_t train, int64_t val) {
  data::tasks::TaskHeader h;
  h.task = "occurs";
  h.generator = "classify_test";
  for (int i = 0; i < 9; ++i) h.vocabulary.push_back(i == 8 ? "<pad>" : std::to_string(i));
  h.vocab_size = 9;
  h.pad_id = 8;
  h.classes = {"absent", "present"};
  h.layout = OrderedJson{{"kind", "sequence"}};
  data::tasks::TaskWriter writer(dir, h);
  uint64_t state = 12345;
  auto next = [&state](uint64_t m) {
    state = state * 6364136223846793005ull + 1442695040888963407ull;
    return static_cast<int32_t>((state >> 33) % m);
  };
  auto add = [&](Split split, int64_t n) {
    for (int64_t i = 0; i < n; ++i) {
      const int32_t label = static_cast<int32_t>(i % 2);
      std::vector<int32_t> row(static_cast<size_t>(4 + next(4)));
      for (auto& t : row) {
        t = next(7);
        if (t >= 3) ++t;  // never 3 ...
      }
      if (label) row[static_cast<size_t>(next(row.size()))] = 3;  // ... unless present
      const int32_t y[] = {label};
      writer.add(split, row, y);
    }
  };
  add(Split::kTrain, train);
  add(Split::kVal, val);
  add(Split::kTest, val);
  writer.commit();
  return dir;
}

TEST(ClassifyTest, PoolingMatchesAHandComputationWithPadding) {
  const at::Tensor h = at::randn({2, 4, 3}, at::detail::createCPUGenerator(1)).to(at::kDouble);
  // Row 0 right-padded (3 tokens), row 1 left-padded (3 tokens).
  const at::Tensor valid = at::tensor({1, 1, 1, 0, 0, 1, 1, 1}, at::kLong).view({2, 4}).to(at::kBool);
  const at::Tensor mean = nn::pool_hidden_states(h, valid, "mean");
  const at::Tensor last = nn::pool_hidden_states(h, valid, "last");
  ASSERT_EQ(mean.sizes(), at::IntArrayRef({2, 3}));
  for (int64_t c = 0; c < 3; ++c) {
    const double m0 = (h[0][0][c].item<double>() + h[0][1][c].item<double>() + h[0][2][c].item<double>()) / 3;
    const double m1 = (h[1][1][c].item<double>() + h[1][2][c].item<double>() + h[1][3][c].item<double>()) / 3;
    EXPECT_NEAR(mean[0][c].item<double>(), m0, 1e-12);
    EXPECT_NEAR(mean[1][c].item<double>(), m1, 1e-12);
    EXPECT_EQ(last[0][c].item<double>(), h[0][2][c].item<double>());
    EXPECT_EQ(last[1][c].item<double>(), h[1][3][c].item<double>());
  }
  EXPECT_THROW(nn::pool_hidden_states(h, at::zeros({2, 4}, at::kBool), "mean"), InvalidArgument);
  EXPECT_THROW(nn::pool_hidden_states(h, valid, "max"), InvalidArgument);
}

// An all-attention classifier equals the float64 reference trunk (tests/nn/reference.h, no code
// shared with nn/) with the head applied at every position, pooled by hand over the real tokens.
TEST(ClassifyTest, AllAttentionClassifierEqualsTheReferenceTrunkPoolAndHead) {
  const testing::TinySpec s = small_spec();
  testing::Weights w = testing::random_weights(s, 3);
  w["score.weight"] = at::randn({3, s.hidden}, at::detail::createCPUGenerator(4));
  testing::TempDir dir;
  for (const std::string pooling : {"mean", "last"}) {
    const fs::path model_dir = dir / pooling;
    testing::write_checkpoint(model_dir, classifier_json(s, "attention", pooling, 3), w);
    const nn::SequenceClassifier model = nn::SequenceClassifier::load(model_dir, {.dtype = at::kDouble});
    // Two rows of 5 and 3 real tokens, right-padded.
    const std::vector<std::vector<int64_t>> rows = {{4, 7, 1, 9, 2}, {5, 0, 6}};
    at::Tensor ids = at::zeros({2, 5}, at::kLong), mask = at::zeros({2, 5}, at::kLong);
    for (size_t b = 0; b < rows.size(); ++b)
      for (size_t t = 0; t < rows[b].size(); ++t) {
        ids[b][t] = rows[b][t];
        mask[b][t] = 1;
      }
    const at::Tensor logits = model.forward(ids, mask);
    ASSERT_EQ(logits.sizes(), at::IntArrayRef({2, 3}));
    testing::Weights ref = w;
    ref["lm_head.weight"] = w["score.weight"];  // the head at every position: pooling commutes with it
    for (size_t b = 0; b < rows.size(); ++b) {
      const at::Tensor per_position = testing::reference_logits(s, ref, rows[b]);  // [T, 3]
      const at::Tensor expected = pooling == "mean" ? per_position.mean(0) : per_position[-1];
      EXPECT_LT(testing::max_abs_diff(logits[b], expected), 1e-9) << pooling << " row " << b;
    }
  }
}

TEST(ClassifyTest, SavesLoadsKeepsUnknownKeysAndNamesBadTensors) {
  register_global_mean();
  const testing::TinySpec s = small_spec();
  const nn::ModelConfig config = nn::ModelConfig::from_json(
      classifier_json(s, Json::array({"attention", "test_global_mean"}), "mean", 4), "test");
  const nn::SequenceClassifier model = nn::SequenceClassifier::random(config, 7);
  const at::Tensor ids = at::tensor({1, 2, 3, 4, 5, 6}, at::kLong).view({2, 3});
  const at::Tensor logits = model.forward(ids);
  ASSERT_EQ(logits.sizes(), at::IntArrayRef({2, 4}));
  testing::TempDir dir;
  model.save(dir / "m");
  const Json saved = read_json_file(dir / "m" / "config.json");
  EXPECT_EQ(saved["a_key_lowrank_does_not_know"], "kept");
  EXPECT_EQ(saved["architectures"][0], "LowrankMixerForSequenceClassification");
  const SafetensorsFile file = SafetensorsFile::open(dir / "m" / "model.safetensors");
  EXPECT_TRUE(file.contains("score.weight"));
  EXPECT_TRUE(file.contains("model.layers.1.mixer.offset"));
  EXPECT_FALSE(file.contains("lm_head.weight"));
  const nn::SequenceClassifier loaded = nn::SequenceClassifier::load(dir / "m");
  EXPECT_TRUE(at::equal(loaded.forward(ids), logits));

  // The trunk alone has no language-model head.
  EXPECT_THROW(loaded.trunk().forward(ids), InvalidArgument);
  // A head of the wrong shape: the error names the tensor and its file.
  testing::Weights w = testing::random_weights(s, 3);
  w["score.weight"] = at::zeros({5, s.hidden});
  testing::write_checkpoint(dir / "bad", classifier_json(s, "attention", "mean", 4), w);
  try {
    nn::SequenceClassifier::load(dir / "bad");
    FAIL() << "loaded a head of the wrong shape";
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("score.weight"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("model.safetensors"), std::string::npos) << e.what();
  }
  Json no_labels = classifier_json(s, "attention", "mean", 4);
  no_labels.erase("num_labels");
  EXPECT_THROW(nn::ModelConfig::from_json(no_labels, "test"), InvalidArgument);
  Json bad_pool = classifier_json(s, "attention", "max", 4);
  EXPECT_THROW(nn::ModelConfig::from_json(bad_pool, "test"), InvalidArgument);
}

TEST(ClassifyTest, BidirectionalMixersServeClassifiersAndAreRefusedInLanguageModels) {
  register_global_mean();
  const testing::TinySpec s = small_spec();
  Json lm = testing::tiny_config(s);
  lm["architectures"] = {"LowrankMixerForCausalLM"};
  lm["layer_mixers"] = "test_global_mean";
  const nn::ModelConfig lm_config = nn::ModelConfig::from_json(lm, "lm");
  try {
    check_mixers(lm_config, /*need_causal=*/true);
    FAIL() << "a bidirectional mixer passed as causal";
  } catch (const InvalidArgument& e) {
    EXPECT_EQ(std::string(e.what()), "test_global_mean is bidirectional; use it in a classification model");
  }
  EXPECT_THROW(nn::Model::random(lm_config, 1), InvalidArgument);
  const nn::ModelConfig cls =
      nn::ModelConfig::from_json(classifier_json(s, "test_global_mean", "mean", 2), "cls");
  EXPECT_NO_THROW(check_mixers(cls, /*need_causal=*/false));
  EXPECT_NO_THROW(nn::SequenceClassifier::random(cls, 1));

  // Mixer choice from the flags: unknown names list the known ones.
  try {
    mixer_keys("no_such_mixer", "", Json::object(), 2);
    FAIL();
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("known: attention"), std::string::npos) << e.what();
  }
  EXPECT_THROW(mixer_keys("attention", "attention", Json::object(), 2), InvalidArgument);
  EXPECT_THROW(mixer_keys("", "attention,attention,attention", Json::object(), 2), InvalidArgument);
  const Json keys =
      mixer_keys("", "attention,test_global_mean", Json{{"test_global_mean", {{"offset_lr", 1}}}}, 2);
  EXPECT_EQ(keys["layer_mixers"], Json::array({"attention", "test_global_mean"}));
  EXPECT_EQ(keys["mixer_config"]["test_global_mean"]["offset_lr"], 1);
}

// The mixer's param group (5× the peak lr, no decay) reaches the optimizer: after one AdamW step
// from zero moments every entry moves by lr · g/(|g| + ε) ≈ lr · sign(g), so |Δ| is the learning
// rate each tensor got.
TEST(ClassifyTest, ParamGroupsReachTheOptimizer) {
  register_global_mean();
  testing::TempDir dir;
  const data::tasks::TaskDataset task =
      data::tasks::TaskDataset::open(write_occurs_task(dir / "task", 16, 4));
  // AdamW, and GaLore (LowRankAdam: the 1-D offset takes its plain Adam path).
  for (const std::string optimizer : {"adamw", "galore"}) {
    SCOPED_TRACE(optimizer);
    testing::TinySpec s = small_spec();
    s.vocab = 9;
    Json j = classifier_json(s, "test_global_mean", "mean", 2);
    j["mixer_config"] = {{"test_global_mean", {{"offset_lr", 5e-3}}}};
    nn::SequenceClassifier model = nn::SequenceClassifier::random(nn::ModelConfig::from_json(j, "test"), 2);
    auto offset = [&model] {
      for (auto& [name, t] : model.named_tensors())
        if (name == "model.layers.0.mixer.offset") return t.detach().clone();
      ADD_FAILURE() << "no offset tensor";
      return at::Tensor();
    };
    const at::Tensor offset0 = offset();
    const at::Tensor proj0 =
        model.trunk().slot("model.layers.0.mixer.proj").base().tensors()[0].second.detach().clone();
    ClassifyConfig c;
    c.trainer.steps = 1;
    c.trainer.batch_size = 4;
    c.trainer.lr = 1e-3;
    c.trainer.min_lr = 1e-3;
    c.trainer.warmup_steps = 0;
    c.trainer.clip_norm = 0;
    c.trainer.adam.weight_decay = 0;
    c.trainer.optimizer = optimizer;
    if (optimizer == "galore") c.trainer.optimizer_options = {{"rank", 2}, {"update_gap", 3}};
    train_classifier(model, task, c, dir / optimizer, false);
    const at::Tensor offset1 = offset();
    const at::Tensor proj1 =
        model.trunk().slot("model.layers.0.mixer.proj").base().tensors()[0].second.detach();
    const double offset_step = (offset1 - offset0).abs().max().item<double>();
    const double proj_step = (proj1 - proj0).abs().max().item<double>();
    EXPECT_NEAR(offset_step, 5e-3, 5e-5);
    if (optimizer == "adamw") EXPECT_NEAR(proj_step, 1e-3, 2e-5);  // GaLore projects this one
    EXPECT_GT(proj_step, 0.0);
  }

  // The optimizer refuses an override of a tensor it does not hold.
  optim::AdamW adam({{"a", at::zeros({2})}}, {});
  EXPECT_THROW(adam.set_overrides({{"b", 2.0, std::nullopt}}), NotFound);
}

ClassifyConfig learn_config() {
  ClassifyConfig c;
  c.trainer.steps = 80;
  c.trainer.batch_size = 16;
  c.trainer.lr = 3e-2;
  c.trainer.min_lr = 3e-3;
  c.trainer.warmup_steps = 4;
  c.trainer.seed = 3;
  c.trainer.adam.weight_decay = 0.0;
  return c;
}

// An all-attention classifier of small_spec()'s shape.
nn::SequenceClassifier attention_classifier(int64_t vocab, int64_t labels, int64_t layers, uint64_t seed) {
  testing::TinySpec s = small_spec();
  s.vocab = vocab;
  s.layers = layers;
  return nn::SequenceClassifier::random(
      nn::ModelConfig::from_json(classifier_json(s, "attention", "mean", labels), "test"), seed);
}

nn::SequenceClassifier learner() {
  return attention_classifier(9, 2, 1, 5);
}

TEST(ClassifyTest, TinyTaskIsLearnedAboveChanceAndResumesExactly) {
  testing::TempDir dir;
  const data::tasks::TaskDataset task =
      data::tasks::TaskDataset::open(write_occurs_task(dir / "task", 64, 40));
  nn::SequenceClassifier model = learner();
  const AccuracyResult before = evaluate_accuracy(model, task, Split::kVal);
  const ClassifyResult full = train_classifier(model, task, learn_config(), dir / "full", false);
  ASSERT_TRUE(full.finished && full.validation);
  EXPECT_GE(full.validation->accuracy, 0.8) << "before training: " << before.accuracy;
  EXPECT_GT(full.validation->ci_low, 0.5);  // above chance with 95% confidence

  // Killed after step 27 (checkpoint at 20), resumed: the same losses and weights, bit for bit.
  ClassifyConfig c = learn_config();
  c.trainer.checkpoint_every = 10;
  c.trainer.stop_after = 27;
  nn::SequenceClassifier first = learner();
  EXPECT_FALSE(train_classifier(first, task, c, dir / "resumed", false).finished);
  c.trainer.stop_after = 0;
  nn::SequenceClassifier second = learner();  // a fresh process would start from the init again
  const ClassifyResult rest = train_classifier(second, task, c, dir / "resumed", true);
  ASSERT_TRUE(rest.finished);
  ASSERT_EQ(rest.steps.size(), static_cast<size_t>(c.trainer.steps - 20));
  for (size_t i = 0; i < rest.steps.size(); ++i)
    EXPECT_EQ(rest.steps[i].loss, full.steps[20 + i].loss) << "step " << rest.steps[i].step;
  const nn::NamedTensors a = model.named_tensors(), b = second.named_tensors();
  for (size_t i = 0; i < a.size(); ++i) EXPECT_TRUE(at::equal(a[i].second, b[i].second)) << a[i].first;
  EXPECT_EQ(rest.validation->correct, full.validation->correct);
}

TEST(ClassifyTest, BadInputFailsClearly) {
  testing::TempDir dir;
  const data::tasks::TaskDataset task = data::tasks::TaskDataset::open(write_occurs_task(dir / "task", 4, 2));
  nn::SequenceClassifier three = attention_classifier(9, 3, 2, 1);
  try {
    train_classifier(three, task, learn_config(), dir / "run", false);
    FAIL();
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("num_labels 3"), std::string::npos) << e.what();
  }
  const nn::SequenceClassifier small_vocab = attention_classifier(5, 2, 2, 1);
  EXPECT_THROW(evaluate_accuracy(small_vocab, task, Split::kVal), InvalidArgument);
  EXPECT_THROW(classify_preset("nope"), InvalidArgument);
  TaskTrainOptions o;
  o.task = dir / "task";
  o.out = dir / "out";
  o.preset = "vit-tiny";  // an image preset on a sequence task
  o.mixer = "attention";
  try {
    (void)task_train(o);
    ADD_FAILURE() << "vit-tiny trained on a sequence task";
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("trains on images"), std::string::npos) << e.what();
  }
  o.preset = "lra-tiny";
  o.mixer.clear();
  EXPECT_THROW(task_train(o), InvalidArgument);  // neither --mixer nor --layer-mixers
  EXPECT_FALSE(fs::exists(dir / "out"));
}

// 95% Wilson intervals as tabulated (Newcombe, 1998, Stat. Med. 17, Table I: 0/10 -> 0 .. 0.2775,
// and the textbook 5/10 -> 0.2366 .. 0.7634).
TEST(ClassifyTest, WilsonIntervalMatchesPublishedValues) {
  auto [lo0, hi0] = wilson_interval(0, 10);
  EXPECT_NEAR(lo0, 0.0, 1e-12);
  EXPECT_NEAR(hi0, 0.2775, 1e-4);
  auto [lo5, hi5] = wilson_interval(5, 10);
  EXPECT_NEAR(lo5, 0.2366, 1e-4);
  EXPECT_NEAR(hi5, 0.7634, 1e-4);
  EXPECT_THROW(wilson_interval(3, 0), InvalidArgument);
}

// The verbs end to end: task train, eval --task, and pretrain's mixer flags refusing bad input
// before any work.
TEST(ClassifyCliTest, TaskTrainEvalAndPretrainMixerFlags) {
  testing::TempDir dir;
  write_occurs_task(dir / "task", 32, 16);
  const std::string bin = testing::lowrank_binary().string() + " --threads 2 --quiet ";
  auto r = testing::run_command(bin + "--json task train --task " + (dir / "task").string() +
                                " --mixer attention --preset lra-tiny --steps 3 --batch-size 4 --out " +
                                (dir / "out").string());
  ASSERT_EQ(r.exit_code, 0) << r.out;
  EXPECT_TRUE(fs::exists(dir / "out/model/model.safetensors"));
  EXPECT_TRUE(fs::exists(dir / "out/run/metrics.jsonl"));
  r = testing::run_command(bin + "--json eval --model " + (dir / "out/model").string() + " --task " +
                           (dir / "task").string());
  ASSERT_EQ(r.exit_code, 0) << r.out;
  const Json acc = Json::parse(r.out.substr(r.out.find('{')));
  EXPECT_EQ(acc["examples"], 16);
  EXPECT_EQ(acc["ci_method"], "wilson");
  // The preset's attention is bidirectional unless --mixer-options says otherwise.
  EXPECT_EQ(read_json_file(dir / "out/model/config.json")["mixer_config"],
            Json({{"attention", {{"causal", false}}}}));
  // A language model refuses it before any work, naming the option.
  r = testing::run_command(bin + "pretrain --preset tiny --corpus bible --mixer attention --mixer-options " +
                           "'{\"causal\": false}' --out " + (dir / "lm").string());
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.out.find("option \"causal\": false"), std::string::npos) << r.out;
  EXPECT_FALSE(fs::exists(dir / "lm"));
  r = testing::run_command(bin + "task train --task " + (dir / "task").string() + " --mixer nope --out " +
                           (dir / "bad").string());
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.out.find("known: attention"), std::string::npos) << r.out;
  EXPECT_FALSE(fs::exists(dir / "bad"));
  r = testing::run_command(bin + "pretrain --preset tiny --corpus bible --mixer nope --out " +
                           (dir / "lm").string());
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.out.find("known: attention"), std::string::npos) << r.out;
  EXPECT_FALSE(fs::exists(dir / "lm"));
  // FNet (mix/) is bidirectional: refused in a language model before any work, trained in a classifier.
  r = testing::run_command(bin + "pretrain --preset tiny --corpus bible --mixer fnet --out " +
                           (dir / "lm").string());
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.out.find("fnet is bidirectional; use it in a classification model"), std::string::npos)
      << r.out;
  EXPECT_FALSE(fs::exists(dir / "lm"));
  r = testing::run_command(bin + "task train --task " + (dir / "task").string() +
                           " --layer-mixers fnet,attention --steps 2 --batch-size 4 --out " +
                           (dir / "fnet").string());
  ASSERT_EQ(r.exit_code, 0) << r.out;
  EXPECT_EQ(read_json_file(dir / "fnet/model/config.json")["layer_mixers"],
            Json::array({"fnet", "attention"}));
}

}  // namespace
}  // namespace lowrank::train
