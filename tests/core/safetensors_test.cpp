// Tests of safetensors I/O (lowrank/core/safetensors.h): the HF fixtures, round trips of every
// dtype, the writer's byte layout against the Python library's, sharded checkpoints, and a table
// of malformed files that must be rejected with a message naming the file.
#include "lowrank/core/safetensors.h"

#include <gtest/gtest.h>

#include <cstring>
#include <fstream>

#include "lowrank/core/error.h"
#include "lowrank/core/file.h"
#include "tests/testing.h"

namespace lowrank {
namespace {

namespace fs = std::filesystem;

// A file of raw parts: 8-byte little-endian N (header.size() unless given), header, buffer.
std::string make_file(const std::string& header, const std::string& buffer, std::optional<uint64_t> n = {}) {
  uint64_t len = n.value_or(header.size());
  std::string out;
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<char>((len >> (8 * i)) & 0xFF));
  return out + header + buffer;
}

std::vector<std::byte> to_bytes(const std::string& s) {
  std::vector<std::byte> out(s.size());
  std::memcpy(out.data(), s.data(), s.size());
  return out;
}

std::string read_binary(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), {}};
}

void write_binary(const fs::path& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

// Same dtype, same shape, same bytes (NaN payloads included).
bool bitwise_equal(const at::Tensor& a, const at::Tensor& b) {
  if (a.scalar_type() != b.scalar_type() || a.sizes() != b.sizes()) return false;
  at::Tensor ca = a.contiguous(), cb = b.contiguous();
  return ca.nbytes() == cb.nbytes() &&
         (ca.nbytes() == 0 || std::memcmp(ca.const_data_ptr(), cb.const_data_ptr(), ca.nbytes()) == 0);
}

// Random bytes of any dtype (bool: 0/1), so that round trips check every bit.
at::Tensor random_tensor(at::ScalarType dtype, at::IntArrayRef shape) {
  if (dtype == at::kBool) return at::randint(0, 2, shape).to(at::kBool);
  at::Tensor out = at::empty(shape, at::TensorOptions().dtype(dtype));
  if (out.nbytes() > 0) {
    at::Tensor noise = at::randint(0, 256, {static_cast<int64_t>(out.nbytes())}, at::kByte);
    std::memcpy(out.data_ptr(), noise.const_data_ptr(), out.nbytes());
  }
  return out;
}

std::vector<std::string> entries(const fs::path& dir) {
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(dir)) names.push_back(e.path().filename().string());
  std::sort(names.begin(), names.end());
  return names;
}

TEST(SafetensorsTest, ReadsLlamaTinyModelFixture) {
  const fs::path path = testing::fixture("hf/llama-tiny/model/model.safetensors");
  SafetensorsFile file = SafetensorsFile::open(path);
  EXPECT_EQ(file.path(), path);
  ASSERT_EQ(file.tensors().size(), 21u);
  EXPECT_EQ(file.metadata(), (std::map<std::string, std::string>{{"format", "pt"}}));
  for (std::size_t i = 1; i < file.tensors().size(); ++i)
    EXPECT_EQ(file.tensors()[i - 1].end, file.tensors()[i].begin);  // file order, tiled

  const TensorInfo* embed = file.find("model.embed_tokens.weight");
  ASSERT_NE(embed, nullptr);
  EXPECT_EQ(embed->dtype, Dtype::kF32);
  EXPECT_EQ(embed->shape, (std::vector<int64_t>{512, 64}));
  EXPECT_EQ(embed->nbytes(), 512u * 64u * 4u);
  EXPECT_FALSE(file.contains("model.embed_tokens.bias"));

  at::Tensor w = file.load("model.layers.0.mlp.down_proj.weight");
  EXPECT_EQ(w.sizes(), (std::vector<int64_t>{64, 176}));
  EXPECT_EQ(w.scalar_type(), at::kFloat);
  EXPECT_TRUE(at::isfinite(w).all().item<bool>());
  EXPECT_GT(w.abs().sum().item<double>(), 0.0);
  // The bytes of the mapping and the loaded copy agree.
  auto raw = file.bytes(*file.find("model.norm.weight"));
  at::Tensor norm = file.load("model.norm.weight");
  EXPECT_EQ(std::memcmp(raw.data(), norm.const_data_ptr(), raw.size()), 0);

  try {
    file.load("nope");
    FAIL() << "no throw";
  } catch (const NotFound& e) {
    EXPECT_NE(std::string(e.what()).find("model.safetensors"), std::string::npos);
  }
}

TEST(SafetensorsTest, ReadsExpectedOutputsFixture) {
  SafetensorsFile file = SafetensorsFile::open(testing::fixture("hf/llama-tiny/expected.safetensors"));
  EXPECT_TRUE(file.metadata().empty());
  const TensorInfo* ids = file.find("input_ids");
  ASSERT_NE(ids, nullptr);
  EXPECT_EQ(ids->dtype, Dtype::kI64);
  EXPECT_EQ(ids->shape, (std::vector<int64_t>{2, 24}));
  at::Tensor tokens = file.load("input_ids");
  EXPECT_EQ(tokens.scalar_type(), at::kLong);
  EXPECT_GE(tokens.min().item<int64_t>(), 0);
  EXPECT_LT(tokens.max().item<int64_t>(), 512);

  at::Tensor logits = file.load("logits");
  EXPECT_EQ(logits.sizes(), (std::vector<int64_t>{2, 24, 512}));
  EXPECT_TRUE(at::isfinite(logits).all().item<bool>());
  EXPECT_EQ(testing::max_abs_diff(file.load("logits", at::kDouble), logits), 0.0);
}

TEST(SafetensorsTest, RoundTripsEveryDtypeBitwise) {
  testing::TempDir dir;
  const std::vector<at::ScalarType> dtypes = {at::kDouble, at::kFloat, at::kHalf, at::kBFloat16, at::kLong,
                                              at::kInt,    at::kShort, at::kChar, at::kByte,     at::kBool};
  const std::vector<std::vector<int64_t>> shapes = {{}, {0}, {3, 0, 2}, {5}, {2, 3, 7}};
  std::vector<NamedTensor> tensors;
  for (at::ScalarType dtype : dtypes)
    for (std::size_t s = 0; s < shapes.size(); ++s)
      tensors.push_back({str(c10::toString(dtype), ".", s), random_tensor(dtype, shapes[s])});
  tensors.push_back({"transposed", at::randn({4, 3}).t()});  // written as contiguous bytes
  const std::map<std::string, std::string> metadata = {{"format", "pt"}, {"note", "ünïcode \"quoted\"\n"}};
  save_safetensors(dir / "all.safetensors", tensors, metadata);
  EXPECT_EQ(entries(dir.path()), std::vector<std::string>{"all.safetensors"});

  SafetensorsFile file = SafetensorsFile::open(dir / "all.safetensors");
  EXPECT_EQ(file.metadata(), metadata);
  ASSERT_EQ(file.tensors().size(), tensors.size());
  for (const NamedTensor& t : tensors) {
    EXPECT_EQ(file.find(t.name)->dtype, from_scalar_type(t.tensor.scalar_type())) << t.name;
    EXPECT_TRUE(bitwise_equal(file.load(t.name), t.tensor)) << t.name;
  }
  // Rewriting what was read gives the same file.
  std::vector<NamedTensor> again;
  for (const TensorInfo& info : file.tensors()) again.push_back({info.name, file.load(info.name)});
  save_safetensors(dir / "again.safetensors", again, file.metadata());
  EXPECT_EQ(read_binary(dir / "again.safetensors"), read_binary(dir / "all.safetensors"));
}

// The exact bytes safetensors 0.8.0 (Python, Rust core) writes for these tensors: tensors sorted
// by the Rust Dtype enum descending (I64 > F64 > F32 > I32 > BF16 > F16 > I16 > I8 > U8 > BOOL),
// then by name; "__metadata__" first; compact JSON; spaces to a multiple of 8.
TEST(SafetensorsTest, WriterMatchesPythonLibraryBytes) {
  const std::string header =
      R"({"__metadata__":{"format":"pt"},"b":{"dtype":"I64","shape":[2],"data_offsets":[0,16]},)"
      R"("a":{"dtype":"F64","shape":[2],"data_offsets":[16,32]},"s":{"dtype":"F32","shape":[],"data_offsets":[32,36]},)"
      R"("z":{"dtype":"F32","shape":[1],"data_offsets":[36,40]},"a2":{"dtype":"I32","shape":[1],"data_offsets":[40,44]},)"
      R"("c":{"dtype":"BF16","shape":[3],"data_offsets":[44,50]},"b2":{"dtype":"F16","shape":[1],"data_offsets":[50,52]},)"
      R"("v":{"dtype":"I16","shape":[0],"data_offsets":[52,52]},"w":{"dtype":"I8","shape":[1],"data_offsets":[52,53]},)"
      R"("y":{"dtype":"U8","shape":[1],"data_offsets":[53,54]},"x":{"dtype":"BOOL","shape":[2],"data_offsets":[54,56]}}   )";
  const char* data_hex =
      "01000000000000000200000000000000000000000000f83f0000000000000440000000400000404007000000803f0040404000"
      "3cfd090100";
  std::string data;
  for (const char* p = data_hex; *p; p += 2)
    data.push_back(static_cast<char>(std::stoi(std::string(p, 2), nullptr, 16)));

  const std::vector<NamedTensor> tensors = {
      {"x", at::tensor({1, 0}).to(at::kBool)},
      {"a", at::tensor({1.5, 2.5}, at::kDouble)},
      {"b", at::tensor({1, 2}, at::kLong)},
      {"z", at::tensor({3.0f})},
      {"a2", at::tensor({7}, at::kInt)},
      {"b2", at::tensor({1.0f}).to(at::kHalf)},
      {"c", at::tensor({1.0f, 2.0f, 3.0f}).to(at::kBFloat16)},
      {"y", at::tensor({9}, at::kByte)},
      {"w", at::tensor({-3}, at::kChar)},
      {"v", at::empty({0}, at::kShort)},
      {"s", at::scalar_tensor(2.0, at::kFloat)},
  };
  testing::TempDir dir;
  save_safetensors(dir / "golden.safetensors", tensors, {{"format", "pt"}});
  EXPECT_EQ(read_binary(dir / "golden.safetensors"), make_file(header, data));

  // No tensors, no metadata: "{}" padded to 8 bytes.
  save_safetensors(dir / "empty.safetensors", {});
  EXPECT_EQ(read_binary(dir / "empty.safetensors"), make_file("{}      ", ""));
  EXPECT_TRUE(SafetensorsFile::open(dir / "empty.safetensors").tensors().empty());
}

// The fixtures were written by the Python library (via transformers/peft): reading them and
// writing them back reproduces them byte for byte.
TEST(SafetensorsTest, RewritingFixturesIsByteIdentical) {
  testing::TempDir dir;
  for (const char* name : {"hf/llama-tiny/model/model.safetensors", "hf/llama-tiny/expected.safetensors",
                           "hf/llama-tiny/adapter-lora/adapter_model.safetensors"}) {
    SafetensorsFile in = SafetensorsFile::open(testing::fixture(name));
    std::vector<NamedTensor> tensors;
    for (const TensorInfo& info : in.tensors()) tensors.push_back({info.name, in.load(info.name)});
    save_safetensors(dir / "copy.safetensors", tensors, in.metadata());
    EXPECT_EQ(read_binary(dir / "copy.safetensors"), read_binary(testing::fixture(name))) << name;
  }
}

TEST(SafetensorsTest, ReadsMisalignedData) {
  // N = 59 (not a multiple of 8): the F64 data starts at file offset 67.
  const std::string header = R"({"x":{"dtype":"F64","shape":[3],"data_offsets":[0,24]}}    )";
  ASSERT_EQ(header.size(), 59u);
  std::string buffer(24, '\0');
  const double values[3] = {1.25, -2.5, 1e300};
  std::memcpy(buffer.data(), values, sizeof(values));
  SafetensorsFile file = SafetensorsFile::from_bytes(to_bytes(make_file(header, buffer)), "misaligned");
  EXPECT_TRUE(file.path().empty());
  at::Tensor x = file.load("x");
  EXPECT_EQ(x[0].item<double>(), 1.25);
  EXPECT_EQ(x[1].item<double>(), -2.5);
  EXPECT_EQ(x[2].item<double>(), 1e300);
  EXPECT_EQ(file.load("x", at::kFloat)[1].item<float>(), -2.5f);
}

TEST(SafetensorsTest, LoadConvertsHalfAndBFloat16ToFloat) {
  testing::TempDir dir;
  // Large enough to take several conversion chunks (1 MiB of stored bytes each).
  at::Tensor ref = at::randn({700, 1000});
  at::Tensor half = ref.to(at::kHalf), bf16 = ref.to(at::kBFloat16);
  std::vector<NamedTensor> tensors = {
      {"half", half}, {"bf16", bf16}, {"mask", at::tensor({1, 0, 1}).to(at::kBool)}};
  save_safetensors(dir / "h.safetensors", tensors);
  SafetensorsFile file = SafetensorsFile::open(dir / "h.safetensors");
  at::Tensor from_half = file.load("half", at::kFloat);
  at::Tensor from_bf16 = file.load("bf16", at::kFloat);
  EXPECT_EQ(from_half.scalar_type(), at::kFloat);
  EXPECT_EQ(from_half.sizes(), ref.sizes());
  EXPECT_EQ(testing::max_abs_diff(from_half, half.to(at::kFloat)), 0.0);
  EXPECT_EQ(testing::max_abs_diff(from_bf16, bf16.to(at::kFloat)), 0.0);
  EXPECT_TRUE(bitwise_equal(file.load("bf16", at::kHalf), bf16.to(at::kHalf)));
  EXPECT_TRUE(bitwise_equal(file.load("mask", at::kFloat), at::tensor({1.0f, 0.0f, 1.0f})));
  EXPECT_THROW(file.load("half", at::kComplexFloat), Unsupported);
}

TEST(SafetensorsTest, WriterLeavesNothingBehindOnError) {
  testing::TempDir dir;
  const fs::path out = dir / "out.safetensors";
  auto expect_rejected = [&](std::vector<NamedTensor> tensors, ErrorKind kind) {
    try {
      save_safetensors(out, tensors);
      FAIL() << "no throw";
    } catch (const Error& e) {
      EXPECT_EQ(e.kind(), kind) << e.what();
      EXPECT_NE(std::string(e.what()).find("out.safetensors"), std::string::npos) << e.what();
    }
    EXPECT_TRUE(fs::is_empty(dir.path()));
  };
  expect_rejected({{"w", at::empty({2}, at::TensorOptions().device(at::kMeta))}}, ErrorKind::kUnsupported);
  expect_rejected({{"w", at::zeros({2}, at::kComplexFloat)}}, ErrorKind::kUnsupported);
  expect_rejected({{"w", at::zeros({2})}, {"w", at::zeros({3})}}, ErrorKind::kInvalidArgument);
  expect_rejected({{"", at::zeros({2})}}, ErrorKind::kInvalidArgument);
  expect_rejected({{"__metadata__", at::zeros({2})}}, ErrorKind::kInvalidArgument);
  expect_rejected({{"bad\xff", at::zeros({2})}}, ErrorKind::kInvalidArgument);
  expect_rejected({{"w", at::Tensor()}}, ErrorKind::kInvalidArgument);
  EXPECT_THROW(save_safetensors(dir / "missing" / "x.safetensors", {}), IoError);
}

// Writes `tensors` split over two shards plus an index into `dir`.
void write_sharded(const fs::path& dir, const std::vector<NamedTensor>& first,
                   const std::vector<NamedTensor>& second, const std::string& index_text) {
  save_safetensors(dir / "model-00001-of-00002.safetensors", first, {{"format", "pt"}});
  save_safetensors(dir / "model-00002-of-00002.safetensors", second, {{"format", "pt"}});
  write_file_atomic(dir / "model.safetensors.index.json", index_text);
}

TEST(CheckpointTest, ReadsShardedCheckpoint) {
  testing::TempDir dir;
  at::Tensor a = at::randn({3, 4}), b = at::randn({5}), c = at::randn({2, 2}).to(at::kBFloat16);
  write_sharded(dir.path(), {{"a", a}, {"c", c}}, {{"b", b}},
                R"({"metadata": {"total_size": 92},
                    "weight_map": {"a": "model-00001-of-00002.safetensors",
                                   "b": "model-00002-of-00002.safetensors",
                                   "c": "model-00001-of-00002.safetensors"}})");
  for (const fs::path& path : {dir.path(), dir / "model.safetensors.index.json"}) {
    Checkpoint ckpt = Checkpoint::open(path);
    EXPECT_EQ(ckpt.names(), (std::vector<std::string>{"a", "b", "c"}));
    EXPECT_EQ(ckpt.files(), (std::vector<fs::path>{dir / "model-00001-of-00002.safetensors",
                                                   dir / "model-00002-of-00002.safetensors"}));
    EXPECT_TRUE(ckpt.contains("b"));
    EXPECT_FALSE(ckpt.contains("d"));
    EXPECT_EQ(ckpt.info("c").dtype, Dtype::kBF16);
    EXPECT_TRUE(bitwise_equal(ckpt.load("a"), a));
    EXPECT_TRUE(bitwise_equal(ckpt.load("b"), b));
    EXPECT_TRUE(bitwise_equal(ckpt.load("c", at::kFloat), c.to(at::kFloat)));
    EXPECT_EQ(ckpt.metadata(), (std::map<std::string, std::string>{{"format", "pt"}, {"total_size", "92"}}));
    EXPECT_THROW(ckpt.load("d"), NotFound);
  }
}

TEST(CheckpointTest, ReadsSingleFileCheckpoint) {
  const fs::path dir = testing::fixture("hf/llama-tiny/model");
  for (const fs::path& path : {dir, dir / "model.safetensors"}) {
    Checkpoint ckpt = Checkpoint::open(path);
    EXPECT_EQ(ckpt.names().size(), 21u);
    const std::vector<std::string> names = ckpt.names();
    EXPECT_TRUE(std::is_sorted(names.begin(), names.end()));
    EXPECT_EQ(ckpt.files(), std::vector<fs::path>{dir / "model.safetensors"});
    EXPECT_EQ(ckpt.info("lm_head.weight").shape, (std::vector<int64_t>{512, 64}));
    EXPECT_EQ(ckpt.metadata().at("format"), "pt");
    EXPECT_EQ(ckpt.load("model.norm.weight").sizes(), (std::vector<int64_t>{64}));
  }
  testing::TempDir empty;
  EXPECT_THROW(Checkpoint::open(empty.path()), NotFound);
}

TEST(CheckpointTest, RejectsInconsistentIndex) {
  const std::string one = "model-00001-of-00002.safetensors", two = "model-00002-of-00002.safetensors";
  auto index = [&](const std::string& map) { return R"({"weight_map": {)" + map + "}}"; };
  auto expect_corruption = [](const std::function<void()>& f, const std::string& needle) {
    try {
      f();
      FAIL() << "no throw";
    } catch (const Corruption& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  const NamedTensor a{"a", at::zeros({2})}, b{"b", at::zeros({3})};
  {  // A shard the index lists does not exist.
    testing::TempDir dir;
    write_sharded(dir.path(), {a}, {b}, index(R"("a": ")" + one + R"(", "b": "model-00003.safetensors")"));
    expect_corruption([&] { Checkpoint::open(dir.path()); }, "model-00003.safetensors");
  }
  {  // The index lists a tensor its shard does not hold.
    testing::TempDir dir;
    write_sharded(dir.path(), {a}, {b},
                  index(R"("a": ")" + one + R"(", "b": ")" + two + R"(", "c": ")" + two + "\""));
    Checkpoint ckpt = Checkpoint::open(dir.path());
    EXPECT_TRUE(bitwise_equal(ckpt.load("a"), a.tensor));
    expect_corruption([&] { ckpt.load("b"); }, two);
  }
  {  // A shard holds a tensor the index does not list.
    testing::TempDir dir;
    write_sharded(dir.path(), {a}, {b, {"extra", at::zeros({1})}},
                  index(R"("a": ")" + one + R"(", "b": ")" + two + "\""));
    expect_corruption([&] { Checkpoint::open(dir.path()).load("b"); }, "extra");
  }
  {  // A name in two shards.
    testing::TempDir dir;
    write_sharded(dir.path(), {a, b}, {b}, index(R"("a": ")" + one + R"(", "b": ")" + two + "\""));
    expect_corruption([&] { Checkpoint::open(dir.path()).load("a"); }, "two shards");
  }
  {  // A key twice in the index, and a shard path outside the directory.
    testing::TempDir dir;
    write_sharded(dir.path(), {a}, {b}, index(R"("a": ")" + one + R"(", "a": ")" + two + "\""));
    expect_corruption([&] { Checkpoint::open(dir.path()); }, "duplicate");
    write_file_atomic(dir / "model.safetensors.index.json", index(R"("a": "../x.safetensors")"));
    expect_corruption([&] { Checkpoint::open(dir.path()); }, "../x.safetensors");
    write_file_atomic(dir / "model.safetensors.index.json", R"({"weight_map": [1]})");
    expect_corruption([&] { Checkpoint::open(dir.path()); }, "model.safetensors.index.json");
  }
}

struct MalformedCase {
  std::string name;
  std::string bytes;
};

std::string entry_json(const std::string& name, const std::string& dtype, const std::string& shape,
                       uint64_t begin, uint64_t end) {
  return str("\"", name, "\":{\"dtype\":\"", dtype, "\",\"shape\":", shape, ",\"data_offsets\":[", begin, ",",
             end, "]}");
}

TEST(SafetensorsTest, RejectsMalformedFilesNamingTheFile) {
  const std::string ok = "{" + entry_json("a", "F32", "[2]", 0, 8) + "}";
  const std::string buf8(8, '\0');
  const std::vector<MalformedCase> cases = {
      {"empty_file", ""},
      {"truncated_length", std::string("\x10\x00\x00", 3)},
      {"header_length_zero", make_file("", buf8)},
      {"truncated_header", make_file(ok, "", ok.size() + 50)},
      {"header_too_large", make_file(ok, buf8, 200'000'000)},
      {"header_length_huge", make_file(ok, buf8, ~uint64_t{0})},
      {"bad_json", make_file(R"({"a":{"dtype":"F32",)", buf8)},
      {"not_an_object", make_file("[1, 2]", buf8)},
      {"leading_space", make_file(" " + ok, buf8)},
      {"newline_padding", make_file(ok + "\n", buf8)},
      {"nul_padding", make_file(ok + std::string(3, '\0'), buf8)},
      {"invalid_utf8_name", make_file("{" + entry_json("a\xc3\x28", "F32", "[2]", 0, 8) + "}", buf8)},
      {"unknown_dtype", make_file("{" + entry_json("a", "F8_E4M3", "[8]", 0, 8) + "}", buf8)},
      {"dtype_not_string", make_file(R"({"a":{"dtype":4,"shape":[2],"data_offsets":[0,8]}})", buf8)},
      {"size_mismatch", make_file("{" + entry_json("a", "F32", "[3]", 0, 8) + "}", buf8)},
      {"begin_after_end", make_file("{" + entry_json("a", "U8", "[0]", 8, 0) + "}", buf8)},
      {"overlap",
       make_file("{" + entry_json("a", "F32", "[2]", 0, 8) + "," + entry_json("b", "F32", "[1]", 4, 8) + "}",
                 buf8)},
      {"hole",
       make_file("{" + entry_json("a", "F32", "[1]", 0, 4) + "," + entry_json("b", "U8", "[2]", 6, 8) + "}",
                 buf8)},
      {"trailing_garbage", make_file(ok, buf8 + "junk")},
      {"offsets_out_of_range", make_file("{" + entry_json("a", "F32", "[4]", 0, 16) + "}", buf8)},
      {"duplicate_names",
       make_file("{" + entry_json("a", "F32", "[1]", 0, 4) + "," + entry_json("a", "F32", "[1]", 4, 8) + "}",
                 buf8)},
      {"negative_dim", make_file("{" + entry_json("a", "F32", "[-2]", 0, 8) + "}", buf8)},
      {"float_dim", make_file("{" + entry_json("a", "F32", "[2.0]", 0, 8) + "}", buf8)},
      {"shape_not_list", make_file("{" + entry_json("a", "F32", "2", 0, 8) + "}", buf8)},
      {"shape_overflow", make_file("{" + entry_json("a", "U8", "[4294967296,4294967296]", 0, 8) + "}", buf8)},
      {"byte_size_overflow",
       make_file("{" + entry_json("a", "F64", "[9223372036854775807]", 0, 8) + "}", buf8)},
      {"missing_key", make_file(R"({"a":{"dtype":"F32","shape":[2]}})", buf8)},
      {"extra_key", make_file(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8],"x":1}})", buf8)},
      {"offsets_not_pair", make_file(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8,8]}})", buf8)},
      {"entry_not_object", make_file(R"({"a":[1]})", buf8)},
      {"metadata_not_string", make_file(R"({"__metadata__":{"k":1},)" + ok.substr(1), buf8)},
      {"metadata_not_object", make_file(R"({"__metadata__":"x",)" + ok.substr(1), buf8)},
      {"deep_nesting", make_file(R"({"a":{"dtype":"F32","shape":[[[[2]]]],"data_offsets":[0,8]}})", buf8)},
  };
  testing::TempDir dir;
  for (const MalformedCase& c : cases) {
    SCOPED_TRACE(c.name);
    const std::string file_name = "case_" + c.name + ".safetensors";
    write_binary(dir / file_name, c.bytes);
    try {
      SafetensorsFile::open(dir / file_name);
      ADD_FAILURE() << c.name << ": accepted";
    } catch (const Error& e) {
      EXPECT_TRUE(e.kind() == ErrorKind::kCorruption || e.kind() == ErrorKind::kUnsupported) << e.what();
      EXPECT_NE(std::string(e.what()).find(file_name), std::string::npos) << e.what();
    }
  }
  // The well-formed relatives of these cases are accepted.
  EXPECT_NO_THROW(SafetensorsFile::from_bytes(to_bytes(make_file(ok, buf8)), "ok"));
  EXPECT_NO_THROW(SafetensorsFile::from_bytes(to_bytes(make_file(ok + "   ", buf8)), "ok"));
  EXPECT_NO_THROW(SafetensorsFile::from_bytes(
      to_bytes(make_file(
          R"({"__metadata__":null,"e":{"dtype":"F32","shape":[0,9223372036854775807],"data_offsets":[0,0]}})",
          "")),
      "ok"));
}

TEST(SafetensorsTest, RejectsBoolBytesOtherThanZeroOrOne) {
  const std::string header = "{" + entry_json("m", "BOOL", "[3]", 0, 3) + "}";
  SafetensorsFile file =
      SafetensorsFile::from_bytes(to_bytes(make_file(header, std::string("\x01\x00\x02", 3))), "mask");
  EXPECT_THROW(file.load("m"), Corruption);
  EXPECT_THROW(file.load("m", at::kFloat), Corruption);
}

TEST(SafetensorsTest, RejectsEveryTruncationOfAValidFile) {
  const std::string whole = read_binary(testing::fixture("hf/llama-tiny/expected.safetensors"));
  // Every cut inside the header, then a few inside the buffer.
  for (std::size_t len = 0; len < whole.size(); len += (len < 400 ? 1 : 997)) {
    EXPECT_THROW(SafetensorsFile::from_bytes(to_bytes(whole.substr(0, len)), "cut"), Corruption) << len;
  }
  EXPECT_NO_THROW(SafetensorsFile::from_bytes(to_bytes(whole), "whole"));
}

}  // namespace
}  // namespace lowrank
