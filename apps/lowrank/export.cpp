// `lowrank export`: a plain dense HF model from a compressed one (--dense; see
// src/lowrank/compress/pipeline.h), or a model or LoRA adapter as a GGUF file for llama.cpp and
// Ollama (--gguf; see src/lowrank/compress/gguf_export.h and docs/gguf.md), or a ConvNet's deploy
// form, its dilated-reparam branches and BatchNorms merged (--deploy; src/lowrank/nn/convnet.h).
#include <iostream>

#include "apps/lowrank/verbs.h"
#include "lowrank/compress/gguf_export.h"
#include "lowrank/compress/pipeline.h"
#include "lowrank/core/json.h"
#include "lowrank/core/log.h"
#include "lowrank/nn/convnet.h"
#include "lowrank/nn/run.h"

namespace lowrank::cli {

VerbRunner add_export(CLI::App& app, const GlobalOptions& global) {
  auto* cmd = app.add_subcommand(
      "export",
      "Write a compressed model as a plain dense HF model (--dense), or a model or LoRA as GGUF (--gguf)");
  struct Args {
    std::string model, out, adapter, dtype = "float32", type = "f32";
    bool dense = false, gguf = false, deploy = false;
  };
  auto args = std::make_shared<Args>();
  cmd->add_option("--model", args->model,
                  "Model directory (compressed or plain); with --adapter, the base model")
      ->required();
  cmd->add_flag("--dense", args->dense,
                "Write a plain HF model, every compressed slot materialised as a dense weight");
  cmd->add_flag("--gguf", args->gguf, "Write a GGUF file (llama / qwen2) that llama.cpp and Ollama load");
  cmd->add_flag("--deploy", args->deploy,
                "Write a ConvNet's deploy form: dilated-reparam branches and BatchNorms merged into one "
                "depthwise conv per block (same eval outputs, faster inference)");
  auto* dtype =
      cmd->add_option("--dtype", args->dtype, "--dense: dtype of the written weights")->capture_default_str();
  auto* type =
      cmd->add_option("--type", args->type,
                      "--gguf: type of the 2-D weights: f32, f16, bf16, q8_0 or q4_0 (norms and biases "
                      "stay f32)")
          ->capture_default_str();
  auto* adapter =
      cmd->add_option("--adapter", args->adapter,
                      "--gguf: a PEFT LoRA directory; writes a GGUF LoRA adapter for --model instead");
  cmd->add_option("--out", args->out, "--dense, --deploy: new output directory; --gguf: the .gguf file")
      ->required();
  return [args, &global, dtype, type, adapter] {
    LR_CHECK(int{args->dense} + int{args->gguf} + int{args->deploy} == 1, InvalidArgument,
             "export: give exactly one of --dense, --gguf and --deploy");
    if (args->deploy) {
      LR_CHECK(dtype->count() == 0 && type->count() == 0 && adapter->count() == 0, InvalidArgument,
               "export --deploy: --dtype, --type and --adapter belong to --dense and --gguf");
      LR_CHECK(nn::is_convnet_config(read_json_file(std::filesystem::path(args->model) / "config.json")),
               InvalidArgument, "export --deploy: ", args->model,
               " is not a LowrankConvNetForImageClassification model (only ConvNets have a deploy form)");
      const nn::ConvNet model = nn::ConvNet::load(args->model);
      const nn::ConvNet deployed = model.deploy();
      deployed.save(args->out, at::kFloat);
      const auto before = static_cast<int64_t>(model.named_tensors().size());
      const auto after = static_cast<int64_t>(deployed.named_tensors().size());
      if (global.json) {
        std::cout
            << OrderedJson{{"out", args->out}, {"tensors_before", before}, {"tensors_after", after}}.dump(2)
            << "\n";
        return;
      }
      log::info("deploy form: ", before, " tensors -> ", after, "; wrote ", args->out);
      return;
    }
    if (args->dense) {
      LR_CHECK(type->count() == 0 && adapter->count() == 0, InvalidArgument,
               "export --dense: --type and --adapter belong to --gguf");
      const int64_t n = compress::export_dense(args->model, args->out, nn::parse_dtype(args->dtype));
      if (global.json) {
        std::cout << OrderedJson{{"out", args->out}, {"materialised_slots", n}}.dump(2) << "\n";
        return;
      }
      log::info("materialised ", n, " compressed slot(s); wrote ", args->out);
      return;
    }
    LR_CHECK(dtype->count() == 0, InvalidArgument, "export --gguf: --dtype belongs to --dense; use --type");
    compress::GgufExportOptions o;
    o.model = args->model;
    o.adapter = args->adapter;
    o.out = args->out;
    o.type = gguf::tensor_type_from_name(args->type, "--type");
    const compress::GgufExportResult r = compress::export_gguf(o);
    if (global.json) {
      std::cout << r.to_json().dump(2) << "\n";
      return;
    }
    if (r.kind == "adapter") {
      std::cout << "wrote " << r.out.string() << ": GGUF LoRA adapter for " << r.architecture << ", "
                << r.tensors << " tensors (" << r.type << ")\n";
      return;
    }
    if (r.densified_slots > 0)
      std::cout << "densified " << r.densified_slots << " compressed slot(s)"
                << (r.compression.empty() ? "" : " (" + r.compression + ")")
                << ": written as dense weights, then encoded as " << r.type << "\n";
    std::cout << "wrote " << r.out.string() << ": " << r.architecture << ", " << r.tensors << " tensors ("
              << r.type << "), pre-tokenizer " << r.pre_tokenizer << "\n";
  };
}

}  // namespace lowrank::cli
