#ifndef QUEST_OPS_CUDA_SPLIT_PLAN_H_
#define QUEST_OPS_CUDA_SPLIT_PLAN_H_

// How split-KV decode attention divides its candidate keys into splits
// (blocks of the split kernels, attention_kernels.cu): plain arithmetic over
// what the kernel and the device allow, kept apart from the CUDA side so it
// is tested without a GPU.

#include <cstdint>

namespace quest::ops::cuda {

// Splits of one list never exceed this (it bounds the workspace a plan asks for).
inline constexpr int kMaxSplits = 512;

// The most candidates one block of a batched launch streams. Blocks of equal
// work finish their streaming at quite different times (they share the
// memory bandwidth unevenly), so one wave of long blocks ends on its
// slowest; several waves of shorter blocks let the block scheduler refill
// the SMs that finish first. Measured on the H100 (attention_bench, 8 dense
// sequences, head_dim 128, % of copy bandwidth, MHA 32K / 128K, GQA 32/8
// 32K / 128K): one wave 81.6 / 80.9 / 92.6 / 91.8; at most 8192 rows 92.1 /
// 93.9 / 92.6 / 94.0; 4096: 94.4 / 94.8 / 94.4 / 94.1; 2048: 95.3 / 94.7 /
// 93.6 / 94.0 (ragged lengths 1/8..8/8 of the context: 94.3 / 94.5 / 91.8 /
// 93.1, against 84.5 for GQA 32K at 4096); 1024 and 512 lower again. (One
// sequence alone keeps one wave: there, more waves measured slower for GQA,
// 80.0 -> 73.0 % at 32K with two.)
inline constexpr int64_t kMaxBatchSplitLen = 2048;

// What planning needs of the kernel chosen for a shape on this device.
struct SplitGeometry {
  int64_t slots = 0;       // resident blocks on the device (one wave)
  int64_t units = 0;       // (KV head, head tile) pairs of one query token
  int64_t round = 0;       // candidate rows of one block step (all warps)
  int64_t min_len = 0;     // rows that keep every warp's pipeline prologue full
  int64_t row_floats = 0;  // workspace floats of one split of one unit
};

// Lists up to two prologues' worth per warp get one block per unit: it
// streams them in about the latency the split blocks' merge (partials out,
// counter, partials back in) would add.
inline bool WorthSplitting(const SplitGeometry& geo, int64_t count) { return count > 2 * geo.min_len; }

// One split launch of `units` units (query tokens x geo.units) over lists
// of at most `count` candidates: `splits` splits of `len` candidates each
// (splits == 1: no merge, len = count).
struct Splits {
  int64_t splits = 1;
  int64_t len = 0;
};
Splits PlanSplits(const SplitGeometry& geo, int64_t units, int64_t count);

// Long splits of one sequence's launch hand their tiles out at run time
// (attention_kernels.h, PagedAttentionParams::dynamic_splits): blocks of
// equal work stream at quite different speeds, and a static launch ends on
// the slowest. Splits of at least this many rounds (geo.round candidates
// each) do. A trace of dense GQA 32/8 32K on an H100 (session 18,
// %globaltimer per block): static blocks finished streaming between 37
// and 50 us, by SM (the blocks on about ten SMs of one region ran ~20 %
// faster), not by KV head; dynamic ones between 47.5 and 49. Measured on
// the H100 (attention_bench, dense batch 1, % of copy, static -> dynamic):
// MHA 32K 88.3 -> 91.4 (86 rounds), 128K 91.1 -> 93.6; GQA 32/8 32K (16
// rounds) 85.7-85.8 -> 86.7-86.9 once the tensor-core kernel's chunks were
// one tile (session 18; with chunks of 2-4 tiles it was no better than
// static). Quest's selections (B <= 4096: at most ~11 rounds) stay static.
inline constexpr int64_t kDynamicMinRounds = 16;
inline bool DynamicSplits(const SplitGeometry& geo, const Splits& s) {
  return s.splits > 1 && geo.round > 0 && s.len >= kDynamicMinRounds * geo.round;
}

// Splits shorter than this many rounds ask L2 for their first tiles before
// they wait for the previous kernel (programmatic dependent launch: the
// blocks are resident while that kernel ends, and DRAM would sit idle).
// Measured on the H100 (attention_bench, batch 1, session 19): dense, %
// of copy, without -> with: MHA 4K 81.9 -> 84.9, GQA 32/8 4K 55.3 -> 59.8,
// GQA 32/8 32K (16 rounds) 88.2 -> 90.2. Longer splits gain nothing, and
// GQA 32/8 128K (64 rounds) read 94-96 % in most processes with it
// against 100.5 without (101 in some; why was not found), so they do not.
// Quest's selections (a few rounds) take the tiles the previous selection
// in their table names, during the select's top-k (tools/bench/RESULTS.md,
// session 19).
inline constexpr int64_t kPrefetchMaxRounds = 32;
inline bool PrefetchFirstTiles(const SplitGeometry& geo, const Splits& s) {
  return geo.round > 0 && s.len < kPrefetchMaxRounds * geo.round;
}

// A batched decode launch: sequence i has candidates[i] candidates; it gets
// out[i] (its splits, all of one length for the batch, and where its
// partials start). Returns the most splits any sequence has (the grid's
// width); `workspace_floats` gets what the launch needs in all.
struct BatchSplit {
  int splits = 1;
  int64_t len = 0;
  int64_t workspace_offset = 0;  // floats
};
int PlanBatchSplits(const SplitGeometry& geo, const int64_t* candidates, int count, BatchSplit* out,
                    int64_t* workspace_floats);

}  // namespace quest::ops::cuda

#endif  // QUEST_OPS_CUDA_SPLIT_PLAN_H_
