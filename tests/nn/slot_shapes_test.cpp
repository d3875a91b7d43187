// nn::slot_shapes against the slots of a model built from the same config: names, order and
// [out, in], with grouped-query attention and with a tied or an untied lm_head, and in hybrid
// models whose other mixers (Linformer, Performer, the test-only mean) bring their own slots.
#include <gtest/gtest.h>

#include "lowrank/mix/registry.h"
#include "lowrank/nn/classifier.h"
#include "lowrank/nn/model.h"
#include "lowrank/nn/slot_shapes.h"
#include "tests/nn/test_mixers.h"
#include "tests/testing.h"

namespace lowrank::nn {
namespace {

void expect_slot_shapes(const std::vector<SlotShape>& shapes, const std::vector<const LinearSlot*>& slots) {
  ASSERT_EQ(shapes.size(), slots.size());
  for (size_t i = 0; i < slots.size(); ++i) {
    EXPECT_EQ(shapes[i].name, slots[i]->name());
    EXPECT_EQ(shapes[i].out_features, slots[i]->out_features()) << shapes[i].name;
    EXPECT_EQ(shapes[i].in_features, slots[i]->in_features()) << shapes[i].name;
  }
}

TEST(SlotShapesTest, AreTheSlotsOfAModelBuiltFromTheConfig) {
  for (const bool tied : {false, true}) {
    const Model model = testing::tiny_llama({.vocab_size = 24,
                                             .hidden_size = 16,
                                             .intermediate_size = 40,
                                             .layers = 2,
                                             .heads = 4,
                                             .kv_heads = 2,
                                             .tie_embeddings = tied},
                                            3);
    expect_slot_shapes(slot_shapes(model.config()), model.slots());
  }
}

TEST(SlotShapesTest, ListTheProjectionsOfEveryMixerInAHybridModel) {
  testing_mixers::register_test_mixers();
  (void)mix::registry();  // the built-in mixers
  testing::TinySpec s = testing_mixers::tiny_spec();
  s.layers = 4;
  // A language model: attention and the causal test-only mixer (one slot, `.mixer.proj`).
  const ModelConfig lm = ModelConfig::from_json(
      testing_mixers::mixer_config(s, Json::array({"test_mean", "attention", "performer", "test_mean"})),
      "lm");
  const std::vector<SlotShape> lm_shapes = slot_shapes(lm);
  const Model lm_model = Model::random(lm, 1);
  expect_slot_shapes(lm_shapes, lm_model.slots());
  EXPECT_EQ(lm_shapes.front().name, "model.layers.0.mixer.proj");
  // A classifier (no lm_head): bidirectional mixers with q/k/v/o and extra tensors (Linformer's E, F).
  Json classifier =
      testing_mixers::classifier_config(s, Json::array({"linformer", "performer", "attention", "soft"}), 2);
  classifier["mixer_config"] = {{"linformer", {{"max_seq_len", 8}, {"k", 4}}},
                                {"attention", {{"causal", false}}}};
  const ModelConfig config = ModelConfig::from_json(classifier, "classifier");
  const std::vector<SlotShape> shapes = slot_shapes(config);
  const Model trunk = Model::random(config, 1);
  expect_slot_shapes(shapes, trunk.slots());
  size_t mixer_slots = 0;
  for (const SlotShape& shape : shapes) mixer_slots += shape.name.find(".mixer.") != std::string::npos;
  EXPECT_GE(mixer_slots, 8u) << "linformer's and performer's q, k, v, o";
}

}  // namespace
}  // namespace lowrank::nn
