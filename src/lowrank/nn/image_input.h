// The input side of an image classifier's config.json, read the same way by the patch-token
// classifier (image_classifier.h) and the ConvNet (convnet.h): "image_size" (n or [height,
// width]), "num_channels" (default 1), "patch_size" (dividing both sides) and "num_labels" (≥ 2).
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "lowrank/core/json.h"

namespace lowrank::nn {

struct ImageInput {
  int64_t height = 0, width = 0;
  int64_t channels = 1;
  int64_t patch_size = 0;
  int64_t num_labels = 0;
};

// Errors name `what` (the file) and the key.
ImageInput read_image_input(const Json& json, const std::string& what);

// object[key] as a positive integer; `fallback` when absent, else absent is an error.
int64_t positive_int_key(const Json& object, const std::string& key, const std::string& what,
                         std::optional<int64_t> fallback = std::nullopt);

}  // namespace lowrank::nn
