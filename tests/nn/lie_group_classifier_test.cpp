// The equivariance study's classifier (nn/lie_group_classifier.h): exact invariance under the
// grid's 90° rotation when the group elements are closed under it, the equal-size plain CNN, the
// element draws, and the files.
#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include "lowrank/nn/lie_group.h"
#include "lowrank/nn/lie_group_classifier.h"
#include "tests/testing.h"

namespace lowrank::nn {
namespace {

LieGroupClassifierConfig small(const std::string& group) {
  LieGroupClassifierConfig c;
  c.group = group;
  c.channels = 3;
  c.kernel_size = 3;
  c.kernel_hidden = 8;
  c.train_samples = 4;
  c.eval_samples = 5;
  c.num_labels = 4;
  return c;
}

// The four rotations u^j g of each element: a set closed under u = rot90.
at::Tensor closed_under_rot90(const at::Tensor& g) {
  const at::Tensor u = at::tensor({0.0, 1.0, -1.0, 0.0}, at::kDouble).view({2, 2});
  std::vector<at::Tensor> all = {g};
  for (int j = 1; j < 4; ++j) all.push_back(at::matmul(at::linalg_matrix_power(u, j), g));
  return at::cat(all);
}

TEST(LieGroupClassifierTest, LogitsAreInvariantUnderRot90OnAClosedElementSet) {
  at::manual_seed(3);
  const at::Tensor x = at::rand({2, 1, 16, 16});
  const at::Tensor x_rot = at::rot90(x, 1, {2, 3});
  for (const std::string group : {"gl2", "sl2"}) {
    const LieGroupClassifier m = LieGroupClassifier::random(small(group), 1);
    const at::Tensor g =
        closed_under_rot90(group == "gl2" ? sample_gl2_haar(3, 0.5, 0.25, 7) : sample_sl2_haar(3, 0.5, 7));
    const at::Tensor y = m.forward_on(x, g);
    EXPECT_EQ(y.sizes(), (std::vector<int64_t>{2, 4}));
    EXPECT_LE(testing::max_abs_diff(m.forward_on(x_rot, g), y), 1e-4) << group;
    // Not closed (only the first three of the twelve): the rotation shows, so the test can tell.
    const at::Tensor part = g.narrow(0, 0, 3);
    EXPECT_GT(testing::max_abs_diff(m.forward_on(x_rot, part), m.forward_on(x, part)), 1e-3) << group;
  }
  // The plain CNN is not invariant.
  const LieGroupClassifier cnn = LieGroupClassifier::random(small("none"), 1);
  EXPECT_GT(testing::max_abs_diff(cnn.forward(x_rot, false), cnn.forward(x, false)), 1e-3);
}

TEST(LieGroupClassifierTest, RotatedDrawsMakeTheEvaluationInvariant) {
  // rotations = 4: the evaluation elements are closed under the 90° rotation, so forward() itself
  // is invariant under rot90 of the image (and rotations = 1 is not).
  at::manual_seed(5);
  const at::Tensor x = at::rand({2, 1, 16, 16});
  LieGroupClassifierConfig c = small("gl2");
  c.eval_samples = 8;
  c.train_samples = 4;
  c.rotations = 4;
  const LieGroupClassifier m = LieGroupClassifier::random(c, 6);
  EXPECT_EQ(m.group_elements(false).size(0), 8);
  EXPECT_LE(testing::max_abs_diff(m.forward(at::rot90(x, 1, {2, 3}), false), m.forward(x, false)), 1e-4);
  c.rotations = 1;
  const LieGroupClassifier plain = LieGroupClassifier::random(c, 6);
  EXPECT_GT(testing::max_abs_diff(plain.forward(at::rot90(x, 1, {2, 3}), false), plain.forward(x, false)),
            1e-3);
  c.rotations = 3;
  EXPECT_NE(testing::error_of([&] { c.check(); }).find("must be >= 1 and divide"), std::string::npos);
  c.rotations = 8;
  c.train_samples = 8;
  EXPECT_NE(testing::error_of([&] { c.check(); }).find("on the chart's cut"), std::string::npos);
}

TEST(LieGroupClassifierTest, PlainCnnOfEqualSize) {
  for (int64_t width : {3, 8}) {
    LieGroupClassifierConfig c = small("gl2");
    c.channels = width;
    const int64_t target = LieGroupClassifier::random(c, 0).parameter_count();
    const int64_t channels = matched_cnn_channels(c);
    c.group = "none";
    auto distance = [&](int64_t ch) {
      c.channels = ch;
      return std::abs(LieGroupClassifier::random(c, 0).parameter_count() - target);
    };
    // No other channel count comes nearer.
    for (int64_t other = 1; other <= 3 * channels; ++other)
      EXPECT_LE(distance(channels), distance(other)) << other;
  }
}

TEST(LieGroupClassifierTest, TrainingDrawsFreshElementsAndEvaluationIsFixed) {
  LieGroupClassifier m = LieGroupClassifier::random(small("gl2"), 2);
  const at::Tensor x = at::rand({1, 1, 16, 16});
  EXPECT_TRUE(at::equal(m.forward(x, false), m.forward(x, false)));
  EXPECT_EQ(m.named_buffers().at(0).second.item<int64_t>(), 0);
  const at::Tensor a = m.forward(x, true), b = m.forward(x, true);
  EXPECT_FALSE(at::equal(a, b));
  EXPECT_EQ(m.named_buffers().at(0).second.item<int64_t>(), 2);
  EXPECT_EQ(m.group_elements(false).size(0), 5);
  // The counter decides the draw: resetting it repeats the elements.
  m.named_buffers().at(0).second.fill_(0);
  EXPECT_TRUE(at::equal(m.forward(x, true), a));
}

TEST(LieGroupClassifierTest, SavesAndLoads) {
  testing::TempDir tmp;
  for (const std::string group : {"gl2", "none"}) {
    LieGroupClassifier m = LieGroupClassifier::random(small(group), 4);
    if (group == "gl2") m.forward(at::rand({1, 1, 16, 16}), true);  // counter 1
    m.save(tmp / group);
    const LieGroupClassifier back = LieGroupClassifier::load(tmp / group);
    const at::Tensor x = at::rand({2, 1, 16, 16});
    EXPECT_TRUE(at::equal(back.forward(x, false), m.forward(x, false))) << group;
    EXPECT_EQ(back.named_buffers().size(), m.named_buffers().size());
    if (group == "gl2") EXPECT_EQ(back.named_buffers().at(0).second.item<int64_t>(), 1);
  }
  LieGroupClassifierConfig bad = small("so3");
  EXPECT_NE(testing::error_of([&] { bad.check(); }).find("\"so3\""), std::string::npos);
  const LieGroupClassifier m = LieGroupClassifier::random(small("gl2"), 4);
  EXPECT_NE(testing::error_of([&] {
              m.forward(at::rand({1, 1, 8, 16}), false);
            }).find("pixels must be"),
            std::string::npos);
}

}  // namespace
}  // namespace lowrank::nn
