#include "runtime/tensor.h"

#include <cstdlib>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "glog/logging.h"
#include "runtime/fp8.h"

namespace quest {

size_t DTypeSize(DType dtype) {
  switch (dtype) {
    case DType::kFloat32:
    case DType::kInt32: return 4;
    case DType::kFloat16:
    case DType::kBFloat16: return 2;
    case DType::kFloat8E4M3: return 1;
  }
  return 0;
}

const char* DTypeName(DType dtype) {
  switch (dtype) {
    case DType::kFloat32: return "f32";
    case DType::kFloat16: return "f16";
    case DType::kBFloat16: return "bf16";
    case DType::kInt32: return "i32";
    case DType::kFloat8E4M3: return "f8e4m3";
  }
  return "?";
}

uint16_t FloatToHalf(float f) {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  const uint32_t sign = (x >> 16) & 0x8000u;
  const uint32_t abs = x & 0x7fffffffu;
  if (abs >= 0x7f800000u) {  // inf or nan
    return static_cast<uint16_t>(sign | 0x7c00u | (abs > 0x7f800000u ? 0x200u : 0));
  }
  if (abs >= 0x477ff000u) return static_cast<uint16_t>(sign | 0x7c00u);  // overflow
  if (abs < 0x38800000u) {  // subnormal half (or zero)
    // Shift the implicit-1 mantissa into place and round to nearest even.
    const uint32_t exp = abs >> 23;
    if (exp < 102) return static_cast<uint16_t>(sign);
    const uint32_t mant = (abs & 0x7fffffu) | 0x800000u;
    const uint32_t shift = 126 - exp;
    uint32_t h = mant >> shift;
    const uint32_t rem = mant & ((1u << shift) - 1);
    const uint32_t half = 1u << (shift - 1);
    if (rem > half || (rem == half && (h & 1))) ++h;
    return static_cast<uint16_t>(sign | h);
  }
  uint32_t h = ((abs - 0x38000000u) >> 13);
  const uint32_t rem = abs & 0x1fffu;
  if (rem > 0x1000u || (rem == 0x1000u && (h & 1))) ++h;
  return static_cast<uint16_t>(sign | h);
}

float HalfToFloat(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  uint32_t exp = (h >> 10) & 0x1f;
  uint32_t mant = h & 0x3ffu;
  uint32_t x;
  if (exp == 0) {
    if (mant == 0) {
      x = sign;
    } else {  // subnormal: normalise
      exp = 1;
      while ((mant & 0x400u) == 0) {
        mant <<= 1;
        --exp;
      }
      mant &= 0x3ffu;
      x = sign | ((exp + 112) << 23) | (mant << 13);
    }
  } else if (exp == 0x1f) {
    x = sign | 0x7f800000u | (mant << 13);
  } else {
    x = sign | ((exp + 112) << 23) | (mant << 13);
  }
  float f;
  std::memcpy(&f, &x, 4);
  return f;
}

uint16_t FloatToBFloat16(float f) {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  if ((x & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((x >> 16) | 0x40u);  // quiet nan
  const uint32_t rounding = 0x7fffu + ((x >> 16) & 1u);
  return static_cast<uint16_t>((x + rounding) >> 16);
}

float BFloat16ToFloat(uint16_t b) {
  const uint32_t x = static_cast<uint32_t>(b) << 16;
  float f;
  std::memcpy(&f, &x, 4);
  return f;
}

int64_t Tensor::numel() const {
  int64_t n = 1;
  for (int64_t d : shape_) n *= d;
  return n;
}

std::string Tensor::ShapeString() const {
  return absl::StrCat("[", absl::StrJoin(shape_, ", "), "] ", DTypeName(dtype_));
}

Tensor Tensor::Empty(DType dtype, std::vector<int64_t> shape) {
  Tensor t;
  t.dtype_ = dtype;
  t.shape_ = std::move(shape);
  for (int64_t d : t.shape_) CHECK_GE(d, 0) << "negative dimension in " << t.ShapeString();
  // 64-byte alignment keeps SIMD loads and BLAS happy.
  const size_t bytes = (std::max<size_t>(t.nbytes(), 1) + 63) / 64 * 64;
  void* p = std::aligned_alloc(64, bytes);
  CHECK(p != nullptr) << "out of memory allocating " << t.ShapeString();
  t.storage_ = std::shared_ptr<void>(p, [](void* q) { std::free(q); });
  t.data_ = p;
  return t;
}

Tensor Tensor::Zeros(DType dtype, std::vector<int64_t> shape) {
  Tensor t = Empty(dtype, std::move(shape));
  std::memset(t.data_, 0, t.nbytes());
  return t;
}

Tensor Tensor::FromFloats(absl::Span<const float> values, std::vector<int64_t> shape) {
  Tensor t = Empty(DType::kFloat32, std::move(shape));
  CHECK_EQ(static_cast<size_t>(t.numel()), values.size()) << t.ShapeString();
  std::memcpy(t.data_, values.data(), t.nbytes());
  return t;
}

Tensor Tensor::Wrap(std::shared_ptr<void> storage, void* data, DType dtype,
                    std::vector<int64_t> shape, Device device) {
  CHECK(storage != nullptr && data != nullptr) << "Tensor::Wrap of null storage";
  Tensor t;
  t.storage_ = std::move(storage);
  t.data_ = data;
  t.dtype_ = dtype;
  t.device_ = device;
  t.shape_ = std::move(shape);
  for (int64_t d : t.shape_) CHECK_GE(d, 0) << "negative dimension in " << t.ShapeString();
  return t;
}

Tensor Tensor::Slice(int64_t begin, int64_t end) const {
  CHECK(rank() >= 1 && 0 <= begin && begin <= end && end <= shape_[0])
      << "Slice(" << begin << ", " << end << ") of " << ShapeString();
  Tensor t = *this;
  const int64_t row = shape_[0] == 0 ? 0 : numel() / shape_[0];
  t.shape_[0] = end - begin;
  t.data_ = static_cast<char*>(data_) + begin * row * static_cast<int64_t>(DTypeSize(dtype_));
  return t;
}

Tensor Tensor::Reshape(std::vector<int64_t> shape) const {
  Tensor t = *this;
  t.shape_ = std::move(shape);
  CHECK_EQ(t.numel(), numel()) << "Reshape " << ShapeString() << " -> " << t.ShapeString();
  return t;
}

Tensor Tensor::Clone() const {
  CHECK(device_ == Device::kCpu);
  Tensor t = Empty(dtype_, shape_);
  std::memcpy(t.data_, data_, nbytes());
  return t;
}

Tensor Tensor::ToFloat32() const {
  CHECK(device_ == Device::kCpu);
  CHECK(dtype_ != DType::kInt32) << "ToFloat32 of an index tensor";
  if (dtype_ == DType::kFloat32) return *this;
  Tensor t = Empty(DType::kFloat32, shape_);
  float* dst = t.data<float>();
  const int64_t n = numel();
  if (dtype_ == DType::kFloat8E4M3) {
    const uint8_t* codes = data<uint8_t>();
    for (int64_t i = 0; i < n; ++i) dst[i] = fp8::E4M3ToFloat(codes[i]);
    return t;
  }
  const uint16_t* src = data<uint16_t>();
  if (dtype_ == DType::kFloat16) {
    for (int64_t i = 0; i < n; ++i) dst[i] = HalfToFloat(src[i]);
  } else {
    for (int64_t i = 0; i < n; ++i) dst[i] = BFloat16ToFloat(src[i]);
  }
  return t;
}

Tensor Tensor::AsType(DType dtype) const {
  CHECK(device_ == Device::kCpu);
  CHECK(dtype_ != DType::kInt32 && dtype != DType::kInt32) << "AsType between index and float tensors";
  if (dtype_ == dtype) return *this;
  // Which way to round is the writer's business (page bounds round outward).
  CHECK(dtype != DType::kFloat8E4M3) << "AsType to f8e4m3: only UpdatePageBounds writes fp8";
  Tensor f = ToFloat32();
  if (dtype == DType::kFloat32) return f;
  Tensor out = Empty(dtype, shape_);
  const float* src = f.data<float>();
  uint16_t* dst = out.data<uint16_t>();
  const int64_t n = numel();
  if (dtype == DType::kFloat16) {
    for (int64_t i = 0; i < n; ++i) dst[i] = FloatToHalf(src[i]);
  } else {
    for (int64_t i = 0; i < n; ++i) dst[i] = FloatToBFloat16(src[i]);
  }
  return out;
}

}  // namespace quest
