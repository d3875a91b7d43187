// The data the kernel methods read: inputs x [n, d] and targets y [n] or [n, k], fp64, from
//   - a safetensors file holding "x" and (optionally, for predict) "y";
//   - a numeric CSV, optionally gzip-compressed (.csv.gz): one row per example, the label in the
//     last column unless label_column says otherwise (a negative index counts from the end); a
//     first line that does not parse as numbers is a header and is skipped;
//   - a scikit-learn toy dataset by name (digits, diabetes, iris, wine, breast_cancer), read from
//     the CSVs that Debian's python3-sklearn bundles (sklearn/datasets/data/). Digits has no
//     header; iris, wine and breast_cancer start with "n_samples,n_features,class names..."; the
//     diabetes inputs (raw, unscaled, space-separated) and targets are two files.
// Every value must be finite: a NaN or Inf is refused naming the file, row and column (1-based).
// sha256 is the digest of x's then y's float64 bytes, so a model records what it was fitted on.
#pragma once

#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include <ATen/ATen.h>

namespace lowrank::kernel_methods {

struct Dataset {
  at::Tensor x;        // [n, d] float64
  at::Tensor y;        // [n] or [n, k] float64; undefined when the source has no targets
  std::string source;  // the path or "dataset:<name>", for messages
  std::string sha256;  // of x's and y's bytes
};

// x and y as given (converted to float64); checks shapes and finiteness and fills sha256.
Dataset make_dataset(at::Tensor x, at::Tensor y, std::string source);

// A safetensors file or a CSV(.gz), told apart by the extension. label_column is ignored for
// safetensors. Throws NotFound / InvalidArgument naming the path and the problem.
Dataset read_dataset(const std::filesystem::path& path, std::optional<int64_t> label_column = std::nullopt);

// The names read_builtin_dataset knows.
const std::vector<std::string>& builtin_dataset_names();
// Where Debian's python3-sklearn keeps its toy datasets.
std::filesystem::path default_sklearn_data_dir();
// Throws InvalidArgument for an unknown name (listing the known ones) and NotFound naming the
// missing file (and the package that provides it).
Dataset read_builtin_dataset(const std::string& name,
                             const std::filesystem::path& data_dir = default_sklearn_data_dir());

// The SHA-256 of x's and y's float64 bytes (y may be undefined).
std::string dataset_sha256(const at::Tensor& x, const at::Tensor& y);

}  // namespace lowrank::kernel_methods
