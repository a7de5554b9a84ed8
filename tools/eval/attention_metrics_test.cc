#include "tools/eval/attention_metrics.h"

#include <vector>

#include "gtest/gtest.h"

namespace quest::eval {
namespace {

TEST(TopRecallTest, CountsTheDenseTopKeysAttendedPerHead) {
  // Two heads of 4 keys. Head 0's top 2 are keys 3 and 1; head 1's are 0, 2.
  const std::vector<float> dense = {0.1f, 0.3f, 0.0f, 0.6f, 0.5f, 0.1f, 0.4f, 0.0f};
  const std::vector<float> got = {0.0f, 0.5f, 0.5f, 0.0f, 0.7f, 0.0f, 0.3f, 0.0f};
  // Head 0 kept key 1 of {3, 1}: 0.5; head 1 kept both: 1.
  EXPECT_DOUBLE_EQ(TopRecall(dense, got, 2, 2), 1.5);
  EXPECT_DOUBLE_EQ(TopRecall(dense, dense, 2, 1), 2.0);
}

TEST(KeptFromPreviousTest, SharesOfEachStepsKeysAttendedTheStepBefore) {
  // Two heads; the step before had 3 keys, this one 4 (key 3 is new).
  const std::vector<float> before = {0.5f, 0.5f, 0.0f, 0.0f, 1.0f, 0.0f};
  const std::vector<float> now = {0.2f, 0.0f, 0.4f, 0.4f, 0.0f, 0.6f, 0.0f, 0.4f};
  // Head 0 attends 0, 2, 3, of which only 0 was attended before: 1/3.
  // Head 1 attends 1, 3; key 1 was attended before: 1/2.
  EXPECT_DOUBLE_EQ(KeptFromPrevious(before, now, 2), 1.0 / 3 + 0.5);
}

TEST(KeptFromPreviousTest, AHeadAttendingNothingCountsAsKept) {
  const std::vector<float> before = {1.0f, 1.0f};
  const std::vector<float> now = {0.0f, 0.0f, 0.0f};
  EXPECT_DOUBLE_EQ(KeptFromPrevious(before, now, 1), 1.0);
}

}  // namespace
}  // namespace quest::eval
