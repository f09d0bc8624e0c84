// NumPy .npy files (format versions 1-3): read one array from a file, write one.
#pragma once

#include <string>

#include "common.h"

namespace tflc {

// The array in `path`. Its header is checked (magic, version, descr, C order, shape) and the data size
// must equal shape x item size exactly; `max_bytes` caps the data before anything is allocated.
Array read_npy(const std::string& path, uint64_t max_bytes);

// The bytes of an .npy (format 1.0) holding `a`, as numpy.save writes it.
std::string npy_bytes(const Array& a);

}  // namespace tflc
