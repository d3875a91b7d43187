#include "apps/lowrank/verbs.h"
namespace lowrank::cli {
VerbRunner add_inspect(CLI::App& app, const GlobalOptions&) {
  app.add_subcommand("inspect", "x");
  return [] {};
}
VerbRunner add_analyze(CLI::App& app, const GlobalOptions&) {
  app.add_subcommand("analyze", "x");
  return [] {};
}
}  // namespace lowrank::cli
