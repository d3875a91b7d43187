#include "lowrank/linalg/rank.h"

#include <charconv>
#include <cmath>
#include <limits>

#include "lowrank/core/error.h"

namespace lowrank::linalg {
namespace {

at::Tensor as_spectrum(const at::Tensor& s) {
  LR_CHECK(s.dim() == 1, InvalidArgument, "spectrum must be 1-D, got ", s.dim(), "-D");
  return s.to(at::kDouble).contiguous();
}

double parse_number(std::string_view text, std::string_view whole) {
  double v = 0;
  auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  LR_CHECK(ec == std::errc() && ptr == text.data() + text.size(), InvalidArgument, "rank rule \"", whole,
           "\": \"", text, "\" is not a number");
  return v;
}

}  // namespace

int64_t energy_rank(const at::Tensor& s_in, double fraction) {
  LR_CHECK(fraction > 0 && fraction <= 1, InvalidArgument, "energy fraction ", fraction, " is not in (0, 1]");
  auto s = as_spectrum(s_in);
  const int64_t n = s.numel();
  auto energy = (s * s).cumsum(0);
  double total = n ? energy[n - 1].item<double>() : 0.0;
  if (total <= 0) return 0;
  // The first k whose cumulative energy reaches the target (1e-12 absorbs rounding at f = 1).
  auto reached = (energy >= fraction * total * (1 - 1e-12)).nonzero();
  return reached.numel() ? reached[0][0].item<int64_t>() + 1 : n;
}

double effective_rank(const at::Tensor& s_in) {
  auto s = as_spectrum(s_in);
  double total = s.sum().item<double>();
  if (total <= 0) return 0.0;
  auto p = s / total;
  auto nz = p.masked_select(p > 0);
  double entropy = -(nz * nz.log()).sum().item<double>();
  return std::exp(entropy);
}

at::Tensor normalized_spectrum(const at::Tensor& s_in) {
  auto s = as_spectrum(s_in);
  if (s.numel() == 0) return s;
  double hi = s.max().item<double>(), lo = s.min().item<double>();
  if (hi <= lo) return at::full_like(s, std::numeric_limits<double>::quiet_NaN());
  return (s - lo) / (hi - lo);
}

int64_t welore_rank(const at::Tensor& s, double tau) {
  LR_CHECK(tau >= 0 && tau <= 1, InvalidArgument, "WeLore threshold ", tau, " is not in [0, 1]");
  auto norm = normalized_spectrum(s);
  // NaN entries (a flat spectrum) compare false, so such a spectrum keeps every rank.
  int64_t dropped = (norm < tau).sum().item<int64_t>();
  return norm.numel() - dropped;
}

RankRule RankRule::parse(std::string_view text) {
  auto colon = text.find(':');
  std::string_view kind = text.substr(0, colon);
  std::string_view arg = colon == std::string_view::npos ? std::string_view{} : text.substr(colon + 1);
  RankRule rule;
  if (kind == "fixed") {
    rule.kind = Kind::kFixed;
    rule.value = parse_number(arg, text);
    LR_CHECK(rule.value >= 1 && rule.value == std::floor(rule.value), InvalidArgument, "rank rule \"", text,
             "\": the rank must be a positive integer");
  } else if (kind == "energy") {
    rule.kind = Kind::kEnergy;
    rule.value = parse_number(arg, text);
    LR_CHECK(rule.value > 0 && rule.value <= 1, InvalidArgument, "rank rule \"", text,
             "\": the energy fraction must be in (0, 1]");
  } else if (kind == "effective") {
    LR_CHECK(arg.empty(), InvalidArgument, "rank rule \"", text, "\": effective takes no argument");
    rule.kind = Kind::kEffective;
  } else if (kind == "welore") {
    rule.kind = Kind::kWeLore;
    rule.value = arg.empty() ? kWeLoreDefaultTau : parse_number(arg, text);
    LR_CHECK(rule.value >= 0 && rule.value <= 1, InvalidArgument, "rank rule \"", text,
             "\": the threshold must be in [0, 1]");
  } else {
    throw InvalidArgument(
        str("rank rule \"", text, "\": expected fixed:K, energy:F, effective or welore[:TAU]"));
  }
  return rule;
}

std::string RankRule::to_string() const {
  switch (kind) {
    case Kind::kFixed:
      return str("fixed:", static_cast<int64_t>(value));
    case Kind::kEnergy:
      return str("energy:", value);
    case Kind::kEffective:
      return "effective";
    case Kind::kWeLore:
      return str("welore:", value);
  }
  return "?";
}

int64_t RankRule::select(const at::Tensor& s) const {
  const int64_t n = s.numel();
  int64_t k = 0;
  switch (kind) {
    case Kind::kFixed:
      k = static_cast<int64_t>(value);
      break;
    case Kind::kEnergy:
      k = energy_rank(s, value);
      break;
    case Kind::kEffective:
      k = static_cast<int64_t>(std::llround(effective_rank(s)));
      break;
    case Kind::kWeLore:
      k = welore_rank(s, value);
      break;
  }
  if (n == 0) return 0;
  return std::clamp<int64_t>(k, 1, n);
}

}  // namespace lowrank::linalg
