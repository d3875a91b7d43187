// `lowrank eval --model DIR --data DIR|TEXTFILE [--seq-len N] [--stride S] [--autocast bf16|fp16]`:
// sliding-window perplexity (Hugging Face's strided method) with a 95% interval over documents (token
// datasets) or windows (text files); see src/lowrank/eval/perplexity.h and docs/training.md. `lowrank eval
// --model DIR --task DIR [--split test]`: a sequence classifier's accuracy on a generated task, with a 95%
// Wilson interval (src/lowrank/train/classify.h, docs/tasks.md).
#include <cstdio>
#include <filesystem>
#include <iostream>

#include "apps/lowrank/model_flags.h"
#include "apps/lowrank/verbs.h"
#include "lowrank/core/error.h"
#include "lowrank/core/json.h"
#include "lowrank/data/tasks/task_format.h"
#include "lowrank/eval/perplexity.h"
#include "lowrank/nn/autocast.h"
#include "lowrank/nn/classifier.h"
#include "lowrank/nn/image_classifier.h"
#include "lowrank/nn/run.h"
#include "lowrank/train/classify.h"

namespace lowrank::cli {

VerbRunner add_eval(CLI::App& app, const GlobalOptions& global) {
  auto* cmd = app.add_subcommand("eval", "Perplexity of a model on a token dataset or a text file");
  struct Args {
    ModelFlags model;
    std::string data, task, split = "validation", autocast;
    int64_t seq_len = 0, stride = 0, batch = 8, max_tokens = 0;
  };
  auto args = std::make_shared<Args>();
  args->model.add_model(*cmd, "HF model directory (config.json, safetensors, tokenizer.json)");
  cmd->add_option("--data", args->data,
                  "A token dataset directory (lowrank data prepare) or a UTF-8 text file (tokenized with the "
                  "model's tokenizer.json)");
  cmd->add_option("--task", args->task,
                  "A task directory (lowrank task generate): the accuracy of a classifier "
                  "(LowrankMixerForSequenceClassification) on its --split (train, val, test; default test)");
  cmd->add_option("--split", args->split,
                  "Split to score (dataset directories: validation; tasks: test unless given)")
      ->capture_default_str();
  cmd->add_option("--seq-len", args->seq_len, "Window length (default: the model's context, at most 1024)");
  cmd->add_option("--stride", args->stride, "Window step (default: seq-len / 2)");
  cmd->add_option("--batch", args->batch, "Windows per forward pass")->capture_default_str();
  cmd->add_option("--max-tokens", args->max_tokens,
                  "Score at most this many tokens (default: all; with --task: this many examples)");
  args->model.add_compute(*cmd);
  cmd->add_option("--autocast", args->autocast,
                  "bf16 or fp16: perplexity with the forward passes under autocast (a float32 model's matrix "
                  "products in the half type), the mixed-precision evaluation mode")
      ->check(CLI::IsMember({"bf16", "fp16"}));
  return [args, cmd, &global] {
    LR_CHECK(args->data.empty() != args->task.empty(), InvalidArgument,
             "eval: give --data (perplexity) or --task (classification accuracy), one of them");
    if (!args->task.empty()) {
      LR_CHECK(args->autocast.empty(), InvalidArgument,
               "eval: --autocast applies to perplexity (--data), not to --task");
      const auto task = data::tasks::TaskDataset::open(args->task);
      std::string split = cmd->get_option("--split")->count() > 0 ? args->split : "test";
      if (split == "validation") split = "val";
      data::tasks::Split which = data::tasks::Split::kTest;
      bool known = false;
      for (auto s : data::tasks::kSplits) {
        if (data::tasks::split_name(s) != split) continue;
        which = s;
        known = true;
      }
      LR_CHECK(known, InvalidArgument, "--split \"", split, "\" is not a task split (train, val, test)");
      const nn::LoadOptions load{nn::parse_dtype(args->model.dtype), nn::parse_device(args->model.device)};
      const std::filesystem::path config = std::filesystem::path(args->model.model) / "config.json";
      // Which classifier the directory holds, from one read of its config.json.
      const Json config_json = std::filesystem::exists(config) ? read_json_file(config) : Json();
      const bool has_config = !config_json.is_null();
      const bool image = has_config && nn::is_image_classifier_config(config_json);
      const bool convnet = has_config && nn::is_convnet_config(config_json);
      const bool lie_group = has_config && nn::is_lie_group_classifier_config(config_json);
      const train::AccuracyResult r =
          lie_group ? train::evaluate_accuracy(nn::LieGroupClassifier::load(args->model.model), task, which,
                                               args->batch, args->max_tokens)
          : convnet ? train::evaluate_accuracy(nn::ConvNet::load(args->model.model, load), task, which,
                                               args->batch, args->max_tokens)
          : image ? train::evaluate_accuracy(nn::ImageClassifier::load(args->model.model, load), task, which,
                                             args->batch, args->max_tokens)
                  : train::evaluate_accuracy(nn::SequenceClassifier::load(args->model.model, load), task,
                                             which, args->batch, args->max_tokens);
      if (global.json) {
        OrderedJson j = r.to_json();
        j["split"] = split;
        std::cout << j.dump(2) << "\n";
        return;
      }
      std::printf("accuracy %.4f  (%lld / %lld on %s; 95%% Wilson CI %.4f .. %.4f)\n", r.accuracy,
                  static_cast<long long>(r.correct), static_cast<long long>(r.examples), split.c_str(),
                  r.ci_low, r.ci_high);
      return;
    }
    nn::Model model = args->model.load();
    nn::check_autocast_device(args->autocast, model.device());
    LR_CHECK(args->autocast.empty() || model.dtype() == at::kFloat, InvalidArgument, "eval: --autocast ",
             args->autocast, " runs a float32 model's forward passes in the half type; this model is ",
             c10::toString(model.dtype()), " (--dtype)");
    const eval::EvalTokens data =
        eval::load_eval_tokens(args->data, args->model.model, args->split, args->max_tokens);
    eval::PerplexityOptions o;
    o.seq_len = args->seq_len;
    o.stride = args->stride;
    o.batch_size = args->batch;
    const nn::AutocastScope autocast(model.device().type(), nn::autocast_dtype(args->autocast));
    const eval::PerplexityResult r = eval::perplexity(model, data.tokens, o, data.document_starts);
    if (global.json) {
      std::cout << r.to_json().dump(2) << "\n";
      return;
    }
    std::printf("perplexity %.4f  (95%% CI %.4f .. %.4f over %lld %ss)\n", r.perplexity, r.ci_low, r.ci_high,
                static_cast<long long>(r.ci_samples), r.ci_unit.c_str());
    std::printf("nll %.6f nats/token over %lld tokens in %lld windows, seq-len %lld, stride %lld\n", r.nll,
                static_cast<long long>(r.tokens), static_cast<long long>(r.chunks),
                static_cast<long long>(r.seq_len), static_cast<long long>(r.stride));
  };
}

}  // namespace lowrank::cli
