// LoRAM: each pruning criterion against a computation written here (LLM-Pruner's Taylor group
// scores by explicit loops; SparseGPT by the explicit optimal-brain-surgeon step on the inverse of
// the remaining columns' Hessian, float64); the structurally pruned copy equals the full model
// with the removed heads' o_proj columns and the removed channels' down_proj columns zeroed; the
// recovered adapter on that zeroed full model reproduces the pruned model with its trained adapter
// (and restricted to the kept rows/columns it is the pruned adapter exactly, zero elsewhere); the
// alignment stage lowers the pruned copy's loss; options and their errors.
#include "lowrank/adapt/loram.h"

#include "lowrank/adapt/finetune.h"
#include "tests/adapt/method_testing.h"

namespace lowrank::adapt {
namespace {

using namespace method_testing;
using at::indexing::None;
using at::indexing::Slice;

// Four query heads over two KV heads (GQA), head_dim 4.
nn::Model gqa(uint64_t seed = 3) {
  return testing::tiny_llama({.heads = 4, .kv_heads = 2}, seed);
}

std::string proj(int64_t layer, const std::string& name) {
  return "model.layers." + std::to_string(layer) + "." + name;
}

// Random "gradients" for every decoder linear (the importance is a function of W and G).
std::map<std::string, at::Tensor> random_gradients(const nn::Model& model, uint64_t seed) {
  at::Generator gen = at::detail::createCPUGenerator(seed);
  std::map<std::string, at::Tensor> g;
  for (const nn::LinearSlot* s : model.slots())
    if (s->name() != "lm_head") g[s->name()] = at::randn({s->out_features(), s->in_features()}, gen);
  return g;
}

// The full model with every structure outside the pruned copy cut off at its output projection.
void zero_removed(nn::Model& model, const PrunedModel& pruned) {
  at::NoGradGuard g;
  for (int64_t l = 0; l < model.config().num_hidden_layers; ++l) {
    for (const auto& [name, kept] :
         {std::pair{std::string("mlp.down_proj"), pruned.kept_channels[static_cast<size_t>(l)]},
          std::pair{std::string("self_attn.o_proj"), pruned.kept_q_rows(l)}}) {
      nn::LinearSlot& slot = model.slot(proj(l, name));
      at::Tensor mask = at::zeros({slot.in_features()}, at::kFloat);
      mask.index_fill_(0, kept, 1.0);
      slot.replace_base(std::make_shared<nn::DenseOperator>(slot.base().dense_weight() * mask.unsqueeze(0)));
    }
  }
}

TEST(LoramTest, TaylorScoresAndKeptStructuresMatchLlmPrunersGroupSums) {
  nn::Model model = gqa();
  const auto grads = random_gradients(model, 5);
  const StructureScores scores = taylor_importance(model, grads);
  const int64_t head_dim = 4, groups = 2;
  for (int64_t l = 0; l < 2; ++l) {
    const auto wg = [&](const std::string& name) {
      return (model.slot(proj(l, name)).base().dense_weight().to(at::kDouble) *
              grads.at(proj(l, name)).to(at::kDouble))
          .abs();
    };
    const at::Tensor gate = wg("mlp.gate_proj"), up = wg("mlp.up_proj"), down = wg("mlp.down_proj");
    for (int64_t j = 0; j < 32; ++j) {
      double expected = 0;
      for (int64_t i = 0; i < 16; ++i) expected += gate[j][i].item<double>() + up[j][i].item<double>();
      for (int64_t o = 0; o < 16; ++o) expected += down[o][j].item<double>();
      EXPECT_NEAR(scores.channels[l][j].item<double>(), expected, 1e-9 * expected) << l << " " << j;
    }
    const at::Tensor q = wg("self_attn.q_proj"), k = wg("self_attn.k_proj"), v = wg("self_attn.v_proj"),
                     o = wg("self_attn.o_proj");
    for (int64_t h = 0; h < 2; ++h) {
      double expected = 0;
      for (int64_t row = h * groups * head_dim; row < (h + 1) * groups * head_dim; ++row)
        for (int64_t i = 0; i < 16; ++i) expected += q[row][i].item<double>() + o[i][row].item<double>();
      for (int64_t row = h * head_dim; row < (h + 1) * head_dim; ++row)
        for (int64_t i = 0; i < 16; ++i) expected += k[row][i].item<double>() + v[row][i].item<double>();
      EXPECT_NEAR(scores.kv_groups[l][h].item<double>(), expected, 1e-9 * expected) << l << " " << h;
    }
  }
  // The kept structures are the best-scored ones: ⌈0.25·32⌉ = 8 channels, ⌈0.5·2⌉ = 1 KV head.
  const PrunedModel pruned = prune_structures(model, scores, 0.25, 0.5, "structured");
  for (int64_t l = 0; l < 2; ++l) {
    const at::Tensor ch = pruned.kept_channels[l];
    ASSERT_EQ(ch.size(0), 8);
    const double worst_kept = scores.channels[l].index_select(0, ch).min().item<double>();
    at::Tensor removed = at::ones({32}, at::kBool);
    removed.index_fill_(0, ch, false);
    EXPECT_GE(worst_kept, scores.channels[l].masked_select(removed).max().item<double>());
    const int64_t best_head = scores.kv_groups[l].argmax().item<int64_t>();
    EXPECT_EQ(pruned.kept_kv_heads[l].item<int64_t>(), best_head);
    // Its query rows are the rows of both query heads that share it.
    const at::Tensor rows = pruned.kept_q_rows(l);
    ASSERT_EQ(rows.size(0), 8);
    EXPECT_EQ(rows[0].item<int64_t>(), best_head * 8);
    EXPECT_EQ(rows[7].item<int64_t>(), best_head * 8 + 7);
  }
  EXPECT_EQ(pruned.model.config().num_attention_heads, 2);
  EXPECT_EQ(pruned.model.config().num_key_value_heads, 1);
  EXPECT_EQ(pruned.model.config().intermediate_size, 8);
}

TEST(LoramTest, RandomCriterionKeepsSeededCountsOfEveryStructure) {
  nn::Model model = gqa();
  LoramOptions o;
  o.criterion = "random";
  o.mlp_keep = 0.5;
  o.attn_keep = 0.5;
  const at::Tensor none;
  const PrunedModel a = prune_for_loram(model, o, none, 1), b = prune_for_loram(model, o, none, 1),
                    c = prune_for_loram(model, o, none, 2);
  bool differs = false;
  for (int64_t l = 0; l < 2; ++l) {
    EXPECT_EQ(a.kept_channels[l].size(0), 16);
    EXPECT_TRUE(at::equal(a.kept_channels[l], b.kept_channels[l]));
    differs = differs || !at::equal(a.kept_channels[l], c.kept_channels[l]);
    EXPECT_TRUE((a.kept_channels[l].slice(0, 1) > a.kept_channels[l].slice(0, 0, 15))
                    .all()
                    .item<bool>());  // sorted, distinct
  }
  EXPECT_TRUE(differs);
}

TEST(LoramTest, PrunedCopyIsTheFullModelWithItsRemovedStructuresCutOff) {
  nn::Model full = gqa();
  const PrunedModel pruned =
      prune_structures(full, taylor_importance(full, random_gradients(full, 7)), 0.5, 0.5, "structured");
  nn::Model zeroed = gqa();
  zero_removed(zeroed, pruned);
  const at::Tensor ids = token_ids();
  EXPECT_LE(testing::max_abs_diff(logits_of(pruned.model, ids), logits_of(zeroed, ids)), 1e-5);
  // And it is not the full model: something was removed.
  EXPECT_GT(testing::max_abs_diff(logits_of(pruned.model, ids), logits_of(full, ids)), 1e-3);
}

TEST(LoramTest, RecoveredAdapterEqualsThePrunedAdapterOnTheKeptStructure) {
  nn::Model full = gqa();
  PrunedModel pruned =
      prune_structures(full, taylor_importance(full, random_gradients(full, 7)), 0.5, 0.5, "structured");
  AttachedAdapter trained = create_adapter(pruned.model, "a", all_linear(config_for("lora")), 1);
  randomize(trained, 8);
  nn::Model zeroed = gqa();
  zero_removed(zeroed, pruned);
  const AttachedAdapter recovered = recover_adapter(zeroed, trained, pruned, "a");
  // (1) With the removed structures cut off, full model + recovered adapter = pruned model +
  // trained adapter: the recovered rows of B are zero at removed outputs, the recovered columns of A
  // zero at removed inputs, and nothing else changed.
  const at::Tensor ids = token_ids();
  EXPECT_LE(testing::max_abs_diff(logits_of(zeroed, ids), logits_of(pruned.model, ids)), 1e-5);
  // (2) Slot by slot: ΔW_recovered[kept rows, kept cols] = ΔW_pruned, and 0 outside.
  for (size_t i = 0; i < trained.layers.size(); ++i) {
    const auto& [module, small] = trained.layers[i];
    const auto& big = recovered.layers[i].second;
    const at::Tensor ds = small->delta_weight(pruned.model.slot(module).base());
    const at::Tensor db = big->delta_weight(zeroed.slot(module).base());
    at::Tensor rows = at::arange(db.size(0), at::kLong), cols = at::arange(db.size(1), at::kLong);
    const auto l = static_cast<size_t>(module[13] - '0');
    if (module.ends_with("gate_proj") || module.ends_with("up_proj")) rows = pruned.kept_channels[l];
    if (module.ends_with("down_proj")) cols = pruned.kept_channels[l];
    if (module.ends_with("q_proj")) rows = pruned.kept_q_rows(static_cast<int64_t>(l));
    if (module.ends_with("k_proj") || module.ends_with("v_proj"))
      rows = pruned.kept_kv_rows(static_cast<int64_t>(l));
    if (module.ends_with("o_proj")) cols = pruned.kept_q_rows(static_cast<int64_t>(l));
    // Equal up to rounding: the two products B·A have different widths, and a BLAS may block (and
    // so round) them differently (bit-identical on some CPUs, one ulp apart on others).
    EXPECT_LE(testing::max_abs_diff(db.index_select(0, rows).index_select(1, cols), ds),
              1e-6 * (1 + ds.abs().max().item<double>()))
        << module;
    at::Tensor outside = db.clone();
    outside.index_put_({rows.unsqueeze(1), cols.unsqueeze(0)}, 0.0);
    EXPECT_EQ(outside.abs().max().item<double>(), 0.0) << module;
  }
  // On the unpruned model it is an ordinary LoRA that saves and loads like one.
  nn::Model original = gqa();
  const AttachedAdapter on_full = recover_adapter(original, trained, pruned, "a");
  testing::TempDir dir;
  EXPECT_EQ(save_adapter(on_full, dir.path()).peft_type, "LORA");
  nn::Model fresh = gqa();
  load_adapter(fresh, dir.path());
  EXPECT_LE(testing::max_abs_diff(logits_of(fresh, ids), logits_of(original, ids)), 1e-6);
}

// SparseGPT by its definition: column i is pruned to q, and the columns not yet visited take the
// optimal-brain-surgeon update −(w_i − q) · [H_F⁻¹]₀,: / [H_F⁻¹]₀₀ with H_F the (damped) Hessian
// of columns i.. ; masks from w² / [H_F⁻¹]₀₀ (2:4: per group when it is reached; unstructured: the
// block's threshold at its start).
at::Tensor sparsegpt_by_definition(at::Tensor w, at::Tensor h, double sparsity, bool two_four) {
  w = w.to(at::kDouble).clone();
  h = h.to(at::kDouble).clone();
  const int64_t rows = w.size(0), cols = w.size(1);
  const double damp = 0.01 * h.diagonal().mean().item<double>();
  for (int64_t i = 0; i < cols; ++i) h[i][i] += damp;
  std::vector<double> d2(static_cast<size_t>(cols));
  for (int64_t j = 0; j < cols; ++j)
    d2[j] = at::inverse(h.index({Slice(j, None), Slice(j, None)}))[0][0].item<double>();
  at::Tensor mask = at::zeros({rows, cols}, at::kBool);
  if (!two_four) {
    std::vector<double> all;
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t j = 0; j < cols; ++j) all.push_back(std::pow(w[r][j].item<double>(), 2) / d2[j]);
    std::vector<double> sorted = all;
    std::sort(sorted.begin(), sorted.end());
    const double thresh = sorted[static_cast<size_t>(static_cast<double>(all.size()) * sparsity)];
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t j = 0; j < cols; ++j) mask[r][j] = all[r * cols + j] <= thresh;
  }
  for (int64_t i = 0; i < cols; ++i) {
    if (two_four && i % 4 == 0)
      for (int64_t r = 0; r < rows; ++r) {
        std::vector<std::pair<double, int64_t>> s;
        for (int64_t j = i; j < i + 4; ++j) s.emplace_back(std::pow(w[r][j].item<double>(), 2) / d2[j], j);
        std::sort(s.begin(), s.end());
        mask[r][s[0].second] = true;
        mask[r][s[1].second] = true;
      }
    const at::Tensor hf_inv = at::inverse(h.index({Slice(i, None), Slice(i, None)}));
    for (int64_t r = 0; r < rows; ++r) {
      if (!mask[r][i].item<bool>()) continue;
      const double e = w[r][i].item<double>();
      w.index({r, Slice(i, None)}) -= e * hf_inv[0] / hf_inv[0][0];
      w[r][i] = 0.0;
    }
  }
  return w;
}

TEST(LoramTest, SparseGptMatchesTheObsStepInFloat64) {
  at::Generator gen = at::detail::createCPUGenerator(21);
  const at::Tensor w = at::randn({6, 16}, gen, at::kDouble);
  const at::Tensor x = at::randn({40, 16}, gen, at::kDouble) + 0.5 * at::randn({40, 1}, gen, at::kDouble);
  const at::Tensor h = at::matmul(x.t(), x);
  for (const int64_t block : {128, 8}) {  // one block, and the lazy block updates
    const at::Tensor semi = sparsegpt(w, h, 0, 2, 4, block);
    EXPECT_LE(testing::max_abs_diff(semi, sparsegpt_by_definition(w, h, 0, true)), 1e-9) << block;
    EXPECT_TRUE(semi.reshape({6, 4, 4}).ne(0).sum(2).eq(2).all().item<bool>());
  }
  const at::Tensor unst = sparsegpt(w, h, 0.5, 0, 0);
  EXPECT_LE(testing::max_abs_diff(unst, sparsegpt_by_definition(w, h, 0.5, false)), 1e-9);
  EXPECT_EQ(at::count_nonzero(unst).item<int64_t>(), 6 * 16 - 49);  // ⌊96·0.5⌋ + 1 pruned, no ties
  EXPECT_NE(testing::error_of([&] {
              sparsegpt(w.slice(1, 0, 14), h.slice(0, 0, 14).slice(1, 0, 14), 0, 2, 4);
            }).find("divisible by 4"),
            std::string::npos);
}

TEST(LoramTest, SparseCopiesKeepShapesAndRecoverAsTheIdentity) {
  nn::Model model = gqa();
  const at::Tensor calibration = at::arange(4 * 17, at::kLong).reshape({4, 17}) % 24;
  for (const std::string criterion : {"semi", "unstructured"}) {
    LoramOptions o;
    o.criterion = criterion;
    o.sparsity = 0.75;
    PrunedModel pruned = prune_for_loram(model, o, calibration, 0);
    EXPECT_EQ(pruned.model.config().intermediate_size, 32);
    const at::Tensor wq = pruned.model.slot("model.layers.1.self_attn.q_proj").base().dense_weight();
    const double zeros = 1.0 - static_cast<double>(at::count_nonzero(wq).item<int64_t>()) / wq.numel();
    EXPECT_NEAR(zeros, criterion == "semi" ? 0.5 : 0.75, 0.02) << criterion;
    AttachedAdapter trained = create_adapter(pruned.model, "a", config_for("lora"), 1);
    randomize(trained, 2);
    nn::Model full = gqa();
    const AttachedAdapter recovered = recover_adapter(full, trained, pruned, "a");
    for (size_t i = 0; i < trained.layers.size(); ++i)
      EXPECT_TRUE(at::equal(tensor_of(*recovered.layers[i].second, "lora_A.weight"),
                            tensor_of(*trained.layers[i].second, "lora_A.weight")));
  }
}

TEST(LoramTest, AlignmentLowersThePrunedCopysLoss) {
  nn::Model model = tiny();
  LoramOptions o;
  o.criterion = "random";
  PrunedModel pruned = prune_for_loram(model, o, at::Tensor(), 4);
  const double before = eval_loss(pruned.model);
  testing::TempDir dir;
  const train::TrainResult r =
      align_pruned_model(pruned, pattern_stream(), short_run(8, 2e-2), dir.path(), false);
  EXPECT_TRUE(r.finished);
  EXPECT_LT(eval_loss(pruned.model), before - 0.1);
  // lm_head is frozen, as in the authors' alignment.
  const at::Tensor head = model.slot("lm_head").base().dense_weight();
  EXPECT_TRUE(at::equal(pruned.model.slot("lm_head").base().dense_weight(), head));
}

TEST(LoramTest, OptionsAreListedCheckedAndSavedAsPlainLora) {
  AdapterConfig c = config_for("loram");
  LoramOptions o = LoramOptions::from_config(c);
  EXPECT_EQ(o.criterion, "structured");
  EXPECT_EQ(o.mlp_keep, 0.5);
  c.options["keep"] = 0.25;
  c.options["attn_keep"] = 1.0;
  o = LoramOptions::from_config(c);
  EXPECT_EQ(o.mlp_keep, 0.25);
  EXPECT_EQ(o.attn_keep, 1.0);
  for (const auto& [key, value, named] :
       {std::tuple{"criterion", Json("magnitude"), "criterion"}, std::tuple{"keep", Json(0.0), "mlp_keep"},
        std::tuple{"attn_keep", Json(1.5), "attn_keep"}, std::tuple{"sparsity", Json(1.0), "sparsity"},
        std::tuple{"align_steps", Json(-1), "align_steps"},
        std::tuple{"loram_keep", Json(0.5), "loram_keep"}}) {
    AdapterConfig bad = config_for("loram");
    bad.options[key] = value;
    EXPECT_NE(testing::error_of([&] { LoramOptions::from_config(bad); }).find(named), std::string::npos)
        << key;
  }
  const MethodInfo& info = registry().info("loram");
  for (const char* key :
       {"criterion", "keep", "mlp_keep", "attn_keep", "sparsity", "align_steps", "align_data"})
    EXPECT_TRUE(std::any_of(info.options.begin(), info.options.end(), [&](const auto& option) {
      return option.first == key;
    })) << key;
  const MethodInfo& lora = registry().info("lora");
  EXPECT_FALSE(std::any_of(lora.options.begin(), lora.options.end(),
                           [](const auto& option) { return option.first == "loram_keep"; }));
  nn::Model model = tiny();
  AdapterConfig with_options = config_for("loram");
  with_options.options["criterion"] = "random";
  const AttachedAdapter a = create_adapter(model, "a", with_options, 1);
  testing::TempDir dir;
  const AdapterConfig written = save_adapter(a, dir.path());
  EXPECT_EQ(written.peft_type, "LORA");
  EXPECT_EQ(written.method, "lora");
  EXPECT_FALSE(written.options.contains("criterion"));
}

}  // namespace
}  // namespace lowrank::adapt
