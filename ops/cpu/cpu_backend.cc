#include "ops/cpu/cpu_backend.h"

// Debian keeps the OpenBLAS header (with openblas_set_num_threads) under its
// multiarch include directory, which is on the default search path.
#include <openblas-pthread/cblas.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>
#include <vector>

#include "glog/logging.h"
#include "runtime/fp8.h"

namespace quest::ops {
namespace {

class CpuBackend final : public Backend {
 public:
  explicit CpuBackend(const CpuBackendOptions& options) {
    if (options.num_threads > 0) openblas_set_num_threads(options.num_threads);
  }

  Device device() const override { return Device::kCpu; }
  const char* name() const override { return "cpu"; }

  absl::StatusOr<Tensor> UploadWeight(const Tensor& host) override {
    if (host.device() != Device::kCpu) {
      return absl::InvalidArgumentError("cpu backend: weight is not on the host");
    }
    // Keep a private f32 copy: the checkpoint's buffers may be mapped files.
    Tensor f = host.ToFloat32();
    return f.raw_data() == host.raw_data() ? f.Clone() : f;
  }

  Tensor Allocate(DType dtype, std::vector<int64_t> shape) override {
    return Tensor::Empty(dtype, std::move(shape));
  }
  Tensor AllocateZeros(DType dtype, std::vector<int64_t> shape) override {
    return Tensor::Zeros(dtype, std::move(shape));
  }
  Tensor ToHost(const Tensor& t) override {
    return t.dtype() == DType::kInt32 ? t.Clone() : t.ToFloat32().Clone();
  }
  void CopyFromHost(const Tensor& host, Tensor& device_tensor) override {
    CHECK_EQ(host.nbytes(), device_tensor.nbytes());
    std::memcpy(device_tensor.raw_data(), host.raw_data(), host.nbytes());
  }

  void Embedding(const Tensor& table, absl::Span<const int32_t> ids, Tensor& out) override {
    const int64_t d = table.dim(1);
    for (size_t t = 0; t < ids.size(); ++t) {
      std::memcpy(out.data<float>() + t * d, table.data<float>() + static_cast<int64_t>(ids[t]) * d,
                  d * sizeof(float));
    }
  }

  void Linear(const Tensor& x, const Tensor& w, const Tensor* bias, Tensor& y) override {
    const int64_t m = x.numel() / x.dim(-1), k = x.dim(-1), n = w.dim(0);
    CHECK_EQ(w.dim(1), k) << x.ShapeString() << " x " << w.ShapeString();
    CHECK_EQ(y.numel(), m * n);
    if (m == 1) {
      cblas_sgemv(CblasRowMajor, CblasNoTrans, n, k, 1.0f, w.data<float>(), k, x.data<float>(), 1,
                  0.0f, y.data<float>(), 1);
    } else {
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m, n, k, 1.0f, x.data<float>(), k,
                  w.data<float>(), k, 0.0f, y.data<float>(), n);
    }
    if (bias != nullptr) {
      for (int64_t i = 0; i < m; ++i) {
        float* row = y.data<float>() + i * n;
        for (int64_t j = 0; j < n; ++j) row[j] += bias->data<float>()[j];
      }
    }
  }

  void RmsNorm(const Tensor& x, const Tensor& weight, float eps, Tensor& y) override {
    const int64_t d = x.dim(-1), m = x.numel() / d;
#pragma omp parallel for schedule(static) if (m > 64)
    for (int64_t i = 0; i < m; ++i) {
      const float* xr = x.data<float>() + i * d;
      float* yr = y.data<float>() + i * d;
      // Accumulate in double: the reference should not be the noisy side.
      double ss = 0.0;
      for (int64_t j = 0; j < d; ++j) ss += static_cast<double>(xr[j]) * xr[j];
      const float inv = static_cast<float>(1.0 / std::sqrt(ss / d + eps));
      for (int64_t j = 0; j < d; ++j) yr[j] = (xr[j] * inv) * weight.data<float>()[j];
    }
  }

  void Add(Tensor& x, const Tensor& y) override {
    const int64_t n = x.numel();
    float* a = x.data<float>();
    const float* b = y.data<float>();
    for (int64_t i = 0; i < n; ++i) a[i] += b[i];
  }

  void SiluMul(const Tensor& gate, const Tensor& up, Tensor& out) override {
    const int64_t n = gate.numel();
    const float* g = gate.data<float>();
    const float* u = up.data<float>();
    float* o = out.data<float>();
#pragma omp parallel for schedule(static) if (n > (1 << 16))
    for (int64_t i = 0; i < n; ++i) o[i] = g[i] / (1.0f + std::exp(-g[i])) * u[i];
  }

  void Rope(Tensor& x, absl::Span<const int32_t> positions, const RopeParams& rope) override {
    const int64_t n = x.dim(0), heads = x.dim(1), d = x.dim(2), half = d / 2;
    CHECK_EQ(static_cast<int64_t>(rope.inv_freq.size()), half);
#pragma omp parallel for schedule(static) if (n > 16)
    for (int64_t t = 0; t < n; ++t) {
      std::vector<float> cos(half), sin(half);
      for (int64_t i = 0; i < half; ++i) {
        // Same rounding as Hugging Face: the angle is a float32 product.
        const float angle = static_cast<float>(positions[t]) * rope.inv_freq[i];
        cos[i] = std::cos(angle) * rope.attention_scaling;
        sin[i] = std::sin(angle) * rope.attention_scaling;
      }
      for (int64_t h = 0; h < heads; ++h) {
        float* v = x.data<float>() + (t * heads + h) * d;
        for (int64_t i = 0; i < half; ++i) {
          const float a = v[i], b = v[i + half];
          v[i] = a * cos[i] - b * sin[i];
          v[i + half] = b * cos[i] + a * sin[i];
        }
      }
    }
  }

  void WriteKvPages(const Tensor& k, const Tensor& v, absl::Span<const int32_t> page_table,
                    int64_t start, int page_size, Tensor& k_pages, Tensor& v_pages) override {
    const int64_t n = k.dim(0);
    const int64_t row = k.numel() / std::max<int64_t>(n, 1);  // kv_heads * head_dim
    for (int64_t t = 0; t < n; ++t) {
      const int64_t pos = start + t;
      const int64_t page = page_table[pos / page_size];
      const int64_t slot = pos % page_size;
      const int64_t off = (page * page_size + slot) * row;
      std::memcpy(k_pages.data<float>() + off, k.data<float>() + t * row, row * sizeof(float));
      std::memcpy(v_pages.data<float>() + off, v.data<float>() + t * row, row * sizeof(float));
    }
  }

  void PagedAttention(const PagedAttentionArgs& a, Tensor& out) override {
    const Tensor& q = *a.q;
    const int64_t n = q.dim(0), heads = q.dim(1), d = q.dim(2);
    const int64_t kv_heads = a.k_pages->dim(2);
    const int64_t group = heads / kv_heads;
    const int64_t chunk = a.selection_chunk > 0 ? a.selection_chunk : a.page_size;
    const int64_t num_chunks = (a.kv_len + chunk - 1) / chunk;
    const int64_t row = kv_heads * d;
    const int64_t mask_stride = static_cast<int64_t>(a.page_table.size()) * a.page_size;

    std::vector<int32_t> all_chunks(num_chunks);
    for (int64_t i = 0; i < num_chunks; ++i) all_chunks[i] = static_cast<int32_t>(i);
    if (a.attention_sum != nullptr) std::fill(a.attention_sum, a.attention_sum + heads * a.kv_len, 0.0f);
    if (a.attention_last != nullptr) std::fill(a.attention_last, a.attention_last + heads * a.kv_len, 0.0f);

    // Per KV head: gather the visible keys/values and the group's queries into
    // contiguous blocks, then S = Q K^T and O = softmax(S) V as two GEMMs.
    // Prefill over thousands of tokens is GEMM-bound; naive loops were 20x
    // slower here.
    std::vector<int64_t> positions;
    std::vector<float> kg, vg, qg, s, og;
    for (int64_t g = 0; g < kv_heads; ++g) {
      absl::Span<const int32_t> chunks = all_chunks;
      if (a.selected_table != nullptr) {
        const int64_t per_head = a.selected_table->dim(1);
        chunks = absl::MakeConstSpan(a.selected_table->data<int32_t>() + g * per_head, per_head);
      } else if (!a.selected_indptr.empty()) {
        chunks = a.selected_chunks.subspan(a.selected_indptr[g],
                                           a.selected_indptr[g + 1] - a.selected_indptr[g]);
      }
      const uint8_t* valid = a.token_valid != nullptr ? a.token_valid + g * mask_stride : nullptr;
      positions.clear();
      for (int32_t c : chunks) {
        const int64_t first = static_cast<int64_t>(c) * chunk;
        const int64_t last = std::min<int64_t>(first + chunk, a.kv_len);
        for (int64_t pos = first; pos < last; ++pos) {
          if (a.page_table[pos / a.page_size] < 0) continue;
          if (valid != nullptr && !valid[pos]) continue;
          positions.push_back(pos);
        }
      }
      const int64_t m = static_cast<int64_t>(positions.size());
      const int64_t rows = n * group;  // row r = t * group + (h - g * group)
      kg.resize(std::max<int64_t>(m, 1) * d);
      vg.resize(std::max<int64_t>(m, 1) * d);
      for (int64_t i = 0; i < m; ++i) {
        std::memcpy(&kg[i * d], KeyOrValue(*a.k_pages, a, positions[i], row) + g * d, d * sizeof(float));
        std::memcpy(&vg[i * d], KeyOrValue(*a.v_pages, a, positions[i], row) + g * d, d * sizeof(float));
      }
      qg.resize(rows * d);
      for (int64_t t = 0; t < n; ++t) {
        std::memcpy(&qg[t * group * d], q.data<float>() + (t * heads + g * group) * d, group * d * sizeof(float));
      }
      og.assign(rows * d, 0.0f);
      if (m > 0) {
        s.resize(rows * m);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, rows, m, d, a.scale, qg.data(), d,
                    kg.data(), d, 0.0f, s.data(), m);
        // Row softmax: independent rows, and the exps dominate long prefills
        // once the GEMMs are threaded, so rows run in parallel.
#pragma omp parallel for schedule(static) if (rows * m > (1 << 16))
        for (int64_t r = 0; r < rows; ++r) {
          const int64_t qpos = a.kv_len - n + r / group;
          float* sr = &s[r * m];
          float max_score = -INFINITY;
          for (int64_t i = 0; i < m; ++i) {
            if (positions[i] > qpos) sr[i] = -INFINITY;  // causal
            max_score = std::max(max_score, sr[i]);
          }
          double denom = 0.0;
          for (int64_t i = 0; i < m; ++i) {
            sr[i] = sr[i] == -INFINITY ? 0.0f : std::exp(sr[i] - max_score);
            denom += sr[i];
          }
          const float inv = denom > 0 ? static_cast<float>(1.0 / denom) : 0.0f;
          for (int64_t i = 0; i < m; ++i) sr[i] *= inv;
        }
        // Rows of one head share output slots: accumulate serially.
        for (int64_t r = 0; r < rows && (a.attention_sum != nullptr || a.attention_last != nullptr); ++r) {
          const int64_t t = r / group, h = g * group + r % group;
          const float* sr = &s[r * m];
          if (a.attention_sum != nullptr) {
            for (int64_t i = 0; i < m; ++i) a.attention_sum[h * a.kv_len + positions[i]] += sr[i];
          }
          if (a.attention_last != nullptr && t == n - 1) {
            for (int64_t i = 0; i < m; ++i) a.attention_last[h * a.kv_len + positions[i]] = sr[i];
          }
        }
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, rows, d, m, 1.0f, s.data(), m,
                    vg.data(), d, 0.0f, og.data(), d);
      }
      for (int64_t t = 0; t < n; ++t) {
        std::memcpy(out.data<float>() + (t * heads + g * group) * d, &og[t * group * d], group * d * sizeof(float));
      }
    }
  }

  void UpdatePageBounds(const PageBoundsArgs& a, Tensor& bounds) override {
    const Tensor& pages = *a.k_pages;
    const int64_t kv_heads = pages.dim(2), d = pages.dim(3), row = kv_heads * d;
    CHECK(a.bound_page > 0 && a.page_size % a.bound_page == 0)
        << "page bounds: Quest page " << a.bound_page << " vs pool page " << a.page_size;
    CHECK(IsPageBoundsShape(bounds, kv_heads, d))
        << "page bounds: " << bounds.ShapeString() << " for " << kv_heads << " KV heads of " << d;
    CHECK_LE((a.end + a.bound_page - 1) / a.bound_page, PageBoundsCapacity(bounds))
        << "page bounds: positions up to " << a.end << " overflow " << bounds.ShapeString();
    CHECK(bounds.dtype() == DType::kFloat32 || bounds.dtype() == DType::kFloat8E4M3)
        << "page bounds: " << bounds.ShapeString() << " (f32 or f8e4m3 on the cpu)";
    const bool fp8 = bounds.dtype() == DType::kFloat8E4M3;
    // A Quest page and KV head at a time: its positions in [begin, end)
    // fold into contiguous min / max rows (vectorised), which are then
    // stored once into the tile layout, where dimension i's min sits
    // 2 * kBoundsTile elements after dimension i - 1's and its max
    // kBoundsTile after its min. FP8 folds the decoded codes in float and
    // rounds once at the end: directed rounding is monotone, so that equals
    // rounding after every position (the CUDA kernel does the same).
    // (Heads as the outer loop, so that one head's pages fill neighbouring
    // elements, was slower: the Keys are then read head by head.)
    constexpr int64_t kDimStride = 2 * kBoundsTile;
    fold_lo_.resize(d);
    fold_hi_.resize(d);
    float* lo = fold_lo_.data();
    float* hi = fold_hi_.data();
    for (int64_t qpage = a.begin / a.bound_page; qpage * a.bound_page < a.end; ++qpage) {
      const int64_t start = qpage * a.bound_page;
      const int64_t from = std::max(start, a.begin), to = std::min(start + a.bound_page, a.end);
      // A Quest page lies inside one pool page: an evicted one has no Keys.
      const int32_t phys = a.page_table[start / a.page_size];
      if (phys < 0) continue;
      const float* k0 = pages.data<float>() + (phys * int64_t{a.page_size} + from % a.page_size) * row;
      for (int64_t g = 0; g < kv_heads; ++g) {
        const int64_t at = BoundsIndex(qpage, g, 0, 0, kv_heads, d);
        const float* k = k0 + g * d;
        int64_t pos = from;
        if (from == start) {  // the page's first Key resets it
          std::copy(k, k + d, lo);
          std::copy(k, k + d, hi);
          k += row;
          ++pos;
        } else {  // widen what the earlier positions left
          for (int64_t i = 0; i < d; ++i) {
            const int64_t e = at + i * kDimStride;
            lo[i] = fp8 ? fp8::E4M3ToFloat(bounds.data<uint8_t>()[e]) : bounds.data<float>()[e];
            hi[i] = fp8 ? fp8::E4M3ToFloat(bounds.data<uint8_t>()[e + kBoundsTile])
                        : bounds.data<float>()[e + kBoundsTile];
          }
        }
        for (; pos < to; ++pos, k += row) {
          for (int64_t i = 0; i < d; ++i) {
            lo[i] = std::min(lo[i], k[i]);
            hi[i] = std::max(hi[i], k[i]);
          }
        }
        for (int64_t i = 0; i < d; ++i) {
          const int64_t e = at + i * kDimStride;
          if (fp8) {
            bounds.data<uint8_t>()[e] = fp8::E4M3RoundDown(lo[i]);
            bounds.data<uint8_t>()[e + kBoundsTile] = fp8::E4M3RoundUp(hi[i]);
          } else {
            bounds.data<float>()[e] = lo[i];
            bounds.data<float>()[e + kBoundsTile] = hi[i];
          }
        }
      }
    }
  }

  void SelectTopPages(const TopPagesArgs& a, Tensor& selected) override {
    const int64_t heads = a.q->dim(1), d = a.q->dim(2);
    const int64_t kv_heads = a.bounds->dim(1), group = heads / kv_heads;
    const int64_t last = a.num_pages - 1;
    CHECK(a.q->dim(0) == 1 && a.k >= 0 && a.k <= last && a.num_pages <= PageBoundsCapacity(*a.bounds) &&
          IsPageBoundsShape(*a.bounds, kv_heads, d))
        << "select top pages: k " << a.k << " of " << a.num_pages << " pages, q "
        << a.q->ShapeString() << ", bounds " << a.bounds->ShapeString();
    CHECK(selected.dtype() == DType::kInt32 && selected.numel() == kv_heads * (a.k + 1))
        << "select top pages: selected is " << selected.ShapeString();
    CHECK(a.bounds->dtype() == DType::kFloat32 || a.bounds->dtype() == DType::kFloat8E4M3)
        << "select top pages: bounds " << a.bounds->ShapeString() << " (f32 or f8e4m3 on the cpu)";
    scores_.resize(last);
    candidates_.resize(last);
    // Per query head of a KV head, the terms of its score: the rows (dimension
    // and side) whose coefficient min(q, 0) / max(q, 0) is nonzero, NaN kept
    // (TopPagesArgs: the other side is not read), in dimension order. A tile
    // at a time, as floats ([head_dim][2][kBoundsTile], FP8 decoded once),
    // 16 pages of a head's scores sum the terms in registers. Whole tiles
    // (the storage always holds them; scores past `last` are dropped).
    constexpr int64_t kBlock = 16;
    const bool fp8 = a.bounds->dtype() == DType::kFloat8E4M3;
    terms_.resize(group);
    head_scores_.resize(group * kBoundsTile);
    if (fp8) tile_floats_.resize(d * 2 * kBoundsTile);
    int32_t* out = selected.data<int32_t>();
    const float* q = a.q->data<float>();
    for (int64_t g = 0; g < kv_heads; ++g) {
      for (int64_t h = 0; h < group; ++h) {
        const float* qh = q + (g * group + h) * d;
        terms_[h].clear();
        for (int64_t i = 0; i < d; ++i) {
          const float lo = BoundsMinCoef(qh[i]), hi = BoundsMaxCoef(qh[i]);
          if (lo != 0.0f) terms_[h].push_back({i * 2 * kBoundsTile, lo});
          if (hi != 0.0f) terms_[h].push_back({i * 2 * kBoundsTile + kBoundsTile, hi});
        }
      }
      for (int64_t t0 = 0; t0 < last; t0 += kBoundsTile) {
        const int64_t at = BoundsIndex(t0, g, 0, 0, kv_heads, d);
        const float* tile = fp8 ? nullptr : a.bounds->data<float>() + at;
        if (fp8) {
          const uint8_t* codes = a.bounds->data<uint8_t>() + at;
          for (int64_t e = 0; e < d * 2 * kBoundsTile; ++e) tile_floats_[e] = fp8::E4M3ToFloat(codes[e]);
          tile = tile_floats_.data();
        }
        for (int64_t h = 0; h < group; ++h) {
          for (int64_t j0 = 0; j0 < kBoundsTile; j0 += kBlock) {
            float acc[kBlock] = {};
            for (const ScoreTerm& t : terms_[h]) {
              const float* r = tile + t.offset + j0;
              for (int64_t j = 0; j < kBlock; ++j) acc[j] += t.coef * r[j];
            }
            std::copy(acc, acc + kBlock, head_scores_.data() + h * kBoundsTile + j0);
          }
        }
        const int64_t m = std::min(kBoundsTile, last - t0);
        for (int64_t j = 0; j < m; ++j) {
          float combined = head_scores_[j];
          for (int64_t h = 1; h < group; ++h) {
            const float s = head_scores_[h * kBoundsTile + j];
            combined = a.combine_sum ? combined + s : std::max(combined, s);
          }
          // NaN would break the strict weak order of the comparator below.
          scores_[t0 + j] = std::isnan(combined) ? -INFINITY : combined;
        }
      }
      std::iota(candidates_.begin(), candidates_.end(), 0);
      // Best first; equal scores prefer the lower page so runs reproduce.
      auto better = [this](int32_t x, int32_t y) {
        return scores_[x] > scores_[y] || (scores_[x] == scores_[y] && x < y);
      };
      std::nth_element(candidates_.begin(), candidates_.begin() + a.k, candidates_.end(), better);
      // Ascending page order walks the pool front to back.
      std::sort(candidates_.begin(), candidates_.begin() + a.k);
      int32_t* row = out + g * (a.k + 1);
      std::copy(candidates_.begin(), candidates_.begin() + a.k, row);
      row[a.k] = static_cast<int32_t>(last);
    }
  }

  void TopK(const Tensor& logits, int k, Tensor& ids, Tensor& values) override {
    const int64_t rows = logits.dim(0), n = logits.dim(1);
    CHECK(k >= 1 && k <= n && ids.numel() == rows * k && values.numel() == rows * k)
        << "top-k: k " << k << " of " << logits.ShapeString() << " into " << ids.ShapeString();
    std::vector<int32_t> order(n);
    for (int64_t r = 0; r < rows; ++r) {
      const float* x = logits.data<float>() + r * n;
      std::iota(order.begin(), order.end(), 0);
      auto better = [x](int32_t a, int32_t b) { return TopKRanksBefore(x[a], a, x[b], b); };
      std::partial_sort(order.begin(), order.begin() + k, order.end(), better);
      for (int j = 0; j < k; ++j) {
        ids.data<int32_t>()[r * k + j] = order[j];
        values.data<float>()[r * k + j] = x[order[j]];
      }
    }
  }

 private:
  // The K (or V) row of logical position `pos`: all KV heads, head_dim each.
  static const float* KeyOrValue(const Tensor& pages, const PagedAttentionArgs& a, int64_t pos, int64_t row) {
    const int64_t phys = a.page_table[pos / a.page_size];
    return pages.data<float>() + (phys * a.page_size + pos % a.page_size) * row;
  }

  // SelectTopPages scratch, reused across calls.
  // One nonzero term of a query head's page score: the bounds row at
  // `offset` within a tile, times `coef`.
  struct ScoreTerm {
    int64_t offset;
    float coef;
  };
  std::vector<std::vector<ScoreTerm>> terms_;
  std::vector<float> head_scores_, scores_, tile_floats_;
  // UpdatePageBounds scratch: one page's min / max rows.
  std::vector<float> fold_lo_, fold_hi_;
  std::vector<int32_t> candidates_;
};

}  // namespace

std::unique_ptr<Backend> CreateCpuBackend(const CpuBackendOptions& options) {
  return std::make_unique<CpuBackend>(options);
}

}  // namespace quest::ops
