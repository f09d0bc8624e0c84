// NumPy .npy files (format versions 1-3): read one array from a file, write one.
#pragma once

#include <functional>
#include <string>

#include "common.h"

namespace tflc {

// The array in `path`. Its header is checked (magic, version, descr, C order, shape), then handed to
// `check` (dtype and shape set, no data) before any data is read; the data size must then equal
// shape x item size exactly.
Array read_npy(const std::string& path, const std::function<void(const Array&)>& check);

// The bytes of an .npy (format 1.0) holding `a`, as numpy.save writes it.
std::string npy_bytes(const Array& a);

}  // namespace tflc
