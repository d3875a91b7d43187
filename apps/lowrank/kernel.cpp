// `lowrank kernel`: the kernel-methods family (src/lowrank/kernel_methods/, docs/kernel_methods.md).
//   lowrank kernel fit --method M (--data FILE | --dataset NAME) [--options JSON] [--seed S] --out DIR
//   lowrank kernel predict --model DIR (--data FILE | --dataset NAME) [--out FILE.safetensors]
//   lowrank kernel gram --method rbf|laplace|matern|arccos0|arccos1 (--data FILE | --dataset NAME)
//                       [--bandwidth H] [--nu NU] --out FILE.safetensors
//   lowrank kernel kde (--data FILE | --dataset NAME) --bandwidth H|holdout [--query FILE]
//                      [--heldout-fraction F] [--seed S] [--out FILE.safetensors]
//   lowrank kernel gram --method ntk|nngp|cnn (--data FILE | --dataset NAME) [--options JSON] --out FILE
//   lowrank kernel gram --method quantum (--data FILE | --dataset NAME) [--shots N --seed S] --out FILE
//   lowrank kernel sample --method christoffel|dpp|volume|repeat --basis legendre:M --n N [--seed S]
//                         [--out FILE.safetensors]
//   lowrank kernel dp build (--data FILE | --dataset NAME) --epsilon E|inf [--metric l1|l2|gaussian]
//                           [--options JSON] [--seed S] --out DIR
//   lowrank kernel dp query --model DIR (--data FILE | --dataset NAME) [--out FILE.safetensors]
// Parsing only: the work is the library's.
#include <ATen/CPUGeneratorImpl.h>

#include <cmath>
#include <filesystem>
#include <iostream>
#include <memory>
#include <optional>

#include "apps/lowrank/verbs.h"
#include "lowrank/core/error.h"
#include "lowrank/core/json.h"
#include "lowrank/core/safetensors.h"
#include "lowrank/kernel_methods/cnn_kernel.h"
#include "lowrank/kernel_methods/dp_similarity.h"
#include "lowrank/kernel_methods/dpp_sampling.h"
#include "lowrank/kernel_methods/estimator.h"
#include "lowrank/kernel_methods/gram.h"
#include "lowrank/kernel_methods/kde.h"
#include "lowrank/kernel_methods/quantum_kernel.h"

namespace lowrank::cli {
namespace fs = std::filesystem;

namespace {

struct DataFlags {
  std::string path, dataset;
  int64_t label_col = -1;
  CLI::Option* label_flag = nullptr;

  void add(CLI::App* cmd) {
    auto* data =
        cmd->add_option("--data", path, "Data: .safetensors (x [n, d], y), .csv or .csv.gz (label last)");
    auto* named = cmd->add_option("--dataset", dataset,
                                  "A scikit-learn toy dataset: digits, diabetes, iris, wine, breast_cancer");
    data->excludes(named);
    label_flag =
        cmd->add_option("--label-col", label_col, "CSV column of the label (0-based; negative from the end)");
  }
  kernel_methods::Dataset read() const {
    LR_CHECK(!path.empty() || !dataset.empty(), InvalidArgument, "give --data FILE or --dataset NAME");
    if (!dataset.empty()) return kernel_methods::read_builtin_dataset(dataset);
    std::optional<int64_t> label;
    if (label_flag->count() > 0) label = label_col;
    return kernel_methods::read_dataset(path, label);
  }
};

void check_new_output(const fs::path& out, const char* flag) {
  LR_CHECK(!fs::exists(out) || (fs::is_directory(out) && fs::is_empty(out)), InvalidArgument, flag, " ",
           out.string(), " already exists");
  const fs::path parent = fs::absolute(out).parent_path();
  LR_CHECK(fs::is_directory(parent), NotFound, flag, ": no directory ", parent.string());
}

struct FitFlags {
  std::string method, options = "{}", out;
  uint64_t seed = 0;
  DataFlags data;
};

void run_fit(const FitFlags& flags, const GlobalOptions& global) {
  const Json options = parse_json(flags.options, "--options");
  auto estimator = kernel_methods::create_estimator(flags.method, options, flags.seed);
  check_new_output(flags.out, "--out");
  const kernel_methods::Dataset data = flags.data.read();
  estimator->fit(data);
  estimator->save(flags.out);
  if (global.json) {
    OrderedJson out;
    out["method"] = flags.method;
    out["out"] = flags.out;
    out["examples"] = data.x.size(0);
    out["input_dim"] = data.x.size(1);
    out["data_sha256"] = data.sha256;
    out["report"] = estimator->report();
    std::cout << out.dump(2) << "\n";
  } else {
    std::cout << "fitted " << flags.method << " on " << data.source << " (" << data.x.size(0) << " × "
              << data.x.size(1) << ") -> " << flags.out << "\n";
    for (const auto& [key, value] : estimator->report().items())
      std::cout << "  " << key << ": " << value.dump() << "\n";
  }
}

struct PredictFlags {
  std::string model, out;
  DataFlags data;
};

void run_predict(const PredictFlags& flags, const GlobalOptions& global) {
  auto estimator = kernel_methods::load_estimator(flags.model);
  if (!flags.out.empty()) check_new_output(flags.out, "--out");
  const kernel_methods::Dataset data = flags.data.read();
  const at::Tensor prediction = estimator->predict(data.x);
  std::optional<double> mse;
  if (data.y.defined() && data.y.sizes() == prediction.sizes())
    mse = (prediction - data.y).pow(2).mean().item<double>();
  if (!flags.out.empty())
    save_safetensors(flags.out, std::vector<NamedTensor>{{"prediction", prediction.contiguous()}});
  if (global.json) {
    OrderedJson out;
    out["method"] = std::string(estimator->method());
    out["examples"] = data.x.size(0);
    if (mse) out["mse"] = *mse;
    if (flags.out.empty()) {
      const at::Tensor flat = prediction.reshape({-1}).contiguous();
      out["prediction"] =
          std::vector<double>(flat.data_ptr<double>(), flat.data_ptr<double>() + flat.numel());
    } else {
      out["out"] = flags.out;
    }
    std::cout << out.dump(2) << "\n";
    return;
  }
  if (flags.out.empty()) {
    const at::Tensor rows = prediction.reshape({prediction.size(0), -1});
    for (int64_t i = 0; i < rows.size(0); ++i) {
      for (int64_t j = 0; j < rows.size(1); ++j) std::cout << (j ? " " : "") << rows[i][j].item<double>();
      std::cout << "\n";
    }
  } else {
    std::cout << "predicted " << data.x.size(0) << " rows -> " << flags.out << "\n";
  }
  if (mse) std::cerr << "mse against the data's labels: " << *mse << "\n";
}

struct GramFlags {
  kernel_methods::KernelSpec spec;
  std::string out;
  std::string options = "{}";    // the neural kernels' architecture (ntk, nngp, cnn)
  std::optional<int64_t> shots;  // quantum: Binomial shot estimates instead of exact fidelities
  uint64_t seed = 0;             // quantum: the shots' generator
  DataFlags data;
};

void run_gram(const GramFlags& flags, const GlobalOptions& global) {
  const bool neural = kernel_methods::is_neural_gram(flags.spec.name);
  const bool quantum = flags.spec.name == "quantum";
  const Json options = parse_json(flags.options, "--options");
  if (!neural && !quantum) kernel_methods::validate(flags.spec, "--method");
  LR_CHECK(neural || options.empty(), InvalidArgument, "--options is for --method ntk, nngp or cnn, not ",
           flags.spec.name);
  LR_CHECK(quantum || !flags.shots, InvalidArgument, "--shots is for --method quantum, not ",
           flags.spec.name);
  LR_CHECK(!flags.shots || *flags.shots > 0, InvalidArgument, "--shots must be > 0, got ",
           flags.shots.value_or(0));
  const std::optional<kernel_methods::NeuralGram> neural_gram =
      neural ? std::optional(kernel_methods::NeuralGram(flags.spec.name, options)) : std::nullopt;
  check_new_output(flags.out, "--out");
  const kernel_methods::Dataset data = flags.data.read();
  at::Tensor k;
  if (neural) {
    k = neural_gram->gram(data.x);
  } else if (quantum) {  // one qubit per input column; quantum_feature_states refuses > kMaxQubits
    k = kernel_methods::quantum_gram(data.x, data.x, flags.shots.value_or(0), flags.seed);
  } else {
    k = kernel_methods::gram(flags.spec, data.x, data.x);
  }
  save_safetensors(flags.out, std::vector<NamedTensor>{{"gram", k.contiguous()}});
  if (global.json) {
    OrderedJson out = {{"kernel", flags.spec.name}, {"size", data.x.size(0)}, {"out", flags.out}};
    std::cout << out.dump(2) << "\n";
  } else {
    std::cout << flags.spec.name << " Gram matrix " << data.x.size(0) << " × " << data.x.size(0) << " -> "
              << flags.out << "\n";
  }
}

struct KdeFlags {
  std::string bandwidth, query, out;
  double heldout_fraction = 0.2;
  uint64_t seed = 0;
  DataFlags data;
};

// --bandwidth holdout: the grid h = s·10^{-2…1} (41 values, s the root mean per-coordinate variance
// of the data), scored by the mean log-likelihood of a held-out fraction of the data under the KDE
// of the rest (kernel_methods::select_bandwidth); the density is then estimated from all the data.
kernel_methods::BandwidthSelection holdout_bandwidth(const at::Tensor& x, double fraction, uint64_t seed) {
  const int64_t n = x.size(0),
                heldout = static_cast<int64_t>(std::llround(fraction * static_cast<double>(n)));
  LR_CHECK(heldout >= 1 && heldout < n, InvalidArgument, "--bandwidth holdout: --heldout-fraction ", fraction,
           " of ", n, " points leaves no held-out or no remaining point");
  at::Generator gen = at::detail::createCPUGenerator(seed);
  const at::Tensor order = at::randperm(n, gen, at::kLong);
  const double scale = std::sqrt(x.var(0, /*unbiased=*/false).mean().item<double>());
  LR_CHECK(scale > 0, InvalidArgument, "--bandwidth holdout: the data has zero variance");
  std::vector<double> grid;
  for (int i = 0; i <= 40; ++i) grid.push_back(scale * std::pow(10.0, -2.0 + 3.0 * i / 40));
  return kernel_methods::select_bandwidth(x.index_select(0, order.slice(0, heldout)),
                                          x.index_select(0, order.slice(0, 0, heldout)), grid);
}

void run_kde(const KdeFlags& flags, const GlobalOptions& global) {
  std::optional<double> fixed;
  if (flags.bandwidth != "holdout") {
    try {
      size_t used = 0;
      fixed = std::stod(flags.bandwidth, &used);
      LR_CHECK(used == flags.bandwidth.size(), InvalidArgument, "");
    } catch (const std::exception&) {
      throw InvalidArgument(
          str("--bandwidth must be a number > 0 or \"holdout\", got \"", flags.bandwidth, "\""));
    }
    LR_CHECK(std::isfinite(*fixed) && *fixed > 0, InvalidArgument, "--bandwidth must be > 0, got ",
             flags.bandwidth);
  }
  LR_CHECK(flags.heldout_fraction > 0 && flags.heldout_fraction < 1, InvalidArgument,
           "--heldout-fraction must be in (0, 1), got ", flags.heldout_fraction);
  if (!flags.out.empty()) check_new_output(flags.out, "--out");
  const kernel_methods::Dataset data = flags.data.read();
  at::Tensor queries = data.x;
  std::string query_source = data.source + " (each point, itself included)";
  if (!flags.query.empty()) {
    std::optional<int64_t> label;
    if (flags.data.label_flag->count() > 0) label = flags.data.label_col;
    const kernel_methods::Dataset q = kernel_methods::read_dataset(flags.query, label);
    LR_CHECK(q.x.size(1) == data.x.size(1), InvalidArgument, "--query ", flags.query, " has ", q.x.size(1),
             " columns, the data ", data.x.size(1));
    queries = q.x;
    query_source = q.source;
  }
  std::optional<kernel_methods::BandwidthSelection> selection;
  if (!fixed) selection = holdout_bandwidth(data.x, flags.heldout_fraction, flags.seed);
  const double h = fixed ? *fixed : selection->best;
  const at::Tensor log_density = kernel_methods::kde_log_density(data.x, queries, h);
  const kernel_methods::KdeDiagnostics diag = kernel_methods::kde_diagnostics(data.x, queries, h);
  if (!flags.out.empty())
    save_safetensors(flags.out, std::vector<NamedTensor>{{"log_density", log_density.contiguous()},
                                                         {"ipr", diag.ipr.contiguous()},
                                                         {"max_weight", diag.max_weight.contiguous()}});
  auto values = [](const at::Tensor& t) {
    const at::Tensor c = t.contiguous();
    return std::vector<double>(c.data_ptr<double>(), c.data_ptr<double>() + c.numel());
  };
  OrderedJson out = {{"data", data.source},
                     {"points", data.x.size(0)},
                     {"queries", query_source},
                     {"bandwidth", h},
                     {"bandwidth_rule", fixed ? "given" : "holdout"},
                     {"mean_log_density", log_density.mean().item<double>()},
                     {"mean_ipr", diag.ipr.mean().item<double>()},
                     {"mean_max_weight", diag.max_weight.mean().item<double>()}};
  if (selection) {
    out["heldout_fraction"] = flags.heldout_fraction;
    out["grid"] = selection->grid;
    out["heldout_mean_log_likelihood"] = selection->mean_log_likelihood;
  }
  if (global.json) {
    if (flags.out.empty()) {
      out["log_density"] = values(log_density);
      out["ipr"] = values(diag.ipr);
      out["max_weight"] = values(diag.max_weight);
    } else {
      out["out"] = flags.out;
    }
    std::cout << out.dump(2) << "\n";
    return;
  }
  std::cerr << "kde of " << data.source << " (" << data.x.size(0) << " points) at h = " << h
            << (fixed ? "" : " (held out)") << ": mean log density " << out["mean_log_density"].dump()
            << ", mean IPR " << out["mean_ipr"].dump() << ", mean max weight "
            << out["mean_max_weight"].dump() << "\n";
  if (!flags.out.empty()) {
    std::cout << "log_density, ipr, max_weight of " << queries.size(0) << " queries -> " << flags.out << "\n";
    return;
  }
  std::cout << "# log_density ipr max_weight\n";
  for (int64_t i = 0; i < queries.size(0); ++i)
    std::cout << log_density[i].item<double>() << " " << diag.ipr[i].item<double>() << " "
              << diag.max_weight[i].item<double>() << "\n";
}

struct SampleFlags {
  std::string method, basis = "legendre:20", out;
  int64_t n = 0;
  uint64_t seed = 0;
};

// A random design for weighted least squares (kernel_methods/dpp_sampling.h): the points x [n, 1]
// and their weights m/k_m(x), ready for `kernel fit --method dpp_sampling` once f is evaluated.
void run_sample(const SampleFlags& flags, const GlobalOptions& global) {
  const kernel_methods::OrthonormalBasis basis = kernel_methods::parse_basis(flags.basis);
  LR_CHECK(flags.n >= 1, InvalidArgument, "--n must be >= 1, got ", flags.n);
  if (!flags.out.empty()) check_new_output(flags.out, "--out");
  const at::Tensor x = kernel_methods::sample_design(flags.method, basis, flags.n, flags.seed);
  const at::Tensor weight = kernel_methods::optimal_weights(basis, x);
  if (!flags.out.empty())
    save_safetensors(flags.out, std::vector<NamedTensor>{{"x", x.unsqueeze(1).contiguous()},
                                                         {"weight", weight.contiguous()}});
  if (global.json) {
    OrderedJson out = {{"method", flags.method},
                       {"basis", kernel_methods::to_string(basis)},
                       {"n", flags.n},
                       {"seed", flags.seed}};
    if (flags.out.empty()) {
      out["x"] = std::vector<double>(x.data_ptr<double>(), x.data_ptr<double>() + x.numel());
      out["weight"] =
          std::vector<double>(weight.data_ptr<double>(), weight.data_ptr<double>() + weight.numel());
    } else {
      out["out"] = flags.out;
    }
    std::cout << out.dump(2) << "\n";
    return;
  }
  if (!flags.out.empty()) {
    std::cout << flags.method << " design of " << flags.n << " points in " << kernel_methods::to_string(basis)
              << " -> " << flags.out << " (x, weight)\n";
    return;
  }
  std::cout << "# x weight\n";
  for (int64_t i = 0; i < x.size(0); ++i)
    std::cout << x[i].item<double>() << " " << weight[i].item<double>() << "\n";
}

struct DpBuildFlags {
  std::string epsilon, metric = "l1", options = "{}", out;
  uint64_t seed = 0;
  bool keep_data = false;
  DataFlags data;
};

// --epsilon: a number > 0 or "inf" (the exact, non-private structure).
Json parse_epsilon(const std::string& text) {
  if (text == "inf") return "inf";
  double value = std::nan("");
  try {
    size_t used = 0;
    value = std::stod(text, &used);
    if (used != text.size()) value = std::nan("");
  } catch (const std::exception&) {
  }
  LR_CHECK(!std::isnan(value) && value > 0, InvalidArgument,
           "--epsilon must be a number > 0 or \"inf\", got \"", text, "\"");
  return value;
}

void run_dp_build(const DpBuildFlags& flags, const GlobalOptions& global) {
  Json options = parse_json(flags.options, "--options");
  LR_CHECK(options.is_object(), InvalidArgument, "--options must be a JSON object, got ", options.dump());
  for (const char* key : {"epsilon", "metric"})
    LR_CHECK(!options.contains(key), InvalidArgument, "give ", key, " as --", key, ", not in --options");
  options["epsilon"] = parse_epsilon(flags.epsilon);
  options["metric"] = flags.metric;
  if (flags.keep_data) options["keep_data"] = true;  // refused by the library, naming it
  kernel_methods::create_estimator("dp_similarity", options, flags.seed);  // the options, before any work
  check_new_output(flags.out, "--out");
  const kernel_methods::Dataset data = flags.data.read();
  const auto model = kernel_methods::dp_fit(data, options, flags.seed);
  model->save(flags.out);
  if (global.json) {
    OrderedJson out = {{"method", "dp_similarity"},
                       {"metric", flags.metric},
                       {"epsilon", flags.epsilon},
                       {"out", flags.out},
                       {"input_dim", data.x.size(1)}};
    out["report"] = model->report();
    std::cout << out.dump(2) << "\n";
  } else {
    std::cout << "built dp_similarity (" << flags.metric << ", epsilon " << flags.epsilon << ") of "
              << data.source << " -> " << flags.out << "\n";
  }
}

struct DpQueryFlags {
  std::string model, out;
  DataFlags data;
};

void run_dp_query(const DpQueryFlags& flags, const GlobalOptions& global) {
  const auto model = kernel_methods::load_estimator(flags.model);
  if (!flags.out.empty()) check_new_output(flags.out, "--out");
  const kernel_methods::Dataset data = flags.data.read();
  at::Tensor classes;
  const at::Tensor scores = kernel_methods::dp_class_scores(*model, data.x, &classes);
  const at::Tensor prediction = model->predict(data.x);
  std::optional<double> accuracy;
  if (data.y.defined() && data.y.dim() == 1)
    accuracy = prediction.eq(data.y).to(at::kDouble).mean().item<double>();
  if (!flags.out.empty())
    save_safetensors(flags.out, std::vector<NamedTensor>{{"prediction", prediction.contiguous()},
                                                         {"scores", scores.contiguous()}});
  if (global.json) {
    OrderedJson out = {{"queries", data.x.size(0)}, {"classes", classes.size(0)}};
    if (accuracy) out["accuracy"] = *accuracy;
    if (flags.out.empty()) {
      out["prediction"] = std::vector<double>(prediction.data_ptr<double>(),
                                              prediction.data_ptr<double>() + prediction.numel());
      const at::Tensor flat = scores.contiguous();
      out["scores"] = std::vector<double>(flat.data_ptr<double>(), flat.data_ptr<double>() + flat.numel());
    } else {
      out["out"] = flags.out;
    }
    std::cout << out.dump(2) << "\n";
    return;
  }
  if (flags.out.empty()) {
    for (int64_t i = 0; i < prediction.size(0); ++i) std::cout << prediction[i].item<double>() << "\n";
  } else {
    std::cout << "queried " << data.x.size(0) << " rows -> " << flags.out << " (prediction, scores)\n";
  }
  if (accuracy) std::cerr << "accuracy against the data's labels: " << *accuracy << "\n";
}

}  // namespace

VerbRunner add_kernel(CLI::App& app, const GlobalOptions& global) {
  auto* cmd = app.add_subcommand("kernel",
                                 "Kernel methods: fit, predict, Gram matrices, KDE (docs/kernel_methods.md)");
  cmd->require_subcommand(1);
  std::string known;
  for (const auto& info : kernel_methods::registry().list()) known += (known.empty() ? "" : ", ") + info.name;

  auto fit_flags = std::make_shared<FitFlags>();
  auto* fit = cmd->add_subcommand("fit", "Fit a kernel method and save it as a model directory");
  fit->add_option("--method", fit_flags->method, "Method (" + known + ")")->required();
  fit_flags->data.add(fit);
  fit->add_option("--options", fit_flags->options,
                  "Method options as a JSON object (lowrank methods --family kernel)")
      ->capture_default_str();
  fit->add_option("--seed", fit_flags->seed, "Seed of the method's random draws")->capture_default_str();
  fit->add_option("--out", fit_flags->out, "Model directory to create (must not exist)")->required();

  auto predict_flags = std::make_shared<PredictFlags>();
  auto* predict = cmd->add_subcommand("predict", "Predict with a saved model (a label column is ignored)");
  predict->add_option("--model", predict_flags->model, "Model directory written by `kernel fit`")->required();
  predict_flags->data.add(predict);
  predict->add_option("--out", predict_flags->out,
                      "Write the predictions to this .safetensors (\"prediction\")");

  auto gram_flags = std::make_shared<GramFlags>();
  std::string kernels;
  for (const auto& name : kernel_methods::kernel_names()) kernels += (kernels.empty() ? "" : "|") + name;
  kernels += "|ntk|nngp|cnn|quantum";
  auto* gram = cmd->add_subcommand("gram", "Write the Gram matrix K(x, x) of a dataset");
  gram->add_option("--method", gram_flags->spec.name, "Kernel: " + kernels)->required();
  gram->add_option("--bandwidth", gram_flags->spec.bandwidth, "Bandwidth / length scale h")
      ->capture_default_str();
  gram->add_option("--nu", gram_flags->spec.nu, "Matérn smoothness: 0.5, 1.5 or 2.5")->capture_default_str();
  gram->add_option(
          "--options", gram_flags->options,
          "ntk|nngp|cnn: the architecture as JSON (depth, weight_variance, bias_variance, activation; "
          "cnn also filter and kernel: ntk|nngp)")
      ->capture_default_str();
  gram->add_option("--shots", gram_flags->shots,
                   "quantum: estimate each fidelity from this many measurement shots (default: exact)");
  gram->add_option("--seed", gram_flags->seed, "quantum: seed of the shot noise")->capture_default_str();
  gram_flags->data.add(gram);
  gram->add_option("--out", gram_flags->out, "Output .safetensors (tensor \"gram\")")->required();
  auto kde_flags = std::make_shared<KdeFlags>();
  auto* kde = cmd->add_subcommand("kde", "Gaussian KDE log-density per query, with its IPR and max weight");
  kde_flags->data.add(kde);
  kde->add_option("--bandwidth", kde_flags->bandwidth,
                  "Bandwidth h > 0, or \"holdout\" (the held-out log-likelihood's best on a grid)")
      ->required();
  kde->add_option("--query", kde_flags->query,
                  "Query points, laid out as --data (default: the data's own points)");
  kde->add_option("--heldout-fraction", kde_flags->heldout_fraction,
                  "Share of the data held out by --bandwidth holdout")
      ->capture_default_str();
  kde->add_option("--seed", kde_flags->seed, "Seed of the held-out split")->capture_default_str();
  kde->add_option("--out", kde_flags->out, "Output .safetensors (log_density, ipr, max_weight)");
  auto sample_flags = std::make_shared<SampleFlags>();
  auto* sample =
      cmd->add_subcommand("sample", "Draw a weighted least-squares design (Christoffel, DPP, volume)");
  sample->add_option("--method", sample_flags->method, "Design: christoffel|dpp|volume|repeat")->required();
  sample->add_option("--basis", sample_flags->basis, "Orthonormal basis legendre:M on [-1, 1]")
      ->capture_default_str();
  sample->add_option("--n", sample_flags->n, "Points (dpp: n = M; volume: n >= M; repeat: a multiple of M)")
      ->required();
  sample->add_option("--seed", sample_flags->seed, "Seed of the draws")->capture_default_str();
  sample->add_option("--out", sample_flags->out, "Output .safetensors (x [n, 1], weight [n])");
  auto* dp = cmd->add_subcommand("dp", "Differentially private similarity structures (dp_similarity)");
  dp->require_subcommand(1);
  auto dp_build_flags = std::make_shared<DpBuildFlags>();
  auto* dp_build = dp->add_subcommand("build", "Build an epsilon-DP class-mean model of noisy aggregates");
  dp_build_flags->data.add(dp_build);
  dp_build->add_option("--epsilon", dp_build_flags->epsilon, "Privacy budget > 0 per class, or inf")
      ->required();
  dp_build->add_option("--metric", dp_build_flags->metric, "l1|l2|gaussian")->capture_default_str();
  dp_build
      ->add_option("--options", dp_build_flags->options,
                   "Other dp_similarity options as JSON (levels, lower, radius, ...)")
      ->capture_default_str();
  dp_build->add_option("--seed", dp_build_flags->seed, "Seed of the projections and the noise")
      ->capture_default_str();
  dp_build->add_flag("--keep-data", dp_build_flags->keep_data, "Refused: a DP structure keeps no raw data");
  dp_build->add_option("--out", dp_build_flags->out, "Model directory to create (must not exist)")
      ->required();
  auto dp_query_flags = std::make_shared<DpQueryFlags>();
  auto* dp_query = dp->add_subcommand("query", "Class-mean similarities and predictions of a dp model");
  dp_query->add_option("--model", dp_query_flags->model, "Model directory written by `kernel dp build`")
      ->required();
  dp_query_flags->data.add(dp_query);
  dp_query->add_option("--out", dp_query_flags->out, "Write prediction and scores to this .safetensors");
  return [fit, predict, gram, kde, sample, dp_build, dp_query, fit_flags, predict_flags, gram_flags,
          kde_flags, sample_flags, dp_build_flags, dp_query_flags, &global] {
    if (dp_build->parsed()) run_dp_build(*dp_build_flags, global);
    if (dp_query->parsed()) run_dp_query(*dp_query_flags, global);
    if (fit->parsed()) run_fit(*fit_flags, global);
    if (predict->parsed()) run_predict(*predict_flags, global);
    if (gram->parsed()) run_gram(*gram_flags, global);
    if (kde->parsed()) run_kde(*kde_flags, global);
    if (sample->parsed()) run_sample(*sample_flags, global);
  };
}

}  // namespace lowrank::cli
