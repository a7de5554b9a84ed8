// read_floor: the floor under dense decode attention's "% of copy"
// (read_floor.h), at attention_bench's dense shapes (head_dim 128).
//   bazel build //tools/bench:read_floor   (run on the GPU machine;
//   --sides_only: the page-bounds table alone)

#include <string>

#include "tools/bench/read_floor.h"

int main(int argc, char** argv) {
  using quest::bench::ReadFloorShape;
  std::vector<ReadFloorShape> shapes;
  for (int64_t context : {4096, 32768, 131072}) {
    shapes.push_back(ReadFloorShape{"MHA", 32, context});
    shapes.push_back(ReadFloorShape{"GQA", 8, context});
  }
  const bool sides_only = argc > 1 && std::string(argv[1]) == "--sides_only";
  return quest::bench::RunReadFloor(shapes, sides_only);
}
