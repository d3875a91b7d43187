// `lowrank repro`: the reproductions linked into the binary.
//   lowrank repro kernels NAME|all [--quick] [--seeds N] [--out DIR]
// runs the kernel-methods rows of repro/kernels/ (repro/kernels/repro.h), prints each claim beside
// the paper's with "holds" / "does not hold" and the reason, and writes DIR/<name>.json (+ <name>.svg
// where the row draws a curve). repro/kernels/run runs them all at full size into
// repro/kernels/results/; repro/kernels/table.py builds results.md from those files.
#include <chrono>
#include <filesystem>
#include <iostream>
#include <memory>

#include "apps/lowrank/verbs.h"
#include "lowrank/core/error.h"
#include "lowrank/core/file.h"
#include "lowrank/core/json.h"
#include "repro/kernels/repro.h"

namespace lowrank::cli {
namespace fs = std::filesystem;

namespace {

struct KernelReproFlags {
  std::string name, out = "runs/repro-kernels";
  bool quick = false;
  int64_t seeds = 3;
};

OrderedJson claim_json(const repro_kernels::Claim& c) {
  return {{"id", c.id},       {"claim", c.claim},   {"paper", c.paper},
          {"holds", c.holds}, {"reason", c.reason}, {"robust_at_quick", c.robust_at_quick}};
}

OrderedJson table_json(const repro_kernels::Table& t) {
  OrderedJson rows = OrderedJson::array();
  for (const auto& row : t.rows) rows.push_back(OrderedJson(row));
  return {{"title", t.title}, {"columns", t.columns}, {"rows", rows}};
}

void run_kernel_repros(const KernelReproFlags& flags, const GlobalOptions& global) {
  LR_CHECK(flags.seeds >= 1, InvalidArgument, "--seeds must be >= 1, got ", flags.seeds);
  const auto& all = repro_kernels::kernel_repros();
  std::vector<const repro_kernels::KernelRepro*> chosen;
  std::string known;
  for (const auto& r : all) {
    known += (known.empty() ? "" : ", ") + r.name;
    if (flags.name == "all" || flags.name == r.name) chosen.push_back(&r);
  }
  LR_CHECK(!chosen.empty(), InvalidArgument, "unknown kernel reproduction \"", flags.name,
           "\" (known: ", known, ", or all)");
  fs::create_directories(flags.out);
  OrderedJson summary = OrderedJson::array();
  for (const auto* repro : chosen) {
    if (!global.json) std::cout << "== " << repro->name << ": " << repro->title << "\n" << std::flush;
    const auto start = std::chrono::steady_clock::now();
    const repro_kernels::ReproResult result = repro->run({flags.quick, flags.seeds});
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    OrderedJson row = {
        {"name", repro->name},   {"title", repro->title},          {"paper_claim", repro->paper_claim},
        {"setup", result.setup}, {"quick", flags.quick},           {"seeds", flags.seeds},
        {"seconds", seconds},    {"claims", OrderedJson::array()}, {"tables", OrderedJson::array()}};
    for (const auto& c : result.claims) row["claims"].push_back(claim_json(c));
    for (const auto& t : result.tables) row["tables"].push_back(table_json(t));
    if (!result.svg.empty()) {
      const fs::path svg = fs::path(flags.out) / (repro->name + ".svg");
      write_file_atomic(svg, result.svg);
      row["svg"] = svg.filename().string();
    }
    write_json_file(fs::path(flags.out) / (repro->name + ".json"), row);
    summary.push_back(row);
    if (global.json) continue;
    std::cout << "   " << result.setup << " (" << static_cast<int>(seconds + 0.5) << " s)\n";
    for (const auto& c : result.claims) {
      std::cout << "   [" << (c.holds ? "holds" : "does not hold") << "] " << c.claim << "\n"
                << "      paper: " << c.paper << "\n"
                << "      here:  " << c.reason << "\n";
    }
    std::cout << "   -> " << (fs::path(flags.out) / (repro->name + ".json")).string() << "\n";
  }
  if (global.json) std::cout << summary.dump(2) << "\n";
}

}  // namespace

VerbRunner add_repro(CLI::App& app, const GlobalOptions& global) {
  auto* cmd = app.add_subcommand("repro", "Reproductions linked into the binary (repro/kernels/README.md)");
  cmd->require_subcommand(1);
  auto flags = std::make_shared<KernelReproFlags>();
  std::string names;
  for (const auto& r : repro_kernels::kernel_repros()) names += (names.empty() ? "" : "|") + r.name;
  auto* kernels =
      cmd->add_subcommand("kernels", "The kernel-methods papers' claims, checked (docs/kernel_methods.md)");
  kernels->add_option("name", flags->name, "Row to run: " + names + "|all")->required();
  kernels->add_flag("--quick", flags->quick, "Tiny sizes (seconds per row): the robust orderings only");
  kernels->add_option("--seeds", flags->seeds, "Independent draws averaged per row")->capture_default_str();
  kernels->add_option("--out", flags->out, "Directory for <name>.json and <name>.svg")->capture_default_str();
  return [kernels, flags, &global] {
    if (kernels->parsed()) run_kernel_repros(*flags, global);
  };
}

}  // namespace lowrank::cli
