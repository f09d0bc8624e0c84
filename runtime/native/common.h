// What every part of tflc-run shares: the one error type, dtypes, and an array in host memory.
#pragma once

#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

namespace tflc {

// A user-facing failure: main() prints it as one `tflc-run: error: ...` line and exits 2.
struct Error : std::runtime_error {
  explicit Error(const std::string& what) : std::runtime_error(what) {}
};

// A dtype a tensor crossing the manifest may have (the manifest's `DTYPES`).
struct DType {
  const char* name;   // numpy name, as in manifest.json
  const char* descr;  // .npy descr
  size_t size;        // bytes per element
  int litert;         // LiteRtElementType
};

// The dtype named `name`, or nullptr.
const DType* dtype_by_name(const std::string& name);
// The dtype of an .npy descr ('<f4', '|i1', ...), or nullptr; byte order '=' counts as little-endian.
const DType* dtype_by_descr(const std::string& descr);
// The dtype of a LiteRtElementType, or nullptr.
const DType* dtype_by_litert(int element_type);

// Product of `shape`; throws Error if it passes `cap` (so a hostile shape cannot overflow).
uint64_t element_count(const std::vector<int64_t>& shape, uint64_t cap);

std::string shape_str(const std::vector<int64_t>& shape);

// The dtype and shape of a dense, C-ordered array.
struct TensorMeta {
  const DType* dtype = nullptr;
  std::vector<int64_t> shape;
  uint64_t bytes() const { return element_count(shape, uint64_t{1} << 40) * dtype->size; }
};

}  // namespace tflc
