// `lowrank compress` (post-training compression into a new model directory); see
// src/lowrank/compress/pipeline.h and docs/compression.md. `lowrank export` is in export.cpp.
#include <cstdio>
#include <iostream>

#include "apps/lowrank/verbs.h"
#include "lowrank/compress/pipeline.h"
#include "lowrank/core/json.h"
#include "lowrank/core/log.h"
#include "lowrank/nn/run.h"

namespace lowrank::cli {

VerbRunner add_compress(CLI::App& app, const GlobalOptions& global) {
  auto* cmd =
      app.add_subcommand("compress",
                         "Compress a model's linear slots (SVD family, WeLore, INT4/INT8, "
                         "SVDQuant, 2:4, robust PCA; EoRA compensation) or its KV cache (MatryoshkaKV)");
  struct Args {
    compress::RunOptions run;
    std::string model, out, calib, eval, distill, dtype = "float32", method_options;
  };
  auto args = std::make_shared<Args>();
  compress::CompressOptions& c = args->run.compress;
  cmd->add_option("--model", args->model,
                  "HF model directory: dense, or factored for rtn (LoRD + INT4: quantises U and V)")
      ->required();
  cmd->add_option("--method", c.method,
                  "svd, asvd, fwsvd, svd_llm, afm, pela, welore, rtn, svdquant, prune24, rpca, matryoshka_kv")
      ->capture_default_str();
  cmd->add_option("--ratio", c.ratio, "Parameter reduction in (0, 1) (low-rank methods)");
  cmd->add_option(
      "--rank", c.rank,
      "Uniform rank (low-rank methods; svdquant's branch rank, default 32; matryoshka_kv: per KV head)");
  cmd->add_option("--kv-ratio", c.kv_ratio, "matryoshka_kv: fraction of the KV cache removed, in [0, 1)");
  cmd->add_option("--bits", c.bits, "Quantisation bits: 4 or 8 (rtn, svdquant)")->capture_default_str();
  cmd->add_option("--group-size", c.group_size, "Input channels per quantisation scale")
      ->capture_default_str();
  cmd->add_option("--act-bits", c.act_bits,
                  "Activation bits: 16 (float) or 4 (INT4 per token and group, W4A4; rtn, svdquant)")
      ->capture_default_str();
  cmd->add_option("--alpha", c.alpha,
                  "asvd / fwsvd exponent (default 0.5 / 1.0); pela: feature-distillation weight (1.0)");
  cmd->add_option("--beta", c.beta, "pela: weight-perturbation weight (1.0)");
  cmd->add_option("--distill-data", args->distill,
                  "pela: token dataset directory or text file of the intermediate pre-training");
  cmd->add_option("--distill-steps", args->run.distill_steps, "pela: intermediate pre-training steps (300)");
  cmd->add_option("--tau", c.tau, "welore: the normalised-spectrum threshold instead of --ratio");
  cmd->add_option("--compensate", c.compensation, "Add a low-rank compensation: eora or svd");
  cmd->add_option("--compensation-rank", c.compensation_rank, "Rank of the compensation");
  cmd->add_option("--targets", c.targets, "Slots or module names to compress (default: every decoder slot)");
  cmd->add_flag("!--no-share-inputs", c.share_inputs,
                "svdquant: a separate branch per slot instead of one per "
                "shared input (q/k/v, gate/up)");
  cmd->add_option("--method-options", args->method_options,
                  "Extra method options as JSON (rpca: lambda, max_iters; "
                  "svdquant: grid, max_iters, smooth_only, calib_tokens)");
  cmd->add_option("--calib-data", args->calib,
                  "Calibration data: token dataset directory (train split) or text file");
  cmd->add_option("--calib-samples", args->run.calib_samples, "Calibration sequences")->capture_default_str();
  cmd->add_option("--seq-len", args->run.seq_len, "Calibration sequence length")->capture_default_str();
  cmd->add_option("--eval-data", args->eval, "Perplexity before and after on this data (validation split)");
  cmd->add_option("--eval-max-tokens", args->run.eval_max_tokens, "Score at most this many tokens");
  cmd->add_option("--dtype", args->dtype, "Dtype of the written floating tensors")->capture_default_str();
  cmd->add_option("--out", args->out, "New output directory")->required();
  return [args, &global] {
    compress::RunOptions o = args->run;
    o.model = args->model;
    o.out = args->out;
    o.calib_data = args->calib;
    o.eval_data = args->eval;
    o.distill_data = args->distill;
    o.save_dtype = nn::parse_dtype(args->dtype);
    o.progress = !global.quiet && !global.json;
    if (!args->method_options.empty())
      o.compress.method_options = parse_json(args->method_options, "--method-options");
    const compress::RunResult r = compress::run(o);
    if (global.json) {
      std::cout << r.to_json().dump(2) << "\n";
      return;
    }
    const compress::CompressReport& rep = r.report;
    if (rep.method == "matryoshka_kv") {  // the cache, not the weights: its bytes per position
      std::printf("matryoshka_kv: KV cache bytes per position (16-bit) %lld -> %lld (%.3fx)\n",
                  static_cast<long long>(rep.bytes_before), static_cast<long long>(rep.bytes_after),
                  static_cast<double>(rep.bytes_after) / static_cast<double>(rep.bytes_before));
      if (r.perplexity_before && r.perplexity_after)
        std::printf("perplexity %.4f -> %.4f\n", *r.perplexity_before, *r.perplexity_after);
      std::printf("wrote %s (lowrank_config.json, matryoshka_kv.safetensors, compress_report.json)\n",
                  r.out.c_str());
      return;
    }
    std::printf(
        "%s%s%s: %zu slots, parameters %lld -> %lld (%.1f%% fewer), 16-bit bytes %lld -> %lld (%.3fx)\n",
        rep.method.c_str(), rep.compensation.empty() ? "" : " + ", rep.compensation.c_str(), rep.slots.size(),
        static_cast<long long>(rep.params_before), static_cast<long long>(rep.params_after),
        100.0 * (1.0 - static_cast<double>(rep.params_after) / static_cast<double>(rep.params_before)),
        static_cast<long long>(rep.bytes_before), static_cast<long long>(rep.bytes_after),
        static_cast<double>(rep.bytes_after) / static_cast<double>(rep.bytes_before));
    if (r.perplexity_before && r.perplexity_after)
      std::printf("perplexity %.4f -> %.4f\n", *r.perplexity_before, *r.perplexity_after);
    std::printf("wrote %s (lowrank_config.json, compress_report.json, compress_report.svg)\n", r.out.c_str());
  };
}

}  // namespace lowrank::cli
