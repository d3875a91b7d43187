#include "lowrank/analysis/spectra.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <regex>

#include "lowrank/analysis/plot.h"
#include "lowrank/core/file.h"
#include "lowrank/core/progress.h"
#include "lowrank/core/svg.h"
#include "lowrank/linalg/rank.h"

namespace lowrank::analysis {
namespace fs = std::filesystem;
namespace {

// Above this many elements the SVD runs in float32: float64 costs ~2x and the spectra are
// plotted, not inverted.
constexpr int64_t kFloat64Limit = 2048 * 2048;

bool is_float(Dtype d) {
  return d == Dtype::kF64 || d == Dtype::kF32 || d == Dtype::kF16 || d == Dtype::kBF16;
}

}  // namespace

std::string module_type_of(const std::string& name) {
  std::string base = name;
  for (const char* suffix : {".weight", ".bias"}) {
    std::string_view s(suffix);
    if (base.size() > s.size() && base.compare(base.size() - s.size(), s.size(), s) == 0) {
      base.resize(base.size() - s.size());
      break;
    }
  }
  auto dot = base.rfind('.');
  return dot == std::string::npos ? base : base.substr(dot + 1);
}

int64_t layer_of(const std::string& name) {
  static const std::regex kLayer(R"((?:^|\.)(?:layers|h|blocks)\.(\d+)\.)");
  std::smatch m;
  if (std::regex_search(name, m, kLayer)) return std::stoll(m[1].str());
  return -1;
}

std::vector<MatrixSpectrum> analyze_spectra(const Checkpoint& checkpoint, const SpectraOptions& options) {
  std::regex include;
  if (!options.include.empty()) {
    try {
      include = std::regex(options.include, std::regex::ECMAScript);
    } catch (const std::regex_error& e) {
      throw InvalidArgument(
          str("--include: invalid regular expression \"", options.include, "\": ", e.what()));
    }
  }
  std::vector<std::string> names;
  for (const auto& name : checkpoint.names()) {
    const TensorInfo& info = checkpoint.info(name);
    if (info.shape.size() != 2 || !is_float(info.dtype) || info.numel() == 0) continue;
    if (!options.include.empty() && !std::regex_search(name, include)) continue;
    names.push_back(name);
  }
  LR_CHECK(!names.empty(), InvalidArgument, "no 2-D floating-point weight",
           options.include.empty() ? "" : str(" matches --include \"", options.include, "\""),
           " in the checkpoint");

  std::vector<MatrixSpectrum> out;
  ProgressBar bar(static_cast<int64_t>(names.size()), "analyze");
  for (const auto& name : names) {
    bar.set_note(name);
    const TensorInfo& info = checkpoint.info(name);
    const int64_t numel = info.shape[0] * info.shape[1];
    at::Tensor w = checkpoint.load(name, numel <= kFloat64Limit ? at::kDouble : at::kFloat);
    at::Tensor s = at::linalg_svdvals(w).to(at::kDouble).contiguous();

    MatrixSpectrum m;
    m.name = name;
    m.module_type = module_type_of(name);
    m.layer = layer_of(name);
    m.rows = info.shape[0];
    m.cols = info.shape[1];
    m.singular_values.assign(s.data_ptr<double>(), s.data_ptr<double>() + s.numel());
    m.effective_rank = linalg::effective_rank(s);
    m.rank90 = linalg::energy_rank(s, 0.90);
    m.rank99 = linalg::energy_rank(s, 0.99);
    m.welore_rank = linalg::welore_rank(s, options.welore_tau);
    out.push_back(std::move(m));
    bar.advance();
  }
  return out;
}

OrderedJson spectra_json(const std::vector<MatrixSpectrum>& spectra, const SpectraOptions& options) {
  OrderedJson matrices = OrderedJson::array();
  for (const auto& m : spectra) {
    matrices.push_back({{"name", m.name},
                        {"module_type", m.module_type},
                        {"layer", m.layer},
                        {"shape", {m.rows, m.cols}},
                        {"full_rank", std::min(m.rows, m.cols)},
                        {"effective_rank", m.effective_rank},
                        {"rank_90", m.rank90},
                        {"rank_99", m.rank99},
                        {"welore_rank", m.welore_rank},
                        {"singular_values", m.singular_values}});
  }
  return {{"format", "lowrank.spectra"},      {"version", 1},
          {"welore_tau", options.welore_tau}, {"include", options.include},
          {"energy_fractions", {0.90, 0.99}}, {"matrices", matrices}};
}

std::string spectra_svg(const std::vector<MatrixSpectrum>& spectra, const SpectraOptions& options,
                        const std::string& title) {
  // Group by module type, in the order data flows through a decoder; unknown types last.
  static const std::vector<std::string> kOrder = {"embed_tokens", "q_proj",  "k_proj",    "v_proj", "o_proj",
                                                  "gate_proj",    "up_proj", "down_proj", "lm_head"};
  auto rank_of = [](const std::string& type) {
    auto it = std::find(kOrder.begin(), kOrder.end(), type);
    return static_cast<size_t>(it - kOrder.begin());
  };
  std::vector<std::string> types;
  std::map<std::string, std::vector<const MatrixSpectrum*>> groups;
  int64_t max_layer = 0;
  for (const auto& m : spectra) {
    if (!groups.count(m.module_type)) types.push_back(m.module_type);
    groups[m.module_type].push_back(&m);
    max_layer = std::max(max_layer, m.layer);
  }
  std::stable_sort(types.begin(), types.end(),
                   [&](const std::string& a, const std::string& b) { return rank_of(a) < rank_of(b); });

  const int cols = std::min<int>(4, static_cast<int>(types.size()));
  const int rows = (static_cast<int>(types.size()) + cols - 1) / cols;
  const double pw = 300, ph = 220, margin_l = 52, margin_t = 110, gap_x = 40, gap_y = 70;
  const double width = margin_l + cols * (pw + gap_x) + 10;
  const double height = margin_t + rows * (ph + gap_y) + 30;
  Svg svg(width, height);
  svg.text(margin_l, 26, title, 18, "start", "#111", true);
  svg.text(
      margin_l, 46,
      str("Min-max-normalised singular values (s - s_min)/(s_max - s_min) against rank fraction i/n; "
          "one curve per matrix, colour = layer (dark: first, light: last). Dashed: WeLore threshold tau = ",
          options.welore_tau, "."),
      11, "start", "#444");

  for (size_t g = 0; g < types.size(); ++g) {
    const auto& members = groups[types[g]];
    const double x0 = margin_l + static_cast<double>(g % cols) * (pw + gap_x);
    const double y0 = margin_t + static_cast<double>(g / cols) * (ph + gap_y);
    // Both axes span [0, 1]; ticks and grid come from analysis/plot.h, as in the run reports.
    PlotFrame frame{
        .left = x0, .top = y0, .width = pw, .height = ph, .x = linear_ticks(0, 1), .y = linear_ticks(0, 1)};
    draw_axes(svg, frame, "", "");
    const double ty = frame.py(options.welore_tau);
    svg.line(x0, ty, x0 + pw, ty, "#d62728", 1.2, "5,4");

    double mean_eff = 0, mean_frac = 0;
    for (const auto* m : members) {
      const auto& s = m->singular_values;
      const double hi = s.front(), lo = s.back();
      const double n = static_cast<double>(s.size());
      std::vector<std::pair<double, double>> pts;
      pts.reserve(s.size());
      for (size_t i = 0; i < s.size(); ++i) {
        double v = hi > lo ? (s[i] - lo) / (hi - lo) : 0.0;
        double x = n > 1 ? static_cast<double>(i) / (n - 1) : 0.0;
        pts.emplace_back(frame.px(x), frame.py(v));
      }
      double depth = max_layer > 0 && m->layer >= 0 ? static_cast<double>(m->layer) / max_layer : 0.0;
      svg.polyline(pts, ramp_color(depth * 0.9), 1.4, 0.85);
      mean_eff += m->effective_rank;
      mean_frac += static_cast<double>(m->welore_rank) / n;
    }
    mean_eff /= static_cast<double>(members.size());
    mean_frac /= static_cast<double>(members.size());
    const auto* first = members.front();
    svg.text(x0, y0 - 24,
             str(types[g], "  (", members.size(), members.size() == 1 ? " matrix, " : " matrices, ",
                 first->rows, "x", first->cols, ")"),
             13, "start", "#111", true);
    char buf[96];
    std::snprintf(buf, sizeof buf, "mean effective rank %.1f of %lld; WeLore keeps %.0f%%", mean_eff,
                  static_cast<long long>(std::min(first->rows, first->cols)), 100 * mean_frac);
    svg.text(x0, y0 - 8, buf, 10.5, "start", "#444");
  }
  svg.text(margin_l + (width - margin_l) / 2, height - 8, "rank fraction i/n", 11, "middle", "#333");
  return svg.str();
}

void write_spectra_report(const fs::path& out_dir, const std::vector<MatrixSpectrum>& spectra,
                          const SpectraOptions& options, const std::string& title) {
  std::error_code ec;
  fs::create_directories(out_dir, ec);
  LR_CHECK(!ec && fs::is_directory(out_dir), IoError, out_dir.string(), ": cannot create directory (",
           ec.message(), ")");
  write_json_file(out_dir / "spectra.json", spectra_json(spectra, options));
  write_file_atomic(out_dir / "spectra.svg", spectra_svg(spectra, options, title));
}

}  // namespace lowrank::analysis
