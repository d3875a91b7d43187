// Fashion-MNIST — Xiao, Rasul & Vollgraf, 2017, "Fashion-MNIST: a Novel Image Dataset for
// Benchmarking Machine Learning Algorithms" (arXiv:1708.07747): 70,000 28x28 grey images of 10
// clothing classes, 60,000 training and 10,000 test, in the IDX files of
// zalandoresearch/fashion-mnist (data/fashion/*-ubyte.gz), read here from Debian's
// dataset-fashion-mnist package (/usr/share/datasets/fashion-mnist/).
//
// Two tasks over the same pixels (uint8 tokens, vocabulary 256, row-major):
//   fmnist   a 2-D image (task.json layout {"kind": "image", "height": 28, "width": 28});
//   sfmnist  the 784 pixels as one sequence (layout "sequence"): LRA Image's shape (Tay et al.,
//            2021, §3.4, sequential CIFAR-10) on a data set Debian ships.
// Splits: val_size images (default 5,000) drawn at random (seeded) from the 60,000 training
// images; train the next train_size (default the other 55,000) of that order; test the first
// test_size (default all 10,000) of the test file, in file order.
//
// IDX (LeCun's MNIST format): a big-endian header, magic 0x00000803 with three int32 dimensions
// (count, rows, cols) for images, 0x00000801 with one (count) for labels, then uint8 data.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "lowrank/data/tasks/registry.h"

namespace lowrank::data::tasks {

inline constexpr const char* kFashionMnistPackage = "dataset-fashion-mnist";
inline constexpr const char* kFashionMnistDir = "/usr/share/datasets/fashion-mnist";

struct IdxArray {
  std::vector<int64_t> dims;
  std::vector<uint8_t> data;
};

// Reads a gzip-compressed (or plain) IDX file of unsigned bytes. Throws NotFound naming the file
// and `package` when it is missing, Corruption naming the file for a bad magic, a truncated body
// or trailing bytes.
IdxArray read_idx_gz(const std::filesystem::path& path, const std::string& package);

// fmnist (sequence = false) or sfmnist (sequence = true).
TaskDefinition fashion_mnist_task(bool sequence);

}  // namespace lowrank::data::tasks
