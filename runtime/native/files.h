// Files: members of the build folder opened safely, their sha256, whole small files, atomic writes,
// and the process's memory counters from /proc/self/status.
#pragma once

#include <cstdint>
#include <string>

namespace tflc {

// An owned file descriptor.
class Fd {
 public:
  Fd() = default;
  explicit Fd(int fd) : fd_(fd) {}
  Fd(Fd&& o) noexcept : fd_(o.release()) {}
  Fd& operator=(Fd&& o) noexcept;
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  ~Fd();
  int get() const { return fd_; }
  int release() {
    int fd = fd_;
    fd_ = -1;
    return fd;
  }

 private:
  int fd_ = -1;
};

// The build folder, opened once; every member is opened relative to it.
Fd open_folder(const std::string& dir);

// A regular file `name` directly inside the folder `dirfd` (no symlink, device or FIFO); `label` names it in errors.
Fd open_member(int dirfd, const std::string& name, const std::string& label);

// A regular file the user named (symlinks followed).
Fd open_user_file(const std::string& path);

uint64_t file_size(int fd);

// All bytes of an open file, refusing one bigger than `cap`.
std::string read_all(int fd, uint64_t cap, const std::string& label);

// `len` bytes at `offset` of an open file; a short file is an error.
std::string read_range(int fd, uint64_t offset, uint64_t len, const std::string& label);
void read_into(int fd, uint64_t offset, uint64_t len, void* dst, const std::string& label);

// Lowercase hex SHA-256 of an open file's contents, read from offset 0.
std::string sha256_fd(int fd, const std::string& label);

// Write `head` then `len` bytes at `data` to `path` through a temporary file and rename, so a crash
// leaves no half-written file.
void write_atomic(const std::string& path, const std::string& head, const void* data = nullptr, size_t len = 0);

// One sample of the kernel's memory counters for this process (bytes).
struct MemSample {
  uint64_t vm_hwm = 0;     // peak resident set since the process started
  uint64_t vm_rss = 0;     // resident now = anon + file + shmem
  uint64_t rss_anon = 0;   // anonymous pages: heap, arenas, copies (what a phone cannot drop)
  uint64_t rss_file = 0;   // file-backed pages: the mmapped stage files (the OS can drop and re-read them)
  uint64_t rss_shmem = 0;
};

MemSample read_memory();

}  // namespace tflc
