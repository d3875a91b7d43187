// Lyapunov exponents of Mamba's recurrence; see mamba_lyapunov.h.
#include "lowrank/mix/mamba_lyapunov.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>

#include <ATen/CPUGeneratorImpl.h>

#include "lowrank/analysis/plot.h"
#include "lowrank/core/error.h"
#include "lowrank/core/file.h"
#include "lowrank/core/svg.h"
#include "lowrank/nn/config.h"
#include "lowrank/nn/observing_operator.h"

namespace lowrank::mix {

namespace fs = std::filesystem;

namespace {

// Keeps every input of the slot it is installed in (the layer's mixer input).
class InputRecorder final : public nn::ObservingOperator {
 public:
  InputRecorder(std::shared_ptr<const nn::BaseOperator> inner, std::vector<at::Tensor>* inputs)
      : ObservingOperator(std::move(inner)), inputs_(inputs) {}

 private:
  void observe(const at::Tensor& x) const override { inputs_->push_back(x); }
  std::vector<at::Tensor>* inputs_;
};

// Adds `delta` [S, P, hidden] to the first P positions of every input [S, T, hidden].
class PerturbedInput final : public nn::ForwardingOperator {
 public:
  PerturbedInput(std::shared_ptr<const nn::BaseOperator> inner, at::Tensor delta)
      : ForwardingOperator(std::move(inner)), delta_(std::move(delta)) {}
  at::Tensor forward(const at::Tensor& x) const override {
    const int64_t P = delta_.size(1);
    const at::Tensor head = x.narrow(1, 0, P) + delta_;
    return inner().forward(at::cat({head, x.narrow(1, P, x.size(1) - P)}, 1));
  }

 private:
  at::Tensor delta_;
};

struct MambaLayer {
  int64_t index = 0;
  const Mamba* mixer = nullptr;
};

std::vector<MambaLayer> mamba_layers(const nn::Model& model) {
  std::vector<MambaLayer> out;
  for (int64_t i = 0; i < model.config().num_hidden_layers; ++i)
    if (const auto* m = dynamic_cast<const Mamba*>(&model.mixer(i))) out.push_back({i, m});
  return out;
}

// Each Mamba layer's scan inputs for `tokens` (from its recorded mixer input), with `perturbation`
// [S, P, hidden] (when defined) added to the first P positions of the first layer's mixer input.
std::vector<MambaScanInputs> layer_scan_inputs(nn::Model& model, const std::vector<MambaLayer>& layers,
                                               const at::Tensor& tokens, const at::Tensor& perturbation) {
  std::vector<std::vector<at::Tensor>> seen(layers.size());
  {
    nn::RestoreBases restore;
    for (size_t i = 0; i < layers.size(); ++i) {
      nn::LinearSlot& slot = model.slot(layers[i].mixer->in_proj().name());
      auto base = slot.base_ptr();
      std::shared_ptr<const nn::BaseOperator> op = std::make_shared<InputRecorder>(base, &seen[i]);
      if (i == 0 && perturbation.defined()) op = std::make_shared<PerturbedInput>(op, perturbation);
      slot.replace_base(op);
      restore.add(&slot, std::move(base));
    }
    (void)model.hidden_states(tokens);
  }
  std::vector<MambaScanInputs> out;
  for (size_t i = 0; i < layers.size(); ++i) {
    LR_CHECK(seen[i].size() == 1, InternalError, "lyapunov: layer ", layers[i].index, " saw ", seen[i].size(),
             " inputs in one forward");
    out.push_back(layers[i].mixer->scan_inputs(seen[i].front(), {}));
  }
  return out;
}

// Adds Σ_{d,n} (h'_t − h_t)² to gap2 [S, T] and Σ h_t² to norm2, for the states h of a mixer's
// recurrence driven by its clean scan inputs and h' by its perturbed ones; float64, one position at a time
// (the scan itself returns the last state only, and here every position's is needed).
void add_state_gap(const MambaScanInputs& clean, const MambaScanInputs& perturbed, at::Tensor& gap2,
                   at::Tensor& norm2) {
  struct Drive {
    at::Tensor u, dt, B;  // float64: the scan's input, Δ after the softplus, B
  };
  auto drive = [](const MambaScanInputs& s) {
    return Drive{s.u.to(at::kDouble), at::softplus(s.dt.to(at::kDouble)), s.B.to(at::kDouble)};
  };
  const Drive c = drive(clean), p = drive(perturbed);
  const at::Tensor A = clean.A.to(at::kDouble);  // [D, N] −exp(A_log)
  const int64_t S = c.u.size(0), T = c.u.size(1);
  at::Tensor h = at::zeros({S, A.size(0), A.size(1)}, at::kDouble), hp = at::zeros_like(h);
  for (int64_t t = 0; t < T; ++t) {
    auto advance = [&](at::Tensor& state, const Drive& in) {
      const at::Tensor dt = in.dt.select(1, t).unsqueeze(2);  // [S, D, 1]
      state = at::exp(dt * A) * state + dt * in.B.select(1, t).unsqueeze(1) * in.u.select(1, t).unsqueeze(2);
    };
    advance(h, c);
    advance(hp, p);
    gap2.select(1, t) += (hp - h).square().sum({1, 2}).to(at::kCPU);
    norm2.select(1, t) += h.square().sum({1, 2}).to(at::kCPU);
  }
}

// The closed form from a layer's scan inputs.
LayerExponents exponents_of(const MambaScanInputs& in) {
  const at::Tensor delta = at::softplus(in.dt.to(at::kDouble));  // [S, T, inner]
  const at::Tensor A = in.A.to(at::kDouble);                     // [inner, N]
  LayerExponents out;
  out.exponents = A * delta.mean({0, 1}).unsqueeze(1);
  out.max = out.exponents.max().item<double>();
  out.mean = out.exponents.mean().item<double>();
  out.min = out.exponents.min().item<double>();
  out.max_single_sequence = (A.unsqueeze(0) * delta.mean(1).unsqueeze(2)).max().item<double>();
  out.mean_delta = delta.mean().item<double>();
  return out;
}

}  // namespace

LayerExponents layer_exponents(const Mamba& mixer, const at::Tensor& x) {
  at::NoGradGuard no_grad;
  return exponents_of(mixer.scan_inputs(x, {}));
}

LyapunovReport mamba_lyapunov(nn::Model& model, const at::Tensor& tokens, const LyapunovOptions& options) {
  const std::vector<MambaLayer> layers = mamba_layers(model);
  LR_CHECK(!layers.empty(), InvalidArgument, "lyapunov: the model (",
           nn::architecture_name(model.config().architecture), ") has no Mamba layer");
  LR_CHECK(model.dtype() == at::kDouble, InvalidArgument,
           "lyapunov: the model must be loaded in float64 (the whole-model estimate measures "
           "perturbations down to 1e-13 of the output), got ",
           c10::toString(model.dtype()));
  LR_CHECK(tokens.dim() == 2 && tokens.scalar_type() == at::kLong, InvalidArgument,
           "lyapunov: tokens must be [sequences, positions] int64, got ", tokens.sizes());
  LR_CHECK(options.epsilon > 0, InvalidArgument, "lyapunov: epsilon must be > 0, got ", options.epsilon);
  const int64_t S = tokens.size(0), T = tokens.size(1), P = options.perturbed_positions;
  const int64_t K = layers.front().mixer->options().conv_kernel;
  const int64_t fit_begin = P + K - 1;
  LR_CHECK(P >= 1 && fit_begin + 2 <= T, InvalidArgument, "lyapunov: ", T,
           " positions leave no room for a fit after ", P, " perturbed position(s) and the convolution's ",
           K - 1, " (need at least ", fit_begin + 2, ")");
  at::NoGradGuard no_grad;

  LyapunovReport report;
  report.sequences = S;
  report.positions = T;
  report.epsilon = options.epsilon;
  report.perturbed_positions = P;

  // The clean pass, recording each Mamba layer's mixer input (its in_proj input).
  const std::vector<MambaScanInputs> clean = layer_scan_inputs(model, layers, tokens, at::Tensor());
  report.all_negative = true;
  for (size_t i = 0; i < layers.size(); ++i) {
    LayerExponents e = exponents_of(clean[i]);
    e.layer = layers[i].index;
    report.all_negative = report.all_negative && e.max < 0;
    report.layers.push_back(std::move(e));
  }

  // The perturbed pass: ε times a random unit vector at each of the first P positions of the first
  // Mamba layer's mixer input; then every layer's states, clean and perturbed.
  at::Generator gen = at::detail::createCPUGenerator(options.seed);
  at::Tensor direction =
      at::randn({S, P, model.config().hidden_size}, gen, at::TensorOptions().dtype(at::kDouble));
  direction = direction / direction.norm(2, {2}, true);
  const std::vector<MambaScanInputs> perturbed =
      layer_scan_inputs(model, layers, tokens, (options.epsilon * direction).to(model.device()));
  at::Tensor gap2 = at::zeros({S, T}, at::kDouble), norm2 = at::zeros({S, T}, at::kDouble);
  for (size_t i = 0; i < layers.size(); ++i) add_state_gap(clean[i], perturbed[i], gap2, norm2);
  const at::Tensor delta_norm = gap2.sqrt();
  const at::Tensor log_growth =
      at::log(delta_norm.clamp_min(std::numeric_limits<double>::min()) / options.epsilon).mean(0);
  // The fit ends where any sequence's perturbation reaches the floor.
  const at::Tensor above = (delta_norm > 1e-13 * norm2.sqrt()).all(0);
  int64_t fit_end = fit_begin;
  while (fit_end < T && above[fit_end].item<bool>()) ++fit_end;
  PerturbationGrowth& g = report.whole_model;
  const auto growth = log_growth.contiguous();
  g.log_growth.assign(growth.data_ptr<double>(), growth.data_ptr<double>() + T);
  g.fit_begin = fit_begin;
  g.fit_end = fit_end;
  if (fit_end - fit_begin >= 2) {
    double st = 0, sy = 0, stt = 0, sty = 0;
    const double n = static_cast<double>(fit_end - fit_begin);
    for (int64_t t = fit_begin; t < fit_end; ++t) {
      const double y = g.log_growth[static_cast<size_t>(t)];
      st += double(t);
      sy += y;
      stt += double(t) * double(t);
      sty += double(t) * y;
    }
    g.exponent = (n * sty - st * sy) / (n * stt - st * st);
  } else {
    g.exponent = std::numeric_limits<double>::quiet_NaN();  // decayed below the floor at once
  }
  return report;
}

OrderedJson lyapunov_json(const LyapunovReport& report) {
  OrderedJson layers = OrderedJson::array();
  for (const LayerExponents& e : report.layers) {
    const at::Tensor x = e.exponents.contiguous();
    std::vector<std::vector<double>> rows;
    for (int64_t d = 0; d < x.size(0); ++d) {
      const double* p = x[d].data_ptr<double>();
      rows.emplace_back(p, p + x.size(1));
    }
    layers.push_back({{"layer", e.layer},
                      {"max", e.max},
                      {"mean", e.mean},
                      {"min", e.min},
                      {"max_single_sequence", e.max_single_sequence},
                      {"mean_delta", e.mean_delta},
                      {"exponents", rows}});
  }
  const PerturbationGrowth& g = report.whole_model;
  OrderedJson whole = {{"epsilon", report.epsilon},
                       {"perturbed_positions", report.perturbed_positions},
                       {"fit_begin", g.fit_begin},
                       {"fit_end", g.fit_end},
                       {"exponent", std::isfinite(g.exponent) ? OrderedJson(g.exponent) : OrderedJson()},
                       {"log_growth", g.log_growth}};
  return {{"method", "Lyapunov exponents of Mamba's recurrence (Halloran et al., arXiv:2406.00209)"},
          {"sequences", report.sequences},
          {"positions", report.positions},
          {"all_negative", report.all_negative},
          {"whole_model", whole},
          {"layers", layers}};
}

std::string lyapunov_svg(const LyapunovReport& report, const std::string& title) {
  const double width = 560, panel = 300;
  Svg svg(width, 2 * panel + 30);
  svg.text(8, 18, title, 14, "start", "#222", true);
  std::vector<analysis::Series> per_layer = {{"max", {}, {}}, {"median", {}, {}}, {"min", {}, {}}};
  for (const LayerExponents& e : report.layers) {
    const double layer = static_cast<double>(e.layer);
    for (auto& s : per_layer) s.x.push_back(layer);
    per_layer[0].y.push_back(e.max);
    per_layer[1].y.push_back(e.exponents.flatten().median().item<double>());
    per_layer[2].y.push_back(e.min);
  }
  analysis::LinePlotOptions a;
  a.title = std::string("closed form λ = A · mean Δ per layer (all negative: ") +
            (report.all_negative ? "yes" : "no") + ")";
  a.x_label = "layer";
  a.y_label = "exponent (nats / position)";
  analysis::draw_line_plot(svg, 0, 30, width, panel, per_layer, a);

  const PerturbationGrowth& g = report.whole_model;
  analysis::Series curve{"ln(‖δh_t‖ / ε)", {}, {}}, fit{"fit", {}, {}};
  for (size_t t = 0; t < g.log_growth.size(); ++t) {
    curve.x.push_back(double(t));
    curve.y.push_back(g.log_growth[t]);
  }
  if (std::isfinite(g.exponent)) {
    double mean_t = 0, mean_y = 0;
    for (int64_t t = g.fit_begin; t < g.fit_end; ++t) {
      mean_t += double(t);
      mean_y += g.log_growth[static_cast<size_t>(t)];
    }
    mean_t /= double(g.fit_end - g.fit_begin);
    mean_y /= double(g.fit_end - g.fit_begin);
    for (int64_t t : {g.fit_begin, g.fit_end - 1}) {
      fit.x.push_back(double(t));
      fit.y.push_back(mean_y + g.exponent * (double(t) - mean_t));
    }
  }
  analysis::LinePlotOptions b;
  char slope[64];
  std::snprintf(slope, sizeof slope, "%.4g", g.exponent);
  b.title = std::string("whole model, float64: slope ") + slope + " nats / position";
  b.x_label = "position";
  b.y_label = "ln growth of the perturbation";
  analysis::draw_line_plot(svg, 0, 30 + panel, width, panel, {curve, fit}, b);
  return svg.str();
}

void write_lyapunov_report(const fs::path& out_dir, const LyapunovReport& report, const std::string& title) {
  std::error_code ec;
  fs::create_directories(out_dir, ec);
  LR_CHECK(!ec && fs::is_directory(out_dir), IoError, out_dir.string(), ": cannot create directory (",
           ec.message(), ")");
  write_json_file(out_dir / "lyapunov.json", lyapunov_json(report));
  write_file_atomic(out_dir / "lyapunov.svg", lyapunov_svg(report, title));
}

}  // namespace lowrank::mix
