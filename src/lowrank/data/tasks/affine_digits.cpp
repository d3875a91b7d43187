#include "lowrank/data/tasks/affine_digits.h"

#include <charconv>
#include <cmath>
#include <numbers>
#include <numeric>
#include <sstream>

#include "lowrank/core/error.h"
#include "lowrank/core/file.h"
#include "lowrank/core/progress.h"
#include "lowrank/data/tasks/task_rng.h"

namespace lowrank::data::tasks {

namespace fs = std::filesystem;

namespace {

struct Digit {
  std::array<int32_t, 64> pixels{};  // 0–16
  int32_t label = 0;
};

// The 65 comma-separated integers of each line; Corruption naming file:line otherwise.
std::vector<Digit> read_digits(const fs::path& path) {
  LR_CHECK(fs::exists(path), NotFound, path.string(),
           " does not exist; install the Debian package python3-sklearn (scripts/setup does) or pass "
           "--data-file");
  const std::string text = read_text_file_gz(path);
  std::vector<Digit> out;
  std::istringstream in(text);
  std::string line;
  for (int64_t number = 1; std::getline(in, line); ++number) {
    if (line.empty() || line == "\r") continue;
    Digit d;
    std::size_t field = 0;
    const char* p = line.data();
    const char* end = line.data() + line.size();
    while (p < end && field < 65) {
      double value = 0;
      const auto [next, ec] = std::from_chars(p, end, value);
      LR_CHECK(ec == std::errc() && value == std::floor(value), Corruption, path.string(), ":", number,
               ": field ", field + 1, " is not an integer");
      if (field < 64) {
        LR_CHECK(value >= 0 && value <= 16, Corruption, path.string(), ":", number, ": pixel ", field + 1,
                 " = ", value, " is outside 0..16");
        d.pixels[field] = static_cast<int32_t>(value);
      } else {
        LR_CHECK(value >= 0 && value <= 9, Corruption, path.string(), ":", number, ": label ", value,
                 " is not a digit");
        d.label = static_cast<int32_t>(value);
      }
      ++field;
      p = next;
      if (p < end && *p == ',') ++p;
    }
    LR_CHECK(field == 65 && (p == end || *p == '\r'), Corruption, path.string(), ":", number,
             ": expected 64 pixels and a label, got ", field, " fields");
    out.push_back(d);
  }
  LR_CHECK(!out.empty(), Corruption, path.string(), ": no digits");
  return out;
}

double parse_real(const std::string& text, const std::string& key) {
  double v = 0;
  const auto [p, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  LR_CHECK(ec == std::errc() && p == text.data() + text.size() && std::isfinite(v), InvalidArgument,
           option_flag(key), " ", text, ": not a number");
  return v;
}

void generate_affine_digits(const TaskRequest& request) {
  TaskParams params(request);
  const auto [train_size, val_size, test_size] = params.split_sizes({1000, 200, 597});
  const int64_t size = params.integer("size", 16, 8, 64);
  const double rotation = parse_real(params.text("rotation", "3.141592653589793"), "rotation");
  const double shear = parse_real(params.text("shear", "0.3"), "shear");
  const std::string scale_text = params.text("scale", "0.8:1.2");
  const std::string pose = params.text("test_pose", "affine");
  const std::string data_file = params.text("data_file", kSklearnDigitsFile);
  params.finish();
  const auto colon = scale_text.find(':');
  LR_CHECK(colon != std::string::npos, InvalidArgument, "--scale ", scale_text, ": expected MIN:MAX");
  const double scale_min = parse_real(scale_text.substr(0, colon), "scale");
  const double scale_max = parse_real(scale_text.substr(colon + 1), "scale");
  LR_CHECK(scale_min > 0 && scale_min <= scale_max, InvalidArgument, "--scale ", scale_text,
           ": expected 0 < MIN <= MAX");
  LR_CHECK(rotation >= 0 && shear >= 0, InvalidArgument, "--rotation and --shear must be >= 0, got ",
           rotation, " and ", shear);
  LR_CHECK(pose == "affine" || pose == "identity", InvalidArgument, "--test-pose ", pose,
           ": expected affine or identity");

  const std::vector<Digit> digits = read_digits(data_file);
  const auto total = static_cast<int64_t>(digits.size());
  LR_CHECK(train_size + val_size + test_size <= total, InvalidArgument, data_file, " holds ", total,
           " digits, fewer than the ", train_size + val_size + test_size, " asked for");

  TaskHeader header =
      header_for(request, "UCI optical digits (sklearn's digits.csv.gz), padded, affine test split");
  header.parameters = params.resolved();
  header.vocab_size = 256;
  header.token_type = ElementType::kUint8;
  header.target = "class";
  header.classes = {"0", "1", "2", "3", "4", "5", "6", "7", "8", "9"};
  header.layout = OrderedJson{{"kind", "image"}, {"height", size}, {"width", size}, {"channels", 1}};
  header.sources = {{"file", data_file}};
  TaskWriter writer(request.out, std::move(header));

  std::vector<int64_t> order(static_cast<std::size_t>(total));
  std::iota(order.begin(), order.end(), 0);
  TaskRng rng(request.seed);
  rng.shuffle(std::span(order));
  TaskRng pose_rng(request.seed, 1);
  const int64_t offset = (size - 8) / 2;
  std::vector<int32_t> pixels(static_cast<std::size_t>(size * size));
  auto emit = [&](Split split, int64_t index, bool transform) {
    const Digit& d = digits[static_cast<std::size_t>(index)];
    std::vector<double> image(static_cast<std::size_t>(size * size), 0.0);
    for (int64_t r = 0; r < 8; ++r)
      for (int64_t c = 0; c < 8; ++c)
        image[static_cast<std::size_t>((r + offset) * size + c + offset)] =
            d.pixels[static_cast<std::size_t>(r * 8 + c)] * 255.0 / 16.0;
    if (transform) {
      const double theta = (2 * pose_rng.uniform01() - 1) * rotation;
      const double s = (2 * pose_rng.uniform01() - 1) * shear;
      const double sigma = scale_min + pose_rng.uniform01() * (scale_max - scale_min);
      const double c = std::cos(theta), n = std::sin(theta);
      // R(θ) · [[1, s], [0, 1]] · σ
      image = affine_resample(image, size, {sigma * c, sigma * (c * s - n), sigma * n, sigma * (n * s + c)});
    }
    for (std::size_t i = 0; i < pixels.size(); ++i)
      pixels[i] = static_cast<int32_t>(std::clamp(std::lround(image[i]), 0L, 255L));
    writer.add(split, pixels, std::span(&d.label, 1));
  };
  for (int64_t i = 0; i < test_size; ++i)
    emit(Split::kTest, order[static_cast<std::size_t>(i)], pose == "affine");
  for (int64_t i = 0; i < val_size; ++i)
    emit(Split::kVal, order[static_cast<std::size_t>(test_size + i)], false);
  for (int64_t i = 0; i < train_size; ++i)
    emit(Split::kTrain, order[static_cast<std::size_t>(test_size + val_size + i)], false);
  writer.commit();
}

}  // namespace

std::vector<double> affine_resample(const std::vector<double>& image, int64_t size,
                                    const std::array<double, 4>& a) {
  const double det = a[0] * a[3] - a[1] * a[2];
  LR_CHECK(std::abs(det) > 1e-12, InvalidArgument, "affine map with determinant ", det, " is not invertible");
  const std::array<double, 4> inv = {a[3] / det, -a[1] / det, -a[2] / det, a[0] / det};
  const double centre = static_cast<double>(size - 1) / 2;
  std::vector<double> out(static_cast<std::size_t>(size * size), 0.0);
  auto at = [&](int64_t r, int64_t c) {
    return r < 0 || c < 0 || r >= size || c >= size ? 0.0 : image[static_cast<std::size_t>(r * size + c)];
  };
  for (int64_t r = 0; r < size; ++r)
    for (int64_t c = 0; c < size; ++c) {
      const double x = static_cast<double>(c) - centre, y = static_cast<double>(r) - centre;
      const double sx = inv[0] * x + inv[1] * y + centre, sy = inv[2] * x + inv[3] * y + centre;
      const auto c0 = static_cast<int64_t>(std::floor(sx)), r0 = static_cast<int64_t>(std::floor(sy));
      const double fx = sx - static_cast<double>(c0), fy = sy - static_cast<double>(r0);
      out[static_cast<std::size_t>(r * size + c)] =
          (1 - fy) * ((1 - fx) * at(r0, c0) + fx * at(r0, c0 + 1)) +
          fy * ((1 - fx) * at(r0 + 1, c0) + fx * at(r0 + 1, c0 + 1));
    }
  return out;
}

TaskDefinition affine_digits_task() {
  TaskDefinition t;
  t.name = "affine-digits";
  t.summary = "8x8 digits padded to 16x16: train/val at identity pose, test under random affine maps";
  t.options = {{"train_size", "training images (default 1000)"},
               {"val_size", "validation images, identity pose (default 200)"},
               {"test_size", "test images, each under its own affine map (default 597)"},
               {"size", "padded image side (default 16)"},
               {"rotation", "largest rotation angle in radians (default pi)"},
               {"shear", "largest shear (default 0.3)"},
               {"scale", "scale range MIN:MAX (default 0.8:1.2)"},
               {"test_pose", "affine | identity (default affine)"},
               {"data_file", str("the digits CSV (default ", kSklearnDigitsFile, ")")}};
  t.generate = generate_affine_digits;
  return t;
}

}  // namespace lowrank::data::tasks
