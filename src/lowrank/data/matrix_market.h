// Matrix Market exchange format (Boisvert, Pozo & Remington, 1996, "The Matrix Market Exchange
// Formats: Initial Design", NISTIR 5935; https://math.nist.gov/MatrixMarket/formats.html), the
// files of the SuiteSparse collection:
//   %%MatrixMarket matrix <coordinate|array> <real|integer|pattern> <general|symmetric|skew-symmetric>
//   % comments
//   M N NNZ            (coordinate; "M N" for array)
//   i j [value]        (1-based; array: one value per line, column-major)
// Symmetric files store the lower triangle: (i, j) also gives (j, i) (negated when skew-symmetric).
// Pattern entries have value 1. Repeated coordinates are summed (the format forbids them, but
// files in the wild have them). complex and hermitian fields are refused (Unsupported).
#pragma once

#include <filesystem>
#include <string_view>

#include "lowrank/ops/spgemm.h"

namespace lowrank::data {

// Reads a .mtx file. Errors name the file and, for a bad entry, its line: InvalidArgument for a
// malformed or out-of-range line or a wrong entry count, Unsupported for complex/hermitian.
ops::Csr read_matrix_market(const std::filesystem::path& path);
// Parses .mtx text; `what` names the source in errors.
ops::Csr parse_matrix_market(std::string_view text, std::string_view what);
// Writes coordinate real general, values with 17 significant digits (a lossless float64 round
// trip), atomically (temp file, then rename).
void write_matrix_market(const std::filesystem::path& path, const ops::Csr& matrix);

}  // namespace lowrank::data
