#ifndef QUEST_RUNTIME_TENSOR_H_
#define QUEST_RUNTIME_TENSOR_H_

// A dense, row-major, contiguous n-d array with a dtype and a device.
//
// Tensors share their storage: copying a Tensor copies a reference, never the
// bytes (use Clone() for that). Views (Slice) keep the storage alive. Tensors
// are not thread-safe for concurrent mutation; concurrent reads are fine.

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/types/span.h"

namespace quest {

// kInt32 holds indices (page selections) only: no math op takes it.
// kFloat8E4M3 holds Quest page bounds only (runtime/fp8.h: written with
// directed rounding by Backend::UpdatePageBounds, read by SelectTopPages);
// tensors of it convert to float (ToFloat32, AsType) but not back.
enum class DType : uint8_t { kFloat32, kFloat16, kBFloat16, kInt32, kFloat8E4M3 };
enum class Device : uint8_t { kCpu, kCuda };

size_t DTypeSize(DType dtype);
const char* DTypeName(DType dtype);

// IEEE half and bfloat16 conversions (round to nearest even).
uint16_t FloatToHalf(float f);
float HalfToFloat(uint16_t h);
uint16_t FloatToBFloat16(float f);
float BFloat16ToFloat(uint16_t b);

class Tensor {
 public:
  Tensor() = default;

  // Uninitialised CPU storage of the given shape.
  static Tensor Empty(DType dtype, std::vector<int64_t> shape);
  // Zero-filled CPU storage.
  static Tensor Zeros(DType dtype, std::vector<int64_t> shape);
  // A float32 CPU tensor holding a copy of `values`; shape must match.
  static Tensor FromFloats(absl::Span<const float> values, std::vector<int64_t> shape);
  // A tensor over storage someone else allocated (a device backend's
  // cudaMalloc'd buffer, say): `storage` owns it (its deleter frees it) and
  // `data` points at the first element. runtime/ never touches device memory
  // itself; only the backend that made such a tensor reads or writes it.
  static Tensor Wrap(std::shared_ptr<void> storage, void* data, DType dtype,
                     std::vector<int64_t> shape, Device device);

  bool defined() const { return storage_ != nullptr; }
  DType dtype() const { return dtype_; }
  Device device() const { return device_; }
  const std::vector<int64_t>& shape() const { return shape_; }
  int rank() const { return static_cast<int>(shape_.size()); }
  int64_t dim(int i) const { return shape_[i < 0 ? i + rank() : i]; }
  int64_t numel() const;
  size_t nbytes() const { return static_cast<size_t>(numel()) * DTypeSize(dtype_); }
  std::string ShapeString() const;  // "[2, 3] f32"

  void* raw_data() { return data_; }
  const void* raw_data() const { return data_; }
  // Typed access; the caller picks the type matching dtype() (float for f32,
  // uint16_t for f16/bf16).
  template <typename T>
  T* data() { return static_cast<T*>(data_); }
  template <typename T>
  const T* data() const { return static_cast<const T*>(data_); }

  // Rows [begin, end) along dimension 0, sharing storage.
  Tensor Slice(int64_t begin, int64_t end) const;
  // Same storage, new shape with the same element count.
  Tensor Reshape(std::vector<int64_t> shape) const;
  // A deep copy.
  Tensor Clone() const;
  // A float32 copy of a CPU tensor of any dtype (a reference when already f32).
  Tensor ToFloat32() const;
  // A copy of a CPU float tensor (f32/f16/bf16) in `dtype`, rounded to nearest
  // even; a reference when it already is `dtype`.
  Tensor AsType(DType dtype) const;

 private:
  std::shared_ptr<void> storage_;
  void* data_ = nullptr;
  DType dtype_ = DType::kFloat32;
  Device device_ = Device::kCpu;
  std::vector<int64_t> shape_;
};

}  // namespace quest

#endif  // QUEST_RUNTIME_TENSOR_H_
