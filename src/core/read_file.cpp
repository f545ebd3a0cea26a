#include "core/read_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace duality {
namespace {

// An open file descriptor, closed when it goes out of scope.
class Fd {
  public:
    explicit Fd(int fd) : fd_(fd) {}
    ~Fd() {
        if (fd_ >= 0) ::close(fd_);
    }
    Fd(const Fd&) = delete;
    Fd& operator=(const Fd&) = delete;
    int get() const { return fd_; }

  private:
    int fd_;
};

}  // namespace

Result<std::string> read_file(const std::filesystem::path& path) {
    const std::string name = path.string();
    Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    if (fd.get() < 0) {
        const int err = errno;
        if (err == ENOENT) return not_found(name + ": no such file");
        return io_error(name + ": cannot open: " + std::strerror(err));
    }
    struct stat st {};
    if (::fstat(fd.get(), &st) != 0)
        return io_error(name + ": cannot stat: " + std::strerror(errno));
    if (S_ISDIR(st.st_mode)) return invalid_argument(name + ": is a directory, not a file");
    std::string out;
    if (S_ISREG(st.st_mode)) out.reserve(static_cast<size_t>(st.st_size));
    char buf[1 << 16];
    for (;;) {
        const ssize_t n = ::read(fd.get(), buf, sizeof buf);
        if (n == 0) break;
        if (n < 0) {
            if (errno == EINTR) continue;
            return io_error(name + ": read failed: " + std::strerror(errno));
        }
        out.append(buf, static_cast<size_t>(n));
    }
    return out;
}

}  // namespace duality
