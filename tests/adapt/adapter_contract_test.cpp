// The contract every adapter method of adapt::registry() passes, run over the registry's own list
// (PEFT's table of test cases through one battery): the saved directory reloads to the same
// logits; merging computes the logits of the unmerged adapter (or, for a method that cannot merge,
// says so with Unsupported and leaves the model unchanged); disabled adapters leave the base; a
// backward pass reaches the adapter's trainable tensors and nothing else; a short run lowers the
// loss; the directory has PEFT's layout. Per-method files keep the oracles particular to a
// method (its closed-form forward, initialisation, file contents).
#include <set>

#include "lowrank/adapt/petal.h"
#include "lowrank/core/safetensors.h"
#include "tests/adapt/method_testing.h"
#include "tests/registry_testing.h"

namespace lowrank::adapt {
namespace {

using namespace method_testing;

// What a method needs beyond the defaults to be put through the contract. Methods not listed run
// with the defaults, so a newly registered method is tested as soon as it is registered.
struct ContractCase {
  int64_t r = 4;
  double alpha = 8;
  Json options = Json::object();  // lowrank_options
  Json extra = Json::object();    // other adapter_config.json keys (RandLoRA's randlora_alpha)
  int64_t steps = 40;
  double lr = 1e-2;
  double margin = 0.005;    // the loss must fall by more than this
  bool merges = true;       // false: merge_adapters throws Unsupported
  bool row_scores = false;  // forward needs one quality score per row (PETAL)
};

ContractCase case_for(const std::string& method) {
  ContractCase c;
  if (method == "dylora") c.margin = 0.05;
  if (method == "loldu" || method == "svfit") {  // a handful of trained scalars per slot
    c.lr = 0.05;
    c.margin = 0.01;
  }
  if (method == "salt") {
    c.options["lora_rank"] = 2;
    c.lr = 0.02;
    c.margin = 0.01;
  }
  if (method == "randlora") {
    c.extra["randlora_alpha"] = 8;
    c.margin = 0.01;
  }
  if (method == "lora_sb") c.options["init_lr"] = 1e-2;
  if (method == "snnk") {
    c.options["features"] = 6;
    c.merges = false;
  }
  if (method == "petal") {
    c.merges = false;
    c.row_scores = true;
  }
  return c;
}

class AdapterContractTest : public ::testing::TestWithParam<std::string> {
 protected:
  const std::string& method() const { return GetParam(); }
  const ContractCase& contract() const { return case_; }

  // The method on q, v and down projections, or (`every_slot`) on every linear slot but lm_head.
  AdapterConfig config(bool every_slot = false) const {
    AdapterConfig c = config_for(method(), case_.r, case_.alpha);
    c.options = case_.options;
    for (const auto& [key, value] : case_.extra.items()) c.extra[key] = value;
    return every_slot ? all_linear(c) : c;
  }

  // A fresh adapter on `model`, with the slots' gradients for methods that initialise from them
  // (computed on the pattern stream, as finetune does on its corpus).
  AttachedAdapter create(nn::Model& model, uint64_t seed = 3, bool every_slot = false) const {
    const AdapterConfig c = config(every_slot);
    std::map<std::string, at::Tensor> gradients;
    if (registry().factory(method()).needs_gradient) {
      const train::TokenStream stream = pattern_stream();
      train::WindowSampler sampler(1, stream.size, 17);
      gradients = slot_gradients(
          model, c,
          [&](const nn::Model& m) {
            return train::lm_loss(m, train::sample_windows(stream, sampler, 4, 16));
          },
          2);
    }
    return create_adapter(model, "contract", c, seed, gradients);
  }

  // Gives the adapter what a forward of `rows` rows needs (PETAL: a quality score per row).
  void prepare_rows(const AttachedAdapter& adapter, int64_t rows) const {
    if (case_.row_scores) set_quality_scores(adapter, at::full({rows}, 0.7));
  }

  // A fresh adapter with random trainable tensors (so that Δ ≠ 0), in its evaluation form.
  AttachedAdapter randomized(nn::Model& model, uint64_t seed) const {
    AttachedAdapter a = create(model);
    randomize(a, seed, 0.1);
    for (auto& [module, layer] : a.layers) layer->before_step(-1);
    return a;
  }

  // The logits of token_ids() (2 rows) through `model`.
  at::Tensor logits(const nn::Model& model, const AttachedAdapter& adapter) const {
    prepare_rows(adapter, 2);
    return logits_of(model, token_ids());
  }

 private:
  ContractCase case_ = case_for(GetParam());
};

TEST_P(AdapterContractTest, SavedDirectoryReloadsToTheSameLogits) {
  nn::Model model = tiny();
  AttachedAdapter a = randomized(model, 5);
  const at::Tensor adapted = logits(model, a);
  testing::TempDir dir;
  const AdapterConfig written = save_adapter(a, dir.path());
  nn::Model fresh = tiny();
  const AttachedAdapter loaded = load_adapter(fresh, dir.path());
  // The reader picks the method the written configuration names (PiSSA, SoRA and LoRAM are
  // written as the plain LoRA they amount to).
  EXPECT_EQ(loaded.config.method, written.method);
  EXPECT_EQ(loaded.config.peft_type, written.peft_type);
  // A method saved as itself is rebuilt exactly; one saved in another form (an export_config)
  // computes the same function up to rounding.
  if (registry().factory(method()).export_config)
    EXPECT_LE(testing::rel_max_error(logits(fresh, loaded), adapted), 1e-5);
  else
    EXPECT_TRUE(logits(fresh, loaded).equal(adapted));
  // Saving the reloaded adapter writes the same tensors.
  testing::TempDir again;
  save_adapter(loaded, again.path());
  const SafetensorsFile first = SafetensorsFile::open(dir / "adapter_model.safetensors");
  const SafetensorsFile second = SafetensorsFile::open(again / "adapter_model.safetensors");
  ASSERT_EQ(first.tensors().size(), second.tensors().size());
  for (const TensorInfo& t : first.tensors()) {
    ASSERT_TRUE(second.contains(t.name)) << t.name;
    EXPECT_LE(testing::max_abs_diff(first.load(t.name), second.load(t.name)), 1e-6) << t.name;
  }
}

TEST_P(AdapterContractTest, MergedModelComputesTheUnmergedLogits) {
  nn::Model model = tiny();
  AttachedAdapter a = randomized(model, 6);
  const at::Tensor adapted = logits(model, a);
  std::vector<AttachedAdapter> all{a};
  if (!contract().merges) {
    EXPECT_THROW(merge_adapters(model, all), Unsupported);
    EXPECT_TRUE(logits(model, a).equal(adapted));  // nothing changed
    return;
  }
  merge_adapters(model, all);
  for (const nn::LinearSlot* s : model.slots()) {
    EXPECT_FALSE(s->has_adapters()) << s->name();
    EXPECT_EQ(s->base().kind(), "dense") << s->name();
  }
  EXPECT_LE(testing::rel_max_error(logits_of(model, token_ids()), adapted), 1e-4);
}

TEST_P(AdapterContractTest, DisabledAdaptersLeaveTheBase) {
  nn::Model model = tiny();
  const at::Tensor base = logits_of(model, token_ids());
  AttachedAdapter a = randomized(model, 7);
  EXPECT_FALSE(logits(model, a).equal(base));
  for (nn::LinearSlot* s : model.slots()) s->set_adapters_enabled(false);
  EXPECT_TRUE(logits_of(model, token_ids()).equal(base));
  for (nn::LinearSlot* s : model.slots()) s->set_adapters_enabled(true);
  detach_adapter(model, a);
  EXPECT_TRUE(logits_of(model, token_ids()).equal(base));
}

TEST_P(AdapterContractTest, GradientsReachOnlyTheAdaptersTrainableTensors) {
  nn::Model model = tiny();
  AttachedAdapter a = create(model);
  randomize(a, 8, 0.1);
  const train::TokenStream stream = pattern_stream();
  train::WindowSampler sampler(2, stream.size, 17);
  const at::Tensor windows = train::sample_windows(stream, sampler, 4, 16);
  train::TrainTarget target = target_of(a);
  for (auto& [name, p] : target.params) p.requires_grad_(true);  // as the trainer does
  a.set_training(true);
  target.before_step(0);
  prepare_rows(a, 4);
  train::lm_loss(model, windows).backward();
  a.set_training(false);
  std::set<const void*> trainable;
  bool any_nonzero = false;
  for (const auto& [name, t] : a.parameters()) {
    trainable.insert(t.unsafeGetTensorImpl());
    ASSERT_TRUE(t.grad().defined()) << name;
    any_nonzero = any_nonzero || t.grad().abs().sum().item<double>() > 0;
  }
  EXPECT_TRUE(any_nonzero);
  EXPECT_GT(trainable.size(), 0u);
  for (const auto& [name, t] : model.named_tensors()) EXPECT_FALSE(t.grad().defined()) << name;
  for (const auto& [module, layer] : a.layers) {
    for (const auto& [name, t] : layer->tensors())
      if (!trainable.count(t.unsafeGetTensorImpl()))
        EXPECT_FALSE(t.grad().defined()) << module << "." << name;
    for (const auto& [name, t] : layer->shared_tensors()) EXPECT_FALSE(t.grad().defined()) << name;
  }
}

TEST_P(AdapterContractTest, AShortRunLowersTheLoss) {
  nn::Model model = tiny();
  AttachedAdapter a = create(model, 2, true);
  for (auto& [module, layer] : a.layers) layer->before_step(-1);
  prepare_rows(a, 16);  // eval_loss's windows
  const double before = eval_loss(model);
  testing::TempDir dir;
  train::TrainTarget target = target_of(a);
  const train::TrainerConfig config = short_run(contract().steps, contract().lr);
  prepare_rows(a, config.batch_size);
  a.set_training(true);
  const train::TrainResult r = train::train(model, target, pattern_stream(), config, dir.path(), false);
  a.set_training(false);
  EXPECT_TRUE(r.finished);
  for (auto& [module, layer] : a.layers) layer->before_step(-1);
  prepare_rows(a, 16);
  const double after = eval_loss(model);
  EXPECT_LT(after, before - contract().margin) << "before " << before << ", after " << after;
}

// PEFT's directory: adapter_config.json with the peft_type and rank, adapter_model.safetensors
// (metadata format "pt") whose tensors are base_model.model.<targeted module>.<name> or, for
// tensors every layer shares, base_model.<name>.
TEST_P(AdapterContractTest, DirectoryHasPeftsLayout) {
  nn::Model model = tiny();
  AttachedAdapter a = create(model);
  testing::TempDir dir;
  const AdapterConfig written = save_adapter(a, dir.path());
  const Json file_config = read_json_file(dir / "adapter_config.json");
  EXPECT_EQ(file_config.at("peft_type").get<std::string>(), written.peft_type);
  EXPECT_EQ(file_config.at("r").get<int64_t>(), written.r);
  const SafetensorsFile weights = SafetensorsFile::open(dir / "adapter_model.safetensors");
  EXPECT_EQ(weights.metadata().at("format"), "pt");
  std::set<std::string> modules;
  for (const auto& [module, layer] : a.layers) modules.insert(module);
  std::set<std::string> seen;
  for (const TensorInfo& t : weights.tensors()) {
    ASSERT_TRUE(t.name.starts_with("base_model.")) << t.name;
    if (!t.name.starts_with(kPeftPrefix)) continue;  // a shared tensor
    const std::string rest = t.name.substr(kPeftPrefix.size());
    bool in_module = false;
    for (const std::string& m : modules)
      if (rest.starts_with(m + ".")) {
        in_module = true;
        seen.insert(m);
      }
    EXPECT_TRUE(in_module) << t.name;
  }
  EXPECT_EQ(seen, modules);  // every adapted module is in the file
}

INSTANTIATE_TEST_SUITE_P(Registered, AdapterContractTest,
                         ::testing::ValuesIn(testing::registered_names(registry())),
                         testing::method_test_name);

}  // namespace
}  // namespace lowrank::adapt
