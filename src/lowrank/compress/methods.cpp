// The method registry, up-front validation and the model-level driver (compress/methods.h).
#include "lowrank/compress/methods.h"

#include <chrono>
#include <cmath>
#include <limits>
#include <set>

#include "lowrank/analysis/spectra.h"
#include "lowrank/compress/afm.h"
#include "lowrank/compress/pela.h"
#include "lowrank/compress/svdquant.h"
#include "lowrank/core/error.h"
#include "lowrank/core/log.h"
#include "lowrank/core/progress.h"

namespace lowrank::compress {

namespace {

using Ranks = Method::Ranks;

// The option help shared by several methods (the flags of `lowrank compress`).
const std::pair<std::string, std::string> kRatioOrRank{"ratio|rank",
                                                       "parameter reduction in (0, 1) or a uniform rank"};
const std::pair<std::string, std::string> kBits{"bits", "4 or 8 (default 4)"};
const std::pair<std::string, std::string> kGroupSize{"group-size", "input channels per scale (default 64)"};
const std::pair<std::string, std::string> kCalibData{"calib-data",
                                                     "required: calibration token dataset or text"};

}  // namespace

void register_builtin_methods(Registry<Method>& reg) {
  reg.add(
      {"svd",
       "truncated SVD per slot (LoRD; Greenformers' low-rank transformation after training), uniform rank "
       "or parameter ratio",
       "Kaushal et al., 2023, arXiv:2309.14021; Winata et al., 2020, arXiv:1910.13923",
       {kRatioOrRank}},
      {.ranks = Ranks::kUniform, .compress = compress_truncated_svd});
  reg.add({"asvd",
           "activation-aware SVD: S = diag(mean|x|^alpha), alpha 0.5",
           "Yuan et al., 2023, arXiv:2312.05821",
           {kRatioOrRank, {"alpha", "exponent (0.5)"}, kCalibData}},
          {.ranks = Ranks::kUniform, .needs_activations = true, .compress = compress_truncated_svd});
  reg.add({"fwsvd",
           "Fisher-weighted SVD: S = diag(fisher^alpha), alpha 1",
           "Hsu et al., 2022, ICLR",
           {kRatioOrRank, {"alpha", "exponent (1.0)"}, kCalibData}},
          {.ranks = Ranks::kUniform, .needs_fisher = true, .compress = compress_truncated_svd});
  reg.add({"svd_llm",
           "SVD-LLM truncation-aware whitening: S = chol(X X^T); optional closed-form update of U",
           "Wang et al., 2024, arXiv:2403.07378",
           {kRatioOrRank,
            {"method-options",
             "{\"update\": false} (true: refit U by least squares on each layer's inputs after the "
             "earlier layers are compressed, SVD-LLM's layer-wise closed-form update; one more "
             "calibration pass per decoder layer)"},
            kCalibData}},
          {.ranks = Ranks::kUniform, .needs_gram = true, .compress = compress_truncated_svd});
  reg.add(
      {"pela",
       "PELA: svd's factors (singular values split evenly), then intermediate pre-training of the compact "
       "model against the original: LM loss + alpha * feature distillation + beta * weight perturbation",
       "Guo et al., 2024, CVPR, arXiv:2310.10700",
       {kRatioOrRank,
        {"distill-data", "required: token dataset directory or text for the intermediate stage"},
        {"distill-steps", "intermediate steps (300)"},
        {"alpha", "feature-distillation weight (1.0)"},
        {"beta", "weight-perturbation weight (1.0)"},
        {"method-options",
         "{\"epsilon\": 1e-3, \"lr\": 1e-4, \"min_lr\", \"warmup_steps\": 10, \"batch_size\": 8, "
         "\"seq_len\": 128, \"seed\", \"checkpoint_every\", \"run_dir\"}"}}},
      {.ranks = Ranks::kUniform, .compress = compress_truncated_svd});
  reg.add(
      {"afm",
       "AFM: the top-k eigenvectors of the slot's output covariance W Cov(x) W^T; y ~ U_k U_k^T (y - mu) + "
       "mu, a low-rank operator with a bias",
       "Yu et al., 2024, KDD, arXiv:2405.18146",
       {kRatioOrRank, {"method-options", "{\"centred\": true} (false: E[y y^T], no bias)"}, kCalibData}},
      {.ranks = Ranks::kUniform, .needs_gram = true, .compress = compress_afm});
  reg.add(
      {"welore",
       "WeLore non-uniform ranks from the normalised spectrum (global tau)",
       "Jaiswal et al., 2024, arXiv:2407.11239",
       {{"ratio|tau", "parameter reduction (tau searched) or the threshold"},
        {"finetune", "lowrank finetune --method welore trains the low-rank factors (train_norms: true)"}}},
      {.ranks = Ranks::kSpectrum, .compress = compress_truncated_svd});
  reg.add({"rtn",
           "group-wise round-to-nearest INT4/INT8 (groups of 64 input channels; a factored slot: U and V)",
           "",
           {kBits,
            kGroupSize,
            {"act-bits", "16 (float activations; default) or 4 (INT4 per token: naive W4A4)"}}},
          {.quantizes = true, .compress = compress_rtn});
  reg.add({"svdquant",
           "SVDQuant: smoothing + 16-bit low-rank branch (rank 32) + 4-bit residual",
           "Li et al., 2024, arXiv:2411.05007",
           {kBits,
            kGroupSize,
            {"rank", "low-rank branch rank (default 32)"},
            {"act-bits",
             "16 (float activations, W4A16; default) or 4 (INT4 per token, groups of --group-size: W4A4)"},
            {"method-options",
             "{\"grid\": 20, \"max_iters\": 100, \"smooth_only\": false, \"calib_tokens\": 512} "
             "(smoothing grid, refit iterations; smooth_only: no branch, the smoothing "
             "baseline; calib_tokens: tokens kept to score W4A4)"},
            kCalibData}},
          {.needs_gram = true, .needs_activations = true, .quantizes = true, .compress = compress_svdquant});
  reg.add({"prune24", "2:4 magnitude pruning (two of every four input channels kept)", "", {}},
          {.compress = compress_prune24});
  reg.add({"rpca",
           "sparse + low-rank split by robust PCA (principal component pursuit)",
           "Candes et al., 2011, J. ACM 58(3)",
           {{"rank", "optional cap on the low-rank part's rank (default: its numerical rank)"},
            {"method-options", "{\"lambda\": 1/sqrt(max(m,n)), \"max_iters\": 500}"}}},
          {.compress = compress_rpca});
  // MatryoshkaKV compresses the KV cache, not a slot: `lowrank compress` runs it through
  // run_matryoshka_kv (compress/matryoshka_kv.h); it has no slot compressor.
  reg.add({"matryoshka_kv",
           "MatryoshkaKV: per KV head orthogonal PCA projections of the rotated keys and of the values; the "
           "cache keeps r of head_dim coordinates and attention runs in that space",
           "Lin et al., 2024, arXiv:2410.14731",
           {{"kv-ratio|rank", "fraction of the KV cache removed in [0, 1), or a uniform rank per head"},
            kCalibData,
            {"method-options",
             "{\"train_steps\": 0 (Matryoshka distillation steps after the PCA init), \"lr\": 1e-3, "
             "\"batch_size\": 2, \"kl_weight\": 0.25, \"ce_weight\": 0.75, \"seed\": 0, "
             "\"rank_search\": false (greedy per-head ranks under the --kv-ratio budget)}"}}},
          {});
}

namespace {

double frobenius(const at::Tensor& t) {
  return t.to(at::kDouble).norm().item<double>();
}

// tr(M H Mᵀ) for M [out, in], H [in, in].
double gram_quadratic(const at::Tensor& M, const at::Tensor& H) {
  const at::Tensor m = M.to(at::kDouble);
  return (at::matmul(m, H.to(at::kDouble)) * m).sum().item<double>();
}

// Logical parameters of an operator: floating tensors by element, packed weights by the weights
// they hold; index tensors are bookkeeping.
int64_t params_of(const nn::BaseOperator& op) {
  int64_t n = 0;
  for (const auto& [name, t] : op.tensors()) {
    if (t.is_floating_point())
      n += t.numel();
    else if (name.ends_with("qweight"))
      n += t.numel() * (t.scalar_type() == at::kByte ? 2 : 1);
  }
  return n;
}

// Every stored parameter: the slots' (logical, as params_of) and the rest (embedding, norms). A
// tied lm_head is the embedding and counts once.
int64_t model_params(const nn::Model& model) {
  int64_t n = 0;
  std::set<std::string> counted;
  for (const auto& [name, t] : model.named_tensors()) {
    const std::string prefix = name.substr(0, name.rfind('.'));
    if (const nn::LinearSlot* s = model.find_slot(prefix)) {
      if (counted.insert(prefix).second) n += params_of(s->base());
    } else {
      n += t.numel();
    }
  }
  return n;
}

bool matches(const std::string& slot, const std::string& target) {
  return slot == target || (slot.size() > target.size() && slot.ends_with(target) &&
                            slot[slot.size() - target.size() - 1] == '.');
}

std::string module_of(const std::string& slot) {
  const auto dot = slot.rfind('.');
  return dot == std::string::npos ? slot : slot.substr(dot + 1);
}

// Slots that read the same input inside one layer, in model order: {q, k, v} and {gate, up}.
std::vector<std::vector<size_t>> shared_input_groups(const std::vector<nn::LinearSlot*>& slots) {
  std::map<std::string, std::vector<size_t>> by_key;
  std::vector<std::string> order;
  for (size_t i = 0; i < slots.size(); ++i) {
    const std::string& name = slots[i]->name();
    const std::string module = module_of(name);
    std::string group;
    if (module == "q_proj" || module == "k_proj" || module == "v_proj") group = "qkv";
    if (module == "gate_proj" || module == "up_proj") group = "gate_up";
    const std::string key = group.empty() ? name : name.substr(0, name.rfind('.')) + "#" + group;
    if (!by_key.contains(key)) order.push_back(key);
    by_key[key].push_back(i);
  }
  std::vector<std::vector<size_t>> groups;
  for (const std::string& k : order) groups.push_back(by_key[k]);
  return groups;
}

ops::GroupQuantized rows_of(const ops::GroupQuantized& q, int64_t begin, int64_t count) {
  ops::GroupQuantized r = q;
  r.out_features = count;
  r.packed = q.packed.narrow(0, begin, count).contiguous();
  r.scales = q.scales.narrow(0, begin, count).contiguous();
  return r;
}

SvdQuantOptions svdquant_options(const CompressOptions& options) {
  SvdQuantOptions o;
  o.rank = options.rank > 0 ? options.rank : 32;
  o.bits = options.bits;
  o.group_size = options.group_size;
  o.grid = options.method_options.value("grid", o.grid);
  o.max_iters = options.method_options.value("max_iters", o.max_iters);
  if (options.method_options.value("smooth_only", false)) o.rank = 0;
  o.act_bits = options.act_bits;
  return o;
}

// SVDQuant over slots sharing one input: the rows of their weights stacked, one smoothing vector
// and down projection for all, the up projection and residual sliced per slot (deepcompressor's
// exclusive = false).
std::vector<std::shared_ptr<StoredOperator>> svdquant_group(const std::vector<SlotInput>& inputs,
                                                            const CompressOptions& options) {
  std::vector<at::Tensor> ws;
  for (const SlotInput& in : inputs) ws.push_back(in.weight);
  const SlotStatistics& st = *inputs.front().stats;
  const SvdQuantResult r = svdquant(at::cat(ws, 0), st.gram, st.absmax, svdquant_options(options), st.inputs);
  std::vector<std::shared_ptr<StoredOperator>> out;
  int64_t row = 0;
  for (const SlotInput& in : inputs) {
    const int64_t m = in.weight.size(0);
    const at::ScalarType dtype = in.weight.scalar_type();
    out.push_back(std::make_shared<SvdQuantOperator>(
        r.smooth.to(dtype), r.lora_up.narrow(0, row, m).to(dtype).contiguous(), r.lora_down.to(dtype),
        rows_of(r.residual, row, m), in.bias, options.act_bits));
    row += m;
  }
  return out;
}

}  // namespace

std::shared_ptr<StoredOperator> compress_svdquant(const SlotInput& in, const CompressOptions& options) {
  LR_CHECK(in.stats != nullptr && in.stats->gram.defined(), InvalidArgument,
           "svdquant needs calibration statistics (Gram and absmax) for slot ", in.name);
  return svdquant_group({in}, options).front();
}

const Registry<Method>& registry() {
  static const Registry<Method> instance = Registry<Method>::built("compression", register_builtin_methods);
  return instance;
}

const Method& find_method(const std::string& name) {
  return registry().factory(name);
}

int64_t rank_for_ratio(int64_t m, int64_t n, double ratio) {
  const double k =
      std::floor(static_cast<double>(m) * static_cast<double>(n) * (1 - ratio) / static_cast<double>(m + n));
  return std::max<int64_t>(1, static_cast<int64_t>(k));
}

std::vector<nn::LinearSlot*> target_slots(nn::Model& model, const CompressOptions& options) {
  std::vector<nn::LinearSlot*> out;
  std::set<std::string> unmatched(options.targets.begin(), options.targets.end());
  for (nn::LinearSlot* s : model.slots()) {
    bool take = options.targets.empty() && s->name() != "lm_head";
    for (const std::string& t : options.targets)
      if (matches(s->name(), t)) {
        take = true;
        unmatched.erase(t);
      }
    if (take) out.push_back(s);
  }
  LR_CHECK(unmatched.empty(), InvalidArgument, "--targets: \"", unmatched.empty() ? "" : *unmatched.begin(),
           "\" matches no slot of the model (slots are named like model.layers.0.self_attn.q_proj)");
  LR_CHECK(!out.empty(), InvalidArgument, "the model has no slot to compress");
  return out;
}

CalibrationNeeds calibration_needs(const CompressOptions& options) {
  const Method& method = find_method(options.method);
  CalibrationNeeds n;
  n.gram = method.needs_gram || options.compensation == "eora";
  n.fisher = method.needs_fisher;
  n.any = n.gram || n.fisher || method.needs_activations;
  if (options.method == "svdquant" && options.act_bits == 4)
    n.inputs = options.method_options.value("calib_tokens", int64_t{512});
  return n;
}

void validate(nn::Model& model, const CompressOptions& options, const CalibrationStatistics* stats,
              bool stats_pending) {
  const Method& method = find_method(options.method);
  const std::string& name = options.method;
  LR_CHECK(method.compress != nullptr, InvalidArgument, "method ", name,
           " compresses the KV cache, not the slots: run it through lowrank compress (compress::run)");
  LR_CHECK(options.ratio == 0 || (options.ratio > 0 && options.ratio < 1), InvalidArgument, "--ratio ",
           options.ratio, " is outside (0, 1)");
  LR_CHECK(options.rank >= 0, InvalidArgument, "--rank ", options.rank, " must be >= 1");
  if (method.ranks == Ranks::kUniform) {
    LR_CHECK((options.ratio > 0) != (options.rank > 0), InvalidArgument, "method ", name,
             " needs exactly one of --ratio or --rank");
  } else if (method.ranks == Ranks::kSpectrum) {
    LR_CHECK(options.ratio > 0 || options.tau >= 0, InvalidArgument, "method ", name,
             " needs --ratio (or a threshold --tau)");
    LR_CHECK(options.tau < 0 || options.tau <= 1, InvalidArgument, "--tau ", options.tau,
             " is outside [0, 1]");
  } else {
    LR_CHECK(options.ratio == 0, InvalidArgument, "method ", name, " takes no --ratio");
  }
  if (method.quantizes) {
    LR_CHECK(options.bits == 4 || options.bits == 8, InvalidArgument, "--bits ", options.bits,
             " must be 4 or 8");
    LR_CHECK(options.group_size >= 2 && options.group_size % 2 == 0, InvalidArgument, "--group-size ",
             options.group_size, " must be even and >= 2");
  }
  // Method options: only the keys the method reads, so that a misspelt one is not silently ignored.
  static const std::map<std::string, std::set<std::string>> kMethodOptionKeys = {
      {"svd_llm", {"update"}},
      {"afm", {"centred"}},
      {"pela", pela_option_keys()},
      {"svdquant", {"grid", "max_iters", "smooth_only", "calib_tokens"}},
      {"rpca", {"lambda", "max_iters"}}};
  LR_CHECK(options.method_options.is_object(), InvalidArgument, "--method-options ",
           options.method_options.dump(), " must be a JSON object");
  const auto keys = kMethodOptionKeys.find(name);
  for (const auto& [key, value] : options.method_options.items()) {
    const bool known = keys != kMethodOptionKeys.end() && keys->second.contains(key);
    std::string takes;
    if (keys != kMethodOptionKeys.end())
      for (const std::string& k : keys->second) takes += (takes.empty() ? "" : ", ") + k;
    LR_CHECK(known, InvalidArgument, "--method-options: method ", name, " has no option \"", key, "\" (",
             takes.empty() ? std::string("it takes none") : "it takes: " + takes, ")");
  }
  if (name == "svd_llm") svd_llm_update(options);  // throws on a non-boolean "update"
  // The intermediate stage's settings, before any work.
  if (name == "pela") PelaOptions::from(options.alpha, options.beta, 0, options.method_options);
  LR_CHECK(name == "pela" || options.beta < 0, InvalidArgument, "--beta is an option of pela only");
  LR_CHECK(options.act_bits == 16 || (options.act_bits == 4 && method.quantizes && options.bits == 4),
           InvalidArgument, "--act-bits ", options.act_bits,
           ": use 16, or 4 with a quantising method (rtn, svdquant) and --bits 4");
  if (name == "svdquant" && options.act_bits == 4)
    LR_CHECK(options.method_options.value("calib_tokens", int64_t{512}) >= 1, InvalidArgument,
             "svdquant: calib_tokens = ", options.method_options.value("calib_tokens", int64_t{512}),
             " must be >= 1");
  LR_CHECK(options.compensation.empty() || options.compensation == "eora" || options.compensation == "svd",
           InvalidArgument, "--compensate \"", options.compensation, "\": use eora or svd");
  LR_CHECK(options.compensation.empty() || options.compensation_rank >= 1, InvalidArgument,
           "--compensate needs --compensation-rank >= 1");
  LR_CHECK(!options.compensation.empty() || options.compensation_rank == 0, InvalidArgument,
           "--compensation-rank without --compensate");

  const bool needs_gram = method.needs_gram || options.compensation == "eora";
  for (nn::LinearSlot* s : target_slots(model, options)) {
    const int64_t m = s->out_features(), n = s->in_features();
    // rtn over a factored slot (LoRD + INT4) quantises its two factors (QuantizedLowRankOperator).
    const bool factored_rtn = name == "rtn" && dynamic_cast<const LowRankOperator*>(&s->base()) != nullptr;
    LR_CHECK(factored_rtn || dynamic_cast<const nn::DenseOperator*>(&s->base()) != nullptr, Unsupported,
             "slot ", s->name(), " already holds a ", s->base().kind(),
             " operator; compress a dense model (only rtn also takes low-rank slots)");
    if (factored_rtn)
      LR_CHECK(m % options.group_size == 0, InvalidArgument, "slot ", s->name(), " has ", m,
               " output channels, not a multiple of --group-size ", options.group_size,
               " (rtn groups a factored slot's U along its outputs)");
    if (method.ranks == Ranks::kUniform && options.rank > 0)
      LR_CHECK(options.rank <= std::min(m, n), InvalidArgument, "--rank ", options.rank, " exceeds min(", m,
               ", ", n, ") of slot ", s->name());
    if (name == "afm" && options.rank > 0)
      LR_CHECK(options.rank < m, InvalidArgument, "afm: --rank ", options.rank, " >= the ", m,
               " outputs of slot ", s->name(), " (AFM keeps k < width output directions)");
    if (name == "svdquant")
      LR_CHECK((options.rank > 0 ? options.rank : 32) <= std::min(m, n), InvalidArgument,
               "svdquant branch rank ", options.rank > 0 ? options.rank : 32, " exceeds min(", m, ", ", n,
               ") of slot ", s->name(), "; pass a smaller --rank");
    if (name == "rpca" && options.rank > 0)
      LR_CHECK(options.rank <= std::min(m, n), InvalidArgument, "--rank ", options.rank, " exceeds min(", m,
               ", ", n, ") of slot ", s->name());
    if (method.quantizes)
      LR_CHECK(n % options.group_size == 0, InvalidArgument, "slot ", s->name(), " has ", n,
               " input channels, not a multiple of --group-size ", options.group_size);
    if (name == "prune24")
      LR_CHECK(n % 4 == 0, InvalidArgument, "slot ", s->name(), " has ", n,
               " input channels; 2:4 needs a multiple of 4");
    if (!options.compensation.empty())
      LR_CHECK(options.compensation_rank <= std::min(m, n), InvalidArgument, "--compensation-rank ",
               options.compensation_rank, " exceeds min(", m, ", ", n, ") of slot ", s->name());
    if ((method.needs_calibration() || needs_gram) && !stats_pending) {
      LR_CHECK(stats != nullptr, InvalidArgument, "method ", name,
               options.compensation == "eora" ? " with EoRA compensation" : "",
               " needs calibration data (--calib-data)");
      auto it = stats->find(s->name());
      LR_CHECK(it != stats->end(), InvalidArgument, "no calibration statistics for slot ", s->name());
      LR_CHECK(!needs_gram || it->second.gram.defined(), InvalidArgument, "calibration of slot ", s->name(),
               " lacks the Gram matrix");
      LR_CHECK(!method.needs_fisher || it->second.fisher.defined(), InvalidArgument, "method ", name,
               " needs Fisher statistics for slot ", s->name());
    }
  }
}

CompressReport compress_model(nn::Model& model, const CompressOptions& options,
                              const CalibrationStatistics* stats, const CalibrationSource* source) {
  validate(model, options, stats);
  const auto start = std::chrono::steady_clock::now();
  const Method& method = find_method(options.method);
  std::vector<nn::LinearSlot*> slots = target_slots(model, options);

  CompressReport report;
  report.method = options.method;
  report.compensation = options.compensation;
  report.model_params_before = model_params(model);

  std::vector<SlotInput> inputs;
  for (nn::LinearSlot* s : slots) {
    at::NoGradGuard no_grad;
    const nn::BaseOperator& base = s->base();
    SlotInput in;
    in.name = s->name();
    in.weight = base.dense_weight().detach().to(at::kCPU, at::kFloat).contiguous();
    in.bias = base.bias().defined() ? base.bias().detach().to(at::kCPU, at::kFloat) : at::Tensor();
    if (stats) {
      auto it = stats->find(s->name());
      in.stats = it == stats->end() ? nullptr : &it->second;
    }
    inputs.push_back(std::move(in));
  }

  // Ranks.
  if (method.ranks == Ranks::kUniform) {
    for (SlotInput& in : inputs)
      in.rank = options.rank > 0 ? options.rank
                                 : rank_for_ratio(in.weight.size(0), in.weight.size(1), options.ratio);
  } else if (method.ranks == Ranks::kSpectrum) {
    std::vector<at::Tensor> spectra;
    std::vector<std::pair<int64_t, int64_t>> shapes;
    for (const SlotInput& in : inputs) {
      spectra.push_back(at::linalg_svdvals(in.weight.to(at::kDouble)));
      shapes.emplace_back(in.weight.size(0), in.weight.size(1));
    }
    const WeLoreChoice choice = welore_ranks(spectra, shapes, options.ratio, options.tau);
    log::info("welore: global threshold tau = ", choice.tau);
    for (size_t i = 0; i < inputs.size(); ++i) inputs[i].rank = choice.ranks[i];
  } else if (options.method == "rpca") {
    for (SlotInput& in : inputs) in.rank = options.rank;  // a cap on the low-rank part (0: none)
  }

  // New operators (null: the slot stays dense), then each slot's compensation, report row and new
  // base (finish); SVD-LLM's update finishes each layer before the next one is calibrated.
  std::vector<std::shared_ptr<StoredOperator>> ops(inputs.size());
  std::vector<SlotReport> rows(inputs.size());
  auto finish = [&](size_t i) {
    const SlotInput& in = inputs[i];
    std::shared_ptr<StoredOperator> op = ops[i];
    if (op && !options.compensation.empty())
      op = compensate(op, in.weight, in.stats ? in.stats->gram : at::Tensor(), options.compensation_rank,
                      options.compensation);
    SlotReport& r = rows[i];
    r.name = in.name;
    r.out_features = in.weight.size(0);
    r.in_features = in.weight.size(1);
    r.params_before = in.weight.numel() + (in.bias.defined() ? in.bias.numel() : 0);
    r.bytes_before = 2 * r.params_before;
    if (!op) {
      r.kind = "dense";
      r.params_after = r.params_before;
      r.bytes_after = r.bytes_before;
      return;
    }
    r.kind = std::string(op->kind());
    const OrderedJson d = op->describe();
    if (d.contains("rank")) r.rank = d["rank"].get<int64_t>();
    r.params_after = params_of(*op);
    r.bytes_after = op->storage_bytes(2);
    if (r.bytes_after > r.bytes_before)
      log::warn("slot ", in.name, ": its ", r.kind, " operator stores ", r.bytes_after,
                " bytes (16-bit floats), more than the dense weight's ", r.bytes_before);
    const at::Tensor delta = in.weight.to(at::kDouble) - op->dense_weight().to(at::kDouble);
    r.weight_error = frobenius(delta) / std::max(frobenius(in.weight), 1e-300);
    if (in.stats && in.stats->gram.defined()) {
      const double den = gram_quadratic(in.weight, in.stats->gram);
      double num = gram_quadratic(delta, in.stats->gram);
      // A changed bias (AFM's b₂): the error per token is −ΔW x + Δb, so
      // Σ_t ‖−ΔW x_t + Δb‖² = tr(ΔW H ΔWᵀ) − 2 Δbᵀ ΔW Σ_t x_t + n ‖Δb‖².
      const at::Tensor new_bias = op->bias();
      if (new_bias.defined() && in.stats->sum.defined()) {
        at::Tensor db = new_bias.to(at::kCPU, at::kDouble);
        if (in.bias.defined()) db = db - in.bias.to(at::kDouble);
        num += -2 * at::dot(db, at::mv(delta, in.stats->sum.to(at::kDouble))).item<double>() +
               static_cast<double>(in.stats->tokens) * at::dot(db, db).item<double>();
      }
      r.output_error = den > 0 ? std::sqrt(std::max(0.0, num) / den) : 0;
    }
    slots[i]->replace_base(op);
  };
  CompressOptions per_slot = options;
  if (method.ranks == Ranks::kSpectrum) per_slot.method = "svd";  // WeLore factorises by plain SVD
  ProgressBar bar(static_cast<int64_t>(inputs.size()), "compress " + options.method);
  if (options.method == "svdquant" && options.share_inputs) {
    for (const std::vector<size_t>& group : shared_input_groups(slots)) {
      std::vector<SlotInput> members;
      for (size_t i : group) members.push_back(inputs[i]);
      std::vector<std::shared_ptr<StoredOperator>> made = svdquant_group(members, options);
      for (size_t j = 0; j < group.size(); ++j) ops[group[j]] = made[j];
      bar.advance(static_cast<int64_t>(group.size()));
    }
    for (size_t i = 0; i < inputs.size(); ++i) finish(i);
  } else if (options.method == "svd_llm" && svd_llm_update(options)) {
    LR_CHECK(source != nullptr && source->tokens.defined(), InvalidArgument,
             "svd_llm with the update needs the calibration tokens themselves (it calibrates each layer "
             "again after compressing the earlier ones)");
    // Decoder layers in order; slots outside the layers (lm_head) last, after every layer.
    std::map<int64_t, std::vector<size_t>> by_layer;
    for (size_t i = 0; i < inputs.size(); ++i) {
      const int64_t layer = analysis::layer_of(inputs[i].name);
      by_layer[layer < 0 ? std::numeric_limits<int64_t>::max() : layer].push_back(i);
    }
    for (const auto& [layer, group] : by_layer) {
      CalibrationOptions c = source->options;
      c.gram = true;
      c.fisher = false;
      c.progress = false;
      c.slots.clear();
      for (size_t i : group) c.slots.push_back(inputs[i].name);
      const CalibrationStatistics shifted = calibrate(model, source->tokens, c);
      for (size_t i : group) {
        bar.set_note(inputs[i].name);
        inputs[i].update_gram = shifted.at(inputs[i].name).gram;
        ops[i] = method.compress(inputs[i], per_slot);
        inputs[i].update_gram = at::Tensor();
        bar.advance();
      }
      for (size_t i : group) finish(i);
    }
  } else {
    for (size_t i = 0; i < inputs.size(); ++i) {
      bar.set_note(inputs[i].name);
      if (const auto* factored = dynamic_cast<const LowRankOperator*>(&slots[i]->base());
          factored && options.method == "rtn")
        ops[i] = QuantizedLowRankOperator::quantize(*factored, options.bits, options.group_size);
      else if (!(method.ranks == Ranks::kSpectrum && inputs[i].rank < 0))
        ops[i] = method.compress(inputs[i], per_slot);
      bar.advance();
    }
    for (size_t i = 0; i < inputs.size(); ++i) finish(i);
  }
  bar.finish();

  for (SlotReport& r : rows) {
    report.params_before += r.params_before;
    report.params_after += r.params_after;
    report.bytes_before += r.bytes_before;
    report.bytes_after += r.bytes_after;
    report.slots.push_back(std::move(r));
  }
  report.model_params_after = model_params(model);
  report.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return report;
}

OrderedJson CompressReport::to_json() const {
  OrderedJson j;
  j["method"] = method;
  j["compensation"] = compensation.empty() ? OrderedJson(nullptr) : OrderedJson(compensation);
  j["params_before"] = params_before;
  j["params_after"] = params_after;
  j["param_reduction"] =
      params_before > 0 ? 1.0 - static_cast<double>(params_after) / static_cast<double>(params_before) : 0.0;
  j["model_params_before"] = model_params_before;
  j["model_params_after"] = model_params_after;
  j["bytes_before_16bit"] = bytes_before;
  j["bytes_after_16bit"] = bytes_after;
  j["bytes_ratio"] =
      bytes_before > 0 ? static_cast<double>(bytes_after) / static_cast<double>(bytes_before) : 0.0;
  j["seconds"] = seconds;
  OrderedJson rows = OrderedJson::array();
  for (const SlotReport& r : slots) {
    OrderedJson s;
    s["name"] = r.name;
    s["kind"] = r.kind;
    s["shape"] = {r.out_features, r.in_features};
    s["rank"] = r.rank < 0 ? OrderedJson(nullptr) : OrderedJson(r.rank);
    s["params_before"] = r.params_before;
    s["params_after"] = r.params_after;
    s["bytes_before_16bit"] = r.bytes_before;
    s["bytes_after_16bit"] = r.bytes_after;
    s["weight_error"] = r.weight_error;
    s["output_error"] = r.output_error < 0 ? OrderedJson(nullptr) : OrderedJson(r.output_error);
    rows.push_back(std::move(s));
  }
  j["slots"] = std::move(rows);
  return j;
}

}  // namespace lowrank::compress
