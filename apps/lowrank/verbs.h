// The verb table of the `lowrank` tool. Each verb lives in its own file, parses its flags into
// the library's options and calls one library entry point; no math or format logic here.
#pragma once

#include <functional>
#include <iostream>
#include <string>

#include <CLI/CLI.hpp>

#include "lowrank/core/json.h"

namespace lowrank::cli {

// Options every verb shares.
struct GlobalOptions {
  bool json = false;     // machine-readable output on stdout
  bool quiet = false;    // no progress bars, warnings only
  bool verbose = false;  // debug logging
  int threads = 0;       // 0: all available cores
};

// A verb's result: `report` as JSON with --json, `text` otherwise, nothing with --quiet.
inline void print_report(const OrderedJson& report, const GlobalOptions& global, const std::string& text) {
  if (global.json)
    std::cout << report.dump(2) << "\n";
  else if (!global.quiet)
    std::cout << text;
}

// Adds a subcommand to `app`; the returned callback runs it after parsing.
using VerbRunner = std::function<void()>;
using VerbFactory = VerbRunner (*)(CLI::App& app, const GlobalOptions& global);

VerbRunner add_inspect(CLI::App& app, const GlobalOptions& global);
VerbRunner add_analyze(CLI::App& app, const GlobalOptions& global);
VerbRunner add_methods(CLI::App& app, const GlobalOptions& global);
VerbRunner add_tokenize(CLI::App& app, const GlobalOptions& global);
VerbRunner add_logits(CLI::App& app, const GlobalOptions& global);
VerbRunner add_generate(CLI::App& app, const GlobalOptions& global);
VerbRunner add_pretrain(CLI::App& app, const GlobalOptions& global);
VerbRunner add_eval(CLI::App& app, const GlobalOptions& global);
VerbRunner add_merge(CLI::App& app, const GlobalOptions& global);
VerbRunner add_extract(CLI::App& app, const GlobalOptions& global);
VerbRunner add_finetune(CLI::App& app, const GlobalOptions& global);
VerbRunner add_data(CLI::App& app, const GlobalOptions& global);
VerbRunner add_compress(CLI::App& app, const GlobalOptions& global);
VerbRunner add_export(CLI::App& app, const GlobalOptions& global);
VerbRunner add_serve(CLI::App& app, const GlobalOptions& global);
VerbRunner add_task(CLI::App& app, const GlobalOptions& global);
VerbRunner add_report(CLI::App& app, const GlobalOptions& global);
VerbRunner add_kernel(CLI::App& app, const GlobalOptions& global);
VerbRunner add_repro(CLI::App& app, const GlobalOptions& global);
VerbRunner add_spgemm(CLI::App& app, const GlobalOptions& global);
VerbRunner add_wave(CLI::App& app, const GlobalOptions& global);
VerbRunner add_ctr(CLI::App& app, const GlobalOptions& global);
VerbRunner add_retrieve(CLI::App& app, const GlobalOptions& global);

}  // namespace lowrank::cli
