// lowrank: the command-line tool. Maps errors to exit codes at this edge only:
// 0 success, 1 user error (lowrank::Error, bad flags), 2 internal error.
#include <cstdio>
#include <iostream>
#include <map>
#include <string>

#include <ATen/Parallel.h>
#include <c10/util/Exception.h>
#include <torch/headeronly/version.h>

#include "apps/lowrank/dist_flags.h"
#include "apps/lowrank/verbs.h"
#include "lowrank/core/error.h"
#include "lowrank/core/log.h"
#include "lowrank/core/process.h"
#include "lowrank/core/progress.h"
#include "lowrank/core/threads.h"
#include "lowrank/mix/registry.h"
#include "lowrank/version.h"

namespace {

void print_version(bool verbose) {
  std::printf("lowrank %s\n", LOWRANK_VERSION);
  if (!verbose) return;
  std::printf("libtorch %s\n", TORCH_VERSION);
#ifdef LOWRANK_WITH_CUDA
  std::printf("CUDA: built with CUDA kernels\n");
#else
  std::printf("CUDA: not built (CPU only)\n");
#endif
  std::printf("threads: %s\n", lowrank::thread_summary().c_str());
  std::printf("%s", at::get_parallel_info().c_str());
}

// The error that ends the program: logged, and echoed to the terminal by a data-parallel rank
// whose log went to a file (dist_flags.h).
void report_error(const std::string& message) {
  lowrank::log::write(lowrank::log::Level::kError, message);
  lowrank::cli::echo_error_to_terminal(message);
}

}  // namespace

int main(int argc, char** argv) {
  using namespace lowrank;
  keep_freed_memory();
  cli::set_command_line(argc, argv);  // `--nproc N` re-runs it as the ranks
  CLI::App app{"lowrank: train, adapt, compress and serve transformers through low-rank structure"};
  app.require_subcommand(0, 1);
  cli::GlobalOptions global;
  bool version = false;
  app.add_flag("--version", version, "Print the version (with --verbose: libtorch, CUDA, threads)");
  app.add_flag("--json", global.json, "Machine-readable JSON on stdout")->trigger_on_parse();
  app.add_flag("-q,--quiet", global.quiet, "No progress bars; warnings and errors only");
  app.add_flag("-v,--verbose", global.verbose, "Debug logging");
  app.add_option("--threads", global.threads, "Intra-op threads (default: all available cores)")
      ->check(CLI::PositiveNumber);
  // Global flags are accepted after the verb as well.
  app.fallthrough();

  std::map<CLI::App*, cli::VerbRunner> runners;
  for (cli::VerbFactory add :
       {&cli::add_inspect,  &cli::add_analyze,  &cli::add_methods,  &cli::add_tokenize, &cli::add_logits,
        &cli::add_generate, &cli::add_data,     &cli::add_pretrain, &cli::add_eval,     &cli::add_merge,
        &cli::add_extract,  &cli::add_finetune, &cli::add_compress, &cli::add_export,   &cli::add_serve,
        &cli::add_task,     &cli::add_report,   &cli::add_kernel,   &cli::add_repro,    &cli::add_spgemm,
        &cli::add_wave,     &cli::add_ctr,      &cli::add_retrieve}) {
    cli::VerbRunner run = add(app, global);
    runners[app.get_subcommands({}).back()] = std::move(run);
  }

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 1;
  }

  try {
    if (global.verbose) log::set_level(log::Level::kDebug);
    if (global.quiet) log::set_level(log::Level::kWarn);
    ProgressBar::set_enabled(!global.quiet);
    configure_threads(global.threads);
    // Fill the mixer registry before any verb reads a config that names a mix/ mixer.
    mix::registry();
    if (version) {
      print_version(global.verbose);
      return 0;
    }
    auto chosen = app.get_subcommands();
    if (chosen.empty()) {
      std::cout << app.help();
      return 0;
    }
    runners.at(chosen.front())();
    return 0;
  } catch (const Error& e) {
    report_error(e.what());
    return e.is_user_error() ? 1 : 2;
  } catch (const c10::Error& e) {
    report_error(str("internal error (libtorch): ", e.what_without_backtrace()));
    return 2;
  } catch (const std::exception& e) {
    report_error(str("internal error: ", e.what()));
    return 2;
  }
}
