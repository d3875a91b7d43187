// Registry: entries are found by name after several adds, and bad names are refused.
#include "lowrank/core/registry.h"

#include <gtest/gtest.h>

#include "tests/testing.h"

namespace lowrank {
namespace {

TEST(RegistryTest, FindsEveryEntryByNameAndRefusesBadNames) {
  Registry<int> r("demo");
  r.add({"alpha", "first", "", {}}, 1);
  r.add({"beta_2", "second", "", {}}, 2);
  EXPECT_EQ(r.factory("alpha"), 1);
  EXPECT_EQ(r.factory("beta_2"), 2);
  EXPECT_EQ(r.info("beta_2").summary, "second");
  EXPECT_EQ(r.list().size(), 2u);
  EXPECT_NE(testing::error_of([&] { r.factory("gamma"); }).find("known: alpha, beta_2"), std::string::npos);
  EXPECT_NE(testing::error_of([&] {
              r.add({"alpha", "", "", {}}, 3);
            }).find("registered twice"),
            std::string::npos);
  EXPECT_NE(testing::error_of([&] {
              r.add({"Bad Name", "", "", {}}, 3);
            }).find("invalid method name"),
            std::string::npos);
}

}  // namespace
}  // namespace lowrank
