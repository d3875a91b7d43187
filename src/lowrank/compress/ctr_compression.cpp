#include "lowrank/compress/ctr_compression.h"

#include <chrono>
#include <cmath>
#include <map>

#include <ATen/core/grad_mode.h>

#include "lowrank/compress/afm.h"
#include "lowrank/core/error.h"
#include "lowrank/core/progress.h"
#include "lowrank/linalg/whiten.h"

namespace lowrank::compress {

void CtrCompressOptions::check() const {
  LR_CHECK(method == "afm" || method == "svd", InvalidArgument, "CTR compression: method \"", method,
           "\" (known: afm, svd)");
  LR_CHECK((ratio > 0) != (factor > 0), InvalidArgument,
           "CTR compression: give exactly one of ratio (in (0, 1)) and factor (> 1)");
  LR_CHECK(ratio == 0 || (ratio > 0 && ratio < 1), InvalidArgument, "CTR compression: ratio ", ratio,
           " must be in (0, 1)");
  LR_CHECK(factor == 0 || factor > 1, InvalidArgument, "CTR compression: factor ", factor, " must be > 1");
  LR_CHECK(embeddings || dnn || cross, InvalidArgument, "CTR compression: no layers selected");
  LR_CHECK(calibration_rows >= 0 && batch_size >= 1, InvalidArgument, "CTR compression: calibration_rows (",
           calibration_rows, ") must be >= 0 and batch_size (", batch_size, ") >= 1");
  LR_CHECK(method == "afm" || (!relu && centred), InvalidArgument,
           "CTR compression: relu and centred are AFM options");
}

OrderedJson CtrCompressReport::to_json() const {
  OrderedJson rows = OrderedJson::array();
  for (const CtrLayerReport& l : layers)
    rows.push_back(OrderedJson{{"name", l.name},
                               {"width", l.width},
                               {"rank", l.rank},
                               {"params_before", l.params_before},
                               {"params_after", l.params_after},
                               {"tail", l.tail},
                               {"energy", l.energy}});
  return OrderedJson{
      {"method", method},
      {"ratio", ratio},
      {"model_params_before", model_params_before},
      {"model_params_after", model_params_after},
      {"factor", static_cast<double>(model_params_before) / static_cast<double>(model_params_after)},
      {"calibration_rows", calibration_rows},
      {"seconds", seconds},
      {"layers", rows}};
}

int64_t ctr_linear_rank(int64_t out, int64_t in, double ratio) {
  const double budget = (1 - ratio) * static_cast<double>(out * in + out);
  const auto k = static_cast<int64_t>(
      std::floor((budget - static_cast<double>(out)) / static_cast<double>(in + 1 + out)));
  return std::clamp<int64_t>(k, 0, out - 1);
}

int64_t ctr_embedding_rank(int64_t rows, int64_t dim, double ratio) {
  const double budget = (1 - ratio) * static_cast<double>(rows * dim);
  const auto k =
      static_cast<int64_t>(std::floor((budget - static_cast<double>(dim)) / static_cast<double>(rows + dim)));
  return std::clamp<int64_t>(k, 0, dim - 1);
}

namespace {

// W ≈ (U_k Σ_k^½)(Σ_k^½ V_kᵀ): the whitened primitive with S = I (linalg/whiten.h, float64).
std::pair<at::Tensor, at::Tensor> svd_factors(const at::Tensor& w, int64_t k) {
  const at::Tensor W = w.detach().to(at::kDouble);
  const linalg::LowRankFactors f =
      linalg::whitened_lowrank(W, linalg::diagonal_whitener(at::ones({W.size(1)}, at::kDouble)), k);
  return {f.L.to(at::kFloat), f.R.to(at::kFloat)};
}

}  // namespace

CtrCompressReport compress_ctr_model(nn::CtrModel& model, const data::CtrData& calibration,
                                     const CtrCompressOptions& options) {
  options.check();
  LR_CHECK(model.compression().is_null(), InvalidArgument,
           "CTR compression: the model is already compressed (lowrank_config.json); compress the original");
  const auto t0 = std::chrono::steady_clock::now();
  CtrCompressReport report;
  report.method = options.method;
  report.model_params_before = model.parameter_count();
  const bool afm = options.method == "afm";

  // Which layers, and the ratio.
  int64_t compressible = 0;
  if (options.embeddings)
    for (const nn::CtrEmbedding& e : model.embeddings()) compressible += e.parameter_count();
  if (options.dnn)
    for (const nn::CtrLinear& l : model.dnn()) compressible += l.parameter_count();
  if (options.cross)
    for (const nn::CtrLinear& l : model.cross()) compressible += l.parameter_count();
  double ratio = options.ratio;
  if (options.factor > 0) {
    ratio = (1 - 1 / options.factor) * static_cast<double>(report.model_params_before) /
            static_cast<double>(compressible);
    LR_CHECK(ratio < 1, InvalidArgument, "CTR compression: factor ", options.factor,
             " is out of reach: the selected layers hold ", compressible, " of the model's ",
             report.model_params_before, " parameters");
  }
  report.ratio = ratio;

  // AFM: output statistics of every selected layer, from the original model.
  std::map<std::string, OutputStatistics> stats;
  if (afm) {
    const int64_t rows = options.calibration_rows > 0 ? std::min(options.calibration_rows, calibration.rows())
                                                      : calibration.rows();
    LR_CHECK(rows >= 1, InvalidArgument, "AFM: empty calibration data (no rows)");
    report.calibration_rows = rows;
    auto wanted = [&](const std::string& layer) {
      return (options.embeddings && layer.starts_with("embedding_dict.")) ||
             (options.dnn && layer.starts_with("dnn.")) || (options.cross && layer.starts_with("crossnet."));
    };
    at::NoGradGuard no_grad;
    ProgressBar bar((rows + options.batch_size - 1) / options.batch_size, "calibrate");
    for (int64_t begin = 0; begin < rows; begin += options.batch_size) {
      model.forward(calibration.slice(begin, std::min(rows, begin + options.batch_size)),
                    [&](const std::string& layer, const at::Tensor& y) {
                      if (wanted(layer)) stats[layer].add(y);
                    });
      bar.advance();
    }
    bar.finish();
  }

  Json layers = Json::object();
  auto record = [&](CtrLayerReport row, const AfmProjection* p) {
    if (p != nullptr) {
      row.tail = p->tail();
      const double total = p->eigenvalues.sum().item<double>();
      row.energy = total > 0 ? 1 - row.tail / total : 1.0;
    }
    if (row.rank > 0) {
      Json entry{{"method", options.method}, {"rank", row.rank}};
      if (afm) entry["relu"] = options.relu;
      layers[row.name] = entry;
    }
    report.layers.push_back(std::move(row));
  };

  const data::CtrSchema& schema = model.config().schema;
  if (options.embeddings) {
    for (size_t f = 0; f < model.embeddings().size(); ++f) {
      nn::CtrEmbedding& e = model.embeddings()[f];
      const std::string name = "embedding_dict." + schema.sparse[f].name;
      CtrLayerReport row{name, e.dim(), -1, e.parameter_count(), e.parameter_count()};
      const int64_t k = ctr_embedding_rank(e.table.size(0), e.dim(), ratio);
      std::optional<AfmProjection> p;
      if (k >= 1) {
        if (afm) {
          p = afm_projection(stats.at(name), k, options.centred);
          AfmEmbedding r = afm_embedding(e.table, *p);
          e = {r.table, r.proj_weight, r.proj_bias};
        } else {
          auto [left, right] = svd_factors(e.table, k);
          // E ≈ (U Σ^½)(Σ^½ Vᵀ): the table keeps the left factor, the projection is the right one.
          e = {left, right.t().contiguous(), at::zeros({e.dim()})};
        }
        row.rank = k;
        row.params_after = e.parameter_count();
      }
      record(row, p ? &*p : nullptr);
    }
  }
  auto compress_linears = [&](std::vector<nn::CtrLinear>& list, const std::string& prefix) {
    for (size_t i = 0; i < list.size(); ++i) {
      nn::CtrLinear& l = list[i];
      const std::string name = prefix + std::to_string(i);
      CtrLayerReport row{name, l.out_features(), -1, l.parameter_count(), l.parameter_count()};
      const int64_t k = ctr_linear_rank(l.out_features(), l.in_features(), ratio);
      std::optional<AfmProjection> p;
      if (k >= 1) {
        if (afm) {
          p = afm_projection(stats.at(name), k, options.centred);
          const AfmLinear r = afm_linear(l.weight, l.bias, *p);
          l = {r.w1, r.b1, r.w2, r.b2, options.relu};
        } else {
          auto [left, right] = svd_factors(l.weight, k);
          l = {right, at::zeros({k}), left, l.bias.detach().clone(), false};
        }
        row.rank = k;
        row.params_after = l.parameter_count();
      }
      record(row, p ? &*p : nullptr);
    }
  };
  if (options.dnn) compress_linears(model.dnn(), "dnn.linears.");
  if (options.cross) compress_linears(model.cross(), "crossnet.");

  model.compression() = Json{{"format", "lowrank-ctr-compressed"}, {"version", 1},
                             {"method", options.method},           {"ratio", ratio},
                             {"centred", options.centred},         {"layers", layers}};
  report.model_params_after = model.parameter_count();
  report.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return report;
}

}  // namespace lowrank::compress
