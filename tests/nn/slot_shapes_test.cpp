// nn::slot_shapes against the slots of a model built from the same config: names, order and
// [out, in], with grouped-query attention and with a tied or an untied lm_head.
#include <gtest/gtest.h>

#include "lowrank/nn/model.h"
#include "lowrank/nn/slot_shapes.h"
#include "tests/testing.h"

namespace lowrank::nn {
namespace {

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
    const std::vector<SlotShape> shapes = slot_shapes(model.config());
    const std::vector<const LinearSlot*> slots = model.slots();
    ASSERT_EQ(shapes.size(), slots.size());
    for (size_t i = 0; i < slots.size(); ++i) {
      EXPECT_EQ(shapes[i].name, slots[i]->name());
      EXPECT_EQ(shapes[i].out_features, slots[i]->out_features()) << shapes[i].name;
      EXPECT_EQ(shapes[i].in_features, slots[i]->in_features()) << shapes[i].name;
    }
  }
}

}  // namespace
}  // namespace lowrank::nn
