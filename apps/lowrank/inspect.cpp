// `lowrank inspect PATH`: tensors, dtypes, shapes, bytes and totals of a safetensors file or an
// HF model directory, with a config summary when present; of a GGUF file, its metadata and tensors.
#include <iostream>

#include "apps/lowrank/verbs.h"
#include "lowrank/analysis/inspect.h"
#include "lowrank/compress/gguf_export.h"

namespace lowrank::cli {

VerbRunner add_inspect(CLI::App& app, const GlobalOptions& global) {
  auto* cmd = app.add_subcommand(
      "inspect", "Show the tensors of a safetensors file, an HF model directory or a GGUF file");
  auto path = std::make_shared<std::string>();
  cmd->add_option("PATH", *path, "A .safetensors file, an index .json, a model directory, or a .gguf file")
      ->required();
  return [path, &global] {
    if (std::filesystem::path(*path).extension() == ".gguf") {
      const OrderedJson report = compress::inspect_gguf(*path);
      std::cout << (global.json ? report.dump(2) + "\n" : compress::format_gguf_inspect(report));
      return;
    }
    OrderedJson report = analysis::inspect_path(*path);
    if (global.json)
      std::cout << report.dump(2) << "\n";
    else
      std::cout << analysis::format_inspect(report);
  };
}

}  // namespace lowrank::cli
