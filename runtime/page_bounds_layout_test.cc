#include "runtime/page_bounds_layout.h"

#include <cstdint>
#include <vector>

#include "gtest/gtest.h"
#include "runtime/backend.h"

namespace quest {
namespace {

int64_t Numel(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

// Every (page, head, dim, side) of a capacity has its own element inside
// the tensor PageBoundsShape allocates.
TEST(PageBoundsLayoutTest, IndexIsABijectionOntoTheShape) {
  for (int64_t pages : {1, 127, 128, 129, 300}) {
    for (int64_t kv : {1, 3}) {
      for (int64_t d : {4, 64}) {
        const std::vector<int64_t> shape = PageBoundsShape(pages, kv, d);
        ASSERT_EQ(shape[0], BoundsTiles(pages));
        const int64_t numel = Numel(shape);
        std::vector<int> hits(numel, 0);
        const int64_t capacity = BoundsTiles(pages) * kBoundsTile;
        for (int64_t p = 0; p < capacity; ++p) {
          for (int64_t g = 0; g < kv; ++g) {
            for (int64_t i = 0; i < d; ++i) {
              for (int side = 0; side < 2; ++side) {
                const int64_t e = BoundsIndex(p, g, i, side, kv, d);
                ASSERT_GE(e, 0);
                ASSERT_LT(e, numel);
                ++hits[e];
              }
            }
          }
        }
        for (int64_t e = 0; e < numel; ++e) ASSERT_EQ(hits[e], 1) << "element " << e;
      }
    }
  }
}

// The property the scorers rely on: one dimension and side of a tile's pages
// is a contiguous row, its max row right after its min row, and the next
// dimension's rows after those.
TEST(PageBoundsLayoutTest, ATilesPagesOfOneDimensionAndSideAreARow) {
  const int64_t kv = 3, d = 8;
  for (int64_t p = 0; p + 1 < 3 * kBoundsTile; ++p) {
    if ((p + 1) % kBoundsTile == 0) continue;  // the next page opens a tile
    EXPECT_EQ(BoundsIndex(p + 1, 2, 5, 1, kv, d), BoundsIndex(p, 2, 5, 1, kv, d) + 1);
  }
  EXPECT_EQ(BoundsIndex(0, 1, 3, 1, kv, d), BoundsIndex(0, 1, 3, 0, kv, d) + kBoundsTile);
  EXPECT_EQ(BoundsIndex(0, 1, 4, 0, kv, d), BoundsIndex(0, 1, 3, 0, kv, d) + 2 * kBoundsTile);
  EXPECT_EQ(PageBoundsShape(129, kv, d), (std::vector<int64_t>{2, kv, d, 2, kBoundsTile}));
}

}  // namespace
}  // namespace quest
