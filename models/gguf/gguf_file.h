#ifndef QUEST_MODELS_GGUF_GGUF_FILE_H_
#define QUEST_MODELS_GGUF_GGUF_FILE_H_

// A reader for GGUF files (llama.cpp's model format), versions 2 and 3,
// little-endian.
//
// Layout: "GGUF" magic, version, tensor count, metadata key/value count, the
// key/values, the tensor infos (name, dims, ggml type, offset), padding to
// `general.alignment` (default 32), then the tensor data section; each tensor
// offset is relative to that section's start.
//
// Open() checks the whole header against the file before returning: every
// length, count and tensor range is bounded by the bytes actually present, so
// a truncated or corrupt file gives an error naming the file and the part that
// is wrong, never a crash or a huge allocation. The file is memory-mapped
// read-only; tensor data is only touched by ReadTensorFloat32().
//
// Thread-safety: after Open(), every const method may be called concurrently.

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "runtime/tensor.h"

namespace quest::models {

// GGUF metadata value types, numbered as in the file.
enum class GgufValueType : uint32_t {
  kUint8 = 0,
  kInt8 = 1,
  kUint16 = 2,
  kInt16 = 3,
  kUint32 = 4,
  kInt32 = 5,
  kFloat32 = 6,
  kBool = 7,
  kString = 8,
  kArray = 9,
  kUint64 = 10,
  kInt64 = 11,
  kFloat64 = 12,
};
const char* GgufValueTypeName(GgufValueType type);

// ggml tensor types, numbered as in the file. Every type ggml defines has a
// known block size, so Open() can range-check every tensor; only some can be
// dequantized (see ReadTensorFloat32).
enum class GgmlType : uint32_t {
  kF32 = 0,
  kF16 = 1,
  kQ4_0 = 2,
  kQ4_1 = 3,
  kQ5_0 = 6,
  kQ5_1 = 7,
  kQ8_0 = 8,
  kQ8_1 = 9,
  kQ2_K = 10,
  kQ3_K = 11,
  kQ4_K = 12,
  kQ5_K = 13,
  kQ6_K = 14,
  kQ8_K = 15,
  kIQ2_XXS = 16,
  kIQ2_XS = 17,
  kIQ3_XXS = 18,
  kIQ1_S = 19,
  kIQ4_NL = 20,
  kIQ3_S = 21,
  kIQ2_S = 22,
  kIQ4_XS = 23,
  kI8 = 24,
  kI16 = 25,
  kI32 = 26,
  kI64 = 27,
  kF64 = 28,
  kIQ1_M = 29,
  kBF16 = 30,
  kTQ1_0 = 34,
  kTQ2_0 = 35,
  kMXFP4 = 39,
};
// "Q4_1", or "type 77" for a number ggml does not define.
std::string GgmlTypeName(GgmlType type);
// Elements per block and bytes per block; false for an unknown type.
bool GgmlTypeBlockLayout(GgmlType type, int64_t* block_elements, int64_t* block_bytes);

// One metadata value. Integers keep their exact value: unsigned types in
// `uint_value`, signed ones in `int_value`; floats (f32 widened) in
// `float_value`; bool in `bool_value`. An array holds its element type and its
// elements, which may themselves be arrays.
struct GgufValue {
  GgufValueType type = GgufValueType::kUint8;
  uint64_t uint_value = 0;
  int64_t int_value = 0;
  double float_value = 0.0;
  bool bool_value = false;
  std::string string_value;
  GgufValueType array_type = GgufValueType::kUint8;
  std::vector<GgufValue> array;
};

struct GgufTensorInfo {
  std::string name;
  // GGUF order: ne[0] is the fastest-varying (contiguous) dimension.
  std::vector<int64_t> ne;
  GgmlType type = GgmlType::kF32;
  // Relative to the data section.
  uint64_t offset = 0;
  // Bytes the tensor occupies in the file.
  uint64_t nbytes = 0;
  int64_t numel() const;
  // Row-major shape, outermost first: [ne[n-1], ..., ne[0]].
  std::vector<int64_t> shape() const;
};

class GgufFile {
 public:
  // Maps and parses `path`. Errors: NotFound / PermissionDenied for a file
  // that cannot be opened; InvalidArgument for a malformed file (bad magic,
  // unknown value or tensor type, absurd count or length, truncation,
  // duplicate key or tensor name, tensor data out of range, bad alignment);
  // Unimplemented for a GGUF version other than 2 or 3 or a big-endian file.
  static absl::StatusOr<std::unique_ptr<GgufFile>> Open(const std::string& path);

  ~GgufFile();
  GgufFile(const GgufFile&) = delete;
  GgufFile& operator=(const GgufFile&) = delete;

  const std::string& path() const { return path_; }
  uint32_t version() const { return version_; }
  uint64_t alignment() const { return alignment_; }
  // Byte offset of the tensor data section in the file.
  uint64_t data_offset() const { return data_offset_; }
  uint64_t file_size() const { return size_; }

  // Metadata. Typed getters fail with NotFound for a missing key and
  // InvalidArgument for a value of another type; GetInt accepts every integer
  // type (OutOfRange for a uint64 above INT64_MAX), GetFloat every float or
  // integer type, and the array getters the same per element.
  bool Has(absl::string_view key) const;
  // The value itself, or nullptr.
  const GgufValue* Find(absl::string_view key) const;
  // Keys in file order.
  const std::vector<std::string>& keys() const { return keys_; }
  absl::StatusOr<std::string> GetString(absl::string_view key) const;
  absl::StatusOr<int64_t> GetInt(absl::string_view key) const;
  absl::StatusOr<double> GetFloat(absl::string_view key) const;
  absl::StatusOr<bool> GetBool(absl::string_view key) const;
  absl::StatusOr<std::vector<std::string>> GetStringArray(absl::string_view key) const;
  absl::StatusOr<std::vector<int64_t>> GetIntArray(absl::string_view key) const;
  absl::StatusOr<std::vector<double>> GetFloatArray(absl::string_view key) const;
  // Element count of an array value, without copying it.
  absl::StatusOr<int64_t> GetArrayLength(absl::string_view key) const;

  // Tensor infos in file order.
  const std::vector<GgufTensorInfo>& tensors() const { return tensors_; }
  // nullptr when absent.
  const GgufTensorInfo* FindTensor(absl::string_view name) const;
  // The tensor's bytes as stored (quantized blocks included).
  absl::StatusOr<absl::string_view> TensorBytes(absl::string_view name) const;

  // Dequantizes one tensor to a new f32 CPU tensor of shape
  // GgufTensorInfo::shape(). Supported: F32, F16, BF16, Q8_0, Q4_0, Q4_1,
  // Q5_0, Q5_1, the K-quants Q2_K, Q3_K, Q4_K, Q5_K, Q6_K (what llama.cpp's
  // Q4_K_M, Q5_K_M, Q6_K, Q8_0 ... files hold) and IQ4_NL, IQ4_XS; other
  // types (the 1-3-bit IQ ones, the ternary ones, MXFP4) give Unimplemented
  // naming the type and tensor; a missing name gives NotFound.
  absl::StatusOr<Tensor> ReadTensorFloat32(absl::string_view name) const;

 private:
  GgufFile() = default;
  absl::Status Parse();

  std::string path_;
  const uint8_t* data_ = nullptr;
  uint64_t size_ = 0;
  bool mapped_ = false;
  uint32_t version_ = 0;
  uint64_t alignment_ = 32;
  uint64_t data_offset_ = 0;
  std::vector<std::string> keys_;
  absl::flat_hash_map<std::string, GgufValue> metadata_;
  std::vector<GgufTensorInfo> tensors_;
  absl::flat_hash_map<std::string, size_t> tensor_index_;
};

}  // namespace quest::models

#endif  // QUEST_MODELS_GGUF_GGUF_FILE_H_
