// core/parallel_region: every member runs once per region with distinct member numbers, the
// barrier orders phases (no member reads a slot before every member has written the phase), a
// region inside another parallel region runs as one member, and exceptions reach the caller.
#include "lowrank/core/parallel_region.h"

#include <gtest/gtest.h>

#include <ATen/Parallel.h>

#include <atomic>
#include <set>
#include <stdexcept>
#include <vector>

namespace lowrank {
namespace {

class ParallelRegionTest : public ::testing::TestWithParam<int> {
 protected:
  void SetUp() override {
    before_ = at::get_num_threads();
    at::set_num_threads(GetParam());
  }
  void TearDown() override { at::set_num_threads(before_); }
  int before_ = 1;
};

TEST_P(ParallelRegionTest, EveryMemberRunsOnceAndBarriersSeparatePhases) {
  for (int round = 0; round < 20; ++round) {
    std::vector<int> slot(static_cast<size_t>(GetParam()), 0);
    std::atomic<int> wrong{0}, calls{0}, reported{0};
    parallel_region([&](int m, int members, SpinBarrier& barrier) {
      calls.fetch_add(1);
      reported.store(members);
      for (int phase = 1; phase <= 50; ++phase) {
        slot[static_cast<size_t>(m)] = phase;
        barrier.arrive_and_wait();
        for (int i = 0; i < members; ++i)
          if (slot[static_cast<size_t>(i)] != phase) wrong.fetch_add(1);
        barrier.arrive_and_wait();
      }
    });
    EXPECT_EQ(calls.load(), reported.load());
    EXPECT_EQ(reported.load(), GetParam());
    EXPECT_EQ(wrong.load(), 0);
  }
}

TEST_P(ParallelRegionTest, InsideAnotherRegionItRunsAsOneMember) {
  std::atomic<int> inner_members{0};
  at::parallel_for(0, 2, 1, [&](int64_t, int64_t) {
    parallel_region([&](int, int members, SpinBarrier& barrier) {
      barrier.arrive_and_wait();
      inner_members.store(members);
    });
  });
  EXPECT_EQ(inner_members.load(), 1);
}

TEST_P(ParallelRegionTest, AnExceptionReachesTheCaller) {
  EXPECT_THROW(parallel_region([](int m, int, SpinBarrier&) {
                 if (m == 0) throw std::runtime_error("member 0 failed");
               }),
               std::runtime_error);
}

INSTANTIATE_TEST_SUITE_P(Threads, ParallelRegionTest, ::testing::Values(1, 2, 3));

}  // namespace
}  // namespace lowrank
