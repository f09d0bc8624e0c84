#include "files.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <memory>
#include <vector>

#include <openssl/evp.h>

#include "common.h"

namespace tflc {

Fd& Fd::operator=(Fd&& o) noexcept {
  if (this != &o) {
    if (fd_ >= 0) close(fd_);
    fd_ = o.release();
  }
  return *this;
}

Fd::~Fd() {
  if (fd_ >= 0) close(fd_);
}

Fd open_folder(const std::string& dir) {
  int fd = open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) {
    struct stat st;
    if (stat(dir.c_str(), &st) != 0) throw Error(dir + ": no such build folder");
    throw Error(dir + ": not a folder (expected a build folder with manifest.json)");
  }
  return Fd(fd);
}

Fd open_member(int dirfd, const std::string& name, const std::string& label) {
  // O_NONBLOCK: opening a FIFO planted under a stage's name must not hang; it is refused below.
  Fd fd(openat(dirfd, name.c_str(), O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC));
  struct stat st;
  if (fd.get() < 0 || fstat(fd.get(), &st) != 0 || !S_ISREG(st.st_mode))
    throw Error(label + " is missing or not a regular file inside the folder");
  return fd;
}

Fd open_user_file(const std::string& path) {
  Fd fd(open(path.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC));
  if (fd.get() < 0) {
    if (errno == ENOENT) throw Error(path + ": no such file");
    throw Error(path + ": cannot read (" + strerror(errno) + ")");
  }
  struct stat st;
  if (fstat(fd.get(), &st) != 0 || !S_ISREG(st.st_mode)) throw Error(path + ": not a regular file");
  return fd;
}

uint64_t file_size(int fd) {
  struct stat st;
  if (fstat(fd, &st) != 0) throw Error(std::string("fstat failed: ") + strerror(errno));
  return static_cast<uint64_t>(st.st_size);
}

std::string read_all(int fd, uint64_t cap, const std::string& label) {
  uint64_t size = file_size(fd);
  if (size > cap) throw Error(label + ": " + std::to_string(size) + " bytes is more than the cap of " + std::to_string(cap));
  return read_range(fd, 0, size, label);
}

std::string read_range(int fd, uint64_t offset, uint64_t len, const std::string& label) {
  std::string out(len, '\0');
  read_into(fd, offset, len, out.data(), label);
  return out;
}

void read_into(int fd, uint64_t offset, uint64_t len, void* dst, const std::string& label) {
  char* p = static_cast<char*>(dst);
  uint64_t got = 0;
  while (got < len) {
    ssize_t n = pread(fd, p + got, len - got, static_cast<off_t>(offset + got));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) throw Error(label + ": cannot read (" + (n < 0 ? strerror(errno) : "file shorter than expected") + ")");
    got += static_cast<uint64_t>(n);
  }
}

// libcrypto's SHA-256 (see README: audited, and several times faster than a portable C loop on a 1 GB stage).
std::string sha256_fd(int fd, const std::string& label) {
  std::unique_ptr<EVP_MD_CTX, void (*)(EVP_MD_CTX*)> ctx(EVP_MD_CTX_new(), EVP_MD_CTX_free);
  if (!ctx || EVP_DigestInit_ex(ctx.get(), EVP_sha256(), nullptr) != 1) throw Error("libcrypto: cannot start SHA-256");
  std::vector<unsigned char> buf(1 << 20);
  off_t off = 0;
  for (;;) {
    ssize_t n = pread(fd, buf.data(), buf.size(), off);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) throw Error(label + ": cannot read (" + strerror(errno) + ")");
    if (n == 0) break;
    EVP_DigestUpdate(ctx.get(), buf.data(), static_cast<size_t>(n));
    off += n;
  }
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_DigestFinal_ex(ctx.get(), md, &len);
  static const char hex[] = "0123456789abcdef";
  std::string out;
  for (unsigned int i = 0; i < len; ++i) {
    out += hex[md[i] >> 4];
    out += hex[md[i] & 15];
  }
  return out;
}

void write_atomic(const std::string& path, const std::string& head, const void* data, size_t len) {
  std::string tmp = path + ".tmp-" + std::to_string(getpid());
  Fd fd(open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0644));
  if (fd.get() < 0) throw Error(path + ": cannot write (" + strerror(errno) + ")");
  auto fail = [&](int err) {
    unlink(tmp.c_str());
    throw Error(path + ": cannot write (" + strerror(err) + ")");
  };
  for (auto [p, n] : {std::make_pair(head.data(), head.size()), std::make_pair(static_cast<const char*>(data), len)}) {
    for (size_t done = 0; done < n;) {
      ssize_t w = write(fd.get(), p + done, n - done);
      if (w < 0 && errno == EINTR) continue;
      if (w <= 0) fail(w < 0 ? errno : EIO);
      done += static_cast<size_t>(w);
    }
  }
  if (fsync(fd.get()) != 0 || rename(tmp.c_str(), path.c_str()) != 0) fail(errno);
}

MemSample read_memory() {
  MemSample m;
  FILE* f = fopen("/proc/self/status", "re");
  if (!f) return m;
  char line[256];
  while (fgets(line, sizeof line, f)) {
    unsigned long long kb = 0;
    if (sscanf(line, "VmHWM: %llu kB", &kb) == 1) m.vm_hwm = kb << 10;
    else if (sscanf(line, "VmRSS: %llu kB", &kb) == 1) m.vm_rss = kb << 10;
    else if (sscanf(line, "RssAnon: %llu kB", &kb) == 1) m.rss_anon = kb << 10;
    else if (sscanf(line, "RssFile: %llu kB", &kb) == 1) m.rss_file = kb << 10;
    else if (sscanf(line, "RssShmem: %llu kB", &kb) == 1) m.rss_shmem = kb << 10;
  }
  fclose(f);
  return m;
}

}  // namespace tflc
