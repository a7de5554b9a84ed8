#ifndef QUEST_TOOLS_BENCH_READ_FLOOR_H_
#define QUEST_TOOLS_BENCH_READ_FLOOR_H_

// The floor under dense decode attention's "% of copy" (attention_bench):
// the best a bare, contiguous read of exactly one sequence's K+V bytes
// reaches under the same protocol (calls enqueued back to back, each on
// another region so none reads L2, host clock around synchronised
// batches), as a percentage of a device-to-device copy of the same bytes
// timed the same way in the same run (its bandwidth counting the bytes
// read and written). Three launch structures:
//   - plain launches (each read starts when the previous one has ended);
//   - programmatic dependent launch, waiting for the previous grid before
//     any load (how the attention kernels start: their blocks become
//     resident early but stream only once the previous kernel is done);
//   - programmatic dependent launch with every load issued before that wait
//     (what a kernel could reach if it streamed while its predecessor's
//     tail still runs: the bound on cross-kernel overlap).
// A paged attention that also merges splits sits above these; a shape
// whose plain read stays under a target cannot reach it one kernel at a
// time. A second table streams the split attention kernels' own access
// pattern without their arithmetic: blocks (split, KV head) walking a
// paged pool of 8 interleaved sequences through a cp.async ring per warp,
// by ring shape, pool layout, page-table look-ups and dependent work per
// tile. A third reads Quest's sparse pattern (each KV head its own random
// pages of the context) from NHD and HND pools: whether a head-major pool
// would serve the sparse attention's scattered 256-byte rows better (it
// did not: session 17). A fourth reads one side of Quest's page-bounds
// layout (session 23: at copy rate, so longer rows would not help). Not
// product code: a reference measurement (tools/bench/RESULTS.md, sessions
// 16-17 and 23).

#include <cstdint>
#include <vector>

namespace quest::bench {

struct ReadFloorShape {
  const char* name = "";
  int kv_heads = 0;
  int64_t context = 0;  // tokens; K+V bytes = context * kv_heads * 128 * 2 * 2
};

// Prints a table; returns 0, or 1 without a usable GPU.
// sides_only: the page-bounds table alone.
int RunReadFloor(const std::vector<ReadFloorShape>& shapes, bool sides_only = false);

}  // namespace quest::bench

#endif  // QUEST_TOOLS_BENCH_READ_FLOOR_H_
