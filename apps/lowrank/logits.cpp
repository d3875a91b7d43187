// Placeholder: replaced by the logits verb.
#include "apps/lowrank/verbs.h"
namespace lowrank::cli {
VerbRunner add_logits(CLI::App& app, const GlobalOptions&) {
  app.add_subcommand("logits", "Run a model on input ids and write the logits (not built yet)");
  return [] {};
}
VerbRunner add_generate(CLI::App& app, const GlobalOptions&) {
  app.add_subcommand("generate", "Generate text from a prompt (not built yet)");
  return [] {};
}
}  // namespace lowrank::cli
