// torchrun's environment variables -> dist::World: values, defaults and the refusals.
#include <map>

#include <gtest/gtest.h>

#include "lowrank/dist/world.h"
#include "tests/testing.h"

namespace lowrank::dist {
namespace {

std::optional<World> parse(const std::map<std::string, std::string>& env) {
  return World::from_lookup([&](const char* name) -> const char* {
    const auto it = env.find(name);
    return it == env.end() ? nullptr : it->second.c_str();
  });
}

const std::map<std::string, std::string> kTwoRanks{
    {"RANK", "1"}, {"WORLD_SIZE", "2"}, {"MASTER_ADDR", "127.0.0.1"}, {"MASTER_PORT", "29511"}};

TEST(WorldTest, NoVariablesIsOneProcess) {
  EXPECT_FALSE(parse({}).has_value());
}

TEST(WorldTest, ReadsTorchrunsVariables) {
  auto env = kTwoRanks;
  env["LOCAL_RANK"] = "1";
  env["LOCAL_WORLD_SIZE"] = "2";
  env["TORCHELASTIC_USE_AGENT_STORE"] = "True";
  env["TORCHELASTIC_RESTART_COUNT"] = "3";
  const World w = *parse(env);
  EXPECT_EQ(w.rank, 1);
  EXPECT_EQ(w.world_size, 2);
  EXPECT_EQ(w.local_rank, 1);
  EXPECT_EQ(w.master_addr, "127.0.0.1");
  EXPECT_EQ(w.master_port, 29511);
  EXPECT_TRUE(w.agent_store);
  EXPECT_FALSE(w.hosts_store());
  EXPECT_EQ(w.restart_count, 3);
  // Without the agent's store, rank 0 hosts it; LOCAL_* default to the global values.
  auto rank0 = kTwoRanks;
  rank0["RANK"] = "0";
  const World w0 = *parse(rank0);
  EXPECT_TRUE(w0.hosts_store());
  EXPECT_EQ(w0.local_rank, 0);
  EXPECT_EQ(w0.local_world_size, 2);
}

TEST(WorldTest, RefusesMissingOrMalformedVariablesNamingThem) {
  for (const char* missing : {"WORLD_SIZE", "RANK", "MASTER_ADDR", "MASTER_PORT"}) {
    auto env = kTwoRanks;
    env.erase(missing);
    EXPECT_NE(testing::error_of([&] { parse(env); }).find(missing), std::string::npos) << missing;
  }
  const auto message = [](const char* key, const char* value) {
    auto env = kTwoRanks;
    env[key] = value;
    return testing::error_of([&] { parse(env); });
  };
  EXPECT_NE(message("RANK", "one").find("RANK=\"one\" is not an integer"), std::string::npos);
  EXPECT_NE(message("MASTER_PORT", "70000").find("MASTER_PORT=70000 is out of range"), std::string::npos);
  EXPECT_NE(message("RANK", "2").find("RANK=2 must be less than WORLD_SIZE=2"), std::string::npos);
  EXPECT_NE(message("WORLD_SIZE", "0").find("WORLD_SIZE=0"), std::string::npos);
  EXPECT_NE(message("LOCAL_RANK", "5").find("LOCAL_RANK"), std::string::npos);
}

}  // namespace
}  // namespace lowrank::dist
