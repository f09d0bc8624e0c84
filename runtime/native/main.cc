// tflc-run BUILD_DIR --input FILE.npy... --output DIR [--stats FILE]
//
// The native reference consumer of a tflc build folder: what an app does, on LiteRT's C API.
#include <sys/mman.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <exception>
#include <new>
#include <string>

#include "common.h"
#include "runner.h"

namespace {

const char kUsage[] =
    "usage: tflc-run BUILD_DIR --input FILE.npy... --output DIR [--stats FILE] [--verbose]\n"
    "\n"
    "Runs a tflc build folder stage by stage on LiteRT's CompiledModel C API (CPU): checks manifest.json\n"
    "and each stage's sha256, feeds each stage from its manifest sources, frees handoff tensors after\n"
    "their drop_after stage and each stage before the next loads, and writes the model outputs.\n"
    "\n"
    "  --input FILE.npy...       one .npy per model input, in manifest order; or NAME=FILE.npy each\n"
    "                            (dtype and shape must equal the manifest's: no conversion)\n"
    "  --output DIR              where each model output is written as <name>.npy (bytes outside\n"
    "                            [A-Za-z0-9._-] become '_'; a leading '.' gets a '_' before it)\n"
    "  --stats FILE              write the memory/time JSON line there instead of stderr\n"
    "  --verbose                 let LiteRT's own INFO/WARNING log lines through to stderr\n"
    "\n"
    "Exit status: 0 ok, 2 an error in what was given (one 'tflc-run: error:' line), 3 an internal error.\n";

// LiteRT logs INFO and WARNING lines to stderr for every environment and stage, and the 2.3 C API exports
// no way to set its log level. They go to a memory file instead; tflc-run's own lines go to the real
// stderr, and LiteRT's ERROR lines (its reason for a refusal) are added to tflc-run's error line.
class LogCapture {
 public:
  explicit LogCapture(bool on) {
    if (!on) return;
    real_ = dup(2);
    mem_ = memfd_create("litert-log", MFD_CLOEXEC);
    if (real_ < 0 || mem_ < 0 || dup2(mem_, 2) < 0) {
      if (real_ >= 0) close(real_);
      if (mem_ >= 0) close(mem_);
      real_ = mem_ = -1;
    }
  }
  ~LogCapture() {
    if (real_ < 0) return;
    dup2(real_, 2);
    close(real_);
    close(mem_);
  }
  int real() const { return real_ < 0 ? 2 : real_; }

  // LiteRT's ERROR lines so far, without repeats, joined by "; ".
  std::string errors() const {
    if (mem_ < 0) return "";
    std::string text, out, line;
    char buf[4096];
    for (off_t off = 0;;) {
      ssize_t n = pread(mem_, buf, sizeof buf, off);
      if (n <= 0 || text.size() > (1 << 20)) break;
      text.append(buf, static_cast<size_t>(n));
      off += n;
    }
    for (size_t start = 0; start < text.size();) {
      size_t end = text.find('\n', start);
      if (end == std::string::npos) end = text.size();
      line = text.substr(start, end - start);
      start = end + 1;
      if (line.compare(0, 6, "ERROR:") != 0) continue;
      line = line.substr(line.find_first_not_of(' ', 6) == std::string::npos ? 6 : line.find_first_not_of(' ', 6));
      if (out.find(line) == std::string::npos) out += (out.empty() ? "" : "; ") + line;
    }
    return out.substr(0, 500);
  }

 private:
  int real_ = -1, mem_ = -1;
};

void say(int fd, const std::string& line) {
  std::string s = line + "\n";
  if (write(fd, s.data(), s.size()) < 0) return;
}

int usage_error(const std::string& what) {
  fprintf(stderr, "tflc-run: error: %s (see tflc-run --help)\n", what.c_str());
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  tflc::Request req;
  bool have_dir = false, have_output = false, verbose = false;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "-h" || a == "--help") {
      fputs(kUsage, stdout);
      return 0;
    }
    if (a == "--verbose" || a == "-v") {
      verbose = true;
    } else if (a == "--input" || a == "-i") {
      int n = 0;
      while (i + 1 < argc && strncmp(argv[i + 1], "--", 2) != 0) req.inputs.push_back(argv[++i]), ++n;
      if (!n) return usage_error("--input needs at least one FILE.npy");
    } else if (a == "--output" || a == "-o" || a == "--stats") {
      if (i + 1 >= argc) return usage_error(a + " needs a value");
      (a == "--stats" ? req.stats_path : req.output_dir) = argv[++i];
      have_output = have_output || a != "--stats";
    } else if (a.size() > 1 && a[0] == '-') {
      return usage_error("unknown option " + a);
    } else if (!have_dir) {
      req.build_dir = a;
      have_dir = true;
    } else {
      return usage_error("unexpected argument " + a);
    }
  }
  if (!have_dir) return usage_error("BUILD_DIR is missing");
  if (!have_output) return usage_error("--output DIR is missing");
  LogCapture log(!verbose);
  req.stats_fd = log.real();
  try {
    tflc::run(req);
  } catch (const tflc::Error& e) {
    std::string why = log.errors();
    say(log.real(), std::string("tflc-run: error: ") + e.what() + (why.empty() ? "" : " (" + why + ")"));
    return 2;
  } catch (const std::bad_alloc&) {
    say(log.real(), "tflc-run: error: out of memory");
    return 2;
  } catch (const std::exception& e) {
    say(log.real(), std::string("tflc-run: internal error: ") + e.what() + "; please report it");
    return 3;
  }
  return 0;
}
