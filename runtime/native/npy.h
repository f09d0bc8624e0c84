// NumPy .npy files (format versions 1-3): read one array from a file, write one.
#pragma once

#include <functional>
#include <string>

#include "common.h"

namespace tflc {

// Reads the array in `path`: its header is checked (magic, version, descr, C order, shape) and handed to
// `check` before any data is read; the data size must equal shape x item size exactly, and is read into
// the memory `dest` returns for it (meta.bytes() long).
TensorMeta read_npy(const std::string& path, const std::function<void(const TensorMeta&)>& check,
                    const std::function<void*(const TensorMeta&)>& dest);

// The header of an .npy (format 1.0) for such an array, as numpy.save writes it; the data follows it.
std::string npy_header(const TensorMeta& meta);

}  // namespace tflc
