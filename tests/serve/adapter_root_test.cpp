// The adapter root's confinement (lowrank/serve/adapter_root.h): adapter names, traversal, absolute
// paths, symlinks that escape the root, missing directories, and registering a root at start.
#include "lowrank/serve/adapter_root.h"

#include <filesystem>
#include <memory>

#include <gtest/gtest.h>

#include "lowrank/compress/format.h"
#include "lowrank/nn/model.h"
#include "tests/serve/api_testing.h"
#include "tests/testing.h"

namespace lowrank::serve {
namespace {

namespace fs = std::filesystem;

using testing_support::param_of;

// root/good (an adapter), root/alias -> root/good, root/escape -> outside (an adapter out of the
// root), root/empty (no adapter_config.json), root/nested/deeper (an adapter one level down).
struct Root {
  testing::TempDir dir;
  fs::path root = dir / "root";
  Root() {
    testing::write_text_file(root / "good" / "adapter_config.json", "{}");
    testing::write_text_file(root / "nested" / "deeper" / "adapter_config.json", "{}");
    testing::write_text_file(dir / "outside" / "adapter_config.json", "{}");
    fs::create_directories(root / "empty");
    fs::create_directory_symlink(dir / "outside", root / "escape");
    fs::create_directory_symlink(root / "good", root / "alias");
  }
};

TEST(AdapterRootTest, AdapterNamesArePlainDirectoryNames) {
  EXPECT_NO_THROW(check_adapter_name("my-adapter_v2.1"));
  int status = 0;
  const std::vector<std::string> bad = {"",
                                        ".",
                                        "..",
                                        ".hidden",
                                        "a/b",
                                        "a\\b",
                                        "tab\tname",
                                        std::string("a\0b", 3),
                                        std::string("del\x7f", 4),
                                        std::string(256, 'a')};
  for (const std::string& name : bad) {
    EXPECT_EQ(param_of([&] { check_adapter_name(name); }, &status), "lora_name") << name;
    EXPECT_EQ(status, 400) << name;
  }
  EXPECT_NO_THROW(check_adapter_name(std::string(255, 'a')));
  EXPECT_EQ(param_of([] { check_adapter_name("../x", "model"); }), "model");  // the field at fault
}

TEST(AdapterRootTest, NamesResolveInsideTheRoot) {
  Root r;
  EXPECT_EQ(resolve_adapter_dir(r.root, "good"), fs::canonical(r.root / "good"));
  EXPECT_EQ(resolve_adapter_dir(r.root, "alias"), fs::canonical(r.root / "good"));  // a link inside the root
  EXPECT_EQ(resolve_adapter_dir(r.root, "x", "good"), fs::canonical(r.root / "good"));
  EXPECT_EQ(resolve_adapter_dir(r.root, "x", "nested/deeper"), fs::canonical(r.root / "nested" / "deeper"));
  // An absolute path is accepted when it lies inside the root.
  EXPECT_EQ(resolve_adapter_dir(r.root, "x", (r.root / "good").string()), fs::canonical(r.root / "good"));
  // ".." that stays inside the root is fine: what counts is where the path lands.
  EXPECT_EQ(resolve_adapter_dir(r.root, "x", "nested/../good"), fs::canonical(r.root / "good"));
}

TEST(AdapterRootTest, TraversalAbsolutePathsAndEscapingSymlinksAreRefused) {
  Root r;
  int status = 0;
  for (const char* name : {"../outside", "..", "a/b"}) {
    EXPECT_EQ(param_of([&] { resolve_adapter_dir(r.root, name); }, &status), "lora_name") << name;
    EXPECT_EQ(status, 400) << name;
  }
  // A symlink in the root that points out of it, by name and by path.
  EXPECT_EQ(param_of([&] { resolve_adapter_dir(r.root, "escape"); }, &status), "lora_name");
  EXPECT_EQ(status, 400);
  EXPECT_EQ(param_of([&] { resolve_adapter_dir(r.root, "x", "escape"); }, &status), "lora_path");
  EXPECT_EQ(status, 400);
  // Traversal and absolute paths out of the root, and the root itself.
  for (const std::string& path : {std::string("../outside"), std::string("good/../../outside"),
                                  (r.dir / "outside").string(), r.root.string(), std::string("/")}) {
    EXPECT_EQ(param_of([&] { resolve_adapter_dir(r.root, "x", path); }, &status), "lora_path") << path;
    EXPECT_EQ(status, 400) << path;
  }
  EXPECT_EQ(param_of([&] { resolve_adapter_dir(r.root, "x", std::string("good\0x", 6)); }, &status),
            "lora_path");
  EXPECT_EQ(status, 400);
  // The root's path stays out of the messages clients see.
  try {
    resolve_adapter_dir(r.root, "x", (r.dir / "outside").string());
    ADD_FAILURE() << "no error";
  } catch (const ApiError& e) {
    EXPECT_EQ(std::string(e.what()).find(r.root.string()), std::string::npos) << e.what();
  }
}

TEST(AdapterRootTest, MissingAdaptersAreNotFound) {
  Root r;
  int status = 0;
  EXPECT_EQ(param_of([&] { resolve_adapter_dir(r.root, "missing"); }, &status), "lora_name");
  EXPECT_EQ(status, 404);
  EXPECT_EQ(param_of([&] { resolve_adapter_dir(r.root, "empty"); }, &status), "lora_name");  // no config
  EXPECT_EQ(status, 404);
  EXPECT_EQ(param_of([&] { resolve_adapter_dir(r.dir / "no-root", "good"); }, &status), "");
  EXPECT_EQ(status, 500);  // the operator's root is broken, not the request
}

TEST(AdapterRootTest, RegisteringARootSkipsWhatEscapesIt) {
  testing::TempDir dir;
  const fs::path model_dir = testing::tiny_hf_model(dir.path());
  const fs::path adapter = testing::fixture("hf/llama-tiny/adapter-lora");
  const fs::path root = dir / "adapters";
  fs::create_directories(root);
  fs::copy(adapter, root / "lora", fs::copy_options::recursive);
  fs::copy(adapter, root / ".hidden", fs::copy_options::recursive);
  fs::copy(adapter, dir / "outside", fs::copy_options::recursive);
  fs::create_directory_symlink(dir / "outside", root / "escape");
  fs::create_directories(root / "not-an-adapter");

  EngineConfig config;
  config.pool_bytes = int64_t{8} << 20;
  Engine engine(std::make_shared<nn::Model>(compress::load_model(model_dir)), nullptr, {}, config);
  const std::vector<AdapterInfo> infos = register_adapter_root(engine, root);
  ASSERT_EQ(infos.size(), 1u);
  EXPECT_EQ(infos[0].name, "lora");
  EXPECT_EQ(infos[0].dir, fs::canonical(root / "lora"));
  EXPECT_TRUE(engine.has_adapter("lora"));
  EXPECT_FALSE(engine.has_adapter("escape"));
  EXPECT_FALSE(engine.has_adapter(".hidden"));
  EXPECT_THROW(register_adapter_root(engine, dir / "no-such-root"), NotFound);
}

}  // namespace
}  // namespace lowrank::serve
