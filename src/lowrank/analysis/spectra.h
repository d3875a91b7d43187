// Spectral analysis of a checkpoint's weight matrices (`lowrank analyze`).
//
// For every 2-D weight W (out x in) it computes the singular values and, from them, the
// rank statistics of linalg/rank.h: effective rank (Roy & Vetterli 2007), the ranks holding
// 90% and 99% of the energy sum s_i^2, and the WeLore rank (Jaiswal et al. 2024) from the
// min-max-normalised spectrum. Singular values are computed in float64 for matrices up to
// kFloat64Limit elements and in float32 above (documented in docs/analyze.md).
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "lowrank/core/json.h"
#include "lowrank/core/safetensors.h"

namespace lowrank::analysis {

struct MatrixSpectrum {
  std::string name;         // HF tensor name, e.g. model.layers.0.self_attn.q_proj.weight
  std::string module_type;  // q_proj, down_proj, embed_tokens, lm_head, ...
  int64_t layer = -1;       // decoder layer index, -1 outside the layer stack
  int64_t rows = 0, cols = 0;
  std::vector<double> singular_values;  // descending
  double effective_rank = 0;
  int64_t rank90 = 0, rank99 = 0, welore_rank = 0;
};

struct SpectraOptions {
  double welore_tau = 0.175;  // WeLore's global threshold for ~50% rank reduction
  std::string include;        // ECMAScript regex on tensor names; empty = every 2-D tensor
};

// Module type and layer index from an HF tensor name.
std::string module_type_of(const std::string& tensor_name);
int64_t layer_of(const std::string& tensor_name);

// Analyses every 2-D floating-point tensor of `checkpoint` (shows a progress bar on a terminal).
// Throws InvalidArgument for a bad regex or when no tensor matches.
std::vector<MatrixSpectrum> analyze_spectra(const Checkpoint& checkpoint, const SpectraOptions& options);

// The JSON report: options, then one object per matrix (singular values included).
OrderedJson spectra_json(const std::vector<MatrixSpectrum>& spectra, const SpectraOptions& options);

// An SVG page of small multiples, one panel per module type, one curve per matrix (coloured by
// layer depth): the min-max-normalised spectrum against the rank fraction i/n, with the WeLore
// threshold drawn as a dashed line.
std::string spectra_svg(const std::vector<MatrixSpectrum>& spectra, const SpectraOptions& options,
                        const std::string& title);

// Writes spectra.json and spectra.svg into `out_dir` (created if needed), each atomically.
void write_spectra_report(const std::filesystem::path& out_dir, const std::vector<MatrixSpectrum>& spectra,
                          const SpectraOptions& options, const std::string& title);

}  // namespace lowrank::analysis
