// Times Quest's SelectPages (and metadata upkeep) on one long sequence, with
// the CPU backend's attention over the selection and over everything for
// scale. Not a test: `bazel run -c opt //cache/quest:quest_policy_benchmark`.

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <functional>
#include <numeric>
#include <random>
#include <vector>

#include "cache/quest/quest_policy.h"
#include "ops/cpu/cpu_backend.h"
#include "runtime/testing/random_tensor.h"

namespace quest::cache {
namespace {

// Microseconds of `fn` over `reps` runs: the median, and the minimum (the
// least disturbed run on a shared machine).
struct Micros {
  double median, min;
};
Micros Time(int reps, const std::function<void()>& fn) {
  std::vector<double> us;
  for (int i = 0; i < reps; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    fn();
    us.push_back(
        std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count());
  }
  std::sort(us.begin(), us.end());
  return {us[reps / 2], us[0]};
}

void Run(int64_t length, int heads, int kv_heads, int head_dim, int page, uint32_t budget,
         config::QuestOptions::GqaCombine combine) {
  const CacheGeometry g{/*num_layers=*/1, heads, kv_heads, head_dim, page};
  auto backend = ops::CreateCpuBackend({/*num_threads=*/1});
  std::mt19937 rng(1);
  const int64_t pages = (length + page) / page;  // room for one decode token
  std::vector<int32_t> table(pages);
  std::iota(table.begin(), table.end(), 0);
  std::shuffle(table.begin(), table.end(), rng);
  Tensor kp = Tensor::Zeros(DType::kFloat32, {pages, page, kv_heads, head_dim});
  Tensor vp = Tensor::Zeros(DType::kFloat32, {pages, page, kv_heads, head_dim});
  backend->WriteKvPages(RandomTensor({length, kv_heads, head_dim}, rng),
                        RandomTensor({length, kv_heads, head_dim}, rng), table, 0, page, kp, vp);

  QuestParams p;
  p.page_size = page;
  p.token_budget = budget;
  p.dense_layers = 0;
  p.gqa_combine = combine;
  QuestPolicy policy(p, g);
  SequenceLayerView view;
  view.page_table = table;
  view.k_pages = &kp;
  view.v_pages = &vp;
  view.length = length;
  view.backend = backend.get();
  const auto t0 = std::chrono::steady_clock::now();
  policy.OnAppend(view, 0, length);
  const double prefill_ms =
      1e-3 *
      std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count();

  // One decode token, then selection for fresh queries.
  backend->WriteKvPages(RandomTensor({1, kv_heads, head_dim}, rng),
                        RandomTensor({1, kv_heads, head_dim}, rng), table, length, page, kp, vp);
  view.length = length + 1;
  const Micros append = Time(101, [&] { policy.OnAppend(view, length, 1); });
  std::vector<Tensor> qs;
  for (int i = 0; i < 16; ++i) qs.push_back(RandomTensor({1, heads, head_dim}, rng));
  PageSelection s;
  int i = 0;
  const Micros select = Time(201, [&] {
    s.Clear();
    policy.SelectPages(view, qs[i++ % qs.size()], s);
  });

  PagedAttentionArgs a;
  a.q = &qs[0];
  a.k_pages = &kp;
  a.v_pages = &vp;
  a.page_table = table;
  a.kv_len = length + 1;
  a.page_size = page;
  a.scale = 1.0f / std::sqrt(static_cast<float>(head_dim));
  Tensor out = Tensor::Empty(DType::kFloat32, {1, heads * head_dim});
  const Micros dense = Time(11, [&] { backend->PagedAttention(a, out); });
  a.selected_table = s.table;
  a.selection_chunk = s.chunk_size;
  const Micros sparse = Time(51, [&] { backend->PagedAttention(a, out); });

  std::printf(
      "len %lld, %d q / %d kv heads, d %d, page %d, budget %u, %s (%d chunks per kv head)\n"
      "  SelectPages (score + top-k)  median %7.1f us  min %7.1f us\n"
      "  OnAppend     decode median %.2f us; prefill of the whole sequence %.1f ms\n"
      "  CPU attention over the selection median %.0f us, dense median %.0f us\n",
      static_cast<long long>(length + 1), heads, kv_heads, head_dim, page, budget,
      combine == config::QuestOptions::SUM ? "SUM" : "MAX",
      static_cast<int>(s.table->dim(1)), select.median, select.min, append.median, prefill_ms, sparse.median,
      dense.median);
}

}  // namespace
}  // namespace quest::cache

int main() {
  using quest::config::QuestOptions;
  quest::cache::Run(4096, 9, 3, 64, 16, 512, QuestOptions::MAX);
  for (auto combine : {QuestOptions::MAX, QuestOptions::SUM}) {
    quest::cache::Run(32768, 9, 3, 64, 16, 2048, combine);
  }
  quest::cache::Run(32768, 32, 8, 128, 16, 2048, QuestOptions::MAX);  // Llama-3-8B heads
  quest::cache::Run(131072, 9, 3, 64, 16, 4096, QuestOptions::MAX);
  return 0;
}
