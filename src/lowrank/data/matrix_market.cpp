// Matrix Market reader and writer (matrix_market.h).
#include "lowrank/data/matrix_market.h"

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cstdio>
#include <string>
#include <vector>

#include "lowrank/core/error.h"
#include "lowrank/core/file.h"

namespace lowrank::data {

namespace {

std::string lower(std::string_view s) {
  std::string out(s);
  std::transform(out.begin(), out.end(), out.begin(), [](unsigned char c) { return std::tolower(c); });
  return out;
}

// The whitespace-separated fields of one line.
std::vector<std::string_view> fields(std::string_view line) {
  std::vector<std::string_view> out;
  size_t p = 0;
  while (p < line.size()) {
    while (p < line.size() && std::isspace(static_cast<unsigned char>(line[p]))) ++p;
    const size_t start = p;
    while (p < line.size() && !std::isspace(static_cast<unsigned char>(line[p]))) ++p;
    if (p > start) out.push_back(line.substr(start, p - start));
  }
  return out;
}

template <typename T>
bool parse_number(std::string_view s, T& value) {
  auto [ptr, ec] = std::from_chars(s.data(), s.data() + s.size(), value);
  return ec == std::errc() && ptr == s.data() + s.size();
}

}  // namespace

ops::Csr parse_matrix_market(std::string_view text, std::string_view what) {
  size_t pos = 0;
  int64_t line_number = 0;
  auto next_line = [&](std::string_view& line) {
    if (pos >= text.size()) return false;
    size_t end = text.find('\n', pos);
    if (end == std::string_view::npos) end = text.size();
    line = text.substr(pos, end - pos);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    pos = end + 1;
    ++line_number;
    return true;
  };
  std::string_view line;
  LR_CHECK(next_line(line), InvalidArgument, what, ": empty file (expected a %%MatrixMarket header)");
  const std::vector<std::string_view> header = fields(line);
  LR_CHECK(
      header.size() == 5 && lower(header[0]) == "%%matrixmarket" && lower(header[1]) == "matrix",
      InvalidArgument, what,
      ":1: not a Matrix Market header (expected \"%%MatrixMarket matrix coordinate real general\"), got \"",
      line, "\"");
  const std::string format = lower(header[2]), field = lower(header[3]), symmetry = lower(header[4]);
  LR_CHECK(format == "coordinate" || format == "array", InvalidArgument, what, ":1: unknown format \"",
           header[2], "\" (expected coordinate or array)");
  LR_CHECK(field != "complex", Unsupported, what,
           ":1: complex matrices are not supported (real, integer, pattern)");
  LR_CHECK(field == "real" || field == "integer" || field == "double" || field == "pattern", InvalidArgument,
           what, ":1: unknown field \"", header[3], "\" (expected real, integer or pattern)");
  LR_CHECK(symmetry != "hermitian", Unsupported, what, ":1: hermitian matrices are not supported");
  LR_CHECK(symmetry == "general" || symmetry == "symmetric" || symmetry == "skew-symmetric", InvalidArgument,
           what, ":1: unknown symmetry \"", header[4], "\" (expected general, symmetric or skew-symmetric)");
  const bool pattern = field == "pattern", array = format == "array";
  LR_CHECK(!(pattern && array), InvalidArgument, what, ":1: an array file cannot be a pattern");
  const bool symmetric = symmetry != "general", skew = symmetry == "skew-symmetric";

  // The size line, after comments and blank lines.
  std::vector<std::string_view> size;
  while (next_line(line)) {
    if (line.empty() || line.front() == '%') continue;
    size = fields(line);
    if (!size.empty()) break;
  }
  int64_t rows = -1, cols = -1, declared = -1;
  LR_CHECK(size.size() == (array ? 2u : 3u) && parse_number(size[0], rows) && parse_number(size[1], cols) &&
               (array || parse_number(size[2], declared)) && rows >= 0 && cols >= 0 &&
               (array || declared >= 0),
           InvalidArgument, what, ":", line_number, ": malformed size line \"", line, "\" (expected ",
           array ? "\"ROWS COLS\"" : "\"ROWS COLS ENTRIES\"", ")");
  LR_CHECK(!symmetric || rows == cols, InvalidArgument, what, ":", line_number, ": a ", symmetry,
           " matrix must be square, got ", rows, "x", cols);
  if (array) declared = symmetric ? (skew ? rows * (rows - 1) / 2 : rows * (rows + 1) / 2) : rows * cols;

  std::vector<int64_t> r, c;
  std::vector<double> v;
  r.reserve(declared * (symmetric ? 2 : 1));
  c.reserve(r.capacity());
  v.reserve(r.capacity());
  int64_t seen = 0;
  auto add = [&](int64_t i, int64_t j, double value) {
    r.push_back(i);
    c.push_back(j);
    v.push_back(value);
    if (symmetric && i != j) {
      r.push_back(j);
      c.push_back(i);
      v.push_back(skew ? -value : value);
    }
  };
  int64_t array_i = skew ? 1 : 0, array_j = 0;  // array files: the next position, column-major
  while (next_line(line)) {
    if (line.empty() || line.front() == '%') continue;
    const std::vector<std::string_view> f = fields(line);
    if (f.empty()) continue;
    LR_CHECK(seen < declared, InvalidArgument, what, ":", line_number, ": more entries than the ", declared,
             " the size line declares");
    if (array) {
      double value = 0;
      LR_CHECK(f.size() == 1 && parse_number(f[0], value), InvalidArgument, what, ":", line_number,
               ": malformed entry \"", line, "\" (expected one value)");
      if (value != 0.0) add(array_i, array_j, value);
      // Next position: down the column; symmetric arrays hold the lower triangle only.
      if (++array_i == rows) {
        ++array_j;
        array_i = symmetric ? array_j + (skew ? 1 : 0) : 0;
      }
    } else {
      int64_t i = 0, j = 0;
      double value = 1.0;
      LR_CHECK(f.size() == (pattern ? 2u : 3u) && parse_number(f[0], i) && parse_number(f[1], j) &&
                   (pattern || parse_number(f[2], value)),
               InvalidArgument, what, ":", line_number, ": malformed entry \"", line, "\" (expected ",
               pattern ? "\"ROW COL\"" : "\"ROW COL VALUE\"", ")");
      LR_CHECK(i >= 1 && i <= rows && j >= 1 && j <= cols, InvalidArgument, what, ":", line_number,
               ": entry (", i, ", ", j, ") lies outside the ", rows, "x", cols,
               " matrix (indices are 1-based)");
      add(i - 1, j - 1, value);
    }
    ++seen;
  }
  LR_CHECK(seen == declared, InvalidArgument, what, ": the size line declares ", declared,
           " entries, but the file has ", seen);
  return ops::csr_from_coo(rows, cols, r, c, v);
}

ops::Csr read_matrix_market(const std::filesystem::path& path) {
  const std::string text = read_text_file(path);
  return parse_matrix_market(text, path.string());
}

void write_matrix_market(const std::filesystem::path& path, const ops::Csr& m) {
  m.check(path.string(), /*require_sorted=*/false);
  std::string out = "%%MatrixMarket matrix coordinate real general\n% written by lowrank\n";
  out += std::to_string(m.rows) + " " + std::to_string(m.cols) + " " + std::to_string(m.nnz()) + "\n";
  out.reserve(out.size() + static_cast<size_t>(m.nnz()) * 36);
  char buffer[64];
  for (int64_t i = 0; i < m.rows; ++i)
    for (int64_t p = m.indptr[i]; p < m.indptr[i + 1]; ++p) {
      const int n = std::snprintf(buffer, sizeof buffer, "%lld %d %.17g\n", static_cast<long long>(i + 1),
                                  m.indices[p] + 1, m.values[p]);
      out.append(buffer, n);
    }
  write_file_atomic(path, out);
}

}  // namespace lowrank::data
