// Affine digits: the equivariance study's data (Mironenco & Forré, ICLR'24, §5: trained at the
// identity pose, tested under random affine maps; their affNIST / homNIST setting, shrunk to the
// 8 × 8 digits that Debian's python3-sklearn bundles, sklearn/datasets/data/digits.csv.gz: 1797
// images of the UCI optical-recognition digits, 64 grey levels 0–16 and the label per line).
//
// Each image is scaled to 0–255 (value · 255 / 16, rounded), zero-padded to size × size (default
// 16, the digit centred), and written as an image task (layout {"kind": "image", "height", "width",
// "channels": 1}, uint8 pixels, classes "0" … "9"). The 1797 images are shuffled (seeded) and split
// into test, val and train in that order. Train and val keep the identity pose; each test image is
// resampled (bilinear, zero outside) through its own random affine map about the image centre,
//   A = R(θ) · [[1, s], [0, 1]] · σ,   θ ~ U[−rotation, rotation], s ~ U[−shear, shear],
//   σ ~ U[scale_min, scale_max]
// (output pixel q reads the input at A⁻¹(q − c) + c). Options: train_size, val_size, test_size,
// size, rotation (radians, default π), shear (0.3), scale ("0.8:1.2"), test_pose (affine |
// identity), data_file (the CSV, .gz or plain).
#pragma once

#include <array>
#include <cstdint>
#include <vector>

#include "lowrank/data/tasks/registry.h"

namespace lowrank::data::tasks {

inline constexpr const char* kSklearnDigitsFile =
    "/usr/lib/python3/dist-packages/sklearn/datasets/data/digits.csv.gz";

// `image` (size × size, row-major) resampled through A (row-major 2 × 2, acting on (x, y) =
// (column, row) about the centre ((size − 1)/2, (size − 1)/2)), bilinear, zero outside.
std::vector<double> affine_resample(const std::vector<double>& image, int64_t size,
                                    const std::array<double, 4>& a);

TaskDefinition affine_digits_task();

}  // namespace lowrank::data::tasks
