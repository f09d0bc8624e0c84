// tflc-run BUILD_DIR --input FILE.npy... --output DIR [--stats FILE]
//
// The native reference consumer of a tflc build folder: what an app does, on LiteRT's C API.
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>

#include <cstdio>
#include <cstring>
#include <exception>
#include <new>
#include <string>

#include "common.h"
#include "runner.h"

namespace {

const char kUsage[] =
    "usage: tflc-run BUILD_DIR --input FILE.npy... --output DIR [--stats FILE] [--verbose] [--timeout S]\n"
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
    "  --timeout SECONDS         stop a run that takes longer (default 300; 0: no limit)\n"
    "  --no-isolate              run in this process instead of a child (a LiteRT crash then kills it)\n"
    "\n"
    "Exit status: 0 ok, 2 an error in what was given (one 'tflc-run: error:' line), 3 an internal error,\n"
    "137 killed by SIGKILL (out of memory).\n";

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

// `text` with control bytes and bytes that are not UTF-8 shown as \xNN, so that a message quoting a
// hostile file stays one printable line.
std::string printable(const std::string& text) {
  std::string out;
  static const char hex[] = "0123456789abcdef";
  for (size_t i = 0; i < text.size();) {
    unsigned char c = static_cast<unsigned char>(text[i]);
    size_t n = c < 0x80 ? 1 : c >= 0xc2 && c <= 0xdf ? 2 : c >= 0xe0 && c <= 0xef ? 3 : c >= 0xf0 && c <= 0xf4 ? 4 : 0;
    bool ok = n > 0 && i + n <= text.size() && c >= 0x20 && c != 0x7f;
    for (size_t k = 1; ok && k < n; ++k) ok = (static_cast<unsigned char>(text[i + k]) & 0xc0) == 0x80;
    if (ok) {
      out.append(text, i, n);
      i += n;
    } else {
      out += "\\x";
      out += hex[c >> 4];
      out += hex[c & 15];
      ++i;
    }
  }
  return out;
}

void say(int fd, const std::string& line) {
  std::string s = printable(line) + "\n";
  if (write(fd, s.data(), s.size()) < 0) return;
}

// Runs the build in this process; the exit status.
int run_here(const tflc::Request& req, const LogCapture& log) {
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

// Where the child was when it died, from its last progress line ("load FILE", "run FILE", "done FILE").
std::string where(const std::string& last) {
  size_t sp = last.find(' ');
  if (sp == std::string::npos) return "before the first stage";
  std::string what = last.substr(0, sp), file = last.substr(sp + 1);
  if (what == "load") return "while loading " + file;
  if (what == "run") return "while running " + file;
  return "after " + file;
}

// LiteRT trusts the models it maps: a stage file that is malformed yet matches the sha256 of a hostile
// manifest can kill the process (SIGSEGV) or hang it. The run happens in a forked child (before LiteRT
// is initialised), so such a death becomes one error line here. The child does all the work and takes
// its own memory readings; this parent only waits. A SIGKILL (the OOM killer, a cgroup limit) is passed
// on as exit 137, as the shell reports a killed process.
int run_in_child(tflc::Request req, const LogCapture& log, double timeout) {
  int pipefd[2];
  if (pipe2(pipefd, O_CLOEXEC) != 0) return run_here(req, log);
  pid_t pid = fork();
  if (pid < 0) {
    close(pipefd[0]);
    close(pipefd[1]);
    return run_here(req, log);
  }
  if (pid == 0) {
    close(pipefd[0]);
    req.progress_fd = pipefd[1];
    _exit(run_here(req, log));  // no atexit handlers or static destructors twice
  }
  close(pipefd[1]);
  std::string pending, last;
  auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(timeout);
  bool timed_out = false;
  for (;;) {
    int wait_ms = -1;
    if (timeout > 0) {
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
      wait_ms = static_cast<int>(std::max<long long>(0, std::min<long long>(left.count(), 1 << 30)));
    }
    pollfd p{pipefd[0], POLLIN, 0};
    int n = poll(&p, 1, wait_ms);
    if (n == 0) {
      timed_out = true;
      kill(pid, SIGKILL);
      break;
    }
    if (n < 0) {
      if (errno == EINTR) continue;
      break;
    }
    char buf[512];
    ssize_t got = read(pipefd[0], buf, sizeof buf);
    if (got < 0 && errno == EINTR) continue;
    if (got <= 0) break;  // the child has exited (or closed the pipe)
    pending.append(buf, static_cast<size_t>(got));
    for (size_t nl; (nl = pending.find('\n')) != std::string::npos; pending.erase(0, nl + 1)) last = pending.substr(0, nl);
  }
  close(pipefd[0]);
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (timed_out) {
    say(log.real(), "tflc-run: error: no result after " + std::to_string(static_cast<long long>(timeout)) + " s " +
                        where(last) + "; stopped it (raise --timeout for a model that needs longer)");
    return 2;
  }
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  int sig = WIFSIGNALED(status) ? WTERMSIG(status) : 0;
  const char* name = sigabbrev_np(sig);
  std::string signame = std::string("SIG") + (name ? name : std::to_string(sig).c_str());
  if (sig == SIGKILL) {
    say(log.real(), "tflc-run: error: killed (" + signame + ": out of memory, or stopped by the system) " + where(last));
    return 128 + sig;
  }
  if (last.compare(0, 5, "load ") != 0 && last.compare(0, 4, "run ") != 0) {  // not inside LiteRT: our bug
    say(log.real(), "tflc-run: internal error: crashed (" + signame + ") " + where(last) + "; please report it");
    return 3;
  }
  std::string why = log.errors();
  say(log.real(), "tflc-run: error: LiteRT crashed (" + signame + ") " + where(last) +
                      ": the stage file is malformed, or LiteRT has a bug" + (why.empty() ? "" : " (" + why + ")"));
  return 2;
}

int usage_error(const std::string& what) {
  fprintf(stderr, "tflc-run: error: %s (see tflc-run --help)\n", what.c_str());
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  tflc::Request req;
  bool have_dir = false, have_output = false, verbose = false, isolated = true;
  double timeout = 300;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "-h" || a == "--help") {
      fputs(kUsage, stdout);
      return 0;
    }
    if (a == "--verbose" || a == "-v") {
      verbose = true;
    } else if (a == "--no-isolate") {
      isolated = false;
    } else if (a == "--timeout") {
      char* end = nullptr;
      timeout = i + 1 < argc ? strtod(argv[++i], &end) : -1;
      if (!end || *end || !(timeout >= 0)) return usage_error("--timeout needs a number of seconds (0: none)");
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
  return isolated ? run_in_child(req, log, timeout) : run_here(req, log);
}
