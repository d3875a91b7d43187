// A tiny image task for the image-classifier tests, written with the task writer.
#pragma once

#include <cstdint>
#include <filesystem>
#include <vector>

#include "lowrank/core/json.h"
#include "lowrank/data/tasks/task_format.h"

namespace lowrank::testing {

// An fmnist-shaped task (layout "image", pixel tokens 0..255) of `side`x`side` images: class 1
// has a bright top half, class 0 a bright bottom half, with noise.
inline std::filesystem::path write_image_task(const std::filesystem::path& dir, int64_t side, int64_t train,
                                              int64_t val) {
  data::tasks::TaskHeader h;
  h.task = "halves";
  h.generator = "image_classify_test";
  h.vocab_size = 256;
  h.classes = {"bottom", "top"};
  h.layout = OrderedJson{{"kind", "image"}, {"height", side}, {"width", side}, {"channels", 1}};
  data::tasks::TaskWriter writer(dir, h);
  uint64_t state = 99;
  auto next = [&state](uint64_t m) {
    state = state * 6364136223846793005ull + 1442695040888963407ull;
    return static_cast<int32_t>((state >> 33) % m);
  };
  auto add = [&](data::tasks::Split split, int64_t n) {
    for (int64_t i = 0; i < n; ++i) {
      const int32_t label = static_cast<int32_t>(i % 2);
      std::vector<int32_t> row(static_cast<size_t>(side * side));
      for (int64_t p = 0; p < side * side; ++p) {
        const bool top = p / side < side / 2;
        row[static_cast<size_t>(p)] = (top == (label == 1) ? 150 : 0) + next(100);
      }
      const int32_t y[] = {label};
      writer.add(split, row, y);
    }
  };
  add(data::tasks::Split::kTrain, train);
  add(data::tasks::Split::kVal, val);
  add(data::tasks::Split::kTest, val);
  writer.commit();
  return dir;
}

}  // namespace lowrank::testing
