#ifndef QUEST_OPS_CUDA_WGMMA_CUH_
#define QUEST_OPS_CUDA_WGMMA_CUH_

// Hopper warpgroup MMA (wgmma.mma_async, sm_90a) for the prefill attention:
// shared-memory descriptors for 128-byte-swizzled tiles, the fences and the
// three shapes the kernel issues, bf16 or f16 in and fp32 accumulate.
//
// Tiles live in shared memory as blocks of 64 columns (128 bytes a row):
// element (r, c) of an [R, D] tile is at
//   (c / 64) * R * 64 + r * 64 + (((c % 64) / 8) ^ (r % 8)) * 8 + c % 8
// (SwizzledOffset), every block 1024-byte aligned. That one layout is read
// two ways:
//   - K-major (rows are M or N, columns the reduction): Q as A and K as B
//     of S = Q K^T. Groups of 8 rows are 1024 bytes apart (SBO); the k-th
//     16-column step starts k % 4 * 32 bytes into block k / 4.
//   - MN-major (rows are the reduction, columns N, "transposed" B): V as B
//     of O += P V. Groups of 8 reduction rows are 1024 bytes apart (SBO),
//     the 64-column blocks R * 128 bytes (LBO).
// The accumulator fragment of warp w of the warpgroup is the mma.sync
// m16n8 one for rows 16 w .. 16 w + 15: d[j][e] is row (lane / 4) + 8 (e / 2),
// column 8 j + 2 (lane % 4) + e % 2; the register A fragment of a 16-column
// step is the mma.sync m16n8k16 A fragment. So P goes from the S
// accumulators to the A operand without a trip through shared memory.

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

#include "ops/cuda/ptx.cuh"

namespace quest::ops::cuda::wgmma {

__device__ __forceinline__ constexpr int SwizzledOffset(int rows, int r, int c) {
  return (c >> 6) * rows * 64 + r * 64 + ((((c >> 3) & 7) ^ (r & 7)) << 3) + (c & 7);
}

// Descriptor of a 128-byte-swizzled operand starting at `smem` (byte
// offsets are multiples of 16).
__device__ __forceinline__ uint64_t Descriptor(const void* smem, uint32_t lbo_bytes, uint32_t sbo_bytes) {
  const uint32_t addr = SmemAddr(smem);
  return static_cast<uint64_t>((addr & 0x3FFFF) >> 4) | (static_cast<uint64_t>(lbo_bytes >> 4) << 16) |
         (static_cast<uint64_t>(sbo_bytes >> 4) << 32) | (uint64_t{1} << 62);
}

// The descriptor of the operand `bytes` further on (within the same
// shared-memory window; the address field is 16-byte units).
__device__ __forceinline__ uint64_t Advance(uint64_t desc, int bytes) { return desc + (bytes >> 4); }

// Before a batch of wgmma whose accumulators or A registers were written by
// ordinary instructions.
__device__ __forceinline__ void Fence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void Commit() { asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory"); }
template <int N>
__device__ __forceinline__ void Wait() {
  asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory");
}
// Shared-memory writes of this thread (st.shared, cp.async) become visible
// to the async proxy wgmma reads through; a barrier must follow.
__device__ __forceinline__ void FenceSharedForAsyncProxy() {
  asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
}
// One register an in-flight wgmma reads or writes, pinned in place.
__device__ __forceinline__ void FenceRegister(float& x) { asm volatile("" : "+f"(x)::"memory"); }
__device__ __forceinline__ void FenceRegister(uint32_t& x) { asm volatile("" : "+r"(x)::"memory"); }

// Keeps the compiler from moving accesses of a wgmma's registers across a
// Wait: the accumulators (float), or the A fragments of an in-flight wgmma
// (uint32_t), kept live and unmoved until here, after the Wait covering it.
template <typename R, int N>
__device__ __forceinline__ void FenceOperands(R (&v)[N][4]) {
#pragma unroll
  for (int i = 0; i < N; ++i) {
#pragma unroll
    for (int e = 0; e < 4; ++e) FenceRegister(v[i][e]);
  }
}

// d (64 x N) = (accumulate ? d : 0) + A (64 x 16, K-major descriptor) *
// B (16 x N, K-major descriptor).
template <typename T, int N>
__device__ void MmaSS(float (&d)[N / 8][4], uint64_t a, uint64_t b, int accumulate);
// d (64 x N) = (accumulate ? d : 0) + A (64 x 16, registers) *
// B (16 x N, MN-major descriptor).
template <typename T, int N>
__device__ void MmaRS(float (&d)[N / 8][4], const uint32_t (&a)[4], uint64_t b, int accumulate);

// Inline asm takes no arrays: the accumulator operands are spelled out.
#define QUEST_WG_D4(j) "+f"(d[j][0]), "+f"(d[j][1]), "+f"(d[j][2]), "+f"(d[j][3])
#define QUEST_WG_D32                                                                              \
  QUEST_WG_D4(0), QUEST_WG_D4(1), QUEST_WG_D4(2), QUEST_WG_D4(3), QUEST_WG_D4(4), QUEST_WG_D4(5), \
      QUEST_WG_D4(6), QUEST_WG_D4(7)
#define QUEST_WG_D64                                                                                     \
  QUEST_WG_D32, QUEST_WG_D4(8), QUEST_WG_D4(9), QUEST_WG_D4(10), QUEST_WG_D4(11), QUEST_WG_D4(12), \
      QUEST_WG_D4(13), QUEST_WG_D4(14), QUEST_WG_D4(15)
#define QUEST_WG_R32                                                                   \
  "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, " \
  "%18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}"
#define QUEST_WG_R64                                                                   \
  "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, " \
  "%18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, "   \
  "%34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, "   \
  "%50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}"

// scale-d is a predicate set from `accumulate`; A and B are not negated;
// SS: both K-major (trans 0, 0); RS: B MN-major (trans-b 1).
#define QUEST_WG_SS_N64(CTYPE, PTYPE)                                                                    \
  template <>                                                                                            \
  __device__ __forceinline__ void MmaSS<CTYPE, 64>(float(&d)[8][4], uint64_t a, uint64_t b,             \
                                                   int accumulate) {                                     \
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %34, 0;\n"                                            \
                 "wgmma.mma_async.sync.aligned.m64n64k16.f32." PTYPE "." PTYPE " " QUEST_WG_R32          \
                 ", %32, %33, p, 1, 1, 0, 0;\n}\n"                                                       \
                 : QUEST_WG_D32                                                                          \
                 : "l"(a), "l"(b), "r"(accumulate));                                                     \
  }
#define QUEST_WG_RS_N64(CTYPE, PTYPE)                                                                    \
  template <>                                                                                            \
  __device__ __forceinline__ void MmaRS<CTYPE, 64>(float(&d)[8][4], const uint32_t(&a)[4], uint64_t b,  \
                                                   int accumulate) {                                     \
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %37, 0;\n"                                            \
                 "wgmma.mma_async.sync.aligned.m64n64k16.f32." PTYPE "." PTYPE " " QUEST_WG_R32          \
                 ", {%32, %33, %34, %35}, %36, p, 1, 1, 1;\n}\n"                                         \
                 : QUEST_WG_D32                                                                          \
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b), "r"(accumulate));                 \
  }
#define QUEST_WG_RS_N128(CTYPE, PTYPE)                                                                   \
  template <>                                                                                            \
  __device__ __forceinline__ void MmaRS<CTYPE, 128>(float(&d)[16][4], const uint32_t(&a)[4], uint64_t b, \
                                                    int accumulate) {                                    \
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %69, 0;\n"                                            \
                 "wgmma.mma_async.sync.aligned.m64n128k16.f32." PTYPE "." PTYPE " " QUEST_WG_R64         \
                 ", {%64, %65, %66, %67}, %68, p, 1, 1, 1;\n}\n"                                         \
                 : QUEST_WG_D64                                                                          \
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b), "r"(accumulate));                 \
  }

QUEST_WG_SS_N64(__nv_bfloat16, "bf16")
QUEST_WG_SS_N64(__half, "f16")
QUEST_WG_RS_N64(__nv_bfloat16, "bf16")
QUEST_WG_RS_N64(__half, "f16")
QUEST_WG_RS_N128(__nv_bfloat16, "bf16")
QUEST_WG_RS_N128(__half, "f16")

#undef QUEST_WG_SS_N64
#undef QUEST_WG_RS_N64
#undef QUEST_WG_RS_N128
#undef QUEST_WG_R64
#undef QUEST_WG_R32
#undef QUEST_WG_D64
#undef QUEST_WG_D32
#undef QUEST_WG_D4

}  // namespace quest::ops::cuda::wgmma

#endif  // QUEST_OPS_CUDA_WGMMA_CUH_
