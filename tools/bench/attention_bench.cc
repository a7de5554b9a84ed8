// attention_bench: the CUDA backend's real Backend::PagedAttention (bf16,
// ops::CreateCudaBackend) for decode (n = 1 query token), dense and with a
// Quest-style selection given, reported as ratios measured side by side in
// one run, never as bare times:
//   - "% of copy": bytes of K and V read / kernel time, over the bandwidth of
//     a device-to-device cudaMemcpyAsync of the same bytes in the same run
//     (a copy's bandwidth counts the bytes it reads plus those it writes);
//   - "speed-up": dense time / sparse time at the same context, for the
//     attention kernel alone with a selection given ("sparse"), and for
//     Quest end to end ("quest"): every launch of a decode step of one
//     layer -- SelectTopPages (scoring and top-k), PagedAttention over the
//     selected table, and UpdatePageBounds of a page on the step that
//     completes it (QuestPolicy's rule: one step in 16) -- with page bounds
//     in bf16 and in FP8 E4M3, and the share of each op measured alone;
//   - GEMMs through Backend::Linear (cuBLASLt): TFLOP/s, to be read beside
//     torch.matmul on the same shapes in the same GPU run
//     (tools/bench/torch_reference.py, which also times PyTorch SDPA decode).
//
// Timing: the backend keeps its stream private (ops/cuda/cuda_backend.h), so
// each repeat is cudaDeviceSynchronize, steady_clock, N enqueued calls,
// cudaDeviceSynchronize, steady_clock; the per-call time is the median over
// repeats after a warm-up. That includes the op's per-call host work (page
// table and chunk-list uploads, the launch): it is the real code path. As a
// cross-check, CUDA events recorded on the legacy default stream around the
// same N calls (the backend's stream is a blocking stream, so it is ordered
// against stream 0) are printed beside it.
//
// Caches: every measurement rotates over 8 sequences' KV (or, for the copy,
// 4 regions of one sequence's KV size), so repeated calls do not read L2.
//
//   bazel run //tools/bench:attention_bench            (needs a GPU)
//   tools/gpu/pack.sh //tools/bench:attention_bench    (for the GPU machine)
//
// Flags narrow the run (kernel work iterates on one shape quickly):
//   --shapes=MHA,GQA  --contexts=4096,32768,131072  --budgets=256,1024,2048,4096
//   --no_gemm
// and add diagnostics of the Quest step: --graph (the step and dense calls
// in CUDA graphs), --chain_events (each op's share inside the running
// chain, by events between them), --contiguous_tables (each sequence's
// pages one contiguous run: address translation), --profile_steps=N (N
// steps between cudaProfilerStart/Stop, for `ncu --profile-from-start off`;
// tools/gpu/ncu_summary.py tabulates its --csv output), --cold (each op
// alone with its data evicted, as between a model's layers: the scoring
// pass, the select, the attention, the step; the scoring's and select's
// code is evicted too, the attention's is not, since the dense attention
// that evicts is the same kernel).

#include <cuda_profiler_api.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "ops/cuda/cuda_backend.h"
#include "ops/cuda/quest_kernels.h"
#include "runtime/backend.h"
#include "tools/bench/bench_util.h"

ABSL_FLAG(std::vector<std::string>, shapes, std::vector<std::string>({"MHA", "GQA"}),
          "shapes to measure: MHA (32/32 heads) and/or GQA (32/8)");
ABSL_FLAG(std::vector<std::string>, contexts, std::vector<std::string>({"4096", "32768", "131072"}),
          "context lengths in tokens");
ABSL_FLAG(std::vector<std::string>, budgets, std::vector<std::string>({"256", "1024", "2048", "4096"}),
          "token budgets of the sparse and Quest rows");
ABSL_FLAG(bool, no_gemm, false, "skip the GEMM table");
ABSL_FLAG(int, quest_select_variant, 0,
          "SelectTopPages' implementation (ops::CudaBackendOptions::quest_select_variant; 0: the default)");
ABSL_FLAG(bool, graph, false,
          "also time the Quest step and the dense call captured in CUDA graphs (the backend runs on a "
          "stream of the bench's, ops::CudaBackendOptions::stream): the Quest table's graph column");
ABSL_FLAG(bool, contiguous_tables, false,
          "sequence q's pages are one contiguous run of the pool (default: interleaved, page i of "
          "sequence q at i * 8 + q, as a shared pool fragments): isolates address-translation cost");
ABSL_FLAG(bool, chain_events, false,
          "also time each op of the Quest step inside the running chain (CUDA events on the stream between "
          "them; the events themselves cost a little): printed per row");
ABSL_FLAG(int, profile_steps, 0,
          "after each Quest row's timing, N more steps (and N dense calls) between cudaProfilerStart and "
          "cudaProfilerStop, for `ncu --profile-from-start off` (per-kernel times of the real step)");
ABSL_FLAG(bool, cold, false,
          "also time each op of the Quest step alone with its data cold (after dense attention over other "
          "sequences has evicted the L2, as a model's other layers do between steps): the scoring pass alone, the select, the "
          "attention over the selected table, the whole step, and a copy of the bounds bytes; printed per row");
ABSL_FLAG(double, step_overlap, 0.85,
          "the Quest step alternates two queries per sequence whose selections share about this fraction "
          "of their pages, so each step's table held the other query's selection before (what the sparse "
          "attention's pre-wait prefetch reads; consecutive decode steps of SmolLM2 shared 84 %); 1: one "
          "query per sequence (every step selects what the last did: that prefetch's upper bound)");
ABSL_FLAG(bool, per_head_select_wait, false,
          "attention over a fresh selection waits per KV head for the select's rows "
          "(ops::CudaBackendOptions::per_head_select_wait)");

namespace quest {
namespace {

using bench::FillRandom;
using bench::kRepeats;
using bench::Median;
using bench::Time;
using bench::Timing;

constexpr int kPageSize = 16;
constexpr int kSeqs = 8;  // sequences in the pool (batch 8, and the rotation of batch 1)
constexpr int kHeadDim = 128;
constexpr double kMaxRunSeconds = 150;  // later cases are skipped, and say so

// Host seconds to enqueue one fn(i), over a burst short enough that the
// launch queue never fills (so the host never waits for the GPU): near the
// step time, the host's launches, not the GPU, set the pace.
double EnqueueSeconds(const std::function<void(int)>& fn) {
  constexpr int kBurst = 32;
  std::vector<double> per_call;
  for (int r = 0; r < kRepeats; ++r) {
    BENCH_CUDA(cudaDeviceSynchronize());
    const auto a = std::chrono::steady_clock::now();
    for (int i = 0; i < kBurst; ++i) fn(r * kBurst + i);
    per_call.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - a).count() / kBurst);
  }
  BENCH_CUDA(cudaDeviceSynchronize());
  return Median(per_call);
}

struct Shape {
  const char* name;
  int heads;
  int kv_heads;
};

// The fraction of pages (besides the current one, the last of each row)
// that two selections [kv_heads, k + 1] on the host both pick, over every
// KV head.
double SelectionOverlap(const Tensor& a, const Tensor& b) {
  const int64_t heads = a.dim(0), per = a.dim(1), k = per - 1;
  if (k <= 0) return 1.0;
  int64_t same = 0;
  for (int64_t g = 0; g < heads; ++g) {
    const int32_t* ra = a.data<int32_t>() + g * per;
    const int32_t* rb = b.data<int32_t>() + g * per;
    // Both rows are ascending: a merge walk counts the common pages.
    for (int64_t i = 0, j = 0; i < k && j < k;) {
      if (ra[i] == rb[j]) {
        ++same, ++i, ++j;
      } else if (ra[i] < rb[j]) {
        ++i;
      } else {
        ++j;
      }
    }
  }
  return static_cast<double>(same) / static_cast<double>(heads * k);
}

// Per sequence, a second query q + sigma * rms(q) * noise, with sigma found
// by bisection so that sequence 0's two selections share about `target` of
// their pages (`overlap(a, b)` selects with both and compares). Empty
// queries (and overlap 1) when target >= 1.
struct AlternateQueries {
  std::vector<Tensor> queries;
  double overlap = 1.0;
};
template <typename Overlap>
AlternateQueries MakeAlternateQueries(Backend& backend, const std::vector<Tensor>& qs, double target,
                                      std::mt19937& rng, Overlap&& overlap) {
  AlternateQueries out;
  if (target >= 1.0) return out;
  std::vector<Tensor> hosts, noises;
  std::normal_distribution<float> normal(0.0f, 1.0f);
  for (const Tensor& q : qs) {
    hosts.push_back(backend.ToHost(q).ToFloat32());
    Tensor n = Tensor::Zeros(DType::kFloat32, hosts.back().shape());
    double sq = 0;
    for (int64_t i = 0; i < n.numel(); ++i) sq += hosts.back().data<float>()[i] * hosts.back().data<float>()[i];
    const float rms = static_cast<float>(std::sqrt(sq / std::max<int64_t>(n.numel(), 1)));
    for (int64_t i = 0; i < n.numel(); ++i) n.data<float>()[i] = rms * normal(rng);
    noises.push_back(std::move(n));
    out.queries.push_back(backend.Allocate(q.dtype(), q.shape()));
  }
  auto make = [&](size_t s, double sigma) {
    Tensor f = Tensor::Zeros(DType::kFloat32, hosts[s].shape());
    for (int64_t i = 0; i < f.numel(); ++i) {
      f.data<float>()[i] = hosts[s].data<float>()[i] + static_cast<float>(sigma) * noises[s].data<float>()[i];
    }
    backend.CopyFromHost(f.AsType(qs[s].dtype()), out.queries[s]);
  };
  double lo = 0.0, hi = 2.0;
  for (int it = 0; it < 12; ++it) {
    const double mid = 0.5 * (lo + hi);
    make(0, mid);
    (overlap(qs[0], out.queries[0]) > target ? lo : hi) = mid;
  }
  const double sigma = 0.5 * (lo + hi);
  for (size_t s = 0; s < qs.size(); ++s) make(s, sigma);
  out.overlap = overlap(qs[0], out.queries[0]);
  return out;
}

struct QuestRow {
  std::string shape;
  int64_t context;
  int64_t budget;
  std::string bounds;  // the page bounds' dtype
  double speedup;      // dense b1 / quest step
  double ideal;        // context / budget
  double append_pct;   // UpdatePageBounds of a page alone / kPageSize / quest step
  double select_pct;   // SelectTopPages alone / quest step
  double attend_pct;   // PagedAttention over the table alone / quest step
  double select_copy;  // bounds bytes read by SelectTopPages / time, % of copy
  double host_pct;     // host time to enqueue a step / the step's time
  double b8_speedup;   // dense b8 (one batch call) / a batch-8 quest step
  double b8_batch_select;  // the same with the 8 selects as one SelectTopPagesBatch
  double graph_speedup;  // the same two, each captured in a CUDA graph (0: not measured)
  double overlap;        // pages two consecutive steps of a sequence both select (fraction)
};

struct Row {
  std::string shape;
  int64_t context;
  std::string what;
  double pct_copy;   // achieved / copy bandwidth, %
  double speedup;    // dense / this (sparse rows), 0 otherwise
  double ideal;      // context / budget (sparse rows)
  double event_vs_host;
};

// Backend::Linear (cuBLASLt, bf16 in and out, fp32 accumulate) on
// Llama-2-7B projection shapes, as TFLOP/s; torch_reference.py times
// torch.matmul on the same shapes in the same GPU run.
int RunGemms(Backend& backend) {
  struct Gemm {
    int64_t m, n, k;
  };
  const Gemm gemms[] = {{1, 4096, 4096},    {1, 11008, 4096},   {16, 4096, 4096},
                        {512, 4096, 4096},  {512, 11008, 4096}, {512, 4096, 11008},
                        {4096, 4096, 4096}, {4096, 11008, 4096}};
  std::mt19937 rng(99);
  std::printf("\nGEMM y[m,n] = x[m,k] w[n,k]^T through Backend::Linear (cuBLASLt), bf16, fp32 accumulate:\n");
  std::printf("%6s %6s %6s %10s %14s\n", "m", "n", "k", "TFLOP/s", "weight GB/s");
  for (const Gemm& g : gemms) {
    Tensor x = backend.Allocate(DType::kBFloat16, {g.m, g.k});
    Tensor w = backend.Allocate(DType::kBFloat16, {g.n, g.k});
    Tensor y = backend.Allocate(DType::kBFloat16, {g.m, g.n});
    FillRandom(x.raw_data(), x.nbytes(), rng);
    FillRandom(w.raw_data(), w.nbytes(), rng);
    Timing t = Time([&](int) { backend.Linear(x, w, nullptr, y); });
    const double flops = 2.0 * g.m * g.n * g.k;
    std::printf("%6lld %6lld %6lld %10.1f %14.0f\n", static_cast<long long>(g.m), static_cast<long long>(g.n),
                static_cast<long long>(g.k), flops / t.host_s / 1e12, w.nbytes() / t.host_s / 1e9);
  }
  return 0;
}

// Per-replay time of the work fn enqueues on `stream`, captured once as a
// CUDA graph (its launches then cost no host work, and their dependencies
// are the graph's edges).
double GraphSeconds(cudaStream_t stream, const std::function<void()>& fn) {
  cudaGraph_t graph = nullptr;
  cudaGraphExec_t exec = nullptr;
  BENCH_CUDA(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal));
  fn();
  BENCH_CUDA(cudaStreamEndCapture(stream, &graph));
  BENCH_CUDA(cudaGraphInstantiate(&exec, graph, 0));
  const Timing t = Time([&](int) { BENCH_CUDA(cudaGraphLaunch(exec, stream)); });
  BENCH_CUDA(cudaGraphExecDestroy(exec));
  BENCH_CUDA(cudaGraphDestroy(graph));
  return t.host_s;
}

int Main() {
  ops::CudaBackendOptions options;
  options.dtype = DType::kBFloat16;
  options.quest_select_variant = absl::GetFlag(FLAGS_quest_select_variant);
  options.per_head_select_wait = absl::GetFlag(FLAGS_per_head_select_wait);
  // The backend runs on this stream (blocking, as its own would be), so
  // that --graph can capture its launches. Never destroyed: it must outlive
  // the backend's tensors, and the process ends with them.
  cudaStream_t stream = nullptr;
  BENCH_CUDA(cudaStreamCreate(&stream));
  options.stream = stream;
  auto created = ops::CreateCudaBackend(options);
  if (!created.ok()) {
    std::fprintf(stderr,
                 "attention_bench: no usable GPU, nothing measured (this benchmark needs the GPU "
                 "machine): %s\n",
                 std::string(created.status().message()).c_str());
    return 1;
  }
  std::unique_ptr<Backend> backend = std::move(*created);
  cudaDeviceProp prop;
  int dev = 0;
  BENCH_CUDA(cudaGetDevice(&dev));
  BENCH_CUDA(cudaGetDeviceProperties(&prop, dev));
  std::printf("attention_bench: %s, %d SMs, L2 %d MiB; Backend::PagedAttention of the CUDA backend, "
              "bf16, decode n=1, page_size %d, head_dim %d, select variant %d%s\n",
              prop.name, prop.multiProcessorCount, prop.l2CacheSize >> 20, kPageSize, kHeadDim,
              options.quest_select_variant, options.per_head_select_wait ? ", per-head select wait" : "");
  std::printf("timing: backend stream is private -> cudaDeviceSynchronize + steady_clock over N calls, "
              "median of %d repeats (3 when a call takes over 50 ms) after warm-up (legacy-stream CUDA "
              "events beside it as a check)\n",
              kRepeats);

  std::vector<Shape> shapes;
  for (const std::string& name : absl::GetFlag(FLAGS_shapes)) {
    if (name == "MHA") {
      shapes.push_back({"MHA 32/32", 32, 32});
    } else if (name == "GQA") {
      shapes.push_back({"GQA 32/8", 32, 8});
    } else {
      std::fprintf(stderr, "attention_bench: --shapes: unknown shape '%s' (MHA or GQA)\n", name.c_str());
      return 2;
    }
  }
  const std::vector<int64_t> contexts = bench::ParsePositiveInts("attention_bench", "contexts", absl::GetFlag(FLAGS_contexts));
  const std::vector<int64_t> budgets = bench::ParsePositiveInts("attention_bench", "budgets", absl::GetFlag(FLAGS_budgets));
  std::mt19937 rng(1234);
  std::vector<Row> rows;
  std::vector<QuestRow> quest_rows;

  const auto run_start = std::chrono::steady_clock::now();
  bool cut = false;
  for (const Shape& s : shapes) {
    for (int64_t ctx : contexts) {
      if (std::chrono::duration<double>(std::chrono::steady_clock::now() - run_start).count() >
          kMaxRunSeconds) {
        std::printf("\n%s ctx %lld: SKIPPED (run time over %.0f s)\n", s.name,
                    static_cast<long long>(ctx), kMaxRunSeconds);
        cut = true;
        continue;
      }
      const int64_t pages_per_seq = ctx / kPageSize;
      const int64_t num_pages = pages_per_seq * kSeqs;
      Tensor k = backend->Allocate(DType::kBFloat16, {num_pages, kPageSize, s.kv_heads, kHeadDim});
      Tensor v = backend->Allocate(DType::kBFloat16, {num_pages, kPageSize, s.kv_heads, kHeadDim});
      FillRandom(k.raw_data(), k.nbytes(), rng);
      FillRandom(v.raw_data(), v.nbytes(), rng);
      std::vector<Tensor> qs, outs;
      for (int i = 0; i < kSeqs; ++i) {
        qs.push_back(backend->Allocate(DType::kBFloat16, {1, s.heads, kHeadDim}));
        FillRandom(qs.back().raw_data(), qs.back().nbytes(), rng);
        outs.push_back(backend->Allocate(DType::kBFloat16, {1, s.heads * kHeadDim}));
      }
      // Sequence q's logical page i is physical page i*8 + q (interleaved,
      // as a shared pool fragments).
      std::vector<std::vector<int32_t>> tables(kSeqs, std::vector<int32_t>(pages_per_seq));
      for (int q = 0; q < kSeqs; ++q) {
        for (int64_t i = 0; i < pages_per_seq; ++i) {
          tables[q][i] = static_cast<int32_t>(absl::GetFlag(FLAGS_contiguous_tables) ? q * pages_per_seq + i
                                                                                     : i * kSeqs + q);
        }
      }
      const double kv_bytes = static_cast<double>(ctx) * s.kv_heads * kHeadDim * 2 * 2;

      // The copy: one sequence's K+V bytes, rotating over 4 regions of K.
      const size_t copy_bytes = static_cast<size_t>(kv_bytes);
      char* base = static_cast<char*>(k.raw_data());
      Timing copy = Time([&](int i) {
        const int src = i % 4, dst = (i + 2) % 4;
        BENCH_CUDA(cudaMemcpyAsync(base + src * copy_bytes, base + dst * copy_bytes, copy_bytes,
                                   cudaMemcpyDeviceToDevice, 0));
      });
      const double copy_bw = 2.0 * copy_bytes / copy.host_s;  // read + write

      // Decode attention arguments of sequence q over its first kv_len
      // tokens: dense, or over a device selection table (Quest's).
      auto decode_args = [&](int q, int64_t kv_len, const Tensor* table) {
        PagedAttentionArgs a;
        a.q = &qs[q];
        a.k_pages = &k;
        a.v_pages = &v;
        a.page_table = absl::MakeConstSpan(tables[q]).subspan(0, (kv_len + kPageSize - 1) / kPageSize);
        a.kv_len = kv_len;
        a.page_size = kPageSize;
        a.selected_table = table;
        a.selection_chunk = kPageSize;
        a.scale = 1.0f / std::sqrt(static_cast<float>(kHeadDim));
        return a;
      };
      // Decode attention of sequence q: dense, over a host CSR selection, or
      // over a device table.
      auto attend = [&](int q, absl::Span<const int32_t> indptr, absl::Span<const int32_t> chunks,
                        const Tensor* table = nullptr) {
        PagedAttentionArgs a = decode_args(q, ctx, table);
        a.selected_indptr = indptr;
        a.selected_chunks = chunks;
        backend->PagedAttention(a, outs[q]);
      };

      // Sanity: the output is finite and not all zero.
      attend(0, {}, {});
      {
        Tensor h = backend->ToHost(outs[0]);
        double sum = 0;
        for (int64_t i = 0; i < h.numel(); ++i) {
          float x = h.data<float>()[i];
          if (!std::isfinite(x)) {
            std::fprintf(stderr, "attention_bench: non-finite attention output\n");
            return 1;
          }
          sum += std::fabs(x);
        }
        if (sum == 0) {
          std::fprintf(stderr, "attention_bench: attention output is all zeros\n");
          return 1;
        }
      }

      // The 8 sequences in one PagedAttentionBatch call (one launch), at
      // full length or ragged (sequence q at (q + 1) / 8 of the context),
      // dense or over device selections (Quest's tables, one per sequence).
      auto attend_batch = [&](bool ragged, const std::vector<Tensor>* selections = nullptr) {
        std::vector<PagedAttentionArgs> args(kSeqs);
        std::vector<Tensor*> batch_outs(kSeqs);
        for (int q = 0; q < kSeqs; ++q) {
          args[q] = decode_args(q, ragged ? ctx * (q + 1) / kSeqs : ctx,
                                selections != nullptr ? &(*selections)[q] : nullptr);
          batch_outs[q] = &outs[q];
        }
        backend->PagedAttentionBatch(args, batch_outs);
      };
      Timing dense = Time([&](int i) { attend(i % kSeqs, {}, {}); });
      Timing batch8 = Time([&](int) {
        for (int q = 0; q < kSeqs; ++q) attend(q, {}, {});
      });
      Timing batched = Time([&](int) { attend_batch(false); });
      Timing ragged = Time([&](int) { attend_batch(true); });
      const double ragged_bytes = kv_bytes * (kSeqs + 1) / 2;  // (1 + ... + 8) / 8 contexts
      const std::string shape_name = s.name;
      auto pct = [&](double bytes, double t) { return 100.0 * (bytes / t) / copy_bw; };
      std::printf("\n%s ctx %lld: K+V %.1f MiB/seq; copy %.0f GB/s (read+write); dense b1 %.0f GB/s "
                  "read (events/host %.2f); dense b8 %.0f GB/s\n",
                  s.name, static_cast<long long>(ctx), kv_bytes / (1 << 20), copy_bw / 1e9,
                  kv_bytes / dense.host_s / 1e9, dense.event_s / dense.host_s,
                  8 * kv_bytes / batch8.host_s / 1e9);
      rows.push_back({shape_name, ctx, "dense b1", pct(kv_bytes, dense.host_s), 0, 0,
                      dense.event_s / dense.host_s});
      rows.push_back({shape_name, ctx, "dense b8 (8 seq. calls)", pct(8 * kv_bytes, batch8.host_s), 0, 0,
                      batch8.event_s / batch8.host_s});
      rows.push_back({shape_name, ctx, "dense b8 (one batch call)", pct(8 * kv_bytes, batched.host_s), 0, 0,
                      batched.event_s / batched.host_s});
      rows.push_back({shape_name, ctx, "dense b8 ragged 1/8..8/8", pct(ragged_bytes, ragged.host_s), 0, 0,
                      ragged.event_s / ragged.host_s});

      for (int64_t budget : budgets) {
        if (budget >= ctx) continue;
        // Quest-style selection per KV head: B/16 - 1 pages spread evenly
        // over the earlier pages, plus the last page.
        const int64_t picks = budget / kPageSize - 1;
        std::vector<int32_t> indptr(s.kv_heads + 1, 0), chunks;
        for (int g = 0; g < s.kv_heads; ++g) {
          for (int64_t j = 0; j < picks; ++j) {
            chunks.push_back(static_cast<int32_t>(j * (pages_per_seq - 1) / picks));
          }
          chunks.push_back(static_cast<int32_t>(pages_per_seq - 1));
          indptr[g + 1] = static_cast<int32_t>(chunks.size());
        }
        Timing sparse = Time([&](int i) { attend(i % kSeqs, indptr, chunks); });
        const double sparse_bytes = static_cast<double>(budget) * s.kv_heads * kHeadDim * 2 * 2;
        rows.push_back({shape_name, ctx, "sparse B=" + std::to_string(budget), pct(sparse_bytes, sparse.host_s),
                        dense.host_s / sparse.host_s, static_cast<double>(ctx) / budget,
                        sparse.event_s / sparse.host_s});
      }

      // Quest end to end, with the page bounds in the KV dtype (bf16) and in
      // FP8 E4M3. Each sequence's bounds are built once over its whole
      // context (as prefill does); a decode step of one layer then scores and
      // ranks every complete page and attends the selected table, and, as
      // QuestPolicy does, folds a page's bounds on the step that completes
      // it: one step in kPageSize runs UpdatePageBounds over that page.
      for (const DType bounds_dtype : {DType::kBFloat16, DType::kFloat8E4M3}) {
        std::vector<Tensor> bounds;
        for (int q = 0; q < kSeqs; ++q) {
          bounds.push_back(
              backend->AllocateZeros(bounds_dtype, PageBoundsShape(pages_per_seq, s.kv_heads, kHeadDim)));
          PageBoundsArgs b;
          b.k_pages = &k;
          b.page_table = tables[q];
          b.page_size = kPageSize;
          b.bound_page = kPageSize;
          b.begin = 0;
          b.end = ctx;
          backend->UpdatePageBounds(b, bounds[q]);
        }
        for (int64_t budget : budgets) {
          if (budget >= ctx) continue;
          const int64_t k_pages = budget / kPageSize - 1;
          std::vector<Tensor> selected;
          for (int q = 0; q < kSeqs; ++q) {
            selected.push_back(backend->Allocate(DType::kInt32, {s.kv_heads, k_pages + 1}));
          }
          // The last page's Keys, folded as the token completing it does.
          auto append = [&](int q) {
            PageBoundsArgs b;
            b.k_pages = &k;
            b.page_table = tables[q];
            b.page_size = kPageSize;
            b.bound_page = kPageSize;
            b.begin = ctx - kPageSize;
            b.end = ctx;
            backend->UpdatePageBounds(b, bounds[q]);
          };
          auto select_with = [&](int q, const Tensor& query, Tensor& out) {
            TopPagesArgs t;
            t.q = &query;
            t.bounds = &bounds[q];
            t.num_pages = pages_per_seq;
            t.k = k_pages;
            t.combine_sum = true;
            backend->SelectTopPages(t, out);
          };
          // Consecutive steps of a sequence alternate between its query and
          // an alternate one (--step_overlap), each select taking the next.
          const AlternateQueries alt = MakeAlternateQueries(
              *backend, qs, absl::GetFlag(FLAGS_step_overlap), rng, [&](const Tensor& a, const Tensor& b) {
                select_with(0, a, selected[0]);
                select_with(0, b, selected[1]);
                return SelectionOverlap(backend->ToHost(selected[0]), backend->ToHost(selected[1]));
              });
          std::vector<int> turn(kSeqs, 0);
          auto next_query = [&](int q) -> const Tensor& {
            if (alt.queries.empty()) return qs[q];
            turn[q] ^= 1;
            return turn[q] != 0 ? alt.queries[q] : qs[q];
          };
          auto select = [&](int q) { select_with(q, next_query(q), selected[q]); };
          auto attend_table = [&](int q) { attend(q, {}, {}, &selected[q]); };
          // Sanity: a selection is k ascending pages, then the current one.
          select(0);
          {
            Tensor h = backend->ToHost(selected[0]);
            for (int g = 0; g < s.kv_heads; ++g) {
              const int32_t* row = h.data<int32_t>() + g * (k_pages + 1);
              bool ok = row[k_pages] == pages_per_seq - 1;
              for (int64_t j = 0; j < k_pages; ++j) {
                ok = ok && row[j] >= 0 && (j == 0 || row[j] > row[j - 1]) && row[j] < pages_per_seq - 1;
              }
              if (!ok) {
                std::fprintf(stderr, "attention_bench: SelectTopPages gave a malformed selection\n");
                return 1;
              }
            }
          }
          Timing t_append = Time([&](int i) { append(i % kSeqs); });
          Timing t_select = Time([&](int i) { select(i % kSeqs); });
          Timing t_attend = Time([&](int i) { attend_table(i % kSeqs); });
          Timing t_step = Time([&](int i) {
            if (i % kPageSize == kPageSize - 1) append(i % kSeqs);
            select(i % kSeqs);
            attend_table(i % kSeqs);
          });
            const double host_s = EnqueueSeconds([&](int i) {
            if (i % kPageSize == kPageSize - 1) append(i % kSeqs);
            select(i % kSeqs);
            attend_table(i % kSeqs);
          });
          if (const int steps = absl::GetFlag(FLAGS_profile_steps); steps > 0) {
            BENCH_CUDA(cudaDeviceSynchronize());
            BENCH_CUDA(cudaProfilerStart());
            append(0);  // the smallest launch of the step: the profiler's floor
            for (int i = 0; i < steps; ++i) {
              attend(i % kSeqs, {}, {});
              select(i % kSeqs);
              attend_table(i % kSeqs);
            }
            BENCH_CUDA(cudaDeviceSynchronize());
            BENCH_CUDA(cudaProfilerStop());
          }
          if (absl::GetFlag(FLAGS_chain_events)) {
            // Events between the ops of consecutive steps: the select's and
            // the attention's share of a step as they run in the chain.
            constexpr int kSteps = 256;
            std::vector<cudaEvent_t> ev(2 * kSteps + 1);
            for (cudaEvent_t& e : ev) BENCH_CUDA(cudaEventCreate(&e));
            for (int warm = 0; warm < 2; ++warm) {
              BENCH_CUDA(cudaDeviceSynchronize());
              BENCH_CUDA(cudaEventRecord(ev[0], stream));
              for (int i = 0; i < kSteps; ++i) {
                select(i % kSeqs);
                BENCH_CUDA(cudaEventRecord(ev[2 * i + 1], stream));
                attend_table(i % kSeqs);
                BENCH_CUDA(cudaEventRecord(ev[2 * i + 2], stream));
              }
              BENCH_CUDA(cudaDeviceSynchronize());
            }
            double sel_ms = 0, att_ms = 0;
            for (int i = 0; i < kSteps; ++i) {
              float a = 0, b = 0;
              BENCH_CUDA(cudaEventElapsedTime(&a, ev[2 * i], ev[2 * i + 1]));
              BENCH_CUDA(cudaEventElapsedTime(&b, ev[2 * i + 1], ev[2 * i + 2]));
              sel_ms += a;
              att_ms += b;
            }
            for (cudaEvent_t& e : ev) BENCH_CUDA(cudaEventDestroy(e));
            const double sel_s = sel_ms / 1e3 / kSteps, att_s = att_ms / 1e3 / kSteps;
            std::printf("chain %s %lldK B=%lld %s: step with events / without %.2f; in the chain: select %.1f%%, "
                        "attend %.1f%% of the plain step; alone (back to back): select %.1f%%, attend %.1f%%\n",
                        s.name, static_cast<long long>(ctx / 1024), static_cast<long long>(budget),
                        DTypeName(bounds_dtype), (sel_s + att_s) / t_step.host_s, 100 * sel_s / t_step.host_s,
                        100 * att_s / t_step.host_s, 100 * t_select.host_s / t_step.host_s,
                        100 * t_attend.host_s / t_step.host_s);
          }
          if (absl::GetFlag(FLAGS_cold)) {
            // Each op alone with its data cold: before every timed call
            // dense attention over other sequences (at least twice the L2
            // of clean K/V read, as a model's other layers would), events
            // around the call only. The scoring pass alone is the select
            // kernels' timing variant (TopPagesParams::variant 4), launched
            // directly.
            constexpr int kCalls = 64;
            // The copy's destination, then the scoring pass's scores.
            const size_t bounds_bytes_q = bounds[0].nbytes();
            void* scratch = nullptr;
            BENCH_CUDA(cudaMalloc(&scratch, bounds_bytes_q + sizeof(float) * pages_per_seq * s.kv_heads));
            cudaEvent_t a, b;
            BENCH_CUDA(cudaEventCreate(&a));
            BENCH_CUDA(cudaEventCreate(&b));
            auto cold_us = [&](const std::function<void(int)>& op) {
              double total_ms = 0;
              for (int i = 0; i < kCalls + 2; ++i) {
                // Short contexts: several other sequences' attention.
                for (int j = 1; j < kSeqs && (j - 1) * kv_bytes < 2.0 * prop.l2CacheSize; ++j) {
                  attend((i + j) % kSeqs, {}, {});
                }
                BENCH_CUDA(cudaEventRecord(a, stream));
                op(i % kSeqs);
                BENCH_CUDA(cudaEventRecord(b, stream));
                BENCH_CUDA(cudaEventSynchronize(b));
                float ms = 0;
                BENCH_CUDA(cudaEventElapsedTime(&ms, a, b));
                if (i >= 2) total_ms += ms;  // two warm-up calls
              }
              return 1e3 * total_ms / kCalls;
            };
            const double copy_us = cold_us([&](int q) {
              BENCH_CUDA(cudaMemcpyAsync(scratch, bounds[q].raw_data(), bounds_bytes_q, cudaMemcpyDeviceToDevice,
                                         stream));
            });
            const double score_us = cold_us([&](int q) {
              ops::cuda::TopPagesParams t;
              t.q = qs[q].raw_data();
              t.bounds = bounds[q].raw_data();
              t.bounds_fp8 = bounds_dtype == DType::kFloat8E4M3;
              t.num_pages = pages_per_seq;
              t.k = k_pages;
              t.num_heads = s.heads;
              t.num_kv_heads = s.kv_heads;
              t.head_dim = kHeadDim;
              t.scores = reinterpret_cast<float*>(static_cast<char*>(scratch) + bounds_bytes_q);
              t.selected = selected[q].data<int32_t>();
              t.variant = 4;
              BENCH_CUDA(ops::cuda::LaunchSelectTopPages(ops::cuda::ElemType::kBFloat16, t, stream));
            });
            const double select_us = cold_us(select);
            const double attend_us = cold_us(attend_table);
            const double step_us = cold_us([&](int q) {
              select(q);
              attend_table(q);
            });
            const double dense_us = cold_us([&](int q) { attend(q, {}, {}); });
            BENCH_CUDA(cudaEventDestroy(a));
            BENCH_CUDA(cudaEventDestroy(b));
            BENCH_CUDA(cudaFree(scratch));
            std::printf("cold %s %lldK B=%lld %s: dense / step %.2fx; over the step: scoring %.1f%%, select "
                        "%.1f%% (scoring + top-k), attend %.1f%%; scoring at %.1f%% of a cold D2D copy of "
                        "the bounds (which also writes them); us: step %.2f scoring %.2f select %.2f attend "
                        "%.2f copy %.2f dense %.2f\n",
                        s.name, static_cast<long long>(ctx / 1024), static_cast<long long>(budget),
                        DTypeName(bounds_dtype), dense_us / step_us, 100 * score_us / step_us,
                        100 * select_us / step_us, 100 * attend_us / step_us, 100 * copy_us / score_us, step_us,
                        score_us, select_us, attend_us, copy_us, dense_us);
          }
          // The same steps and dense calls, kSeqs of each (one per
          // sequence) captured as one graph (the append, 1/16 of a step's
          // launches and ~1 % of its time, left out).
          double graph_speedup = 0;
          if (absl::GetFlag(FLAGS_graph)) {
            const double step_s = GraphSeconds(stream, [&] {
              for (int q = 0; q < kSeqs; ++q) {
                select(q);
                attend_table(q);
              }
            });
            const double dense_s = GraphSeconds(stream, [&] {
              for (int q = 0; q < kSeqs; ++q) attend(q, {}, {});
            });
            graph_speedup = dense_s / step_s;
          }
          // Batch 8: every sequence's select, then one batched attention
          // over the 8 tables, against the dense batch call.
          Timing t_step8 = Time([&](int i) {
            for (int q = 0; q < kSeqs; ++q) {
              if (i % kPageSize == kPageSize - 1) append(q);
              select(q);
            }
            attend_batch(false, &selected);
          });
          // The same with the 8 selects as one SelectTopPagesBatch.
          std::vector<TopPagesArgs> select_args(kSeqs);
          std::vector<Tensor*> select_outs(kSeqs);
          for (int q = 0; q < kSeqs; ++q) {
            select_args[q].q = &qs[q];
            select_args[q].bounds = &bounds[q];
            select_args[q].num_pages = pages_per_seq;
            select_args[q].k = k_pages;
            select_args[q].combine_sum = true;
            select_outs[q] = &selected[q];
          }
          Timing t_step8b = Time([&](int i) {
            for (int q = 0; q < kSeqs && i % kPageSize == kPageSize - 1; ++q) append(q);
            for (int q = 0; q < kSeqs; ++q) select_args[q].q = &next_query(q);
            backend->SelectTopPagesBatch(select_args, select_outs);
            attend_batch(false, &selected);
          });
          const double bounds_bytes =
              static_cast<double>(pages_per_seq) * s.kv_heads * 2 * kHeadDim * DTypeSize(bounds_dtype);
          quest_rows.push_back({shape_name, ctx, budget, DTypeName(bounds_dtype), dense.host_s / t_step.host_s,
                                static_cast<double>(ctx) / budget,
                                100 * t_append.host_s / kPageSize / t_step.host_s,
                                100 * t_select.host_s / t_step.host_s, 100 * t_attend.host_s / t_step.host_s,
                                pct(bounds_bytes, t_select.host_s), 100 * host_s / t_step.host_s,
                                batched.host_s / t_step8.host_s, batched.host_s / t_step8b.host_s,
                                graph_speedup, alt.overlap});
        }
      }
      BENCH_CUDA(cudaDeviceSynchronize());
    }
  }

  if (cut) std::printf("\nSOME CASES WERE SKIPPED (time limit): see above.\n");
  std::printf("\nsparse rows: the attention kernel alone with a CSR selection given from the host.\n");
  std::printf("%% copy = (K+V bytes read / time) / (D2D cudaMemcpyAsync bytes read+written / time), same "
              "run, same size; speed-up = dense b1 time / sparse time, same context (ideal = ctx/B).\n");
  std::printf("ev/host = event time / host-clock time (near 1: the host clock measured the GPU stream; "
              "whether launches set the pace is the Quest table's host column).\n");
  std::printf("%-10s %7s %-26s %8s %9s %7s %8s\n", "shape", "context", "case", "% copy", "speed-up",
              "ideal", "ev/host");
  for (const Row& r : rows) {
    char sp[16] = "-", id[16] = "-";
    if (r.speedup > 0) {
      std::snprintf(sp, sizeof(sp), "%.2fx", r.speedup);
      std::snprintf(id, sizeof(id), "%.0fx", r.ideal);
    }
    std::printf("%-10s %6lldK %-26s %7.1f%% %9s %7s %8.2f\n", r.shape.c_str(),
                static_cast<long long>(r.context / 1024), r.what.c_str(), r.pct_copy, sp, id,
                r.event_vs_host);
  }
  std::printf("\nQuest decode step of one layer (SelectTopPages + PagedAttention over the selected "
              "table, and UpdatePageBounds of the page a step completes: one step in %d), budget B tokens "
              "in pages of %d, batch 1, SUM, page bounds in bf16 or fp8 (e4m3, outward-rounded):\n"
              "speed-up = dense b1 time / quest step time (same run); shares = each op timed alone / the "
              "step (append: per step, amortised); select %% copy = page-bound bytes scored / select time "
              "vs the copy bandwidth; host = the host's time to enqueue a step / the step (near 100%%: "
              "launch-bound); b8 speed = dense b8 (one batch call) time / a batch-8 quest step (8 selects, one "
              "batched attention over the 8 tables); b8 bsel = the same with the 8 selects as one "
              "SelectTopPagesBatch; graph = the speed-up with the steps and the dense "
              "calls each captured in a CUDA graph (--graph; append left out; one query); overlap = the "
              "pages two consecutive steps of a sequence both select (--step_overlap).\n",
              kPageSize, kPageSize);
  std::printf("%-10s %7s %6s %-7s %9s %7s %8s %8s %8s %14s %6s %9s %8s %7s %8s\n", "shape", "context", "B",
              "bounds", "speed-up", "ideal", "append", "select", "attend", "select % copy", "host", "b8 speed",
              "b8 bsel", "graph", "overlap");
  for (const QuestRow& r : quest_rows) {
    char graph[16] = "-";
    if (r.graph_speedup > 0) std::snprintf(graph, sizeof(graph), "%.2fx", r.graph_speedup);
    std::printf(
        "%-10s %6lldK %6lld %-7s %8.2fx %6.0fx %7.1f%% %7.1f%% %7.1f%% %13.1f%% %5.0f%% %8.2fx %7.2fx %7s %7.0f%%\n",
        r.shape.c_str(), static_cast<long long>(r.context / 1024), static_cast<long long>(r.budget),
        r.bounds.c_str(), r.speedup, r.ideal, r.append_pct, r.select_pct, r.attend_pct, r.select_copy, r.host_pct,
        r.b8_speedup, r.b8_batch_select, graph, 100 * r.overlap);
  }
  return absl::GetFlag(FLAGS_no_gemm) ? 0 : RunGemms(*backend);
}

}  // namespace
}  // namespace quest

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  return quest::Main();
}
