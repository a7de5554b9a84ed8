#ifndef QUEST_TOOLS_BENCH_GATHER_PROBE_H_
#define QUEST_TOOLS_BENCH_GATHER_PROBE_H_

// The floor under Quest's sparse attention at one shape: how long a bare
// gather of exactly the rows the attention reads takes, cold, by load
// mechanism (LDG, 16-byte cp.async as the attention kernel issues, TMA bulk
// copies of whole rows) and blocks per SM, in the pool's layout and as
// contiguous runs. Prints a table; returns 0, or 1 without a usable GPU.
// Not product code: a reference measurement (tools/bench/RESULTS.md,
// session 9).

namespace quest::bench {

struct GatherProbeShape {
  int kv_heads = 32;     // MHA Llama-2-7B
  int page_size = 16;    // tokens per page
  int pages = 2048;      // 32K context
  int selected = 128;    // pages per head (B = 2048)
};

int RunGatherProbe(const GatherProbeShape& shape);

}  // namespace quest::bench

#endif  // QUEST_TOOLS_BENCH_GATHER_PROBE_H_
