#include "npy.h"

#include <algorithm>
#include <cstring>

#include "files.h"

namespace tflc {
namespace {

constexpr char kMagic[] = "\x93NUMPY";
constexpr size_t kMaxHeader = 1 << 16;  // numpy's own headers are under 200 bytes for any array we take

// The header dict, a Python literal such as {'descr': '<f4', 'fortran_order': False, 'shape': (1, 3), }.
struct Header {
  std::string descr;
  bool fortran = false;
  std::vector<int64_t> shape;
  bool has_descr = false, has_order = false, has_shape = false;
};

class HeaderParser {
 public:
  HeaderParser(const std::string& text, const std::string& label) : s_(text), label_(label) {}

  Header parse() {
    Header h;
    expect('{');
    while (!peek('}')) {
      std::string key = string();
      expect(':');
      if (key == "descr") {
        if (!peek('\'') && !peek('"')) fail("structured dtypes are not supported");
        h.descr = string();
        h.has_descr = true;
      } else if (key == "fortran_order") {
        h.fortran = boolean();
        h.has_order = true;
      } else if (key == "shape") {
        h.shape = tuple();
        h.has_shape = true;
      } else {
        fail("unknown header key '" + key + "'");
      }
      if (!peek('}')) expect(',');
    }
    expect('}');
    skip();
    if (pos_ != s_.size()) fail("trailing bytes after the header");
    if (!h.has_descr || !h.has_order || !h.has_shape) fail("header lacks descr, fortran_order or shape");
    return h;
  }

 private:
  [[noreturn]] void fail(const std::string& why) const { throw Error(label_ + ": not a readable .npy (" + why + ")"); }

  void skip() {
    while (pos_ < s_.size() && (s_[pos_] == ' ' || s_[pos_] == '\n' || s_[pos_] == '\t')) ++pos_;
  }

  bool peek(char c) {
    skip();
    return pos_ < s_.size() && s_[pos_] == c;
  }

  void expect(char c) {
    if (!peek(c)) fail(std::string("expected '") + c + "' in the header");
    ++pos_;
  }

  std::string string() {
    skip();
    if (pos_ >= s_.size() || (s_[pos_] != '\'' && s_[pos_] != '"')) fail("expected a quoted string in the header");
    char q = s_[pos_++];
    size_t end = s_.find(q, pos_);
    if (end == std::string::npos || end - pos_ > 64) fail("unterminated string in the header");
    std::string out = s_.substr(pos_, end - pos_);
    pos_ = end + 1;
    return out;
  }

  bool boolean() {
    skip();
    for (const char* word : {"True", "False"}) {
      size_t n = strlen(word);
      if (s_.compare(pos_, n, word) == 0) {
        pos_ += n;
        return word[0] == 'T';
      }
    }
    fail("expected True or False in the header");
  }

  std::vector<int64_t> tuple() {
    std::vector<int64_t> dims;
    expect('(');
    while (!peek(')')) {
      skip();
      int64_t d = 0;
      size_t start = pos_;
      while (pos_ < s_.size() && s_[pos_] >= '0' && s_[pos_] <= '9') {
        if (d > (int64_t{1} << 40)) fail("dimension too large");
        d = d * 10 + (s_[pos_++] - '0');
      }
      if (pos_ == start) fail("expected a dimension in the shape");
      if (dims.size() == 32) fail("more than 32 dimensions");
      dims.push_back(d);
      if (!peek(')')) expect(',');
    }
    expect(')');
    return dims;
  }

  const std::string& s_;
  const std::string& label_;
  size_t pos_ = 0;
};

}  // namespace

TensorMeta read_npy(const std::string& path, const std::function<void(const TensorMeta&)>& check,
                    const std::function<void*(const TensorMeta&)>& dest) {
  Fd fd = open_user_file(path);
  uint64_t size = file_size(fd.get());
  std::string head = read_range(fd.get(), 0, std::min<uint64_t>(size, 12), path);
  if (head.size() < 10 || head.compare(0, 6, kMagic, 6) != 0) throw Error(path + ": not an .npy file (no NUMPY magic)");
  int major = static_cast<unsigned char>(head[6]);
  if (major < 1 || major > 3) throw Error(path + ": .npy format version " + std::to_string(major) + " is not supported");
  size_t hlen, hstart;
  if (major == 1) {
    hlen = static_cast<unsigned char>(head[8]) | static_cast<size_t>(static_cast<unsigned char>(head[9])) << 8;
    hstart = 10;
  } else {
    if (head.size() < 12) throw Error(path + ": truncated .npy header");
    hlen = 0;
    for (int i = 3; i >= 0; --i) hlen = hlen << 8 | static_cast<unsigned char>(head[8 + i]);
    hstart = 12;
  }
  if (hlen > kMaxHeader || hstart + hlen > size) throw Error(path + ": truncated or oversized .npy header");
  std::string text = read_range(fd.get(), hstart, hlen, path);
  Header h = HeaderParser(text, path).parse();
  TensorMeta a;
  a.dtype = dtype_by_descr(h.descr);
  if (!a.dtype) throw Error(path + ": dtype '" + h.descr + "' is not supported (little-endian numeric or bool only)");
  a.shape = h.shape;
  uint64_t count = element_count(a.shape, uint64_t{1} << 40);
  if (h.fortran && a.shape.size() > 1 && count > 1)
    throw Error(path + ": Fortran-ordered array; save it C-ordered (numpy.ascontiguousarray)");
  check(a);
  uint64_t want = count * a.dtype->size;
  if (size - hstart - hlen != want)
    throw Error(path + ": holds " + std::to_string(size - hstart - hlen) + " bytes of data, the header's shape " +
                shape_str(a.shape) + " needs " + std::to_string(want));
  read_into(fd.get(), hstart + hlen, want, dest(a), path);
  return a;
}

std::string npy_header(const TensorMeta& a) {
  std::string dict = std::string("{'descr': '") + a.dtype->descr + "', 'fortran_order': False, 'shape': " +
                     shape_str(a.shape) + ", }";
  // numpy pads with spaces so that magic + length + header + '\n' is a multiple of 64.
  size_t total = 10 + dict.size() + 1;
  dict.append((64 - total % 64) % 64, ' ');
  dict += '\n';
  std::string out(kMagic, 6);
  out += '\x01';
  out += '\x00';
  out += static_cast<char>(dict.size() & 0xff);
  out += static_cast<char>(dict.size() >> 8);
  out += dict;
  return out;
}

}  // namespace tflc
