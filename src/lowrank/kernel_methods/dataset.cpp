#include "lowrank/kernel_methods/dataset.h"

#include <charconv>
#include <cmath>
#include <cstring>
#include <sstream>

#include "lowrank/core/error.h"
#include "lowrank/core/file.h"
#include "lowrank/core/safetensors.h"
#include "lowrank/data/tasks/sha256.h"

namespace lowrank::kernel_methods {
namespace fs = std::filesystem;

namespace {

constexpr const char* kSklearnPackage = "python3-sklearn";

bool ends_with(const std::string& s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// Splits on commas, or on blanks when the line has no comma.
std::vector<std::string_view> split_fields(std::string_view line) {
  std::vector<std::string_view> fields;
  const bool comma = line.find(',') != std::string_view::npos;
  std::size_t start = 0;
  while (start <= line.size()) {
    if (!comma) {
      while (start < line.size() && (line[start] == ' ' || line[start] == '\t')) ++start;
      if (start >= line.size()) break;
    }
    std::size_t end = comma ? line.find(',', start) : line.find_first_of(" \t", start);
    if (end == std::string_view::npos) end = line.size();
    fields.push_back(line.substr(start, end - start));
    start = end + 1;
  }
  return fields;
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t' || s.front() == '\r')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\r')) s.remove_suffix(1);
  return s;
}

bool parse_number(std::string_view field, double& out) {
  field = trim(field);
  if (field.empty()) return false;
  // strtod accepts "nan"/"inf", which the finiteness check then names; from_chars for doubles is
  // the same in what it accepts.
  const std::string copy(field);
  char* end = nullptr;
  out = std::strtod(copy.c_str(), &end);
  return end == copy.c_str() + copy.size();
}

// Rows of numbers; a first line that does not parse is a header. Returns [rows, columns].
at::Tensor parse_numeric_table(const std::string& text, const std::string& what) {
  std::vector<double> values;
  int64_t columns = -1, rows = 0;
  std::istringstream lines(text);
  std::string line;
  int64_t line_number = 0;
  while (std::getline(lines, line)) {
    ++line_number;
    if (trim(line).empty()) continue;
    const auto fields = split_fields(line);
    std::vector<double> row(fields.size());
    bool numeric = true;
    std::size_t bad = 0;
    for (std::size_t j = 0; j < fields.size(); ++j) {
      if (!parse_number(fields[j], row[j])) {
        numeric = false;
        bad = j;
        break;
      }
    }
    if (!numeric) {
      if (rows == 0 && columns < 0 && line_number == 1) continue;  // a header
      throw InvalidArgument(str(what, ": line ", line_number, ", column ", bad + 1, ": \"", trim(fields[bad]),
                                "\" is not a number"));
    }
    if (columns < 0) columns = static_cast<int64_t>(row.size());
    LR_CHECK(static_cast<int64_t>(row.size()) == columns, InvalidArgument, what, ": line ", line_number,
             " has ", row.size(), " columns, the first data line ", columns);
    values.insert(values.end(), row.begin(), row.end());
    ++rows;
  }
  LR_CHECK(rows > 0, InvalidArgument, what, ": no data rows");
  return at::tensor(values, at::kDouble).reshape({rows, columns});
}

void check_finite(const at::Tensor& t, const std::string& what, const char* name) {
  const at::Tensor bad = at::logical_not(at::isfinite(t));
  if (!bad.any().item<bool>()) return;
  const at::Tensor where = bad.nonzero()[0];
  const int64_t row = where[0].item<int64_t>() + 1;
  const int64_t column = t.dim() > 1 ? where[1].item<int64_t>() + 1 : 1;
  throw InvalidArgument(str(what, ": ", name, " has a non-finite value (",
                            t.reshape({t.size(0), -1})[row - 1][column - 1].item<double>(), ") at row ", row,
                            ", column ", column));
}

Dataset split_label(const at::Tensor& table, std::optional<int64_t> label_column, const std::string& what) {
  const int64_t columns = table.size(1);
  LR_CHECK(columns >= 2, InvalidArgument, what, ": needs at least two columns (inputs and a label), got ",
           columns);
  int64_t label = label_column.value_or(-1);
  if (label < 0) label += columns;
  LR_CHECK(label >= 0 && label < columns, InvalidArgument, "--label-col ", label_column.value_or(-1),
           " is outside the ", columns, " columns of ", what);
  std::vector<int64_t> keep;
  for (int64_t j = 0; j < columns; ++j)
    if (j != label) keep.push_back(j);
  return make_dataset(table.index_select(1, at::tensor(keep)), table.select(1, label), what);
}

fs::path require_file(const fs::path& path) {
  LR_CHECK(fs::exists(path), NotFound, "missing ", path.string(), " (install Debian's ", kSklearnPackage,
           ", which bundles scikit-learn's toy datasets)");
  return path;
}

}  // namespace

std::string dataset_sha256(const at::Tensor& x, const at::Tensor& y) {
  data::tasks::Sha256 hash;
  for (const at::Tensor* t : {&x, &y}) {
    if (!t->defined()) continue;
    const at::Tensor c = t->to(at::kDouble).contiguous();
    hash.update(std::span(reinterpret_cast<const std::byte*>(c.data_ptr<double>()),
                          static_cast<std::size_t>(c.numel()) * sizeof(double)));
  }
  return hash.hex_digest();
}

Dataset make_dataset(at::Tensor x, at::Tensor y, std::string source) {
  LR_CHECK(x.defined() && x.dim() == 2, InvalidArgument, source, ": x must be [n, d], got ",
           x.defined() ? x.sizes() : at::IntArrayRef{});
  LR_CHECK(x.size(0) >= 1 && x.size(1) >= 1, InvalidArgument, source, ": x is empty (", x.sizes(), ")");
  Dataset out;
  out.x = x.to(at::kDouble).contiguous();
  check_finite(out.x, source, "x");
  if (y.defined()) {
    LR_CHECK((y.dim() == 1 || y.dim() == 2) && y.size(0) == x.size(0), InvalidArgument, source,
             ": y must be [n] or [n, k] with n = ", x.size(0), ", got ", y.sizes());
    out.y = y.to(at::kDouble).contiguous();
    check_finite(out.y, source, "y");
  }
  out.source = std::move(source);
  out.sha256 = dataset_sha256(out.x, out.y);
  return out;
}

Dataset read_dataset(const fs::path& path, std::optional<int64_t> label_column) {
  const std::string name = path.string();
  if (ends_with(name, ".safetensors")) {
    const SafetensorsFile file = SafetensorsFile::open(path);
    LR_CHECK(file.contains("x"), InvalidArgument, name, ": no tensor \"x\" (the inputs [n, d])");
    return make_dataset(file.load("x", at::kDouble),
                        file.contains("y") ? file.load("y", at::kDouble) : at::Tensor(), name);
  }
  LR_CHECK(ends_with(name, ".csv") || ends_with(name, ".csv.gz"), InvalidArgument, name,
           ": unknown data format (expected .safetensors, .csv or .csv.gz)");
  return split_label(parse_numeric_table(read_text_file_gz(path), name), label_column, name);
}

const std::vector<std::string>& builtin_dataset_names() {
  static const std::vector<std::string> names = {"breast_cancer", "diabetes", "digits", "iris", "wine"};
  return names;
}

fs::path default_sklearn_data_dir() {
  return "/usr/lib/python3/dist-packages/sklearn/datasets/data";
}

Dataset read_builtin_dataset(const std::string& name, const fs::path& dir) {
  const std::string source = "dataset:" + name;
  auto table = [&](const char* file) {
    const fs::path path = require_file(dir / file);
    return parse_numeric_table(read_text_file_gz(path), path.string());
  };
  if (name == "diabetes") {
    const at::Tensor x = table("diabetes_data_raw.csv.gz");
    const at::Tensor y = table("diabetes_target.csv.gz").reshape({-1});
    LR_CHECK(x.size(0) == y.size(0), Corruption, "diabetes: ", x.size(0), " inputs but ", y.size(0),
             " targets");
    return make_dataset(x, y, source);
  }
  const char* file = name == "digits"          ? "digits.csv.gz"
                     : name == "iris"          ? "iris.csv"
                     : name == "wine"          ? "wine_data.csv"
                     : name == "breast_cancer" ? "breast_cancer.csv"
                                               : nullptr;
  if (file == nullptr) {
    std::string known;
    for (const auto& n : builtin_dataset_names()) known += (known.empty() ? "" : ", ") + n;
    throw InvalidArgument(str("--dataset: unknown dataset \"", name, "\" (known: ", known, ")"));
  }
  Dataset out = split_label(table(file), std::nullopt, source);
  return out;
}

}  // namespace lowrank::kernel_methods
