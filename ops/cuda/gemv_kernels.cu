// Decode-shaped linear layers (see gemv_kernels.h): a CUDA-core kernel for
// 1-4 rows of x and a tensor-core one for up to 8 (GemvMmaKernel below).
//
// CUDA cores: a CTA of 256 threads owns RB consecutive weight rows and walks their k
// dimension together: thread t takes the 16-byte vectors t, t + 256, ... of
// every row, U vectors per row in flight, multiplies each with the same
// vector of the M rows of x (L1-resident: every CTA reads all of x), and
// keeps RB x M float sums. A warp butterfly and a pass over the 8 warps'
// partials in shared memory finish them. The weight is the only stream, so
// the kernel is a copy of w with arithmetic on the side; bytes in flight
// per SM (several CTAs of RB x U x 4 KB) hide DRAM latency.
//
// Launched with programmatic dependent launch: the first round of weight
// loads (weights are never written by the stream) is issued before the
// wait for the previous kernel, whose output x may be, so the weight's
// first latency overlaps that kernel's tail.

#include "ops/cuda/gemv_kernels.h"

#include "ops/cuda/device_util.cuh"
#include "ops/cuda/ptx.cuh"

namespace quest::ops::cuda {
namespace {

constexpr int kGemvThreads = 256;
// The CUDA-core kernel's limit (each row of x is re-read from L1 per weight
// vector: past 4 rows that traffic bounds it), and where the default
// switches to tensor cores.
constexpr int kMaxCudaCoreGemvRows = 4;
constexpr int kDefaultCudaCoreRows = 2;
constexpr int kGemvWarps = kGemvThreads / 32;
constexpr int kGemvUnroll = 2;

// The first call waits for the previous kernel (PDL); later ones do nothing.
// The kernels issue their first weight loads before it: weights are never
// written by the stream.
__device__ __forceinline__ void WaitPrimaryOnce(bool& waited) {
  if (!waited) {
    WaitPrimary();
    waited = true;
  }
}

// The part this CTA works on and its first row there, for CTAs of `rows`
// weight rows (each part's CTAs follow the previous part's).
__device__ __forceinline__ const GemvPart& PartOf(const GemvParams& p, int rows, int64_t& row0) {
  int64_t block = blockIdx.x;
  int j = 0;
  for (; j + 1 < p.num_parts; ++j) {
    const int64_t blocks = (p.parts[j].n + rows - 1) / rows;
    if (block < blocks) break;
    block -= blocks;
  }
  row0 = block * rows;
  return p.parts[j];
}

// A CTA's epilogue: cell c of its kRows x kCols outputs (weight row row0 +
// c / kCols, row c % kCols of x) is the sum of the warps' partial[w][c]
// plus the row's bias. Thread c stores cell c (after the caller's barrier).
template <typename T, typename Out, int kCols, int kCells>
__device__ __forceinline__ void StoreSums(const GemvParams& p, const GemvPart& part, int64_t row0,
                                          const float (&partial)[kGemvWarps][kCells]) {
  const int c = threadIdx.x;
  if (c >= kCells) return;
  const int64_t row = row0 + c / kCols;
  const int i = c % kCols;
  if (row >= part.n || i >= p.m) return;
  float s = 0.0f;
#pragma unroll
  for (int w = 0; w < kGemvWarps; ++w) s += partial[w][c];
  if (part.bias != nullptr) s += F(static_cast<const T*>(part.bias)[row]);
  static_cast<Out*>(part.y)[i * part.n + row] = To<Out>(s);
}

// M: rows of x the kernel is built for (p.m <= M; the missing rows read
// zeros and store nothing). RB: weight rows per CTA.
template <typename T, typename Out, int M, int RB>
__global__ void __launch_bounds__(kGemvThreads) GemvKernel(const __grid_constant__ GemvParams p) {
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int64_t kv = p.k / 8;  // 16-byte vectors per row
  int64_t row0;
  const GemvPart& part = PartOf(p, RB, row0);
  const uint4* w = static_cast<const uint4*>(part.w);
  const uint4* x = static_cast<const uint4*>(p.x);
  // Rows past n re-read the last row (always valid) and store nothing.
  const uint4* wr[RB];
#pragma unroll
  for (int r = 0; r < RB; ++r) wr[r] = w + min(row0 + r, part.n - 1) * kv;

  float acc[RB][M];
#pragma unroll
  for (int r = 0; r < RB; ++r) {
#pragma unroll
    for (int i = 0; i < M; ++i) acc[r][i] = 0.0f;
  }

  bool waited = false;
  for (int64_t base = tid; base < kv; base += int64_t{kGemvThreads} * kGemvUnroll) {
    uint4 wv[kGemvUnroll][RB];
#pragma unroll
    for (int u = 0; u < kGemvUnroll; ++u) {
      const int64_t v = base + u * kGemvThreads;
#pragma unroll
      for (int r = 0; r < RB; ++r) wv[u][r] = v < kv ? __ldcs(wr[r] + v) : make_uint4(0u, 0u, 0u, 0u);
    }
    WaitPrimaryOnce(waited);  // x may be the previous kernel's output
#pragma unroll
    for (int u = 0; u < kGemvUnroll; ++u) {
      const int64_t v = base + u * kGemvThreads;
      if (v >= kv) break;
      float xf[M][8];
#pragma unroll
      for (int i = 0; i < M; ++i) {
        if (i < p.m) {
          Unpack8<T>(__ldg(x + i * kv + v), xf[i]);
        } else {
#pragma unroll
          for (int e = 0; e < 8; ++e) xf[i][e] = 0.0f;
        }
      }
#pragma unroll
      for (int r = 0; r < RB; ++r) {
        float wf[8];
        Unpack8<T>(wv[u][r], wf);
#pragma unroll
        for (int i = 0; i < M; ++i) {
#pragma unroll
          for (int e = 0; e < 8; ++e) acc[r][i] = fmaf(wf[e], xf[i][e], acc[r][i]);
        }
      }
    }
  }
  WaitPrimaryOnce(waited);  // (a CTA with no vectors)
  // The next kernel may start its prologue; it waits for this grid's end
  // before it reads y.
  AllowDependents();

#pragma unroll
  for (int r = 0; r < RB; ++r) {
#pragma unroll
    for (int i = 0; i < M; ++i) {
#pragma unroll
      for (int off = 16; off >= 1; off >>= 1) acc[r][i] += __shfl_xor_sync(0xffffffffu, acc[r][i], off);
    }
  }
  __shared__ float partial[kGemvWarps][RB * M];
  if (lane == 0) {
#pragma unroll
    for (int r = 0; r < RB; ++r) {
#pragma unroll
      for (int i = 0; i < M; ++i) partial[warp][r * M + i] = acc[r][i];
    }
  }
  __syncthreads();
  StoreSums<T, Out, M>(p, part, row0, partial);
}


// Tensor cores (m <= 8, k a multiple of 64): a CTA owns 16 weight rows, its
// 8 warps split k in chunks of 64. mma.m16n8k16 takes the 16 rows as A and
// the (up to) 8 rows of x as the 8 columns of B. A dot product does not
// care in which order k is summed, as long as A and B use the same order,
// so each thread loads 32 contiguous bytes of its two rows (g and g + 8)
// and of its x row (g) -- elements 16 tig .. 16 tig + 15 of the chunk, so
// a row's 4 threads read its whole 128-byte line -- and feeds them as its
// fragment registers: of each 16-byte half, the first mma takes elements
// 0-3 (logical k 2 tig, 2 tig + 1, 2 tig + 8, 2 tig + 9), the second 4-7.
// x costs one load per two weight loads (the CUDA-core kernel reads every
// row of x per weight vector). The warps' 16 x 8 partial sums meet in
// shared memory. Measured on an H100 (linear_bench): with 16 bytes per
// thread (64 bytes of a row per load instruction) it streamed 71-92 % of
// copy whatever m; whole lines per row made it 88-98 % (GQA's 1024-row K/V
// projections: 59 %, 64 CTAs).
constexpr int kMmaRows = 16;
constexpr int kMmaChunk = 64;  // k per warp step
constexpr int kMmaUnroll = 2;  // chunks per warp in flight

template <typename T, typename Out>
__global__ void __launch_bounds__(kGemvThreads) GemvMmaKernel(const __grid_constant__ GemvParams p) {
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int g = lane >> 2, tig = lane & 3;
  const int64_t kv = p.k / 8, chunks = p.k / kMmaChunk;
  int64_t row0;
  const GemvPart& part = PartOf(p, kMmaRows, row0);
  const uint4* w = static_cast<const uint4*>(part.w);
  // Thread tig's part of a chunk: vectors 2 tig and 2 tig + 1 (32 bytes),
  // so a row's 4 threads cover its chunk's 128 bytes, one line.
  // Rows past n re-read the last row (always valid) and store nothing.
  const uint4* wa = w + min(row0 + g, part.n - 1) * kv + 2 * tig;
  const uint4* wb = w + min(row0 + g + 8, part.n - 1) * kv + 2 * tig;
  const bool has_x = g < p.m;
  const uint4* xr = static_cast<const uint4*>(p.x) + (has_x ? g : 0) * kv + 2 * tig;
  constexpr int kVecs = kMmaChunk / 8;  // per row and chunk

  float c[4] = {0.0f, 0.0f, 0.0f, 0.0f};
  bool waited = false;
  for (int64_t base = warp; base < chunks; base += int64_t{kGemvWarps} * kMmaUnroll) {
    uint4 ra[kMmaUnroll][2], rb[kMmaUnroll][2];
#pragma unroll
    for (int u = 0; u < kMmaUnroll; ++u) {
      const int64_t ch = base + u * kGemvWarps;
      const bool in = ch < chunks;
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        ra[u][h] = in ? __ldcs(wa + ch * kVecs + h) : make_uint4(0u, 0u, 0u, 0u);
        rb[u][h] = in ? __ldcs(wb + ch * kVecs + h) : make_uint4(0u, 0u, 0u, 0u);
      }
    }
    WaitPrimaryOnce(waited);  // x may be the previous kernel's output
#pragma unroll
    for (int u = 0; u < kMmaUnroll; ++u) {
      const int64_t ch = base + u * kGemvWarps;
      if (ch >= chunks) break;
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const uint4 xv = has_x ? __ldg(xr + ch * kVecs + h) : make_uint4(0u, 0u, 0u, 0u);
        const uint32_t a0[4] = {ra[u][h].x, rb[u][h].x, ra[u][h].y, rb[u][h].y};
        Mma16816<T>(c, a0, xv.x, xv.y);
        const uint32_t a1[4] = {ra[u][h].z, rb[u][h].z, ra[u][h].w, rb[u][h].w};
        Mma16816<T>(c, a1, xv.z, xv.w);
      }
    }
  }
  WaitPrimaryOnce(waited);  // (a warp with no chunks)
  AllowDependents();

  // c[0], c[1]: row g, x rows 2 tig and 2 tig + 1; c[2], c[3]: row g + 8.
  __shared__ float partial[kGemvWarps][kMmaRows * 8];
  partial[warp][g * 8 + 2 * tig] = c[0];
  partial[warp][g * 8 + 2 * tig + 1] = c[1];
  partial[warp][(g + 8) * 8 + 2 * tig] = c[2];
  partial[warp][(g + 8) * 8 + 2 * tig + 1] = c[3];
  __syncthreads();
  StoreSums<T, Out, 8>(p, part, row0, partial);
}

// Which kernel takes p (GemvParams::variant; 0: the CUDA-core kernel up to
// kDefaultCudaCoreRows rows of x, tensor cores above). On an H100 the
// CUDA-core kernel was faster at m = 1-2 (98-105 % of copy; 79-85 % on
// GQA's K/V projections, whose 1024 rows give the tensor-core kernel only
// 64 CTAs), the tensor-core one from m = 4 (88-98 % against 82-91 %).
bool TensorCoreShape(const GemvParams& p) { return p.m <= 8 && p.k % kMmaChunk == 0; }
bool CudaCoreShape(const GemvParams& p) { return p.m <= kMaxCudaCoreGemvRows; }

bool UseTensorCores(const GemvParams& p) {
  switch (p.variant) {
    case 1: return false;
    case 2: return true;
    default: return TensorCoreShape(p) && p.m > kDefaultCudaCoreRows;
  }
}


// CTAs of `rows` weight rows over every part.
unsigned GridBlocks(const GemvParams& p, int rows) {
  int64_t blocks = 0;
  for (int j = 0; j < p.num_parts; ++j) blocks += (p.parts[j].n + rows - 1) / rows;
  return static_cast<unsigned>(blocks);
}

template <typename T, typename Out, int M, int RB>
cudaError_t Launch(const GemvParams& p, cudaStream_t stream) {
  return LaunchMaybePdl(p.pdl, &GemvKernel<T, Out, M, RB>, dim3(GridBlocks(p, RB)),
                        dim3(kGemvThreads), 0, stream, p);
}

// Default rows per CTA: 4 (64 registers at M = 1, four CTAs per SM), 2 at
// M = 4 (RB x M sums and the unpacked x grow with M). Measured on an H100
// (linear_bench): 8 rows per CTA lose up to 10 % at M = 2-4, 2 rows match
// the default within noise.
template <typename T, typename Out, int M>
cudaError_t LaunchRows(const GemvParams& p, cudaStream_t stream) {
  switch (p.rows_per_cta != 0 ? p.rows_per_cta : (M <= 2 ? 4 : 2)) {
    case 2: return Launch<T, Out, M, 2>(p, stream);
    case 8: return Launch<T, Out, M, 8>(p, stream);
    default: return Launch<T, Out, M, 4>(p, stream);
  }
}

template <typename T, typename Out>
cudaError_t LaunchOut(const GemvParams& p, cudaStream_t stream) {
  if (UseTensorCores(p)) {
    return LaunchMaybePdl(p.pdl, &GemvMmaKernel<T, Out>, dim3(GridBlocks(p, kMmaRows)),
                          dim3(kGemvThreads), 0, stream, p);
  }
  if (p.m <= 1) return LaunchRows<T, Out, 1>(p, stream);
  if (p.m <= 2) return LaunchRows<T, Out, 2>(p, stream);
  static_assert(kMaxCudaCoreGemvRows == 4, "the CUDA-core kernel is built for M = 1, 2 and 4");
  return LaunchRows<T, Out, 4>(p, stream);
}


}  // namespace

bool GemvSupported(const GemvParams& p) {
  if (p.m < 1 || p.m > kMaxGemvRows || p.k < 8 || p.k % 8 != 0 || !Aligned16(p.x) || p.num_parts < 1 ||
      p.num_parts > kMaxGemvParts) {
    return false;
  }
  int64_t rows = 0;
  for (int j = 0; j < p.num_parts; ++j) {
    if (p.parts[j].n < 1 || !Aligned16(p.parts[j].w)) return false;
    rows += p.parts[j].n;
  }
  if (rows >= (int64_t{1} << 31)) return false;
  switch (p.variant) {
    case 1: return CudaCoreShape(p);
    case 2: return TensorCoreShape(p);
    default: return TensorCoreShape(p) || CudaCoreShape(p);
  }
}

cudaError_t LaunchGemv(ElemType type, const GemvParams& p, cudaStream_t stream) {
  if (!GemvSupported(p)) return cudaErrorInvalidValue;
  QUEST_DISPATCH(type, return p.y_f32 ? LaunchOut<T, float>(p, stream) : LaunchOut<T, T>(p, stream));
  return cudaErrorInvalidValue;
}

}  // namespace quest::ops::cuda
