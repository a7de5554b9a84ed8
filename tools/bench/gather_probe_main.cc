// gather_probe: the floor under Quest's sparse attention (gather_probe.h).
//   bazel build //tools/bench:gather_probe   (run on the GPU machine)

#include "tools/bench/gather_probe.h"

int main() { return quest::bench::RunGatherProbe(quest::bench::GatherProbeShape{}); }
