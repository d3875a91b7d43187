// `lowrank generate --model DIR (--prompt-ids 1,2,3 | --prompt TEXT) --max-new-tokens N
//  [--greedy | --temperature T --top-p P --top-k K --seed S] [--stop TEXT]... [--json]`: continues
// one or more prompts with a Llama-family model (greedy unless a sampling flag is given). The text
// comes from nn::generate's data::TextStream, the one the server uses: a --stop string is left out
// of it, and the text and finish_reason are those `lowrank serve` gives for the same request.
#include <filesystem>
#include <iostream>
#include <optional>
#include <sstream>
#include <string_view>

#include "apps/lowrank/model_flags.h"
#include "apps/lowrank/verbs.h"
#include "lowrank/core/json.h"
#include "lowrank/data/text_stream.h"
#include "lowrank/data/tokenizer.h"
#include "lowrank/nn/generate.h"

namespace lowrank::cli {
namespace {

std::vector<int64_t> parse_ids(const std::string& text) {
  std::vector<int64_t> ids;
  std::stringstream in(text);
  std::string item;
  while (std::getline(in, item, ',')) {
    size_t used = 0;
    int64_t id = -1;
    try {
      id = std::stoll(item, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    LR_CHECK(used > 0 && used == item.size() && id >= 0, InvalidArgument, "--prompt-ids: \"", item,
             "\" is not a token id (expected comma-separated non-negative integers)");
    ids.push_back(id);
  }
  LR_CHECK(!ids.empty(), InvalidArgument, "--prompt-ids: no ids in \"", text, "\"");
  return ids;
}

std::string join(const std::vector<int64_t>& ids) {
  std::string out;
  for (int64_t id : ids) out += str(out.empty() ? "" : ",", id);
  return out;
}

}  // namespace

VerbRunner add_generate(CLI::App& app, const GlobalOptions& global) {
  auto* cmd = app.add_subcommand("generate", "Generate a continuation of prompts (greedy or sampled)");
  struct Args {
    ModelFlags model;
    std::vector<std::string> prompt_ids, prompts, stop_strings;
    std::vector<int64_t> stop_ids;
    bool greedy = false, ignore_eos = false;
    std::optional<double> temperature, top_p;
    std::optional<int64_t> top_k;
    nn::GenerateOptions options;
  };
  auto args = std::make_shared<Args>();
  args->model.add_model(*cmd, "HF model directory");
  auto* ids_opt = cmd->add_option("--prompt-ids", args->prompt_ids,
                                  "Prompt token ids, comma-separated (repeatable: a batch)");
  auto* text_opt = cmd->add_option("--prompt", args->prompts,
                                   "Prompt text (repeatable; needs tokenizer.json in the model dir)");
  ids_opt->excludes(text_opt);
  cmd->add_option("--max-new-tokens", args->options.max_new_tokens, "Tokens to generate at most")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  auto* greedy =
      cmd->add_flag("--greedy", args->greedy, "Greedy decoding (the default without sampling flags)");
  auto* t = cmd->add_option("--temperature", args->temperature, "Sampling temperature (> 0)");
  auto* p = cmd->add_option("--top-p", args->top_p,
                            "Nucleus sampling: keep the top tokens of this probability mass");
  auto* k = cmd->add_option("--top-k", args->top_k, "Sample among the k most likely tokens (0: all)");
  for (auto* o : {t, p, k}) greedy->excludes(o);
  cmd->add_option("--seed", args->options.seed, "Sampling seed")->capture_default_str();
  cmd->add_option("--repetition-penalty", args->options.repetition_penalty,
                  "CTRL repetition penalty (1: off)")
      ->capture_default_str();
  cmd->add_option("--stop-id", args->stop_ids,
                  "Stop at this token id (repeatable; added to the model's eos)");
  cmd->add_option("--stop", args->stop_strings,
                  "Stop when the output contains this text, which is left out of it (repeatable; needs a "
                  "tokenizer)");
  cmd->add_flag("--ignore-eos", args->ignore_eos, "Do not stop at the model's eos token ids");
  args->model.add_compute(*cmd);

  return [args, &global] {
    LR_CHECK(!args->prompt_ids.empty() || !args->prompts.empty(), InvalidArgument,
             "give a prompt with --prompt-ids 1,2,3 or --prompt TEXT");
    const std::filesystem::path dir = args->model.model;
    nn::Model model = args->model.load();

    // The tokenizer is needed for text prompts and stop strings, optional otherwise.
    std::optional<data::Tokenizer> tokenizer;
    const bool has_tokenizer = std::filesystem::is_regular_file(dir / "tokenizer.json");
    if (has_tokenizer) tokenizer = data::Tokenizer::load(dir / "tokenizer.json");
    LR_CHECK(tokenizer || (args->prompts.empty() && args->stop_strings.empty()), NotFound, dir.string(),
             ": --prompt and --stop need tokenizer.json in the model directory; use --prompt-ids");

    std::vector<std::vector<int64_t>> prompts;
    for (const std::string& s : args->prompt_ids) prompts.push_back(parse_ids(s));
    for (const std::string& text : args->prompts) {
      std::vector<int32_t> ids = tokenizer->encode(text, /*add_special_tokens=*/true);
      prompts.emplace_back(ids.begin(), ids.end());
    }

    nn::GenerateOptions options = args->options;
    options.do_sample = !args->greedy && (args->temperature || args->top_p || args->top_k);
    options.temperature = args->temperature.value_or(1.0);
    options.top_p = args->top_p.value_or(1.0);
    options.top_k = args->top_k.value_or(0);
    if (!args->ignore_eos) options.stop_token_ids = nn::default_stop_token_ids(dir, model.config());
    options.stop_token_ids.insert(options.stop_token_ids.end(), args->stop_ids.begin(), args->stop_ids.end());
    options.stop_strings = args->stop_strings;
    if (model.config().pad_token_id) options.pad_token_id = *model.config().pad_token_id;
    if (tokenizer) options.decode = data::TextStream::decoder(*tokenizer);

    // Stream text as it is generated for one text prompt in human mode; id prompts print ids.
    const bool stream = !global.json && args->prompts.size() == 1 && args->prompt_ids.empty();
    if (stream) options.on_text = [](size_t, std::string_view text) { std::cout << text << std::flush; };

    const std::vector<nn::Generation> out = nn::generate(model, prompts, options);

    if (global.json) {
      OrderedJson gens = OrderedJson::array();
      for (size_t i = 0; i < out.size(); ++i) {
        OrderedJson g{{"prompt_ids", prompts[i]},
                      {"output_ids", out[i].tokens},
                      {"finish_reason", nn::finish_reason_name(out[i].finish_reason)}};
        if (tokenizer) g["text"] = out[i].text;
        gens.push_back(std::move(g));
      }
      std::cout << OrderedJson{{"model", args->model.model}, {"generations", gens}}.dump(2) << "\n";
      return;
    }
    if (stream) {
      std::cout << "\n";
      return;
    }
    for (size_t i = 0; i < out.size(); ++i) {
      std::cout << join(out[i].tokens);
      if (tokenizer) std::cout << "\t" << Json(out[i].text).dump();
      std::cout << "\n";
    }
  };
}

}  // namespace lowrank::cli
