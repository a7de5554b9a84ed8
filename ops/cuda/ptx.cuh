#ifndef QUEST_OPS_CUDA_PTX_CUH_
#define QUEST_OPS_CUDA_PTX_CUH_

// PTX wrappers the attention kernels share (decode split-KV and prefill)
// and the Quest scoring uses: cp.async copies into shared memory, loads
// and prefetches with L2 cache hints, ldmatrix fragment loads and the
// m16n8k16 tensor-core mma with fp32 accumulation (sm_80+); mbarriers
// (sm_90).

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

namespace quest::ops::cuda {

__device__ __forceinline__ uint32_t SmemAddr(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

// 16 bytes global -> shared; `bytes` 0 writes zeros (src is not read).
__device__ __forceinline__ void CpAsync16(void* dst, const void* src, int bytes) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(SmemAddr(dst)), "l"(src),
               "r"(bytes));
}
// Data read once per decode step (the split kernels' K/V rows, dense or
// a Quest selection's; the page bounds the scoring reads): its L2 lines
// are marked evict-first, so a stream of them does not push out of L2
// what the next kernels and the next step read again (kernel code, page
// tables, scores, selection rows, split partials). H100, session 21: the
// Quest step 3-13 % shorter (cold and in the running chain), dense decode
// at 4K +4 points of copy, at 32K and 128K the same (GQA 32/8 32K batch 1
// read 3 points lower in that call, but that row reads 86-87 % in most
// processes and ~92.4 % in some, the same binary either way: session 22).
// Hinting only a selection's rows, with dense K/V
// left plain, made the cold Quest step slower (GQA 32K +30 %): mixed
// policies lose, so every decode K/V copy carries the hint.
// Non-volatile: the compiler may hoist and share the policy.
__device__ __forceinline__ uint64_t L2EvictFirstPolicy() {
  uint64_t policy;
  asm("createpolicy.fractional.L2::evict_first.b64 %0, 1.0;\n" : "=l"(policy));
  return policy;
}
// CpAsync16 of data read once (L2EvictFirstPolicy).
__device__ __forceinline__ void CpAsync16ReadOnce(void* dst, const void* src, int bytes) {
  asm volatile("cp.async.cg.shared.global.L2::cache_hint [%0], [%1], 16, %2, %3;\n" ::"r"(SmemAddr(dst)), "l"(src),
               "r"(bytes), "l"(L2EvictFirstPolicy()));
}
// A 16-byte load through the read-only path of data read once. Volatile:
// the asm names no memory, so only that keeps it after an earlier
// griddepcontrol.wait (WaitPrimary) instead of hoisted above it.
__device__ __forceinline__ uint4 LdgReadOnce(const uint4* p) {
  uint4 v;
  asm volatile("ld.global.nc.L2::cache_hint.v4.u32 {%0, %1, %2, %3}, [%4], %5;\n"
      : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
      : "l"(p), "l"(L2EvictFirstPolicy()));
  return v;
}
// A hint: asks L2 for the 128-byte line holding p (no result, nothing
// waits for it). L2 is where every SM's reads and writes meet, so the line
// stays coherent with writes that land after it.
__device__ __forceinline__ void PrefetchL2(const void* p) {
  asm volatile("prefetch.global.L2 [%0];\n" ::"l"(p));
}
__device__ __forceinline__ void CpAsyncCommit() { asm volatile("cp.async.commit_group;\n" ::); }
// Waits until at most N committed groups are in flight.
template <int N>
__device__ __forceinline__ void CpAsyncWait() { asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory"); }

// mbarriers in shared memory (sm_90): a phase completes when `count`
// arrivals have happened; waiters name the parity of the phase they wait
// for (a fresh barrier counts as having completed the phase of parity 1).
__device__ __forceinline__ void MbarInit(uint64_t* bar, int count) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(SmemAddr(bar)), "r"(count) : "memory");
}
__device__ __forceinline__ void MbarArrive(uint64_t* bar) {
  asm volatile("mbarrier.arrive.release.cta.shared::cta.b64 _, [%0];\n" ::"r"(SmemAddr(bar)) : "memory");
}
// One arrival, made when all of this thread's earlier cp.async have landed
// (the barrier's count must include it: "noinc").
__device__ __forceinline__ void CpAsyncMbarArrive(uint64_t* bar) {
  asm volatile("cp.async.mbarrier.arrive.noinc.shared::cta.b64 [%0];\n" ::"r"(SmemAddr(bar)) : "memory");
}
__device__ __forceinline__ void MbarWait(uint64_t* bar, int parity) {
  asm volatile(
      "{\n.reg .pred done;\n"
      "WAIT_%=:\n"
      "mbarrier.try_wait.parity.acquire.cta.shared::cta.b64 done, [%0], %1;\n"
      "@!done bra WAIT_%=;\n}\n" ::"r"(SmemAddr(bar)),
      "r"(parity)
      : "memory");
}

// Four 8x8 b16 matrices from shared memory (lanes 8i..8i+7 address matrix i).
__device__ __forceinline__ void LdMatrixX4(uint32_t (&r)[4], const void* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(SmemAddr(p)));
}
__device__ __forceinline__ void LdMatrixX4Trans(uint32_t (&r)[4], const void* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(SmemAddr(p)));
}

// c += a (16x16, row) * b (16x8, col), fp32 accumulate.
template <typename T>
__device__ __forceinline__ void Mma16816(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1);
template <>
__device__ __forceinline__ void Mma16816<__nv_bfloat16>(float (&c)[4], const uint32_t (&a)[4], uint32_t b0,
                                                        uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
      "{%8, %9}, {%0, %1, %2, %3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
template <>
__device__ __forceinline__ void Mma16816<__half>(float (&c)[4], const uint32_t (&a)[4], uint32_t b0,
                                                 uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
      "{%8, %9}, {%0, %1, %2, %3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

}  // namespace quest::ops::cuda

#endif  // QUEST_OPS_CUDA_PTX_CUH_
