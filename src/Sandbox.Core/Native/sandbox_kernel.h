// Small kernel operations that both native parts need: the executor (sandbox_exec.c), whose CLONE_VM
// child may not touch errno, and sandbox-init (sandbox_init.c), which is built without a libc. So
// raw system calls only (sandbox_syscall.h), each returning 0 or -errno. The includer brings the
// errno and fcntl constants: the libc's headers (the executor) or the kernel's (sandbox-init), which
// cannot both be included in one file.
#ifndef SANDBOX_KERNEL_H
#define SANDBOX_KERNEL_H
#include "sandbox_syscall.h"

static inline unsigned long sbx_length(const char *s)
{
    unsigned long n = 0;
    while (s[n])
        n++;
    return n;
}

static inline int sbx_str_equal(const char *a, const char *b)
{
    while (*a && *a == *b) {
        a++;
        b++;
    }
    return *a == *b;
}

// Writes value (>= 0) in decimal at buf[n] and a NUL after it; returns the new length.
static inline unsigned long sbx_append_decimal(char *buf, unsigned long n, long value)
{
    char digits[24];
    int d = 0;
    do {
        digits[d++] = (char)('0' + value % 10);
        value /= 10;
    } while (value > 0);
    while (d > 0)
        buf[n++] = digits[--d];
    buf[n] = 0;
    return n;
}

#define SBX_PROC_PATH_SIZE 64

// "/proc/PID/NAME" into path (SBX_PROC_PATH_SIZE bytes; a longer NAME is cut short).
static inline void sbx_proc_path(char *path, long pid, const char *name)
{
    const char *prefix = "/proc/";
    unsigned long n = 0;
    while (prefix[n]) {
        path[n] = prefix[n];
        n++;
    }
    n = sbx_append_decimal(path, n, pid);
    path[n++] = '/';
    for (unsigned long i = 0; name[i] && n < SBX_PROC_PATH_SIZE - 1; i++)
        path[n++] = name[i];
    path[n] = 0;
}

// Writes map to /proc/PID/FILE (uid_map, gid_map or setgroups).
static inline long sbx_write_proc_file(long pid, const char *file, const char *map)
{
    char path[SBX_PROC_PATH_SIZE];
    sbx_proc_path(path, pid, file);
    long fd = SYS4(SYS_openat, AT_FDCWD, path, O_WRONLY | O_CLOEXEC, 0);
    if (fd < 0)
        return fd;
    // One write(2): the kernel takes a map in a single write only (user_namespaces(7)).
    long length = (long)sbx_length(map);
    long rc = SYS3(SYS_write, fd, map, length);
    SYS1(SYS_close, fd);
    return rc < 0 ? rc : rc == length ? 0 : -EIO;
}

// struct ifreq as SIOCGIFFLAGS and SIOCSIFFLAGS read it (include/uapi/linux/if.h): the interface
// name, then ifr_flags at the start of a 24-byte union; 40 bytes on 64-bit. Spelled out because
// linux/if.h needs the libc's struct sockaddr.
struct sbx_interface_flags {
    char name[16];
    short flags;
    char rest[22];
};

// ifconfig lo up, in the caller's network namespace.
static inline long sbx_loopback_up(void)
{
    long fd = SYS3(SYS_socket, 2 /* AF_INET */, 2 /* SOCK_DGRAM */ | O_CLOEXEC, 0);
    if (fd < 0)
        return fd;
    struct sbx_interface_flags request = {{'l', 'o'}, 0, {0}};
    long rc = SYS3(SYS_ioctl, fd, 0x8913 /* SIOCGIFFLAGS */, &request);
    if (rc == 0) {
        request.flags |= 0x1 /* IFF_UP */ | 0x40 /* IFF_RUNNING */;
        rc = SYS3(SYS_ioctl, fd, 0x8914 /* SIOCSIFFLAGS */, &request);
    }
    SYS1(SYS_close, fd);
    return rc;
}

#endif
