// Placeholder: replaced by the tokenizer verb.
#include "apps/lowrank/verbs.h"
namespace lowrank::cli {
VerbRunner add_tokenize(CLI::App& app, const GlobalOptions&) {
  app.add_subcommand("tokenize", "Encode text to token ids or decode ids to text (not built yet)");
  return [] {};
}
}  // namespace lowrank::cli
