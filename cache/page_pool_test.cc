#include "cache/page_pool.h"

#include "gtest/gtest.h"
#include "ops/cpu/cpu_backend.h"

namespace quest::cache {
namespace {

PagePoolOptions Small(int num_pages) {
  PagePoolOptions o;
  o.num_layers = 2;
  o.num_kv_heads = 2;
  o.head_dim = 4;
  o.page_size = 4;
  o.num_pages = num_pages;
  return o;
}

TEST(PagePoolTest, AllocatesReleasesAndCountsExactly) {
  auto backend = ops::CreateCpuBackend();
  auto pool = PagePool::Create(Small(5), *backend);
  ASSERT_TRUE(pool.ok()) << pool.status();
  EXPECT_EQ((*pool)->k_pages(1).shape(), (std::vector<int64_t>{5, 4, 2, 4}));
  auto a = (*pool)->Allocate(3);
  ASSERT_TRUE(a.ok());
  EXPECT_EQ((*pool)->pages_in_use(), 3);
  auto too_many = (*pool)->Allocate(3);
  EXPECT_EQ(too_many.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ((*pool)->pages_in_use(), 3) << "a failed allocation must take nothing";
  (*pool)->AddRef((*a)[0]);
  (*pool)->Release(*a);
  EXPECT_EQ((*pool)->pages_in_use(), 1) << "the shared page keeps one reference";
  (*pool)->Release({(*a)[0]});
  EXPECT_EQ((*pool)->pages_in_use(), 0);
  EXPECT_TRUE((*pool)->Allocate(5).ok());
}

TEST(PagePoolTest, RejectsNonPositiveSizes) {
  auto backend = ops::CreateCpuBackend();
  auto pool = PagePool::Create(Small(0), *backend);
  EXPECT_EQ(pool.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(pool.status().message().find("num_pages=0"), absl::string_view::npos);
}

}  // namespace
}  // namespace quest::cache
