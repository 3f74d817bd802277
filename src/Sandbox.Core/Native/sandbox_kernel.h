// Small kernel operations that both native parts need: the executor (sandbox_exec.c), whose CLONE_VM
// child may not touch errno, and sandbox-init (sandbox_init.c), which is built without a libc. So
// raw system calls only (sandbox_syscall.h), each returning 0 or -errno. The includer brings the
// errno, fcntl and mount constants: the libc's headers (the executor) or the kernel's
// (sandbox-init), which cannot both be included in one file.
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

// "/dev/" or "/oldroot/dev/" and a name, into path (room for the longest).
static inline const char *sbx_dev_path(char path[32], const char *prefix, const char *name)
{
    int n = 0;
    while (*prefix)
        path[n++] = *prefix++;
    while (*name && n < 31)
        path[n++] = *name++;
    path[n] = 0;
    return path;
}

// The sandbox's /dev, as bubblewrap builds it, made at /dev on the scratch root with the host's tree
// at /oldroot: a tmpfs; the host's harmless devices bound in, since device nodes cannot be made in a
// user namespace (mknod(2) needs CAP_MKNOD in the initial one); the usual links; a private devpts
// (newinstance: the host's terminals are out of reach; Documentation/filesystems/devpts.rst; no gid=,
// as gid 5 may not be mapped) and a tmpfs at /dev/shm. The plan then binds it onto its root's /dev
// (RootfsPlanner.AddDev). One implementation for both builders: the executor (SBX_OP_BUILD_DEV)
// and a holder's maker (sandbox_init.c, prepare_mount_namespace), whose prepared mount namespace a
// plan may join instead. Every entry first, then the mounts. Arrays of chars, not of pointers:
// sandbox-init has no relocations. 0, or -errno with *part saying what it was making.
// The parts, in the order they are made (the executor reports the part of a failure as struct
// sbx_report's value; BuildDevStep.Part in RuntimePlan.cs mirrors these values):
enum sbx_dev_part {
    SBX_DEV_TMPFS = 1,        // /dev and its tmpfs
    SBX_DEV_ENTRIES = 2,      // the device files, links, pts and shm directories
    SBX_DEV_HOST_DEVICES = 3, // the binds of the host's devices
    SBX_DEV_DEVPTS = 4,       // the private devpts
    SBX_DEV_SHM = 5,          // the tmpfs at /dev/shm
};

static inline long sbx_build_dev(int *part)
{
    static const char devices[][8] = {"null", "zero", "full", "random", "urandom", "tty"};
    static const char links[][2][16] = {
        {"/proc/self/fd", "fd"}, {"/proc/self/fd/0", "stdin"}, {"/proc/self/fd/1", "stdout"},
        {"/proc/self/fd/2", "stderr"}, {"/proc/kcore", "core"}, {"pts/ptmx", "ptmx"},
    };
    char path[32], source[32];
    *part = SBX_DEV_TMPFS;
    long rc = SYS3(SYS_mkdirat, AT_FDCWD, "/dev", 0755);
    if (rc == -EEXIST) // the empty mount point a host program's /dev was mounted on (RootfsPlanner.AddHostProgramRuntime)
        rc = 0;
    if (rc == 0)
        rc = SYS5(SYS_mount, "tmpfs", "/dev", "tmpfs", MS_NOSUID | MS_NOEXEC, "mode=0755");
    if (rc == 0)
        *part = SBX_DEV_ENTRIES;
    for (unsigned i = 0; rc == 0 && i < sizeof devices / sizeof devices[0]; i++) {
        rc = SYS4(SYS_openat, AT_FDCWD, sbx_dev_path(path, "/dev/", devices[i]),
                  O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOCTTY | O_NOFOLLOW, 0666);
        if (rc >= 0)
            rc = SYS1(SYS_close, rc);
    }
    for (unsigned i = 0; rc == 0 && i < sizeof links / sizeof links[0]; i++)
        rc = SYS3(SYS_symlinkat, links[i][0], AT_FDCWD, sbx_dev_path(path, "/dev/", links[i][1]));
    if (rc == 0)
        rc = SYS3(SYS_mkdirat, AT_FDCWD, "/dev/pts", 0755);
    if (rc == 0)
        rc = SYS3(SYS_mkdirat, AT_FDCWD, "/dev/shm", 0777);
    if (rc == 0)
        *part = SBX_DEV_HOST_DEVICES;
    for (unsigned i = 0; rc == 0 && i < sizeof devices / sizeof devices[0]; i++)
        rc = SYS5(SYS_mount, sbx_dev_path(source, "/oldroot/dev/", devices[i]), sbx_dev_path(path, "/dev/", devices[i]), 0, MS_BIND, 0);
    if (rc == 0) {
        *part = SBX_DEV_DEVPTS;
        rc = SYS5(SYS_mount, "devpts", "/dev/pts", "devpts", MS_NOSUID | MS_NOEXEC, "newinstance,ptmxmode=0666,mode=0620");
    }
    if (rc == 0) {
        *part = SBX_DEV_SHM;
        rc = SYS5(SYS_mount, "tmpfs", "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777");
    }
    return rc;
}

#endif
