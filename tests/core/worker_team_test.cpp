// core/worker_team: every member runs once per run(), barriers order the phases (a member never
// reads a slot before every member has written the phase), exceptions reach the caller, and the
// shared team is rebuilt for another size.
#include "lowrank/core/worker_team.h"

#include <gtest/gtest.h>

#include <atomic>
#include <stdexcept>
#include <vector>

namespace lowrank {
namespace {

TEST(WorkerTeamTest, EveryMemberRunsOncePerRun) {
  for (int size : {1, 2, 3}) {
    WorkerTeam team(size);
    for (int round = 0; round < 50; ++round) {
      std::vector<std::atomic<int>> calls(static_cast<size_t>(size));
      team.run([&](int m) { calls[static_cast<size_t>(m)].fetch_add(1); });
      for (auto& c : calls) EXPECT_EQ(c.load(), 1) << "size " << size;
    }
  }
}

TEST(WorkerTeamTest, BarriersSeparatePhases) {
  WorkerTeam team(3);
  std::vector<int> slot(3, 0);
  std::atomic<int> wrong{0};
  team.run([&](int m) {
    for (int phase = 1; phase <= 200; ++phase) {
      slot[static_cast<size_t>(m)] = phase;
      team.barrier();
      for (int other : slot)
        if (other != phase) wrong.fetch_add(1);
      team.barrier();
    }
  });
  EXPECT_EQ(wrong.load(), 0);
}

TEST(WorkerTeamTest, AnExceptionReachesTheCallerAndTheTeamStaysUsable) {
  WorkerTeam team(2);
  EXPECT_THROW(team.run([](int m) {
    if (m == 1) throw std::runtime_error("member 1 failed");
  }),
               std::runtime_error);
  std::atomic<int> calls{0};
  team.run([&](int) { calls.fetch_add(1); });
  EXPECT_EQ(calls.load(), 2);
}

TEST(WorkerTeamTest, SharedTeamFollowsTheSizeAskedFor) {
  EXPECT_EQ(WorkerTeam::shared(2).size(), 2);
  EXPECT_EQ(WorkerTeam::shared(1).size(), 1);
  EXPECT_THROW(WorkerTeam(0), std::exception);
}

}  // namespace
}  // namespace lowrank
