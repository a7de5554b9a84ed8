#include "models/gguf/gguf_file.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>
#include <functional>
#include <limits>
#include <thread>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace quest::models {
namespace {

constexpr uint32_t kGgufMagic = 0x46554747;  // "GGUF" read as little-endian
// ggml's GGML_MAX_DIMS.
constexpr uint32_t kMaxDims = 4;
// Arrays of arrays are legal GGUF but nothing real nests deeply; the bound
// keeps a hostile file from recursing the parser off its stack.
constexpr int kMaxArrayDepth = 8;
// Tensors at least this large are dequantized on several threads.
constexpr int64_t kParallelMinElements = int64_t{1} << 20;

bool IsKnownValueType(uint32_t t) { return t <= static_cast<uint32_t>(GgufValueType::kFloat64); }

// The fewest bytes a value of this type can take in the file (strings and
// arrays: their length field), so counts can be bounded by the bytes left.
uint64_t MinValueBytes(GgufValueType t) {
  switch (t) {
    case GgufValueType::kUint8:
    case GgufValueType::kInt8:
    case GgufValueType::kBool: return 1;
    case GgufValueType::kUint16:
    case GgufValueType::kInt16: return 2;
    case GgufValueType::kUint32:
    case GgufValueType::kInt32:
    case GgufValueType::kFloat32: return 4;
    case GgufValueType::kUint64:
    case GgufValueType::kInt64:
    case GgufValueType::kFloat64:
    case GgufValueType::kString: return 8;
    case GgufValueType::kArray: return 12;
  }
  return 1;
}

bool IsIntegerType(GgufValueType t) {
  switch (t) {
    case GgufValueType::kUint8:
    case GgufValueType::kInt8:
    case GgufValueType::kUint16:
    case GgufValueType::kInt16:
    case GgufValueType::kUint32:
    case GgufValueType::kInt32:
    case GgufValueType::kUint64:
    case GgufValueType::kInt64: return true;
    default: return false;
  }
}

bool IsUnsignedType(GgufValueType t) {
  return t == GgufValueType::kUint8 || t == GgufValueType::kUint16 || t == GgufValueType::kUint32 ||
         t == GgufValueType::kUint64;
}

bool IsFloatType(GgufValueType t) {
  return t == GgufValueType::kFloat32 || t == GgufValueType::kFloat64;
}

std::string DescribeType(const GgufValue& v) {
  if (v.type == GgufValueType::kArray) {
    return absl::StrCat("array of ", GgufValueTypeName(v.array_type));
  }
  return GgufValueTypeName(v.type);
}

// Bounds-checked little-endian cursor over the mapped file. Every failure
// names the file, what was being read and where.
class Reader {
 public:
  Reader(const uint8_t* data, uint64_t size, const std::string& path)
      : data_(data), size_(size), path_(path) {}

  uint64_t pos() const { return pos_; }
  uint64_t remaining() const { return size_ - pos_; }

  absl::Status Need(uint64_t n, absl::string_view what) const {
    if (n > remaining()) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "%s: truncated file: %s needs %d bytes at offset %d, but the file has %d bytes", path_,
          what, n, pos_, size_));
    }
    return absl::OkStatus();
  }

  template <typename T>
  absl::StatusOr<T> Read(absl::string_view what) {
    if (absl::Status s = Need(sizeof(T), what); !s.ok()) return s;
    T v;
    std::memcpy(&v, data_ + pos_, sizeof(T));
    pos_ += sizeof(T);
    return v;
  }

  absl::StatusOr<std::string> ReadString(absl::string_view what) {
    absl::StatusOr<uint64_t> len = Read<uint64_t>(absl::StrCat(what, " (string length)"));
    if (!len.ok()) return len.status();
    if (*len > remaining()) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "%s: truncated file or absurd string length: %s claims %d bytes at offset %d, but only "
          "%d bytes remain",
          path_, what, *len, pos_, remaining()));
    }
    std::string s(reinterpret_cast<const char*>(data_ + pos_), *len);
    pos_ += *len;
    return s;
  }

 private:
  const uint8_t* data_;
  uint64_t size_;
  uint64_t pos_ = 0;
  const std::string& path_;
};

absl::Status ReadValue(Reader& r, GgufValueType type, int depth, const std::string& path,
                       absl::string_view what, GgufValue* out) {
  out->type = type;
  switch (type) {
#define QUEST_GGUF_READ(ENUM, CTYPE, FIELD)        \
  case GgufValueType::ENUM: {                      \
    absl::StatusOr<CTYPE> v = r.Read<CTYPE>(what); \
    if (!v.ok()) return v.status();                \
    out->FIELD = *v;                               \
    return absl::OkStatus();                       \
  }
    QUEST_GGUF_READ(kUint8, uint8_t, uint_value)
    QUEST_GGUF_READ(kUint16, uint16_t, uint_value)
    QUEST_GGUF_READ(kUint32, uint32_t, uint_value)
    QUEST_GGUF_READ(kUint64, uint64_t, uint_value)
    QUEST_GGUF_READ(kInt8, int8_t, int_value)
    QUEST_GGUF_READ(kInt16, int16_t, int_value)
    QUEST_GGUF_READ(kInt32, int32_t, int_value)
    QUEST_GGUF_READ(kInt64, int64_t, int_value)
    QUEST_GGUF_READ(kFloat32, float, float_value)
    QUEST_GGUF_READ(kFloat64, double, float_value)
#undef QUEST_GGUF_READ
    case GgufValueType::kBool: {
      absl::StatusOr<uint8_t> v = r.Read<uint8_t>(what);
      if (!v.ok()) return v.status();
      if (*v > 1) {
        return absl::InvalidArgumentError(absl::StrFormat(
            "%s: %s: bool value %d at offset %d is neither 0 nor 1", path, what, *v, r.pos() - 1));
      }
      out->bool_value = *v != 0;
      return absl::OkStatus();
    }
    case GgufValueType::kString: {
      absl::StatusOr<std::string> s = r.ReadString(what);
      if (!s.ok()) return s.status();
      out->string_value = *std::move(s);
      return absl::OkStatus();
    }
    case GgufValueType::kArray: {
      if (depth >= kMaxArrayDepth) {
        return absl::InvalidArgumentError(
            absl::StrFormat("%s: %s: arrays nested more than %d deep", path, what, kMaxArrayDepth));
      }
      absl::StatusOr<uint32_t> elem = r.Read<uint32_t>(absl::StrCat(what, " (array type)"));
      if (!elem.ok()) return elem.status();
      if (!IsKnownValueType(*elem)) {
        return absl::InvalidArgumentError(absl::StrFormat(
            "%s: %s: unknown array element type %d at offset %d", path, what, *elem, r.pos() - 4));
      }
      absl::StatusOr<uint64_t> n = r.Read<uint64_t>(absl::StrCat(what, " (array length)"));
      if (!n.ok()) return n.status();
      const GgufValueType et = static_cast<GgufValueType>(*elem);
      if (*n > r.remaining() / MinValueBytes(et)) {
        return absl::InvalidArgumentError(absl::StrFormat(
            "%s: %s: absurd array length %d of %s at offset %d: only %d bytes remain in the "
            "file (truncated or corrupt)",
            path, what, *n, GgufValueTypeName(et), r.pos() - 8, r.remaining()));
      }
      out->array_type = et;
      out->array.resize(*n);
      for (uint64_t i = 0; i < *n; ++i) {
        if (absl::Status s = ReadValue(r, et, depth + 1, path, what, &out->array[i]); !s.ok()) {
          return s;
        }
      }
      return absl::OkStatus();
    }
  }
  return absl::InvalidArgumentError(
      absl::StrFormat("%s: %s: unknown value type %d", path, what, static_cast<uint32_t>(type)));
}

// ---- dequantization -------------------------------------------------------

const float* HalfTable() {
  // A table beats HalfToFloat's branches by ~10x and fp16 appears once per
  // block in every quantized type.
  static const float* table = [] {
    static std::array<float, 65536> t;
    for (uint32_t i = 0; i < 65536; ++i) t[i] = HalfToFloat(static_cast<uint16_t>(i));
    return t.data();
  }();
  return table;
}

inline uint16_t LoadU16(const uint8_t* p) {
  uint16_t v;
  std::memcpy(&v, p, 2);
  return v;
}

// Runs fn(begin, end) over [0, n) split across threads when n is large.
void ParallelFor(int64_t n, int64_t work_per_item,
                 const std::function<void(int64_t, int64_t)>& fn) {
  const int64_t hw = std::max<int64_t>(1, std::thread::hardware_concurrency());
  const int64_t threads = std::min<int64_t>({hw, 16, n * work_per_item / kParallelMinElements});
  if (threads <= 1) {
    fn(0, n);
    return;
  }
  std::vector<std::thread> pool;
  const int64_t chunk = (n + threads - 1) / threads;
  for (int64_t t = 1; t < threads; ++t) {
    const int64_t b = t * chunk, e = std::min(n, b + chunk);
    if (b < e) pool.emplace_back(fn, b, e);
  }
  fn(0, std::min(n, chunk));
  for (std::thread& th : pool) th.join();
}

void DequantizeF16(const uint8_t* src, float* dst, int64_t n) {
  const float* table = HalfTable();
  ParallelFor(n, 1, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) dst[i] = table[LoadU16(src + 2 * i)];
  });
}

void DequantizeBF16(const uint8_t* src, float* dst, int64_t n) {
  ParallelFor(n, 1, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) dst[i] = BFloat16ToFloat(LoadU16(src + 2 * i));
  });
}

inline uint32_t LoadU32(const uint8_t* p) {
  uint32_t v;
  std::memcpy(&v, p, 4);
  return v;
}

// One block of a quantized type into y (the type's block size of floats);
// `half` is HalfTable(). The layouts are ggml's block_* structs (ggml-common.h),
// little-endian, fields in the order written.
using BlockDecoder = void (*)(const uint8_t* p, const float* half, float* y);

// Q8_0: {fp16 d; int8 q[32]}, x = q * d.
void DecodeQ8_0(const uint8_t* p, const float* half, float* y) {
  const float d = half[LoadU16(p)];
  const int8_t* q = reinterpret_cast<const int8_t*>(p + 2);
  for (int j = 0; j < 32; ++j) y[j] = q[j] * d;
}

// Q4_0: {fp16 d; uint8 qs[16]}, element j = (low nibble of qs[j] - 8) * d,
// element j + 16 = (high nibble of qs[j] - 8) * d.
void DecodeQ4_0(const uint8_t* p, const float* half, float* y) {
  const float d = half[LoadU16(p)];
  const uint8_t* qs = p + 2;
  for (int j = 0; j < 16; ++j) {
    y[j] = (static_cast<int>(qs[j] & 0x0f) - 8) * d;
    y[j + 16] = (static_cast<int>(qs[j] >> 4) - 8) * d;
  }
}

// Q4_1: {fp16 d; fp16 m; uint8 qs[16]}, x = nibble * d + m, nibbles ordered
// as in Q4_0.
void DecodeQ4_1(const uint8_t* p, const float* half, float* y) {
  const float d = half[LoadU16(p)];
  const float m = half[LoadU16(p + 2)];
  const uint8_t* qs = p + 4;
  for (int j = 0; j < 16; ++j) {
    y[j] = (qs[j] & 0x0f) * d + m;
    y[j + 16] = (qs[j] >> 4) * d + m;
  }
}

// Q5_0 / Q5_1: as Q4_0 / Q4_1 with a fifth bit per element, bit j of the
// 32-bit qh for element j: {fp16 d; uint32 qh; uint8 qs[16]}, x = (q - 16) * d;
// {fp16 d; fp16 m; uint32 qh; uint8 qs[16]}, x = q * d + m.
inline void FiveBitPair(const uint8_t* qs, uint32_t qh, int j, int* lo, int* hi) {
  *lo = (qs[j] & 0x0f) | static_cast<int>(((qh >> j) & 1u) << 4);
  *hi = (qs[j] >> 4) | static_cast<int>(((qh >> (j + 16)) & 1u) << 4);
}
void DecodeQ5_0(const uint8_t* p, const float* half, float* y) {
  const float d = half[LoadU16(p)];
  const uint32_t qh = LoadU32(p + 2);
  for (int j = 0; j < 16; ++j) {
    int lo, hi;
    FiveBitPair(p + 6, qh, j, &lo, &hi);
    y[j] = (lo - 16) * d;
    y[j + 16] = (hi - 16) * d;
  }
}
void DecodeQ5_1(const uint8_t* p, const float* half, float* y) {
  const float d = half[LoadU16(p)];
  const float m = half[LoadU16(p + 2)];
  const uint32_t qh = LoadU32(p + 4);
  for (int j = 0; j < 16; ++j) {
    int lo, hi;
    FiveBitPair(p + 8, qh, j, &lo, &hi);
    y[j] = lo * d + m;
    y[j + 16] = hi * d + m;
  }
}

// The K-quants: 256 elements in sub-blocks, each with its own scale (and,
// for Q2_K/Q4_K/Q5_K, its own min), both quantized against the block's fp16
// d (and dmin).

// Q2_K: {uint8 scales[16]; uint8 qs[64]; fp16 d; fp16 dmin}: 16 sub-blocks
// of 16, x = d * (scales[s] & 15) * q - dmin * (scales[s] >> 4), q 2 bits.
// Half h (128 elements) reads qs[32h, 32h + 32): its 4 bit pairs j give
// sub-blocks 8h + 2j (bytes 0-15) and 8h + 2j + 1 (bytes 16-31).
void DecodeQ2_K(const uint8_t* p, const float* half, float* y) {
  const uint8_t* scales = p;
  const float d = half[LoadU16(p + 80)];
  const float dmin = half[LoadU16(p + 82)];
  for (int h = 0; h < 2; ++h) {
    const uint8_t* q = p + 16 + 32 * h;
    for (int j = 0; j < 4; ++j) {
      for (int part = 0; part < 2; ++part) {
        const uint8_t sc = scales[8 * h + 2 * j + part];
        const float dl = d * (sc & 0x0f), ml = dmin * (sc >> 4);
        float* out = y + 128 * h + 32 * j + 16 * part;
        for (int l = 0; l < 16; ++l) out[l] = dl * ((q[16 * part + l] >> (2 * j)) & 3) - ml;
      }
    }
  }
}

// Q3_K: {uint8 hmask[32]; uint8 qs[64]; uint8 scales[12]; fp16 d}: 16
// sub-blocks of 16, x = d * (scale_s - 32) * (q - 4 * !high bit), q 2 bits
// laid out as in Q2_K, the high bit of half h, pair j at bit 4h + j of
// hmask[l] (l < 32 within the pair's 32 elements). The 16 6-bit scales:
// low 4 bits from scales[s] (s < 8) or the high nibble of scales[s - 8],
// high 2 bits from scales[8 + s % 4] at bit 2 * (s / 4).
void DecodeQ3_K(const uint8_t* p, const float* half, float* y) {
  const uint8_t* hmask = p;
  const uint8_t* packed = p + 96;
  const float d = half[LoadU16(p + 108)];
  int scale[16];
  for (int s = 0; s < 16; ++s) {
    const int low = s < 8 ? packed[s] & 0x0f : packed[s - 8] >> 4;
    const int high = (packed[8 + s % 4] >> (2 * (s / 4))) & 3;
    scale[s] = (low | (high << 4)) - 32;
  }
  for (int h = 0; h < 2; ++h) {
    const uint8_t* q = p + 32 + 32 * h;
    for (int j = 0; j < 4; ++j) {
      const uint8_t bit = static_cast<uint8_t>(1u << (4 * h + j));
      for (int part = 0; part < 2; ++part) {
        const float dl = d * scale[8 * h + 2 * j + part];
        float* out = y + 128 * h + 32 * j + 16 * part;
        for (int l = 0; l < 16; ++l) {
          const int i = 16 * part + l;
          out[l] = dl * (((q[i] >> (2 * j)) & 3) - ((hmask[i] & bit) ? 0 : 4));
        }
      }
    }
  }
}

// Q4_K and Q5_K's 12 scale bytes: 8 6-bit scales and 8 6-bit mins, one per
// sub-block of 32. Sub-blocks 0-3 keep theirs in the low 6 bits of bytes
// 0-3 (scales) and 4-7 (mins); 4-7 in the nibbles of bytes 8-11 plus the top
// 2 bits of bytes 0-3 (scales) and 4-7 (mins).
inline void ScaleMinK4(const uint8_t* q, int s, int* sc, int* m) {
  if (s < 4) {
    *sc = q[s] & 63;
    *m = q[s + 4] & 63;
  } else {
    *sc = (q[s + 4] & 0x0f) | ((q[s - 4] >> 6) << 4);
    *m = (q[s + 4] >> 4) | ((q[s] >> 6) << 4);
  }
}

// Q4_K: {fp16 d; fp16 dmin; uint8 scales[12]; uint8 qs[128]}: sub-block s
// of 32, x = d * sc_s * q - dmin * m_s; sub-blocks 2i and 2i + 1 are the low
// and high nibbles of qs[32i, 32i + 32).
// Q5_K: {fp16 d; fp16 dmin; uint8 scales[12]; uint8 qh[32]; uint8 qs[128]}:
// the same with a fifth bit, bit s of qh[l] for element l of sub-block s.
template <bool kFifthBit>
void DecodeQ45_K(const uint8_t* p, const float* half, float* y) {
  const float d = half[LoadU16(p)];
  const float dmin = half[LoadU16(p + 2)];
  const uint8_t* scales = p + 4;
  const uint8_t* qh = p + 16;
  const uint8_t* qs = p + (kFifthBit ? 48 : 16);
  for (int i = 0; i < 4; ++i) {
    for (int part = 0; part < 2; ++part) {
      const int s = 2 * i + part;
      int sc, m;
      ScaleMinK4(scales, s, &sc, &m);
      const float dl = d * sc, ml = dmin * m;
      float* out = y + 32 * s;
      for (int l = 0; l < 32; ++l) {
        int q = part == 0 ? qs[32 * i + l] & 0x0f : qs[32 * i + l] >> 4;
        if constexpr (kFifthBit) q |= ((qh[l] >> s) & 1) << 4;
        out[l] = dl * q - ml;
      }
    }
  }
}

// Q6_K: {uint8 ql[128]; uint8 qh[64]; int8 scales[16]; fp16 d}: 16
// sub-blocks of 16, x = d * scales[s] * (q - 32), q 6 bits. Half h (128
// elements): element 32k + l (k < 4, l < 32) takes the low (k < 2) or high
// nibble of ql[64h + 32 (k % 2) + l] and bits 2k, 2k + 1 of qh[32h + l];
// its sub-block is 8h + 2k + l / 16.
void DecodeQ6_K(const uint8_t* p, const float* half, float* y) {
  const uint8_t* ql = p;
  const uint8_t* qh = p + 128;
  const int8_t* scales = reinterpret_cast<const int8_t*>(p + 192);
  const float d = half[LoadU16(p + 208)];
  for (int h = 0; h < 2; ++h) {
    for (int k = 0; k < 4; ++k) {
      for (int l = 0; l < 32; ++l) {
        const uint8_t lo = ql[64 * h + 32 * (k % 2) + l];
        const int q = ((k < 2 ? lo & 0x0f : lo >> 4) | (((qh[32 * h + l] >> (2 * k)) & 3) << 4)) - 32;
        y[128 * h + 32 * k + l] = d * scales[8 * h + 2 * k + l / 16] * q;
      }
    }
  }
}

// IQ4_NL and IQ4_XS: 4-bit indices into one fixed non-linear table
// (ggml's kvalues_iq4nl, part of the format).
constexpr int8_t kIq4NlValues[16] = {-127, -104, -83, -65, -49, -35, -22, -10,
                                     1,    13,   25,  38,  53,  69,  89,  113};

// One 32-element run: element j from the low nibble of qs[j], j + 16 from
// its high nibble, each the table value times d.
inline void DecodeIq4Run(const uint8_t* qs, float d, float* y) {
  for (int j = 0; j < 16; ++j) {
    y[j] = d * kIq4NlValues[qs[j] & 0x0f];
    y[j + 16] = d * kIq4NlValues[qs[j] >> 4];
  }
}

// IQ4_NL: {fp16 d; uint8 qs[16]}.
void DecodeIQ4_NL(const uint8_t* p, const float* half, float* y) { DecodeIq4Run(p + 2, half[LoadU16(p)], y); }

// IQ4_XS: {fp16 d; uint16 scales_h; uint8 scales_l[4]; uint8 qs[128]}: 8
// sub-blocks of 32, sub-block s scaled by d * (scale_s - 32), scale_s's low
// 4 bits the nibble s % 2 of scales_l[s / 2], its high 2 bits bits 2s, 2s + 1
// of scales_h; its nibbles are qs[16s, 16s + 16) laid out as IQ4_NL's.
void DecodeIQ4_XS(const uint8_t* p, const float* half, float* y) {
  const float d = half[LoadU16(p)];
  const uint16_t scales_h = LoadU16(p + 2);
  const uint8_t* scales_l = p + 4;
  for (int s = 0; s < 8; ++s) {
    const int low = (scales_l[s / 2] >> (4 * (s % 2))) & 0x0f;
    const int high = (scales_h >> (2 * s)) & 3;
    DecodeIq4Run(p + 8 + 16 * s, d * ((low | (high << 4)) - 32), y + 32 * s);
  }
}

// The quantized types ReadTensorFloat32 decodes (block sizes:
// GgmlTypeBlockLayout).
struct BlockFormat {
  GgmlType type;
  BlockDecoder decode;
};
constexpr BlockFormat kBlockFormats[] = {
    {GgmlType::kQ8_0, DecodeQ8_0}, {GgmlType::kQ4_0, DecodeQ4_0},         {GgmlType::kQ4_1, DecodeQ4_1},
    {GgmlType::kQ5_0, DecodeQ5_0}, {GgmlType::kQ5_1, DecodeQ5_1},         {GgmlType::kQ2_K, DecodeQ2_K},
    {GgmlType::kQ3_K, DecodeQ3_K}, {GgmlType::kQ4_K, DecodeQ45_K<false>}, {GgmlType::kQ5_K, DecodeQ45_K<true>},
    {GgmlType::kQ6_K, DecodeQ6_K}, {GgmlType::kIQ4_NL, DecodeIQ4_NL},      {GgmlType::kIQ4_XS, DecodeIQ4_XS},
};

BlockDecoder FindBlockDecoder(GgmlType type) {
  for (const BlockFormat& f : kBlockFormats) {
    if (f.type == type) return f.decode;
  }
  return nullptr;
}

// n elements of `type` (whole blocks) from src into dst.
void DequantizeBlocks(GgmlType type, BlockDecoder decode, const uint8_t* src, float* dst, int64_t n) {
  int64_t elements = 0, bytes = 0;
  GgmlTypeBlockLayout(type, &elements, &bytes);
  const float* half = HalfTable();
  ParallelFor(n / elements, elements, [&](int64_t b, int64_t e) {
    for (int64_t blk = b; blk < e; ++blk) decode(src + blk * bytes, half, dst + blk * elements);
  });
}

// "F32, F16, BF16, Q8_0, ...": what ReadTensorFloat32 takes.
std::string SupportedTypeNames() {
  std::string names = "F32, F16, BF16";
  for (const BlockFormat& f : kBlockFormats) absl::StrAppend(&names, ", ", GgmlTypeName(f.type));
  return names;
}

}  // namespace

const char* GgufValueTypeName(GgufValueType type) {
  switch (type) {
    case GgufValueType::kUint8: return "uint8";
    case GgufValueType::kInt8: return "int8";
    case GgufValueType::kUint16: return "uint16";
    case GgufValueType::kInt16: return "int16";
    case GgufValueType::kUint32: return "uint32";
    case GgufValueType::kInt32: return "int32";
    case GgufValueType::kFloat32: return "float32";
    case GgufValueType::kBool: return "bool";
    case GgufValueType::kString: return "string";
    case GgufValueType::kArray: return "array";
    case GgufValueType::kUint64: return "uint64";
    case GgufValueType::kInt64: return "int64";
    case GgufValueType::kFloat64: return "float64";
  }
  return "unknown";
}

std::string GgmlTypeName(GgmlType type) {
  switch (type) {
    case GgmlType::kF32: return "F32";
    case GgmlType::kF16: return "F16";
    case GgmlType::kQ4_0: return "Q4_0";
    case GgmlType::kQ4_1: return "Q4_1";
    case GgmlType::kQ5_0: return "Q5_0";
    case GgmlType::kQ5_1: return "Q5_1";
    case GgmlType::kQ8_0: return "Q8_0";
    case GgmlType::kQ8_1: return "Q8_1";
    case GgmlType::kQ2_K: return "Q2_K";
    case GgmlType::kQ3_K: return "Q3_K";
    case GgmlType::kQ4_K: return "Q4_K";
    case GgmlType::kQ5_K: return "Q5_K";
    case GgmlType::kQ6_K: return "Q6_K";
    case GgmlType::kQ8_K: return "Q8_K";
    case GgmlType::kIQ2_XXS: return "IQ2_XXS";
    case GgmlType::kIQ2_XS: return "IQ2_XS";
    case GgmlType::kIQ3_XXS: return "IQ3_XXS";
    case GgmlType::kIQ1_S: return "IQ1_S";
    case GgmlType::kIQ4_NL: return "IQ4_NL";
    case GgmlType::kIQ3_S: return "IQ3_S";
    case GgmlType::kIQ2_S: return "IQ2_S";
    case GgmlType::kIQ4_XS: return "IQ4_XS";
    case GgmlType::kI8: return "I8";
    case GgmlType::kI16: return "I16";
    case GgmlType::kI32: return "I32";
    case GgmlType::kI64: return "I64";
    case GgmlType::kF64: return "F64";
    case GgmlType::kIQ1_M: return "IQ1_M";
    case GgmlType::kBF16: return "BF16";
    case GgmlType::kTQ1_0: return "TQ1_0";
    case GgmlType::kTQ2_0: return "TQ2_0";
    case GgmlType::kMXFP4: return "MXFP4";
  }
  return absl::StrCat("type ", static_cast<uint32_t>(type));
}

bool GgmlTypeBlockLayout(GgmlType type, int64_t* block_elements, int64_t* block_bytes) {
  int64_t e = 0, b = 0;
  // Block sizes from ggml's block_* structs (QK_K = 256).
  switch (type) {
    case GgmlType::kF32: e = 1, b = 4; break;
    case GgmlType::kF16: e = 1, b = 2; break;
    case GgmlType::kQ4_0: e = 32, b = 18; break;
    case GgmlType::kQ4_1: e = 32, b = 20; break;
    case GgmlType::kQ5_0: e = 32, b = 22; break;
    case GgmlType::kQ5_1: e = 32, b = 24; break;
    case GgmlType::kQ8_0: e = 32, b = 34; break;
    case GgmlType::kQ8_1: e = 32, b = 36; break;
    case GgmlType::kQ2_K: e = 256, b = 84; break;
    case GgmlType::kQ3_K: e = 256, b = 110; break;
    case GgmlType::kQ4_K: e = 256, b = 144; break;
    case GgmlType::kQ5_K: e = 256, b = 176; break;
    case GgmlType::kQ6_K: e = 256, b = 210; break;
    case GgmlType::kQ8_K: e = 256, b = 292; break;
    case GgmlType::kIQ2_XXS: e = 256, b = 66; break;
    case GgmlType::kIQ2_XS: e = 256, b = 74; break;
    case GgmlType::kIQ3_XXS: e = 256, b = 98; break;
    case GgmlType::kIQ1_S: e = 256, b = 50; break;
    case GgmlType::kIQ4_NL: e = 32, b = 18; break;
    case GgmlType::kIQ3_S: e = 256, b = 110; break;
    case GgmlType::kIQ2_S: e = 256, b = 82; break;
    case GgmlType::kIQ4_XS: e = 256, b = 136; break;
    case GgmlType::kI8: e = 1, b = 1; break;
    case GgmlType::kI16: e = 1, b = 2; break;
    case GgmlType::kI32: e = 1, b = 4; break;
    case GgmlType::kI64: e = 1, b = 8; break;
    case GgmlType::kF64: e = 1, b = 8; break;
    case GgmlType::kIQ1_M: e = 256, b = 56; break;
    case GgmlType::kBF16: e = 1, b = 2; break;
    case GgmlType::kTQ1_0: e = 256, b = 54; break;
    case GgmlType::kTQ2_0: e = 256, b = 66; break;
    case GgmlType::kMXFP4: e = 32, b = 17; break;
  }
  if (e == 0) return false;
  *block_elements = e;
  *block_bytes = b;
  return true;
}

int64_t GgufTensorInfo::numel() const {
  int64_t n = 1;
  for (int64_t d : ne) n *= d;
  return n;
}

std::vector<int64_t> GgufTensorInfo::shape() const { return {ne.rbegin(), ne.rend()}; }

GgufFile::~GgufFile() {
  if (mapped_) munmap(const_cast<uint8_t*>(data_), size_);
}

absl::StatusOr<std::unique_ptr<GgufFile>> GgufFile::Open(const std::string& path) {
  std::unique_ptr<GgufFile> file(new GgufFile());
  file->path_ = path;
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    return absl::ErrnoToStatus(errno, absl::StrCat(path, ": cannot open GGUF file"));
  }
  struct stat st;
  if (fstat(fd, &st) != 0) {
    const int err = errno;
    ::close(fd);
    return absl::ErrnoToStatus(err, absl::StrCat(path, ": cannot stat GGUF file"));
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    return absl::InvalidArgumentError(absl::StrCat(path, ": not a regular file"));
  }
  file->size_ = static_cast<uint64_t>(st.st_size);
  if (file->size_ > 0) {
    void* p = mmap(nullptr, file->size_, PROT_READ, MAP_PRIVATE, fd, 0);
    if (p == MAP_FAILED) {
      const int err = errno;
      ::close(fd);
      return absl::ErrnoToStatus(err, absl::StrCat(path, ": cannot mmap GGUF file"));
    }
    file->data_ = static_cast<const uint8_t*>(p);
    file->mapped_ = true;
  }
  ::close(fd);
  if (absl::Status s = file->Parse(); !s.ok()) return s;
  return file;
}

absl::Status GgufFile::Parse() {
  Reader r(data_, size_, path_);
  absl::StatusOr<uint32_t> magic = r.Read<uint32_t>("the GGUF magic");
  if (!magic.ok()) return magic.status();
  if (*magic != kGgufMagic) {
    const uint32_t raw = *magic;
    char m[4];
    std::memcpy(m, &raw, 4);
    std::string shown;
    for (char c : m) {
      shown += (c >= 0x20 && c < 0x7f) ? std::string(1, c) : absl::StrFormat("\\x%02x", c & 0xff);
    }
    return absl::InvalidArgumentError(
        absl::StrFormat("%s: bad magic \"%s\": not a GGUF file (expected \"GGUF\")", path_, shown));
  }
  absl::StatusOr<uint32_t> version = r.Read<uint32_t>("the GGUF version");
  if (!version.ok()) return version.status();
  version_ = *version;
  if (version_ != 2 && version_ != 3) {
    if ((version_ & 0xffff) == 0 && (version_ >> 16) != 0) {
      return absl::UnimplementedError(absl::StrFormat(
          "%s: GGUF version field reads %#x: a big-endian GGUF file, which is not supported", path_,
          version_));
    }
    return absl::UnimplementedError(
        absl::StrFormat("%s: unsupported GGUF version %d (supported: 2 and 3)", path_, version_));
  }
  absl::StatusOr<uint64_t> n_tensors = r.Read<uint64_t>("the tensor count");
  if (!n_tensors.ok()) return n_tensors.status();
  absl::StatusOr<uint64_t> n_kv = r.Read<uint64_t>("the metadata key/value count");
  if (!n_kv.ok()) return n_kv.status();
  // Minimal sizes: a key/value is key length + type + one byte; a tensor
  // info is name length + n_dims + type + offset.
  if (*n_kv > r.remaining() / 13) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "%s: absurd metadata key/value count %d: the file has only %d bytes after the header",
        path_, *n_kv, r.remaining()));
  }
  if (*n_tensors > r.remaining() / 24) {
    return absl::InvalidArgumentError(
        absl::StrFormat("%s: absurd tensor count %d: the file has only %d bytes after the header",
                        path_, *n_tensors, r.remaining()));
  }

  keys_.reserve(*n_kv);
  for (uint64_t i = 0; i < *n_kv; ++i) {
    absl::StatusOr<std::string> key = r.ReadString(absl::StrCat("metadata key #", i));
    if (!key.ok()) return key.status();
    const std::string what = absl::StrCat("metadata key '", *key, "'");
    if (metadata_.contains(*key)) {
      return absl::InvalidArgumentError(absl::StrFormat("%s: duplicate %s", path_, what));
    }
    absl::StatusOr<uint32_t> type = r.Read<uint32_t>(absl::StrCat(what, " (value type)"));
    if (!type.ok()) return type.status();
    if (!IsKnownValueType(*type)) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "%s: %s: unknown value type %d at offset %d", path_, what, *type, r.pos() - 4));
    }
    GgufValue value;
    if (absl::Status s = ReadValue(r, static_cast<GgufValueType>(*type), 0, path_, what, &value);
        !s.ok()) {
      return s;
    }
    keys_.push_back(*key);
    metadata_.emplace(*std::move(key), std::move(value));
  }

  if (const GgufValue* a = Find("general.alignment"); a != nullptr) {
    absl::StatusOr<int64_t> v = GetInt("general.alignment");
    if (!v.ok()) return v.status();
    if (*v <= 0 || (*v & (*v - 1)) != 0) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "%s: metadata key 'general.alignment' is %d: must be a positive power of two", path_,
          *v));
    }
    alignment_ = static_cast<uint64_t>(*v);
  }

  tensors_.reserve(*n_tensors);
  for (uint64_t i = 0; i < *n_tensors; ++i) {
    GgufTensorInfo info;
    absl::StatusOr<std::string> name = r.ReadString(absl::StrCat("tensor info #", i, " name"));
    if (!name.ok()) return name.status();
    info.name = *std::move(name);
    const std::string what = absl::StrCat("tensor '", info.name, "'");
    if (tensor_index_.contains(info.name)) {
      return absl::InvalidArgumentError(absl::StrFormat("%s: duplicate %s", path_, what));
    }
    absl::StatusOr<uint32_t> n_dims = r.Read<uint32_t>(absl::StrCat(what, " (n_dims)"));
    if (!n_dims.ok()) return n_dims.status();
    if (*n_dims == 0 || *n_dims > kMaxDims) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "%s: %s has %d dimensions (must be 1 to %d)", path_, what, *n_dims, kMaxDims));
    }
    int64_t numel = 1;
    for (uint32_t d = 0; d < *n_dims; ++d) {
      absl::StatusOr<uint64_t> ne = r.Read<uint64_t>(absl::StrCat(what, " (ne[", d, "])"));
      if (!ne.ok()) return ne.status();
      if (*ne > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()) ||
          __builtin_mul_overflow(numel, static_cast<int64_t>(*ne), &numel)) {
        return absl::InvalidArgumentError(
            absl::StrFormat("%s: %s: absurd dimension ne[%d] = %d", path_, what, d, *ne));
      }
      info.ne.push_back(static_cast<int64_t>(*ne));
    }
    absl::StatusOr<uint32_t> type = r.Read<uint32_t>(absl::StrCat(what, " (type)"));
    if (!type.ok()) return type.status();
    info.type = static_cast<GgmlType>(*type);
    int64_t block_elements = 0, block_bytes = 0;
    if (!GgmlTypeBlockLayout(info.type, &block_elements, &block_bytes)) {
      return absl::InvalidArgumentError(
          absl::StrFormat("%s: %s has unknown ggml tensor type %d", path_, what, *type));
    }
    if (info.ne[0] % block_elements != 0) {
      return absl::InvalidArgumentError(
          absl::StrFormat("%s: %s: ne[0] = %d is not a multiple of the %s block size %d", path_,
                          what, info.ne[0], GgmlTypeName(info.type), block_elements));
    }
    int64_t nbytes = 0;
    if (__builtin_mul_overflow(numel / block_elements, block_bytes, &nbytes)) {
      return absl::InvalidArgumentError(
          absl::StrFormat("%s: %s: absurd size (%d elements)", path_, what, numel));
    }
    info.nbytes = static_cast<uint64_t>(nbytes);
    absl::StatusOr<uint64_t> offset = r.Read<uint64_t>(absl::StrCat(what, " (data offset)"));
    if (!offset.ok()) return offset.status();
    info.offset = *offset;
    tensor_index_.emplace(info.name, tensors_.size());
    tensors_.push_back(std::move(info));
  }

  // The data section starts at the next multiple of the alignment.
  const uint64_t header_end = r.pos();
  data_offset_ = (header_end + alignment_ - 1) / alignment_ * alignment_;
  const uint64_t data_size = size_ > data_offset_ ? size_ - data_offset_ : 0;
  for (const GgufTensorInfo& t : tensors_) {
    if (t.offset % alignment_ != 0) {
      return absl::InvalidArgumentError(
          absl::StrFormat("%s: tensor '%s' data offset %d is not a multiple of the alignment %d",
                          path_, t.name, t.offset, alignment_));
    }
    if (t.nbytes == 0) continue;
    if (t.offset >= data_size) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "%s: tensor '%s' data offset %d is out of range: the data section (from file offset "
          "%d) holds %d bytes",
          path_, t.name, t.offset, data_offset_, data_size));
    }
    if (t.nbytes > data_size - t.offset) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "%s: truncated tensor data: tensor '%s' (%s, %d bytes at data offset %d) ends %d bytes "
          "past the end of the file",
          path_, t.name, GgmlTypeName(t.type), t.nbytes, t.offset,
          t.nbytes - (data_size - t.offset)));
    }
  }
  return absl::OkStatus();
}

bool GgufFile::Has(absl::string_view key) const { return metadata_.contains(key); }

const GgufValue* GgufFile::Find(absl::string_view key) const {
  auto it = metadata_.find(key);
  return it == metadata_.end() ? nullptr : &it->second;
}

namespace {

absl::Status NotFound(const std::string& path, absl::string_view key) {
  return absl::NotFoundError(absl::StrFormat("%s: metadata key '%s' not found", path, key));
}

absl::Status WrongType(const std::string& path, absl::string_view key, const GgufValue& v,
                       absl::string_view expected) {
  return absl::InvalidArgumentError(absl::StrFormat("%s: metadata key '%s' is %s, expected %s",
                                                    path, key, DescribeType(v), expected));
}

absl::StatusOr<int64_t> AsInt(const std::string& path, absl::string_view key, const GgufValue& v) {
  if (!IsIntegerType(v.type)) return WrongType(path, key, v, "an integer");
  if (!IsUnsignedType(v.type)) return v.int_value;
  if (v.uint_value > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
    return absl::OutOfRangeError(absl::StrFormat(
        "%s: metadata key '%s' value %d does not fit in int64", path, key, v.uint_value));
  }
  return static_cast<int64_t>(v.uint_value);
}

absl::StatusOr<double> AsFloat(const std::string& path, absl::string_view key, const GgufValue& v) {
  if (IsFloatType(v.type)) return v.float_value;
  if (IsIntegerType(v.type)) {
    return IsUnsignedType(v.type) ? static_cast<double>(v.uint_value)
                                  : static_cast<double>(v.int_value);
  }
  return WrongType(path, key, v, "a number");
}

}  // namespace

absl::StatusOr<std::string> GgufFile::GetString(absl::string_view key) const {
  const GgufValue* v = Find(key);
  if (v == nullptr) return NotFound(path_, key);
  if (v->type != GgufValueType::kString) return WrongType(path_, key, *v, "a string");
  return v->string_value;
}

absl::StatusOr<int64_t> GgufFile::GetInt(absl::string_view key) const {
  const GgufValue* v = Find(key);
  if (v == nullptr) return NotFound(path_, key);
  return AsInt(path_, key, *v);
}

absl::StatusOr<double> GgufFile::GetFloat(absl::string_view key) const {
  const GgufValue* v = Find(key);
  if (v == nullptr) return NotFound(path_, key);
  return AsFloat(path_, key, *v);
}

absl::StatusOr<bool> GgufFile::GetBool(absl::string_view key) const {
  const GgufValue* v = Find(key);
  if (v == nullptr) return NotFound(path_, key);
  if (v->type != GgufValueType::kBool) return WrongType(path_, key, *v, "a bool");
  return v->bool_value;
}

absl::StatusOr<int64_t> GgufFile::GetArrayLength(absl::string_view key) const {
  const GgufValue* v = Find(key);
  if (v == nullptr) return NotFound(path_, key);
  if (v->type != GgufValueType::kArray) return WrongType(path_, key, *v, "an array");
  return static_cast<int64_t>(v->array.size());
}

absl::StatusOr<std::vector<std::string>> GgufFile::GetStringArray(absl::string_view key) const {
  const GgufValue* v = Find(key);
  if (v == nullptr) return NotFound(path_, key);
  if (v->type != GgufValueType::kArray || v->array_type != GgufValueType::kString) {
    return WrongType(path_, key, *v, "an array of string");
  }
  std::vector<std::string> out;
  out.reserve(v->array.size());
  for (const GgufValue& e : v->array) out.push_back(e.string_value);
  return out;
}

absl::StatusOr<std::vector<int64_t>> GgufFile::GetIntArray(absl::string_view key) const {
  const GgufValue* v = Find(key);
  if (v == nullptr) return NotFound(path_, key);
  if (v->type != GgufValueType::kArray || !IsIntegerType(v->array_type)) {
    return WrongType(path_, key, *v, "an array of integers");
  }
  std::vector<int64_t> out;
  out.reserve(v->array.size());
  for (const GgufValue& e : v->array) {
    absl::StatusOr<int64_t> i = AsInt(path_, key, e);
    if (!i.ok()) return i.status();
    out.push_back(*i);
  }
  return out;
}

absl::StatusOr<std::vector<double>> GgufFile::GetFloatArray(absl::string_view key) const {
  const GgufValue* v = Find(key);
  if (v == nullptr) return NotFound(path_, key);
  if (v->type != GgufValueType::kArray ||
      !(IsFloatType(v->array_type) || IsIntegerType(v->array_type))) {
    return WrongType(path_, key, *v, "an array of numbers");
  }
  std::vector<double> out;
  out.reserve(v->array.size());
  for (const GgufValue& e : v->array) {
    absl::StatusOr<double> f = AsFloat(path_, key, e);
    if (!f.ok()) return f.status();
    out.push_back(*f);
  }
  return out;
}

const GgufTensorInfo* GgufFile::FindTensor(absl::string_view name) const {
  auto it = tensor_index_.find(name);
  return it == tensor_index_.end() ? nullptr : &tensors_[it->second];
}

absl::StatusOr<absl::string_view> GgufFile::TensorBytes(absl::string_view name) const {
  const GgufTensorInfo* info = FindTensor(name);
  if (info == nullptr) {
    return absl::NotFoundError(absl::StrFormat("%s: no tensor named '%s'", path_, name));
  }
  // Open() checked the range.
  return absl::string_view(reinterpret_cast<const char*>(data_) + data_offset_ + info->offset,
                           info->nbytes);
}

absl::StatusOr<Tensor> GgufFile::ReadTensorFloat32(absl::string_view name) const {
  const GgufTensorInfo* info = FindTensor(name);
  if (info == nullptr) {
    return absl::NotFoundError(absl::StrFormat("%s: no tensor named '%s'", path_, name));
  }
  const BlockDecoder decode = FindBlockDecoder(info->type);
  const bool plain =
      info->type == GgmlType::kF32 || info->type == GgmlType::kF16 || info->type == GgmlType::kBF16;
  if (decode == nullptr && !plain) {
    return absl::UnimplementedError(absl::StrFormat(
        "%s: tensor '%s' has ggml type %s, which cannot be dequantized yet (supported: %s)", path_,
        info->name, GgmlTypeName(info->type), SupportedTypeNames()));
  }
  const uint8_t* src = data_ + data_offset_ + info->offset;
  const int64_t n = info->numel();
  Tensor out = Tensor::Empty(DType::kFloat32, info->shape());
  float* dst = out.data<float>();
  if (decode != nullptr) {
    DequantizeBlocks(info->type, decode, src, dst, n);  // Open() checked whole blocks
  } else if (info->type == GgmlType::kF32) {
    std::memcpy(dst, src, static_cast<size_t>(n) * 4);
  } else if (info->type == GgmlType::kF16) {
    DequantizeF16(src, dst, n);
  } else {
    DequantizeBF16(src, dst, n);
  }
  return out;
}

}  // namespace quest::models
