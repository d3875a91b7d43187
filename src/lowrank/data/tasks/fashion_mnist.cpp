#include "lowrank/data/tasks/fashion_mnist.h"

#include <numeric>

#include <zlib.h>

#include "lowrank/core/error.h"
#include "lowrank/core/progress.h"
#include "lowrank/data/tasks/task_rng.h"

namespace lowrank::data::tasks {

namespace fs = std::filesystem;

namespace {

const std::vector<std::string> kClasses = {"T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                                           "Sandal",      "Shirt",   "Sneaker",  "Bag",   "Ankle boot"};

// Reads up to `size` bytes; returns how many arrived.
std::size_t read_some(gzFile file, uint8_t* out, std::size_t size, const fs::path& path) {
  std::size_t done = 0;
  while (done < size) {
    const auto chunk = static_cast<unsigned>(std::min<std::size_t>(size - done, 1u << 30));
    const int got = gzread(file, out + done, chunk);
    if (got < 0) {
      int code = 0;
      const char* message = gzerror(file, &code);
      throw Corruption(str(path.string(), ": cannot decompress (", message, ")"));
    }
    if (got == 0) break;
    done += static_cast<std::size_t>(got);
  }
  return done;
}

void generate_fashion_mnist(const TaskRequest& request, bool sequence) {
  TaskParams params(request);
  const int64_t val_size = params.integer("val_size", 5000, 1, 59999);
  const int64_t train_size = params.integer("train_size", 60000 - val_size, 1, 60000 - val_size);
  const int64_t test_size = params.integer("test_size", 10000, 1, 10000);
  const std::string data_dir = params.text("data_dir", kFashionMnistDir);
  params.finish();

  const fs::path dir(data_dir);
  const IdxArray train_images = read_idx_gz(dir / "train-images-idx3-ubyte.gz", kFashionMnistPackage);
  const IdxArray train_labels = read_idx_gz(dir / "train-labels-idx1-ubyte.gz", kFashionMnistPackage);
  const IdxArray test_images = read_idx_gz(dir / "t10k-images-idx3-ubyte.gz", kFashionMnistPackage);
  const IdxArray test_labels = read_idx_gz(dir / "t10k-labels-idx1-ubyte.gz", kFashionMnistPackage);
  auto check_pair = [&](const IdxArray& images, const IdxArray& labels, const char* which, int64_t needed) {
    LR_CHECK(images.dims.size() == 3 && images.dims[1] == 28 && images.dims[2] == 28, Corruption,
             dir.string(), ": ", which, " images are not 28x28");
    LR_CHECK(labels.dims.size() == 1 && labels.dims[0] == images.dims[0], Corruption, dir.string(), ": ",
             which, " has ", images.dims[0], " images but ", labels.dims.empty() ? 0 : labels.dims[0],
             " labels");
    LR_CHECK(images.dims[0] >= needed, InvalidArgument, dir.string(), ": ", which, " holds ", images.dims[0],
             " images, fewer than the ", needed, " asked for");
    for (uint8_t l : labels.data)
      LR_CHECK(l < 10, Corruption, dir.string(), ": ", which, " label ", int{l}, " > 9");
  };
  check_pair(train_images, train_labels, "train", train_size + val_size);
  check_pair(test_images, test_labels, "t10k", test_size);

  TaskHeader header = header_for(
      request, "Fashion-MNIST (zalandoresearch/fashion-mnist) from Debian's dataset-fashion-mnist");
  header.parameters = params.resolved();
  header.vocab_size = 256;
  header.token_type = ElementType::kUint8;
  header.target = "class";
  header.classes = kClasses;
  header.layout = sequence ? OrderedJson{{"kind", "sequence"}}
                           : OrderedJson{{"kind", "image"}, {"height", 28}, {"width", 28}, {"channels", 1}};
  header.sources = {{"package", kFashionMnistPackage}, {"dir", data_dir}};
  TaskWriter writer(request.out, std::move(header));

  std::vector<int64_t> order(static_cast<std::size_t>(train_images.dims[0]));
  std::iota(order.begin(), order.end(), 0);
  TaskRng rng(request.seed);
  rng.shuffle(std::span(order));
  ProgressBar bar(train_size + val_size + test_size, sequence ? "sfmnist" : "fmnist");
  std::vector<int32_t> pixels(784);
  auto emit = [&](Split split, const IdxArray& images, const IdxArray& labels, int64_t index) {
    for (int i = 0; i < 784; ++i) pixels[i] = images.data[static_cast<std::size_t>(index) * 784 + i];
    const int32_t label = labels.data[static_cast<std::size_t>(index)];
    writer.add(split, pixels, std::span(&label, 1));
    bar.advance();
  };
  for (int64_t i = 0; i < train_size; ++i)
    emit(Split::kTrain, train_images, train_labels, order[val_size + i]);
  for (int64_t i = 0; i < val_size; ++i) emit(Split::kVal, train_images, train_labels, order[i]);
  for (int64_t i = 0; i < test_size; ++i) emit(Split::kTest, test_images, test_labels, i);
  bar.finish();
  writer.commit();
}

}  // namespace

IdxArray read_idx_gz(const fs::path& path, const std::string& package) {
  LR_CHECK(fs::exists(path), NotFound, path.string(), " does not exist; install the Debian package ", package,
           " (scripts/setup does)");
  gzFile file = gzopen(path.c_str(), "rb");
  LR_CHECK(file != nullptr, IoError, "cannot open ", path.string());
  struct Closer {
    gzFile f;
    ~Closer() { gzclose(f); }
  } closer{file};
  uint8_t head[4];
  LR_CHECK(read_some(file, head, 4, path) == 4, Corruption, path.string(), ": truncated IDX header");
  LR_CHECK(head[0] == 0 && head[1] == 0 && head[2] == 0x08 && head[3] >= 1 && head[3] <= 4, Corruption,
           path.string(), ": not an IDX file of unsigned bytes (magic ", int{head[0]}, " ", int{head[1]}, " ",
           int{head[2]}, " ", int{head[3]}, ")");
  IdxArray array;
  uint64_t total = 1;
  for (int d = 0; d < head[3]; ++d) {
    uint8_t b[4];
    LR_CHECK(read_some(file, b, 4, path) == 4, Corruption, path.string(), ": truncated IDX header");
    const int64_t dim = (int64_t{b[0]} << 24) | (int64_t{b[1]} << 16) | (int64_t{b[2]} << 8) | int64_t{b[3]};
    LR_CHECK(dim > 0 && dim < (int64_t{1} << 28), Corruption, path.string(), ": IDX dimension ", d, " is ",
             dim);
    array.dims.push_back(dim);
    total *= static_cast<uint64_t>(dim);
  }
  LR_CHECK(total < (uint64_t{1} << 32), Corruption, path.string(), ": IDX body of ", total,
           " bytes is implausible");
  array.data.resize(total);
  const std::size_t got = read_some(file, array.data.data(), total, path);
  LR_CHECK(got == total, Corruption, path.string(), ": truncated: ", got, " of the ", total,
           " bytes its IDX header announces");
  uint8_t extra;
  LR_CHECK(read_some(file, &extra, 1, path) == 0, Corruption, path.string(),
           ": trailing bytes after the IDX body");
  return array;
}

TaskDefinition fashion_mnist_task(bool sequence) {
  TaskDefinition t;
  t.name = sequence ? "sfmnist" : "fmnist";
  t.summary = sequence ? "Fashion-MNIST as 784-pixel sequences (LRA Image's shape), 10 classes"
                       : "Fashion-MNIST 28x28 images, 10 classes";
  t.options = split_size_options();
  t.options[0].help = "Training images (default: the 55,000 not in val)";
  t.options[1].help = "Validation images drawn from the training file (default 5,000)";
  t.options[2].help = "Test images, the first of the t10k file (default 10,000)";
  t.options.push_back({"data_dir", "Directory of the IDX files (default /usr/share/datasets/fashion-mnist)"});
  t.generate = [sequence](const TaskRequest& request) { generate_fashion_mnist(request, sequence); };
  return t;
}

}  // namespace lowrank::data::tasks
