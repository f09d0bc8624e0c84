#include "common.h"

namespace tflc {
namespace {

// LiteRtElementType numbers are TfLiteType's (litert_model_types.h).
const DType kDTypes[] = {
    {"float32", "<f4", 4, 1},    {"float16", "<f2", 2, 10},    {"float64", "<f8", 8, 11},
    {"int8", "|i1", 1, 9},       {"int16", "<i2", 2, 7},       {"int32", "<i4", 4, 2},
    {"int64", "<i8", 8, 4},      {"uint8", "|u1", 1, 3},       {"uint16", "<u2", 2, 17},
    {"uint32", "<u4", 4, 16},    {"uint64", "<u8", 8, 13},     {"bool", "|b1", 1, 6},
    {"complex64", "<c8", 8, 8},  {"complex128", "<c16", 16, 12},
};

}  // namespace

const DType* dtype_by_name(const std::string& name) {
  for (const DType& d : kDTypes)
    if (name == d.name) return &d;
  return nullptr;
}

const DType* dtype_by_descr(const std::string& descr) {
  if (descr.size() < 2) return nullptr;
  std::string d = descr;
  if (d[0] == '=') d[0] = '<';  // native order; this runner is built for little-endian hosts only
  if (d[0] == '<' && (d == "<i1" || d == "<u1" || d == "<b1")) d[0] = '|';
  for (const DType& t : kDTypes)
    if (d == t.descr) return &t;
  return nullptr;
}

const DType* dtype_by_litert(int element_type) {
  for (const DType& d : kDTypes)
    if (element_type == d.litert) return &d;
  return nullptr;
}

uint64_t element_count(const std::vector<int64_t>& shape, uint64_t cap) {
  uint64_t n = 1;
  for (int64_t d : shape) {
    if (d < 0) throw Error("negative dimension in shape " + shape_str(shape));
    if (d == 0) return 0;
    if (n > cap / static_cast<uint64_t>(d))
      throw Error("shape " + shape_str(shape) + " has more than " + std::to_string(cap) + " elements");
    n *= static_cast<uint64_t>(d);
  }
  return n;
}

std::string shape_str(const std::vector<int64_t>& shape) {
  std::string s = "(";
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i) s += ", ";
    s += std::to_string(shape[i]);
  }
  if (shape.size() == 1) s += ",";
  return s + ")";
}

}  // namespace tflc
