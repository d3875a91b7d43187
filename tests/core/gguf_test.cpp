// core/gguf: the reader against files written by llama.cpp's gguf package (tests/fixtures/gguf,
// make.py), the F16 / BF16 / Q8_0 / Q4_0 encoders bit for bit against gguf.quants on the same
// floats, F16 rounding against c10::Half, write / read round trips, and malformed files refused
// with errors that name the field.
#include <gtest/gtest.h>

#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <cmath>
#include <cstring>
#include <random>

#include "lowrank/core/file.h"
#include "lowrank/core/gguf.h"
#include "lowrank/core/json.h"
#include "tests/testing.h"

namespace lowrank {
namespace {

namespace fs = std::filesystem;
using gguf::TensorType;
using gguf::Value;
using gguf::ValueType;

std::vector<std::byte> read_bytes(const fs::path& path) {
  const MappedFile f = MappedFile::open(path);
  return {f.bytes().begin(), f.bytes().end()};
}

const gguf::TensorInfo& tensor(const gguf::Header& h, const std::string& name) {
  for (const gguf::TensorInfo& t : h.tensors)
    if (t.name == name) return t;
  throw std::runtime_error("no tensor " + name);
}

std::vector<float> floats(std::span<const std::byte> bytes) {
  std::vector<float> out(bytes.size() / 4);
  std::memcpy(out.data(), bytes.data(), bytes.size());
  return out;
}

TEST(GgufTest, ReadsTheGgufPackagesMetadataAndTensors) {
  const std::vector<std::byte> file = read_bytes(testing::fixture("gguf/quants.gguf"));
  const gguf::Header h = gguf::parse(file, "quants.gguf");
  const Json expected = read_json_file(testing::fixture("gguf/expected.json"));
  EXPECT_EQ(h.version, 3u);
  EXPECT_EQ(h.alignment, 32u);
  ASSERT_NE(h.find("general.architecture"), nullptr);
  EXPECT_EQ(h.find("general.architecture")->text, "test");
  for (const auto& [key, value] : expected["metadata"].items()) {
    const Value* v = h.find(key);
    ASSERT_NE(v, nullptr) << key;
    const std::string type = expected["types"][key];
    SCOPED_TRACE(key + " " + type);
    if (type == "STRING") {
      EXPECT_EQ(v->as_string(key), value.get<std::string>());
    } else if (type == "FLOAT32" || type == "FLOAT64") {
      EXPECT_EQ(v->as_real(key), value.get<double>());
    } else if (type == "BOOL") {
      EXPECT_EQ(v->type, ValueType::kBool);
      EXPECT_EQ(v->uint != 0, value.get<bool>());
    } else if (type.starts_with("U")) {
      EXPECT_EQ(v->as_uint(key), value.get<uint64_t>());
    } else {
      EXPECT_EQ(v->as_int(key), value.get<int64_t>());
    }
  }
  EXPECT_EQ(h.find("test.u8")->type, ValueType::kU8);
  EXPECT_EQ(h.find("test.i64")->type, ValueType::kI64);
  EXPECT_EQ(*h.find("test.strings"), Value::strings({"a", "b c", "", "ü"}));
  EXPECT_EQ(*h.find("test.i32s"), Value::i32s({1, -2, 3}));
  const Value& f32s = *h.find("test.f32s");
  ASSERT_EQ(f32s.element_type, ValueType::kF32);
  EXPECT_EQ(f32s.items.at(1).real, -1.25);
  EXPECT_EQ(h.find("test.bools")->items.at(0).uint, 1u);

  const std::vector<std::string> names = {"input",        "q8_0", "q8_0.dequant", "q4_0",
                                          "q4_0.dequant", "f16",  "bf16"};
  ASSERT_EQ(h.tensors.size(), names.size());
  for (size_t i = 0; i < names.size(); ++i) {
    EXPECT_EQ(h.tensors[i].name, names[i]);
    EXPECT_EQ(h.tensors[i].dims, (std::vector<uint64_t>{64, 8}));  // ne[0] = the row
    EXPECT_EQ(h.tensors[i].offset % 32, 0u);
  }
  EXPECT_EQ(tensor(h, "q8_0").type, TensorType::kQ8_0);
  EXPECT_EQ(tensor(h, "q4_0").type, TensorType::kQ4_0);
  EXPECT_EQ(tensor(h, "bf16").type, TensorType::kBF16);
  EXPECT_EQ(gguf::tensor_bytes(file, h, tensor(h, "q4_0")).size(), 16u * 18u);
}

// The oracle: gguf.quants.quantize (llama.cpp's Python port of quantize_row_*_ref, stated bit-exact)
// on the same float32 input, and gguf.quants.dequantize for the way back.
TEST(GgufTest, EncodersAreBitExactAgainstGgufQuants) {
  const std::vector<std::byte> file = read_bytes(testing::fixture("gguf/quants.gguf"));
  const gguf::Header h = gguf::parse(file, "quants.gguf");
  const std::vector<float> input = floats(gguf::tensor_bytes(file, h, tensor(h, "input")));
  ASSERT_EQ(input.size(), 512u);
  for (const auto& [name, type] :
       std::vector<std::pair<std::string, TensorType>>{{"q8_0", TensorType::kQ8_0},
                                                       {"q4_0", TensorType::kQ4_0},
                                                       {"f16", TensorType::kF16},
                                                       {"bf16", TensorType::kBF16}}) {
    SCOPED_TRACE(name);
    const std::span<const std::byte> want = gguf::tensor_bytes(file, h, tensor(h, name));
    const std::vector<std::byte> got = gguf::encode(input, 64, type, name);
    ASSERT_EQ(got.size(), want.size());
    for (size_t i = 0; i < got.size(); ++i)
      ASSERT_EQ(got[i], want[i]) << "byte " << i << " (block " << i / gguf::type_size(type) << ")";
    if (type == TensorType::kQ8_0 || type == TensorType::kQ4_0) {
      const std::vector<float> dequant = floats(gguf::tensor_bytes(file, h, tensor(h, name + ".dequant")));
      const std::vector<float> ours = gguf::decode(want, 512, type, name);
      for (size_t i = 0; i < ours.size(); ++i)
        ASSERT_EQ(std::bit_cast<uint32_t>(ours[i]), std::bit_cast<uint32_t>(dequant[i])) << i;
    }
  }
}

// c10::Half and c10::BFloat16 round to nearest even too: an independent implementation.
TEST(GgufTest, HalfConversionsAgreeWithC10) {
  std::mt19937 rng(29);
  std::vector<float> xs = {0.0f,     -0.0f,         65504.0f,      65519.99f,     65520.0f,
                           1e-8f,    2.9802322e-8f, 2.9802326e-8f, 6.1035156e-5f, 6.1e-5f,
                           INFINITY, -INFINITY,     1.0f / 3,      -1e-7f,        1.00048828125f};
  for (int i = 0; i < 200000; ++i) {
    uint32_t bits = rng();
    float x;
    std::memcpy(&x, &bits, 4);
    if (!std::isnan(x)) xs.push_back(x);
  }
  for (uint32_t h = 0; h < 65536; ++h) {  // every half, and the midpoints beside it
    const float v = static_cast<float>(c10::Half(static_cast<uint16_t>(h), c10::Half::from_bits()));
    if (std::isnan(v)) continue;
    xs.push_back(v);
    xs.push_back(std::nextafter(v, INFINITY));
    xs.push_back(std::nextafter(v, -INFINITY));
  }
  for (float x : xs) {
    ASSERT_EQ(gguf::f32_to_f16(x), c10::Half(x).x) << x;
    ASSERT_EQ(gguf::f32_to_bf16(x), c10::BFloat16(x).x) << x;
    const c10::Half h(x);
    if (!std::isnan(static_cast<float>(h))) {
      ASSERT_EQ(gguf::f16_to_f32(h.x), static_cast<float>(h)) << x;
    }
  }
}

gguf::Metadata every_type() {
  gguf::Metadata md;
  md.emplace_back("general.architecture", Value::string("llama"));
  md.emplace_back("a.u8", Value::u8(255));
  md.emplace_back("a.u32", Value::u32(4000000000u));
  md.emplace_back("a.u64", Value::u64(~0ull));
  md.emplace_back("a.i32", Value::i32(-5));
  md.emplace_back("a.f32", Value::f32(0.1f));
  md.emplace_back("a.f64", Value::f64(-2.5e300));
  md.emplace_back("a.bool", Value::boolean(true));
  md.emplace_back("a.s", Value::string(std::string("nul\0inside", 10)));
  md.emplace_back("a.strings", Value::strings({"x", "", "y z"}));
  md.emplace_back("a.i32s", Value::i32s({-1, 0, 1}));
  return md;
}

TEST(GgufTest, WritesAndReadsBackEveryKeyAndTensor) {
  testing::TempDir dir;
  for (uint32_t alignment : {32u, 64u, 256u}) {
    SCOPED_TRACE(alignment);
    gguf::Metadata md = every_type();
    if (alignment != 32) md.emplace_back("general.alignment", Value::u32(alignment));
    std::vector<float> values(3 * 64);
    for (size_t i = 0; i < values.size(); ++i) values[i] = std::sin(0.37f * static_cast<float>(i)) * 3;
    std::vector<gguf::TensorInfo> infos;
    std::vector<std::vector<std::byte>> data;
    for (TensorType type :
         {TensorType::kF32, TensorType::kF16, TensorType::kBF16, TensorType::kQ8_0, TensorType::kQ4_0}) {
      infos.push_back({.name = str("t.", gguf::tensor_type_name(type)), .dims = {64, 3}, .type = type});
      data.push_back(gguf::encode(values, 64, type, "t"));
    }
    infos.push_back({.name = "odd", .dims = {3}, .type = TensorType::kF32});
    data.push_back(gguf::encode(std::vector<float>{1, 2, 3}, 3, TensorType::kF32, "odd"));
    const fs::path path = dir / str("rt", alignment, ".gguf");
    gguf::write_file(path, md, infos, [&](size_t i) { return data[i]; });

    const std::vector<std::byte> file = read_bytes(path);
    const gguf::Header h = gguf::parse(file, path.string());
    EXPECT_EQ(h.metadata, md);
    EXPECT_EQ(h.alignment, alignment);
    EXPECT_EQ(h.data_start % alignment, 0u);
    ASSERT_EQ(h.tensors.size(), infos.size());
    for (size_t i = 0; i < infos.size(); ++i) {
      EXPECT_EQ(h.tensors[i].name, infos[i].name);
      EXPECT_EQ(h.tensors[i].dims, infos[i].dims);
      EXPECT_EQ(h.tensors[i].type, infos[i].type);
      EXPECT_EQ(h.tensors[i].offset % alignment, 0u);
      const auto bytes = gguf::tensor_bytes(file, h, h.tensors[i]);
      EXPECT_TRUE(std::equal(bytes.begin(), bytes.end(), data[i].begin(), data[i].end())) << infos[i].name;
    }
  }
}

size_t files_in(const fs::path& dir) {
  return static_cast<size_t>(std::distance(fs::directory_iterator(dir), fs::directory_iterator()));
}

TEST(GgufTest, WriterRefusesBadInputAndLeavesNoFile) {
  testing::TempDir dir;
  const fs::path path = dir / "x.gguf";
  auto write = [&](gguf::Metadata md, std::vector<gguf::TensorInfo> infos) {
    return testing::error_of([&] {
      gguf::write_file(path, md, infos,
                       [&](size_t i) { return std::vector<std::byte>(infos[i].byte_count()); });
    });
  };
  const gguf::TensorInfo ok{.name = "w", .dims = {64, 2}, .type = TensorType::kQ8_0};
  EXPECT_NE(write({{"k", Value::u8(1)}, {"k", Value::u8(2)}}, {ok}).find("duplicate key \"k\""),
            std::string::npos);
  EXPECT_NE(write({}, {ok, ok}).find("duplicate tensor \"w\""), std::string::npos);
  EXPECT_NE(write({}, {{.name = std::string(64, 'n'), .dims = {1}}}).find("1 to 63 bytes"),
            std::string::npos);
  EXPECT_NE(write({}, {{.name = "q", .dims = {48, 2}, .type = TensorType::kQ4_0}}).find("multiple of 32"),
            std::string::npos);
  EXPECT_NE(write({{"general.alignment", Value::u32(48)}}, {ok}).find("general.alignment"),
            std::string::npos);
  EXPECT_NE(write({}, {{.name = "five", .dims = {1, 1, 1, 1, 1}}}).find("dimensions"), std::string::npos);
  EXPECT_EQ(files_in(dir.path()), 0u);
  // A tensor callback that throws midway leaves nothing either.
  EXPECT_THROW(
      gguf::write_file(path, {}, {ok}, [](size_t) -> std::vector<std::byte> { throw IoError("disk"); }),
      IoError);
  EXPECT_EQ(files_in(dir.path()), 0u);
}

// A small valid file to break: one key, one F32 tensor of 4 elements.
std::vector<std::byte> small_file() {
  testing::TempDir dir;
  const fs::path path = dir / "s.gguf";
  gguf::write_file(path, {{"k", Value::u32(7)}}, {{.name = "t", .dims = {4}, .type = TensorType::kF32}},
                   [](size_t) {
                     return gguf::encode(std::vector<float>{1, 2, 3, 4}, 4, TensorType::kF32, "t");
                   });
  return read_bytes(path);
}

template <typename T>
void poke(std::vector<std::byte>& f, size_t at, T v) {
  std::memcpy(f.data() + at, &v, sizeof(T));
}

std::string parse_error(const std::vector<std::byte>& f) {
  try {
    gguf::parse(f, "bad.gguf");
  } catch (const Corruption& e) {
    return e.what();
  } catch (const Unsupported& e) {
    return e.what();
  }
  return "(no error)";
}

TEST(GgufTest, ReaderRefusesMalformedFilesNamingTheField) {
  const std::vector<std::byte> good = small_file();
  ASSERT_EQ(parse_error(good), "(no error)");
  // The last tensor's padding may be missing (the reader needs only the tensor bytes): cut into
  // the data instead. Layout of small_file: magic 0 | version 4 | tensor_count 8 | kv_count 16 | key len 24,
  // "k" 32 | type 33 | u32 37 | name len 41, "t" 49 | n_dims 50 | ne 54 | type 62 | offset 66 | 74: pad
  // to 96.
  auto with = [&](auto mutate) {
    std::vector<std::byte> f = good;
    mutate(f);
    return parse_error(f);
  };
  EXPECT_NE(with([](auto& f) { poke<uint32_t>(f, 0, 0x46554748); }).find("not a GGUF file"),
            std::string::npos);
  EXPECT_NE(with([](auto& f) { poke<uint32_t>(f, 4, 0x03000000); }).find("version"), std::string::npos);
  EXPECT_NE(with([](auto& f) { poke<uint64_t>(f, 16, 1ull << 60); }).find("kv_count"), std::string::npos);
  EXPECT_NE(with([](auto& f) { poke<uint64_t>(f, 8, 1ull << 60); }).find("tensor_count"), std::string::npos);
  EXPECT_NE(with([](auto& f) { poke<uint64_t>(f, 24, 1ull << 40); }).find("key 0"), std::string::npos);
  EXPECT_NE(with([](auto& f) { poke<uint32_t>(f, 33, 13); }).find("unknown value type 13"),
            std::string::npos);
  EXPECT_NE(with([](auto& f) { poke<uint32_t>(f, 50, 5); }).find("tensor \"t\" has 5 dimensions"),
            std::string::npos);
  EXPECT_NE(with([](auto& f) { poke<uint64_t>(f, 54, 9); }).find("runs past the end"), std::string::npos);
  EXPECT_NE(with([](auto& f) { poke<uint64_t>(f, 54, 1ull << 63); }).find("overflows"), std::string::npos);
  EXPECT_NE(with([](auto& f) { poke<uint32_t>(f, 62, 12); }).find("ggml type 12"), std::string::npos);
  EXPECT_NE(with([](auto& f) { poke<uint32_t>(f, 62, 8); }).find("not a multiple of the Q8_0 block"),
            std::string::npos);
  EXPECT_NE(with([](auto& f) { poke<uint64_t>(f, 66, 32); }).find("at offset 32, expected 0"),
            std::string::npos);
  EXPECT_NE(with([](auto& f) { f.resize(f.size() - 17); }).find("runs past the end"), std::string::npos);
  EXPECT_NE(with([](auto& f) {
              poke<uint32_t>(f, 33, 7);
              poke<uint8_t>(f, 37, 2);
            }).find("bool byte 2"),
            std::string::npos);
  // general.alignment of the wrong type or not a power of two.
  {
    testing::TempDir dir;
    const fs::path path = dir / "a.gguf";
    gguf::write_file(path, {{"general.alignment", Value::u32(64)}}, {},
                     [](size_t) { return std::vector<std::byte>(); });
    std::vector<std::byte> f = read_bytes(path);
    ASSERT_EQ(parse_error(f), "(no error)");
    poke<uint32_t>(f, 24 + 8 + 17 + 4, 48);
    EXPECT_NE(parse_error(f).find("general.alignment must be a power-of-two u32"), std::string::npos);
  }
  // Every truncation of a real file is refused, never read past.
  const std::vector<std::byte> fixture = read_bytes(testing::fixture("gguf/quants.gguf"));
  for (size_t n = 0; n < fixture.size(); n += (n < 2000 ? 1 : 97)) {
    const std::vector<std::byte> cut(fixture.begin(), fixture.begin() + static_cast<std::ptrdiff_t>(n));
    EXPECT_NE(parse_error(cut), "(no error)") << n;
  }
  EXPECT_NE(with([](auto& f) { f.clear(); }).find("magic"), std::string::npos);
}

TEST(GgufTest, AlignedFileOfTheGgufPackage) {
  const std::vector<std::byte> file = read_bytes(testing::fixture("gguf/aligned64.gguf"));
  const gguf::Header h = gguf::parse(file, "aligned64.gguf");
  EXPECT_EQ(h.alignment, 64u);
  EXPECT_EQ(h.data_start % 64, 0u);
  ASSERT_EQ(h.tensors.size(), 3u);
  EXPECT_EQ(h.tensors[1].offset, 64u);
  EXPECT_EQ(h.tensors[2].offset, 128u);
  EXPECT_EQ(floats(gguf::tensor_bytes(file, h, h.tensors[0])), (std::vector<float>{0, 1, 2, 3, 4}));
  EXPECT_EQ(h.tensors[1].dims, (std::vector<uint64_t>{3, 2}));
  EXPECT_EQ(floats(gguf::tensor_bytes(file, h, h.tensors[1])),
            (std::vector<float>{-2.5, -1.5, -0.5, 0.5, 1.5, 2.5}));
  EXPECT_EQ(gguf::decode(gguf::tensor_bytes(file, h, h.tensors[2]), 3, TensorType::kF16, "half"),
            (std::vector<float>{1.0f, -2.0f, 0.5f}));
}

TEST(GgufTest, EncodeRefusesRowsABlockDoesNotDivide) {
  const std::vector<float> v(96, 1.0f);
  EXPECT_NE(testing::error_of([&] {
              gguf::encode(v, 48, TensorType::kQ8_0, "blk.0.ffn_down.weight");
            }).find("blk.0.ffn_down.weight: Q8_0 needs rows of a multiple of 32"),
            std::string::npos);
  EXPECT_NE(testing::error_of([&] { gguf::tensor_type_from_name("q5_k", "--type"); }).find("--type"),
            std::string::npos);
}

}  // namespace
}  // namespace lowrank
