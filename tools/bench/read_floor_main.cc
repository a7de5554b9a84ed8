// read_floor: the floor under dense decode attention's "% of copy"
// (read_floor.h), at attention_bench's dense shapes (head_dim 128).
//   bazel build //tools/bench:read_floor   (run on the GPU machine)

#include "tools/bench/read_floor.h"

int main() {
  using quest::bench::ReadFloorShape;
  std::vector<ReadFloorShape> shapes;
  for (int64_t context : {4096, 32768, 131072}) {
    shapes.push_back(ReadFloorShape{"MHA", 32, context});
    shapes.push_back(ReadFloorShape{"GQA", 8, context});
  }
  return quest::bench::RunReadFloor(shapes);
}
