// Reading run directories and writing their HTML page (see run_report.h).
#include "lowrank/analysis/run_report.h"

#include <cmath>
#include <cstdio>
#include <fstream>
#include <set>

#include "lowrank/analysis/plot.h"
#include "lowrank/core/error.h"
#include "lowrank/core/file.h"
#include "lowrank/core/svg.h"

namespace lowrank::analysis {

namespace fs = std::filesystem;

namespace {

std::string fixed(double v, int decimals) {
  if (!std::isfinite(v)) return "–";
  char buf[48];
  std::snprintf(buf, sizeof buf, "%.*f", decimals, v);
  return buf;
}

void read_metrics(const fs::path& path, RunData& run) {
  std::ifstream in(path);
  LR_CHECK(in.good(), IoError, "cannot read ", path.string());
  std::string line;
  int64_t number = 0;
  while (std::getline(in, line)) {
    ++number;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    const Json row = parse_json(line, str(path.string(), " line ", number));
    LR_CHECK(row.is_object(), InvalidArgument, path.string(), " line ", number, ": expected a JSON object");
    ++run.metric_rows;
    const double step = row.contains("step") && row["step"].is_number()
                            ? row["step"].get<double>()
                            : static_cast<double>(run.metric_rows);
    for (const auto& [key, value] : row.items())
      if (key != "step" && value.is_number()) run.columns[key].emplace_back(step, value.get<double>());
  }
}

}  // namespace

RunData read_run(const fs::path& dir) {
  LR_CHECK(fs::is_directory(dir), NotFound, "report: ", dir.string(), " is not a directory");
  RunData run;
  run.dir = dir;
  run.name = fs::weakly_canonical(dir).filename().string();
  for (const fs::path& metrics : {dir / "metrics.jsonl", dir / "run" / "metrics.jsonl"})
    if (fs::is_regular_file(metrics)) {
      read_metrics(metrics, run);
      run.kind = "train";
      break;
    }
  for (const char* kind : {"pretrain", "finetune"})
    if (const fs::path p = dir / (std::string(kind) + ".json"); fs::is_regular_file(p)) {
      run.summary = read_json_file(p);
      run.kind = kind;
      break;
    }
  if (run.summary.is_object() && run.summary.contains("trainer") && run.summary["trainer"].is_object()) {
    const Json& t = run.summary["trainer"];
    run.tokens_per_step = t.value("batch_size", int64_t{0}) * t.value("grad_accum", int64_t{1}) *
                          t.value("seq_len", int64_t{0});
  }
  if (const fs::path p = dir / "compress_report.json"; fs::is_regular_file(p)) {
    run.compression = read_json_file(p);
    if (run.kind.empty()) run.kind = "compress";
  }
  LR_CHECK(!run.kind.empty(), NotFound, "report: ", dir.string(),
           " holds no run: expected metrics.jsonl (or run/metrics.jsonl), pretrain.json, finetune.json or "
           "compress_report.json");
  return run;
}

std::vector<RunData> read_runs(const std::vector<fs::path>& dirs) {
  LR_CHECK(!dirs.empty(), InvalidArgument, "report: give at least one run directory");
  std::vector<RunData> runs;
  std::map<std::string, int> count;
  for (const fs::path& d : dirs) {
    runs.push_back(read_run(d));
    ++count[runs.back().name];
  }
  // Runs laid out as METHOD/SETTING (lr3e-3_seed0 under each optimizer's directory) share their
  // directory's name: those are told apart by their parent's name first, then by a number.
  for (size_t i = 0; i < runs.size(); ++i) {
    if (count[runs[i].name] < 2) continue;
    const fs::path parent = fs::weakly_canonical(dirs[i]).parent_path().filename();
    if (!parent.empty()) runs[i].name = parent.string() + "/" + runs[i].name;
  }
  std::map<std::string, int> seen;
  for (RunData& r : runs)
    if (const int n = ++seen[r.name]; n > 1) r.name += str(" (", n, ")");
  return runs;
}

namespace {

// The series of `key` over every run that has it; x is the step, or tokens when `tokens`.
std::vector<Series> series_of(const std::vector<RunData>& runs, const std::string& key, bool tokens) {
  std::vector<Series> out;
  for (const RunData& r : runs) {
    const auto it = r.columns.find(key);
    if (it == r.columns.end() || (tokens && r.tokens_per_step <= 0)) continue;
    Series s;
    s.name = r.name;
    for (const auto& [step, value] : it->second) {
      s.x.push_back(tokens ? step * static_cast<double>(r.tokens_per_step) : step);
      s.y.push_back(value);
    }
    out.push_back(std::move(s));
  }
  return out;
}

bool all_positive(const std::vector<Series>& series) {
  for (const Series& s : series)
    for (double v : s.y)
      if (!(v > 0)) return false;
  return true;
}

// One figure: a titled SVG inside a <figure>, with an id the page's table of contents can link to.
std::string figure(const std::string& id, const std::string& svg) {
  return "<figure id=\"" + xml_escape(id) + "\">\n" + svg + "</figure>\n";
}

std::string runs_table(const std::vector<RunData>& runs) {
  std::string h =
      "<table class=\"runs\"><thead><tr><th>run</th><th>kind</th><th>steps</th><th>final loss</th>"
      "<th>validation NLL</th><th>validation perplexity</th><th>train "
      "seconds</th><th>directory</th></tr></thead>"
      "<tbody>\n";
  for (const RunData& r : runs) {
    const Json& s = r.summary;
    const auto number = [&](const Json& j, const char* key) {
      return j.is_object() && j.contains(key) && j[key].is_number() ? j[key].get<double>() : NAN;
    };
    const Json validation = s.is_object() && s.contains("validation") ? s["validation"] : Json();
    double steps = number(s, "steps");
    double loss = number(s, "final_loss");
    if (const auto it = r.columns.find("loss"); it != r.columns.end() && !it->second.empty()) {
      if (!std::isfinite(steps)) steps = it->second.back().first;
      if (!std::isfinite(loss)) loss = it->second.back().second;
    }
    h += "<tr><td>" + xml_escape(r.name) + "</td><td>" + xml_escape(r.kind) + "</td><td>" + fixed(steps, 0) +
         "</td><td>" + fixed(loss, 4) + "</td><td>" + fixed(number(validation, "nll"), 4) + "</td><td>" +
         fixed(number(validation, "perplexity"), 2) + "</td><td>" + fixed(number(s, "train_seconds"), 1) +
         "</td><td><code>" + xml_escape(r.dir.string()) + "</code></td></tr>\n";
  }
  return h + "</tbody></table>\n";
}

std::string memory_section(const std::vector<RunData>& runs) {
  std::vector<StackedBar> bars;
  for (const RunData& r : runs) {
    if (!r.summary.is_object() || !r.summary.contains("memory") || !r.summary["memory"].is_object()) continue;
    StackedBar b;
    b.label = r.name;
    for (const auto& [key, value] : r.summary["memory"].items())
      if (key != "total" && value.is_number()) b.parts.emplace_back(key, value.get<double>() / (1 << 20));
    if (!b.parts.empty()) bars.push_back(std::move(b));
  }
  if (bars.empty()) return "";
  return "<h2>Training memory</h2>\n<p>Bytes held by the weights, gradients, optimizer states and projectors "
         "at the first step (the trainer's accounting).</p>\n" +
         figure("memory", stacked_bar_svg(bars, "training memory by part", "MiB", 640));
}

std::string compression_section(const RunData& r) {
  if (!r.compression.is_object()) return "";
  const Json& report = r.compression.contains("report") && r.compression["report"].is_object()
                           ? r.compression["report"]
                           : r.compression;
  std::string h = "<h2>Compression: " + xml_escape(r.name) + "</h2>\n<p>";
  if (report.contains("method") && report["method"].is_string())
    h += "method <b>" + xml_escape(report["method"].get<std::string>()) + "</b>";
  for (const char* key : {"perplexity_before", "perplexity_after"})
    if (r.compression.contains(key) && r.compression[key].is_number())
      h += str(", ", key, " ", fixed(r.compression[key].get<double>(), 3));
  if (report.contains("param_reduction") && report["param_reduction"].is_number())
    h += ", parameters −" + fixed(100 * report["param_reduction"].get<double>(), 1) + "%";
  h += "</p>\n";
  if (!report.contains("slots") || !report["slots"].is_array()) return h;
  h += "<table class=\"slots\"><thead><tr><th>slot</th><th>kind</th><th>shape</th><th>rank</th>"
       "<th>params after / before</th><th>weight error</th><th>output error</th></tr></thead><tbody>\n";
  const auto cell = [](const Json& slot, const char* key, int decimals) {
    if (!slot.contains(key) || slot[key].is_null()) return std::string("–");
    const Json& v = slot[key];
    if (v.is_string()) return xml_escape(v.get<std::string>());
    if (v.is_number_integer()) return std::to_string(v.get<int64_t>());
    if (v.is_number()) return fixed(v.get<double>(), decimals);
    return xml_escape(v.dump());
  };
  for (const Json& slot : report["slots"]) {
    if (!slot.is_object()) continue;
    std::string shape = "–";
    if (slot.contains("shape") && slot["shape"].is_array() && slot["shape"].size() == 2)
      shape = str(slot["shape"][0].dump(), "×", slot["shape"][1].dump());
    std::string ratio = "–";
    if (slot.value("params_before", 0.0) > 0)
      ratio = fixed(slot.value("params_after", 0.0) / slot.value("params_before", 1.0), 3);
    h += "<tr><td><code>" + cell(slot, "name", 0) + "</code></td><td>" + cell(slot, "kind", 0) + "</td><td>" +
         shape + "</td><td>" + cell(slot, "rank", 0) + "</td><td>" + ratio + "</td><td>" +
         cell(slot, "weight_error", 5) + "</td><td>" + cell(slot, "output_error", 5) + "</td></tr>\n";
  }
  return h + "</tbody></table>\n";
}

constexpr const char* kStyle = R"css(
body { font-family: DejaVu Sans, Helvetica, Arial, sans-serif; margin: 24px; color: #222; max-width: 1400px; }
h1 { font-size: 22px; } h2 { font-size: 17px; margin-top: 28px; }
table { border-collapse: collapse; font-size: 13px; margin: 8px 0; }
th, td { border: 1px solid #ccc; padding: 3px 8px; text-align: right; }
th { background: #f0f0f0; } td:first-child, th:first-child { text-align: left; }
figure { display: inline-block; margin: 6px 12px 6px 0; vertical-align: top; }
code { font-size: 12px; }
)css";

}  // namespace

std::string run_report_html(const std::vector<RunData>& runs, const std::string& title) {
  LR_CHECK(!runs.empty(), InvalidArgument, "report: no run to show");
  std::string body = "<h1>" + xml_escape(title) + "</h1>\n" + runs_table(runs);

  // The curves: the trainer's columns first, then any other numeric column (classification's
  // validation accuracy, ...), each against the step; loss also against tokens.
  struct Plot {
    std::string key, label;
    bool log;
  };
  const std::vector<Plot> known = {{"loss", "training loss", false},
                                   {"lr", "learning rate", false},
                                   {"grad_norm", "gradient norm", true},
                                   {"tokens_per_s", "tokens / s", false}};
  std::set<std::string> keys;
  for (const RunData& r : runs)
    for (const auto& [key, unused] : r.columns) keys.insert(key);
  std::vector<Plot> plots;
  for (const Plot& p : known)
    if (keys.erase(p.key)) plots.push_back(p);
  for (const std::string& k : keys) plots.push_back({k, k, false});

  if (!plots.empty()) body += "<h2>Curves</h2>\n";
  for (const Plot& p : plots) {
    std::vector<Series> by_step = series_of(runs, p.key, false);
    const bool log = p.log && all_positive(by_step);
    LinePlotOptions by_step_options;
    by_step_options.title = p.label + " against step";
    by_step_options.x_label = "step";
    by_step_options.y_label = p.label;
    by_step_options.log_y = log;
    body += figure("plot-" + p.key + "-step", line_plot_svg(by_step, by_step_options));
    if (p.key == "loss") {
      std::vector<Series> by_tokens = series_of(runs, p.key, true);
      LinePlotOptions by_tokens_options;
      by_tokens_options.title = "training loss against tokens";
      by_tokens_options.x_label = "tokens";
      by_tokens_options.y_label = p.label;
      if (!by_tokens.empty()) body += figure("plot-loss-tokens", line_plot_svg(by_tokens, by_tokens_options));
    }
  }
  body += memory_section(runs);
  for (const RunData& r : runs) body += compression_section(r);

  return "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n"
         "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src "
         "'unsafe-inline'; "
         "img-src data:\">\n<link rel=\"icon\" href=\"data:,\">\n"
         "<title>" +
         xml_escape(title) + "</title>\n<style>" + kStyle + "</style></head>\n<body>\n" + body +
         "</body></html>\n";
}

}  // namespace lowrank::analysis
