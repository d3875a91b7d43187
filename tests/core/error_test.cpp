#include "lowrank/core/error.h"

#include <gtest/gtest.h>

#include "lowrank/core/file.h"
#include "lowrank/core/json.h"
#include "tests/testing.h"

namespace lowrank {

TEST(ErrorTest, CheckThrowsCategoryWithMessage) {
  try {
    int rank = 9;
    LR_CHECK(rank <= 4, InvalidArgument, "rank ", rank, " exceeds ", 4);
    FAIL() << "no throw";
  } catch (const InvalidArgument& e) {
    EXPECT_STREQ(e.what(), "rank 9 exceeds 4");
    EXPECT_EQ(e.kind(), ErrorKind::kInvalidArgument);
    EXPECT_TRUE(e.is_user_error());
  }
}

TEST(AtomicFileTest, UncommittedWriteLeavesNothing) {
  testing::TempDir dir;
  {
    AtomicFile f(dir / "out.txt");
    f.write(std::string_view("partial"));
  }
  EXPECT_TRUE(std::filesystem::is_empty(dir.path()));
  write_file_atomic(dir / "out.txt", "done");
  EXPECT_EQ(read_text_file(dir / "out.txt"), "done");
  EXPECT_EQ(std::distance(std::filesystem::directory_iterator(dir.path()), {}), 1);
}

TEST(JsonTest, ErrorsNameFileAndKey) {
  testing::TempDir dir;
  write_file_atomic(dir / "bad.json", "{\"a\": 1,");
  try {
    read_json_file(dir / "bad.json");
    FAIL();
  } catch (const Corruption& e) {
    EXPECT_NE(std::string(e.what()).find("bad.json"), std::string::npos);
  }
  Json j = parse_json(R"({"hidden_size": "x"})", "config.json");
  EXPECT_THROW(json_get<int>(j, "hidden_size", "config.json"), InvalidArgument);
  EXPECT_THROW(json_get<int>(j, "vocab_size", "config.json"), InvalidArgument);
  EXPECT_EQ(json_get_or<int>(j, "vocab_size", 7, "config.json"), 7);
  EXPECT_THROW(read_json_file(dir / "missing.json"), NotFound);
}

}  // namespace lowrank
