// `lowrank inspect PATH`: tensors, dtypes, shapes, bytes and totals of a safetensors file or an
// HF model directory, with a config summary when present.
#include <iostream>

#include "apps/lowrank/verbs.h"
#include "lowrank/analysis/inspect.h"

namespace lowrank::cli {

VerbRunner add_inspect(CLI::App& app, const GlobalOptions& global) {
  auto* cmd =
      app.add_subcommand("inspect", "Show the tensors of a safetensors file or an HF model directory");
  auto path = std::make_shared<std::string>();
  cmd->add_option("PATH", *path, "A .safetensors file, an index .json, or a model directory")->required();
  return [path, &global] {
    OrderedJson report = analysis::inspect_path(*path);
    if (global.json)
      std::cout << report.dump(2) << "\n";
    else
      std::cout << analysis::format_inspect(report);
  };
}

}  // namespace lowrank::cli
