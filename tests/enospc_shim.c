/* T7 fault injection (a test helper): LD_PRELOAD into a real ckstore process, it counts the write-like calls whose
 * target lies under $CKFAULT_ROOT -- write, pwrite, writev, pwritev, fsync, fdatasync, ftruncate, fallocate,
 * rename(at/at2), link(at), mkdir(at), and open/openat/creat with O_CREAT -- and from the $CKFAULT_AT-th on makes
 * every one fail with ENOSPC without doing it (a full disk stays full). $CKFAULT_COUNT names a file that gets the
 * number of calls counted, at exit. Interposing libc catches Python's os module, io.FileIO and LMDB's C code alike.
 * Build: cc -shared -fPIC -O1 -o enospc_shim.so enospc_shim.c -ldl */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <unistd.h>

static const char *root;
static size_t root_len;
static long fail_at;
static long counted;

__attribute__((constructor)) static void init(void) {
    root = getenv("CKFAULT_ROOT");
    root_len = root ? strlen(root) : 0;
    const char *at = getenv("CKFAULT_AT");
    fail_at = at ? atol(at) : 0;
}

__attribute__((destructor)) static void fini(void) {
    const char *out = getenv("CKFAULT_COUNT");
    if (!out) return;
    char buf[32];
    int n = snprintf(buf, sizeof buf, "%ld\n", __atomic_load_n(&counted, __ATOMIC_SEQ_CST));
    int fd = (int)syscall(SYS_openat, AT_FDCWD, out, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd >= 0) {
        syscall(SYS_write, fd, buf, (size_t)n);
        syscall(SYS_close, fd);
    }
}

static int under(const char *path) {
    return root_len && path && strncmp(path, root, root_len) == 0 && (path[root_len] == '/' || !path[root_len]);
}

static int fd_under(int fd) {
    char link[64], path[4096];
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    ssize_t n = readlink(link, path, sizeof path - 1);
    if (n <= 0) return 0;
    path[n] = 0;
    return under(path);
}

static int at_under(int dirfd, const char *p) {
    char buf[8192];
    if (!p) return 0;
    if (p[0] == '/') return under(p);
    if (dirfd == AT_FDCWD) {
        if (!getcwd(buf, 4096)) return 0;
    } else {
        char link[64];
        snprintf(link, sizeof link, "/proc/self/fd/%d", dirfd);
        ssize_t n = readlink(link, buf, 4095);
        if (n <= 0) return 0;
        buf[n] = 0;
    }
    strncat(buf, "/", sizeof buf - strlen(buf) - 1);
    strncat(buf, p, sizeof buf - strlen(buf) - 1);
    return under(buf);
}

/* 1: fail this call with ENOSPC */
static int hit(int relevant) {
    if (!relevant) return 0;
    long n = __atomic_add_fetch(&counted, 1, __ATOMIC_SEQ_CST);
    if (fail_at > 0 && n >= fail_at) {
        errno = ENOSPC;
        return 1;
    }
    return 0;
}

#define REAL(name, ret, ...) static ret (*real_##name)(__VA_ARGS__); \
    if (!real_##name) real_##name = (ret (*)(__VA_ARGS__))dlsym(RTLD_NEXT, #name)

ssize_t write(int fd, const void *b, size_t n) {
    REAL(write, ssize_t, int, const void *, size_t);
    if (hit(fd > 2 && fd_under(fd))) return -1;
    return real_write(fd, b, n);
}
ssize_t pwrite(int fd, const void *b, size_t n, off_t o) {
    REAL(pwrite, ssize_t, int, const void *, size_t, off_t);
    if (hit(fd_under(fd))) return -1;
    return real_pwrite(fd, b, n, o);
}
ssize_t pwrite64(int fd, const void *b, size_t n, off_t o) {
    REAL(pwrite64, ssize_t, int, const void *, size_t, off_t);
    if (hit(fd_under(fd))) return -1;
    return real_pwrite64(fd, b, n, o);
}
ssize_t writev(int fd, const struct iovec *v, int c) {
    REAL(writev, ssize_t, int, const struct iovec *, int);
    if (hit(fd > 2 && fd_under(fd))) return -1;
    return real_writev(fd, v, c);
}
ssize_t pwritev(int fd, const struct iovec *v, int c, off_t o) {
    REAL(pwritev, ssize_t, int, const struct iovec *, int, off_t);
    if (hit(fd_under(fd))) return -1;
    return real_pwritev(fd, v, c, o);
}
ssize_t pwritev64(int fd, const struct iovec *v, int c, off_t o) {
    REAL(pwritev64, ssize_t, int, const struct iovec *, int, off_t);
    if (hit(fd_under(fd))) return -1;
    return real_pwritev64(fd, v, c, o);
}
int fsync(int fd) {
    REAL(fsync, int, int);
    if (hit(fd_under(fd))) return -1;
    return real_fsync(fd);
}
int fdatasync(int fd) {
    REAL(fdatasync, int, int);
    if (hit(fd_under(fd))) return -1;
    return real_fdatasync(fd);
}
int ftruncate(int fd, off_t len) {
    REAL(ftruncate, int, int, off_t);
    if (hit(fd_under(fd))) return -1;
    return real_ftruncate(fd, len);
}
int ftruncate64(int fd, off_t len) {
    REAL(ftruncate64, int, int, off_t);
    if (hit(fd_under(fd))) return -1;
    return real_ftruncate64(fd, len);
}
int fallocate(int fd, int mode, off_t o, off_t len) {
    REAL(fallocate, int, int, int, off_t, off_t);
    if (hit(fd_under(fd))) return -1;
    return real_fallocate(fd, mode, o, len);
}
int fallocate64(int fd, int mode, off_t o, off_t len) {
    REAL(fallocate64, int, int, int, off_t, off_t);
    if (hit(fd_under(fd))) return -1;
    return real_fallocate64(fd, mode, o, len);
}
int rename(const char *a, const char *b) {
    REAL(rename, int, const char *, const char *);
    if (hit(at_under(AT_FDCWD, b) || at_under(AT_FDCWD, a))) return -1;
    return real_rename(a, b);
}
int renameat(int da, const char *a, int db, const char *b) {
    REAL(renameat, int, int, const char *, int, const char *);
    if (hit(at_under(db, b) || at_under(da, a))) return -1;
    return real_renameat(da, a, db, b);
}
int renameat2(int da, const char *a, int db, const char *b, unsigned f) {
    REAL(renameat2, int, int, const char *, int, const char *, unsigned);
    if (hit(at_under(db, b) || at_under(da, a))) return -1;
    return real_renameat2(da, a, db, b, f);
}
int link(const char *a, const char *b) {
    REAL(link, int, const char *, const char *);
    if (hit(at_under(AT_FDCWD, b))) return -1;
    return real_link(a, b);
}
int linkat(int da, const char *a, int db, const char *b, int f) {
    REAL(linkat, int, int, const char *, int, const char *, int);
    if (hit(at_under(db, b))) return -1;
    return real_linkat(da, a, db, b, f);
}
int mkdir(const char *p, mode_t m) {
    REAL(mkdir, int, const char *, mode_t);
    if (hit(at_under(AT_FDCWD, p))) return -1;
    return real_mkdir(p, m);
}
int mkdirat(int d, const char *p, mode_t m) {
    REAL(mkdirat, int, int, const char *, mode_t);
    if (hit(at_under(d, p))) return -1;
    return real_mkdirat(d, p, m);
}

#define OPEN_MODE(flags) mode_t mode = 0; \
    if ((flags) & (O_CREAT | __O_TMPFILE)) { va_list ap; va_start(ap, flags); mode = va_arg(ap, mode_t); va_end(ap); }

int open(const char *p, int flags, ...) {
    OPEN_MODE(flags);
    REAL(open, int, const char *, int, ...);
    if ((flags & O_CREAT) && hit(at_under(AT_FDCWD, p))) return -1;
    return real_open(p, flags, mode);
}
int open64(const char *p, int flags, ...) {
    OPEN_MODE(flags);
    REAL(open64, int, const char *, int, ...);
    if ((flags & O_CREAT) && hit(at_under(AT_FDCWD, p))) return -1;
    return real_open64(p, flags, mode);
}
int openat(int d, const char *p, int flags, ...) {
    OPEN_MODE(flags);
    REAL(openat, int, int, const char *, int, ...);
    if ((flags & O_CREAT) && hit(at_under(d, p))) return -1;
    return real_openat(d, p, flags, mode);
}
int openat64(int d, const char *p, int flags, ...) {
    OPEN_MODE(flags);
    REAL(openat64, int, int, const char *, int, ...);
    if ((flags & O_CREAT) && hit(at_under(d, p))) return -1;
    return real_openat64(d, p, flags, mode);
}
int creat(const char *p, mode_t m) {
    REAL(creat, int, const char *, mode_t);
    if (hit(at_under(AT_FDCWD, p))) return -1;
    return real_creat(p, m);
}
int creat64(const char *p, mode_t m) {
    REAL(creat64, int, const char *, mode_t);
    if (hit(at_under(AT_FDCWD, p))) return -1;
    return real_creat64(p, m);
}
