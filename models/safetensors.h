#ifndef QUEST_MODELS_SAFETENSORS_H_
#define QUEST_MODELS_SAFETENSORS_H_

// Reading and writing the safetensors format:
//
//   [8 bytes: little-endian u64 N][N bytes: JSON header][data section]
//
// The header maps each tensor name to {"dtype", "shape", "data_offsets":
// [begin, end]} (offsets relative to the data section), plus an optional
// "__metadata__" object of string values. Quest tensors hold F32, F16 and
// BF16; the other safetensors dtypes are recognised in headers but cannot be
// read into a Tensor.
//
// Every error names the file and, where there is one, the tensor or field.

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "runtime/tensor.h"

namespace quest::models {

// The safetensors header refuses to be larger than this (a real header of a
// 400-layer model is a few MB; anything bigger is corrupt).
inline constexpr uint64_t kMaxSafetensorsHeaderBytes = 100ull << 20;

// One tensor as the header describes it.
struct SafetensorsEntry {
  std::string name;
  std::string dtype_name;      // as written: "F32", "BF16", "I64", ...
  std::optional<DType> dtype;  // unset for dtypes Quest cannot hold
  std::vector<int64_t> shape;
  uint64_t begin = 0;  // byte offsets into the data section
  uint64_t end = 0;
};

// An opened, validated safetensors file whose tensors are read on demand.
// Opening reads and checks only the header; Read() loads one tensor. Copies
// share the open file. Reads are thread-safe (pread).
class SafetensorsFile {
 public:
  // Reads and validates the header: sizes, JSON, dtypes, shapes, offsets
  // inside the data section and matching numel * dtype size. Errors:
  // NotFound when the file does not exist, InvalidArgument for bad contents.
  static absl::StatusOr<SafetensorsFile> Open(const std::string& path);

  const std::string& path() const { return path_; }
  // Tensor names, sorted.
  std::vector<std::string> names() const;
  size_t size() const { return entries_.size(); }
  bool contains(absl::string_view name) const { return entries_.contains(name); }
  // The header entry for `name`, or nullptr.
  const SafetensorsEntry* Find(absl::string_view name) const;
  const std::map<std::string, std::string>& metadata() const { return metadata_; }

  // Loads one tensor (in the file's dtype). NotFound for an unknown name,
  // InvalidArgument for a dtype Quest cannot hold, DataLoss for a short read.
  absl::StatusOr<Tensor> Read(absl::string_view name) const;
  // Loads every tensor.
  absl::StatusOr<absl::flat_hash_map<std::string, Tensor>> ReadAll() const;

 private:
  SafetensorsFile() = default;

  std::string path_;
  std::shared_ptr<int> fd_;  // closes on last release
  uint64_t data_start_ = 0;  // 8 + header length
  uint64_t data_size_ = 0;
  absl::flat_hash_map<std::string, SafetensorsEntry> entries_;
  std::map<std::string, std::string> metadata_;
};

// Reads every tensor of a safetensors file (SafetensorsFile::Open + ReadAll).
absl::StatusOr<absl::flat_hash_map<std::string, Tensor>> ReadSafetensors(
    const std::string& path);

// Writes `tensors` (CPU, any Quest dtype; written in the given order) and
// string `metadata` to `path`, replacing it atomically (a temporary file
// renamed into place). InvalidArgument for an empty, duplicate or reserved
// ("__metadata__") name, an undefined or non-CPU tensor; an I/O error
// (naming the path) when the file cannot be written.
absl::Status WriteSafetensors(const std::string& path,
                              const std::vector<std::pair<std::string, Tensor>>& tensors,
                              const std::map<std::string, std::string>& metadata = {});

// "F32" / "F16" / "BF16".
const char* SafetensorsDTypeName(DType dtype);

}  // namespace quest::models

#endif  // QUEST_MODELS_SAFETENSORS_H_
