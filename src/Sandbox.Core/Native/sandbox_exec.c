// sandbox_exec: the native executor of a runtime plan.
//
// Why this is C and not C#: see ../../../DESIGN.md ("no managed code between clone and exec").
// A .NET process has several threads, so unshare(CLONE_NEWUSER) fails with EINVAL
// (user_namespaces(7)), and a cloned child that runs managed code can hang on a GC suspension it
// inherited. Everything here is a dumb executor: the C# side builds every string, pointer and step
// in native memory; this file clones, runs the steps in order and execs. No policy, no allocation.
//
// The clone is CLONE_VM (the child shares the parent's address space, so no page tables are copied,
// ~1.3 ms per sandbox with a large heap). Consequences that shape the code:
//  - The child must never touch errno or other thread-local state of the parent thread it was cloned
//    from (same TLS pointer), so every system call goes through raw_syscall() below, which returns
//    -errno instead of writing errno.
//  - The parent keeps the plan's memory alive until the child has exited.
// The child runs the set-up steps, clones the payload (CLONE_VM; it waits for a go), and execs
// sandbox-init (sandbox_init.c) to become PID 1 with an address space of its own: PID 1 then
// releases the payload, reaps orphans, forwards signals and reports the payload's wait status.
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/mount.h>
#include <linux/openat2.h>
#include <linux/sched.h>
#include <poll.h>
#include <spawn.h>
#include <sched.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <linux/nsfs.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/sendfile.h>
#include <sys/un.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <dirent.h>
#include <unistd.h>

#define SBX_EXPORT __attribute__((visibility("default")))
// 10: struct sbx_report carries CPU times (32 bytes; sandbox_protocol.h).
// 11: a holder hands over a spare user and network namespace (sbx_userns_fetch, sbx_spawn_args).
// 12: SBX_OP_MASK; the holder asked ahead (sbx_userns_connect, sbx_userns_receive); signals to
//     the CLI forwarded through a pipe (sbx_signals_forward, sbx_signals_restore).
// 13: the spare's IPC and UTS namespaces. 14: its prepared mount namespace (SBX_OPT_PREPARED).
// 15: the last plan's overlay mounted in it (SBX_OPT_OVERLAY_PREPARED, the holder's hint).
// 16: the sandbox's /dev built in it (SBX_OPT_ONLY_PREPARED).
// 17: SBX_OP_BUILD_DEV, the /dev the holder's maker builds (sbx_build_dev; a failure's report says
//     which part, enum sbx_dev_part); no SBX_OPT_ONLY_PREPARED.
#define SBX_ABI_VERSION 17

// ---- raw system calls: never touch errno (see header comment) -------------------------------
#include "sandbox_syscall.h"
#include "sandbox_kernel.h"

static void raw_exit(int code)
{
    for (;;)
        SYS1(SYS_exit_group, code);
}

// ---- the plan, shared with C# (Linux/NativeStructs.cs mirrors these layouts) ------------------
enum sbx_op_kind {
    SBX_OP_MOUNT = 1,        // mount(source, target, fstype, flags, data)
    SBX_OP_MOUNT_SETATTR = 2,// mount_setattr(target, AT_RECURSIVE?, {attr_set=flags, attr_clr=arg})
    SBX_OP_MKDIR = 3,        // mkdir(target, arg); an existing directory is fine
    SBX_OP_SYMLINK = 4,      // symlink(source, target)
    SBX_OP_CREATE_FILE = 5,  // an empty file to bind a file onto; an existing file is fine
    SBX_OP_PIVOT_ROOT = 6,   // chdir(target); pivot_root(".", source or "."); detach "." if no source
    SBX_OP_SETHOSTNAME = 7,  // sethostname(source)
    SBX_OP_LOOPBACK_UP = 8,  // ifconfig lo up
    SBX_OP_UMOUNT = 9,       // umount2(target, MNT_DETACH)
    SBX_OP_CLEAR_GROUPS = 10,// setgroups(0, NULL): only allowed when setgroups is not denied
    SBX_OP_CHDIR = 11,       // chdir(target)
    SBX_OP_UNSHARE = 12,     // unshare(flags)
    SBX_OP_RUN = 13,         // run source (argv, envp) to its exit; its stderr (head) into output; fail unless it exits 0
    SBX_OP_MASK = 14,        // hide target (in root only): a read-only empty tmpfs on a directory, source bound on anything else
    SBX_OP_BUILD_DEV = 15,   // the sandbox's /dev at /dev on the scratch root (sbx_build_dev, sandbox_kernel.h)
};

enum sbx_op_option {
    SBX_OPT_OPTIONAL = 1,   // ENOENT on the target or source skips the step (masking absent paths)
    SBX_OPT_RECURSIVE = 2,  // AT_RECURSIVE for mount_setattr
    SBX_OPT_PREPARED = 4,   // done already in a spare's prepared mount namespace: skipped when PID 1 joined one
    SBX_OPT_OVERLAY_PREPARED = 8, // the root's overlay, mounted already in it when it came with this plan's (overlay_prepared)
};

// The old root stays at /oldroot until the final pivot; its procfs gives /proc/self/fd paths, which
// let mount(2) act on an fd that openat2 resolved safely (as bubblewrap does).
#define SBX_PROC_FD_PREFIX "/oldroot/proc/self/fd/"


struct sbx_op {
    int32_t kind;
    int32_t options;
    uint64_t flags;
    uint64_t arg;
    const char *source;
    const char *target;
    const char *fstype;
    const char *data;
    // When set, target is relative and resolved inside this directory with openat2(RESOLVE_IN_ROOT):
    // a symlink in an image (or anywhere under the new root) can never redirect a mount, a mkdir or
    // a file creation to the host (CVE-2021-30465 and runc's "securejoin" class of bugs).
    const char *root;
    // SBX_OP_RUN only: the program's argv and envp (NULL-terminated), and a buffer of arg bytes that
    // receives the head of its stderr, NUL-terminated (the parent reads it: we share its memory).
    char *const *argv;
    char *const *envp;
    char *output;
};

// A holder's spare, as sbx_userns_receive hands its fds over (sandbox_init.c sends them in this order).
// SBX_SPARE_MNT is -1 when the spare comes without a prepared mount namespace; the int after the
// last (SBX_SPARE_COUNT) is the length of the overlay it has mounted, 0 when none.
enum { SBX_SPARE_USER, SBX_SPARE_NET, SBX_SPARE_IPC, SBX_SPARE_UTS, SBX_SPARE_MNT, SBX_SPARE_COUNT };
// The most a holder says of an overlay: "DIRECTORY\0DATA\0" (sandbox_init.c, OVERLAY_HINT_SIZE).
#define SBX_OVERLAY_HINT_SIZE 8192

enum sbx_spawn_flag {
    SBX_FLAG_NO_NEW_PRIVS = 1,
    SBX_FLAG_SETSID = 2,
};

struct sbx_spawn_args {
    uint64_t clone_flags;         // CLONE_NEW* only; CLONE_VM, CLONE_PIDFD and SIGCHLD are added here
    const struct sbx_op *ops;
    int32_t op_count;
    int32_t flags;                // enum sbx_spawn_flag
    const char *file;             // the command: a path if it contains '/', else looked up in search_path
    char *const *argv;
    char *const *envp;
    const char *search_path;      // PATH value used to look the command up inside the sandbox
    const char *workdir;          // chdir before exec; NULL keeps "/"
    int32_t stdin_fd, stdout_fd, stderr_fd;
    int32_t sync_fd;              // read end: the parent writes one byte once id maps and cgroups are set
    int32_t report_fd;            // write end: struct sbx_report records
    int32_t life_fd;              // read end: the parent holds the write end; EOF means the parent died
    char *stack;                  // 2 * stack_size bytes: PID 1's stack, then the payload's
    uint64_t stack_size;
    char *path_buffer;            // scratch for the PATH lookup (payload only)
    uint64_t path_buffer_size;
    int32_t uid;                  // setresuid before exec; -1 keeps 0 (root in the sandbox)
    int32_t gid;                  // setresgid (and setgroups(0)) before exec; -1 keeps 0
    int32_t init_fd;              // O_PATH fd of the sandbox-init executable (exec'd as PID 1)
    int32_t go_fd;                // set in the child: the payload waits here for sandbox-init
    int32_t go_write_fd;          // set in the child: the payload closes its copy of the write end
    int32_t status_fd;            // set in the child: the payload's exec status (close-on-exec)
    uint64_t keep_capabilities;   // bounding set kept for the payload (bit N = capability N)
    int32_t last_capability;      // the highest capability to drop (up to the kernel's last); -1 leaves the bounding set alone
    uint32_t seccomp_length;      // instructions in seccomp_filter; 0 = no filter
    const void *seccomp_filter;   // struct sock_filter[seccomp_length], built by the C# side
    // A held user namespace (see "Joining a held user namespace" below), or -1: then clone(2) makes
    // the user namespace and the parent writes its maps.
    int32_t userns_fd;
    int32_t join_error;           // set by the joining child when it failed: the errno
    int32_t joined_pid;           // set by the joining child: PID 1's pid and pidfd
    int32_t joined_pidfd;
    const char *nested_uid_map;   // the nested user namespace's maps, in the held namespace's ids
    const char *nested_gid_map;
    // A spare from the holder (sandbox_init.c, "spares"), or -1: a user namespace nested in the held
    // one, with the nested maps written, and a network namespace it owns, loopback up.
    int32_t spare_userns_fd;
    int32_t spare_netns_fd;
    int32_t spare_joined;         // set by the joining child: PID 1 is in the spare's user namespace
    int32_t spare_ipcns_fd;       // the spare's IPC and UTS namespaces, owned by its user namespace
    int32_t spare_utsns_fd;
    int32_t spare_mntns_fd;       // the spare's prepared mount namespace, or -1 (sandbox_init.c, "spares")
    int32_t mount_prepared;       // set by PID 1: it joined spare_mntns_fd, so SBX_OPT_PREPARED steps are done
    int32_t overlay_prepared;     // spare_mntns_fd has this plan's overlay mounted: SBX_OPT_OVERLAY_PREPARED steps are done
};

#include "sandbox_protocol.h"

SBX_EXPORT int sbx_abi_version(void) { return SBX_ABI_VERSION; }
SBX_EXPORT int sbx_op_size(void) { return (int)sizeof(struct sbx_op); }
SBX_EXPORT int sbx_args_size(void) { return (int)sizeof(struct sbx_spawn_args); }

// ---- helpers for the child --------------------------------------------------------------------
static void report(int fd, int32_t kind, int32_t step, int32_t error, int32_t value)
{
    struct sbx_report r = {kind, step, error, value, 0, 0};
    // 32 bytes < PIPE_BUF: atomic (pipe(7)); EINTR cannot happen with every signal blocked.
    SYS3(SYS_write, fd, &r, sizeof r);
}

static void reset_signal_dispositions(void)
{
    // A signal arriving before exec would run .NET's copied handler, which writes into the runtime's
    // signal pipe shared with the parent (DESIGN.md). Every handler goes back to SIG_DFL.
    struct {
        void *handler;
        unsigned long flags;
        void *restorer;
        uint64_t mask;
    } act = {SIG_DFL, 0, 0, 0};
    for (int sig = 1; sig <= 64; sig++) {
        if (sig == SIGKILL || sig == SIGSTOP)
            continue;
        SYS4(SYS_rt_sigaction, sig, &act, 0, 8);
    }
}

static int step_mount_setattr(const struct sbx_op *op)
{
    struct mount_attr attr;
    memset(&attr, 0, sizeof attr);
    attr.attr_set = op->flags;
    attr.attr_clr = op->arg;
    unsigned int at = (op->options & SBX_OPT_RECURSIVE) ? AT_RECURSIVE : 0;
    return (int)SYS5(SYS_mount_setattr, AT_FDCWD, op->target, at | AT_NO_AUTOMOUNT, &attr, sizeof attr);
}

// before_detach, when given, runs between pivot_root(".", ".") and the detach of the old root
// (init_main clones the payload then: start_payload_before_detach).
static int step_pivot_root(const struct sbx_op *op, void (*before_detach)(void *), void *arg)
{
    long rc = SYS1(SYS_chdir, op->target);
    if (rc < 0)
        return (int)rc;
    if (op->source) {
        // Keep the old root reachable at op->source (relative to the new root) for later binds.
        rc = SYS2(SYS_pivot_root, ".", op->source);
        if (rc < 0)
            return (int)rc;
    } else {
        // pivot_root(".", ".") stacks the old root on top of the new one; detaching "." then drops
        // the old root and everything under it (pivot_root(2), "NOTES").
        rc = SYS2(SYS_pivot_root, ".", ".");
        if (rc < 0)
            return (int)rc;
        if (before_detach)
            before_detach(arg);
        rc = SYS2(SYS_umount2, ".", MNT_DETACH);
        if (rc < 0)
            return (int)rc;
    }
    return (int)SYS1(SYS_chdir, "/");
}

// The directory that in-root steps resolve in, opened once for a run of such steps instead of once
// per step (two system calls fewer each, about 35 steps per start). It is per spawn (the executor
// shares its memory with the parent, which may be starting other sandboxes) and is closed before
// any step that is not resolved in it: such a step (a mount on the root's own path, a pivot) may
// change what that path names, and the next in-root step must see it as a fresh open would.
//
// It also keeps the directory in which the last entry was made (mkdir, a file, a symlink), for the
// next entry made there: a run of entries in one directory costs one resolution (openat2 with
// RESOLVE_IN_ROOT, about 2 µs each here), as a directory root's mount points /proc, /dev and /tmp
// do. Any other step ends that: after a mount the same path may name another directory, and
// comparing paths cannot tell (a symlink may lead to it).
#define PARENT_CACHE_SIZE 256

struct root_cache {
    const char *root; // the op->root string the fd was opened from; NULL when none is open
    long fd;
    long parent_fd;   // -1 when none: the directory `parent` names, in the root fd
    int parent_matchable; // 0: parent_fd is kept only to be closed (its path did not fit)
    char parent[PARENT_CACHE_SIZE];
};

static void parent_cache_close(struct root_cache *cache)
{
    if (cache->parent_fd >= 0) {
        SYS1(SYS_close, cache->parent_fd);
        cache->parent_fd = -1;
    }
}

static void root_cache_close(struct root_cache *cache)
{
    parent_cache_close(cache);
    if (cache->root) {
        SYS1(SYS_close, cache->fd);
        cache->root = NULL;
    }
}

static long root_cache_get(struct root_cache *cache, const char *root)
{
    if (cache->root && (cache->root == root || sbx_str_equal(cache->root, root)))
        return cache->fd;
    root_cache_close(cache);
    long fd = SYS4(SYS_openat, AT_FDCWD, root, O_PATH | O_DIRECTORY | O_CLOEXEC, 0);
    if (fd < 0)
        return fd;
    cache->root = root;
    cache->fd = fd;
    return fd;
}

static long open_in_root(struct root_cache *cache, const char *root, const char *relative, long flags)
{
    long rootfd = root_cache_get(cache, root);
    if (rootfd < 0)
        return rootfd;
    struct open_how how;
    memset(&how, 0, sizeof how);
    how.flags = (uint64_t)(flags | O_CLOEXEC);
    how.resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS;
    return SYS4(SYS_openat2, rootfd, *relative ? relative : ".", &how, sizeof how);
}

// "/oldroot/proc/self/fd/N" into buf.
static void fd_path(char *buf, long fd)
{
    const char *prefix = SBX_PROC_FD_PREFIX;
    size_t n = 0;
    while (prefix[n]) {
        buf[n] = prefix[n];
        n++;
    }
    sbx_append_decimal(buf, n, fd);
}

// Splits op->target into a parent resolved inside op->root (an fd) and the last component, which
// is copied into buf. Returns the parent fd, which the cache owns (the caller does not close it),
// or -errno.
static long parent_in_root(struct root_cache *cache, const struct sbx_op *op, char *buf, size_t size, const char **name)
{
    size_t len = sbx_length(op->target);
    if (len + 1 > size)
        return -ENAMETOOLONG;
    size_t slash = len;
    while (slash > 0 && op->target[slash - 1] != '/')
        slash--;
    for (size_t i = 0; i <= len; i++)
        buf[i] = op->target[i];
    *name = buf + slash;
    const char *parent = "";
    if (slash > 0) {
        buf[slash - 1] = 0;
        parent = buf;
    }
    if (cache->parent_fd >= 0 && cache->parent_matchable && cache->root && sbx_str_equal(cache->root, op->root) &&
        sbx_str_equal(cache->parent, parent))
        return cache->parent_fd;
    parent_cache_close(cache);
    long fd = open_in_root(cache, op->root, parent, O_PATH | O_DIRECTORY);
    if (fd < 0)
        return fd;
    size_t parent_len = sbx_length(parent);
    // A parent too long to keep a copy of is used for this entry only.
    cache->parent_matchable = parent_len < sizeof cache->parent;
    if (cache->parent_matchable) {
        for (size_t i = 0; i <= parent_len; i++)
            cache->parent[i] = parent[i];
    }
    cache->parent_fd = fd;
    return fd;
}

static int run_step_in_root(struct root_cache *cache, const struct sbx_op *op, struct sbx_spawn_args *a)
{
    long rc, fd;
    const char *name;
    char *buf = a->path_buffer;
    if (op->kind != SBX_OP_MKDIR && op->kind != SBX_OP_CREATE_FILE && op->kind != SBX_OP_SYMLINK)
        parent_cache_close(cache);
    switch (op->kind) {
    case SBX_OP_MOUNT:
        fd = open_in_root(cache, op->root, op->target, O_PATH);
        if (fd < 0)
            return (int)fd;
        fd_path(buf, fd);
        rc = SYS5(SYS_mount, op->source, buf, op->fstype, op->flags, op->data);
        SYS1(SYS_close, fd);
        // A mount on the root itself covers the directory the cached fd holds.
        if (!*op->target)
            root_cache_close(cache);
        return (int)rc;
    case SBX_OP_MASK: {
        // runc's maskPaths, with the target's kind read here rather than by the planner from the
        // host: what the step hides is what it finds (in the new procfs, in a sysfs, or an image's
        // file of that name).
        fd = open_in_root(cache, op->root, op->target, O_PATH);
        if (fd < 0)
            return (int)fd;
        struct stat st;
        rc = SYS4(SYS_newfstatat, fd, "", &st, AT_EMPTY_PATH);
        if (rc == 0) {
            fd_path(buf, fd);
            rc = S_ISDIR(st.st_mode)
                ? SYS5(SYS_mount, "tmpfs", buf, "tmpfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, "size=0,mode=0555")
                : SYS5(SYS_mount, op->source, buf, 0, MS_BIND, 0);
        }
        SYS1(SYS_close, fd);
        return (int)rc;
    }
    case SBX_OP_MOUNT_SETATTR: {
        fd = open_in_root(cache, op->root, op->target, O_PATH);
        if (fd < 0)
            return (int)fd;
        struct mount_attr attr;
        memset(&attr, 0, sizeof attr);
        attr.attr_set = op->flags;
        attr.attr_clr = op->arg;
        unsigned int at = AT_EMPTY_PATH | ((op->options & SBX_OPT_RECURSIVE) ? AT_RECURSIVE : 0);
        rc = SYS5(SYS_mount_setattr, fd, "", at, &attr, sizeof attr);
        SYS1(SYS_close, fd);
        return (int)rc;
    }
    case SBX_OP_MKDIR:
    case SBX_OP_CREATE_FILE:
    case SBX_OP_SYMLINK:
        fd = parent_in_root(cache, op, buf, a->path_buffer_size, &name);
        if (fd < 0)
            return (int)fd;
        if (op->kind == SBX_OP_MKDIR) {
            rc = SYS3(SYS_mkdirat, fd, name, op->arg);
        } else if (op->kind == SBX_OP_SYMLINK) {
            rc = SYS3(SYS_symlinkat, op->source, fd, name);
        } else {
            rc = SYS4(SYS_openat, fd, name, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOCTTY | O_NOFOLLOW, op->arg);
            if (rc >= 0) {
                SYS1(SYS_close, rc);
                rc = 0;
            }
        }
        return rc == -EEXIST ? 0 : (int)rc; // fd stays with the cache for the next entry made there
    default:
        return -EINVAL;
    }
}

// ---- SBX_OP_RUN: a helper program (fuse-overlayfs) run to its exit during the set-up -----------
// It is started by a CLONE_VM|CLONE_VFORK clone on the payload's stack, unused until the payload is
// cloned: we stay suspended until it has exec'd, so nothing else runs on that stack meanwhile.
struct run_child {
    const struct sbx_op *op;
    int null_fd;
    int err_fd;
};

static int run_child_main(void *arg)
{
    struct run_child *c = arg;
    // stdin and stdout /dev/null, stderr our capture pipe, nothing else of ours (report and life
    // pipes, the sandbox-init fd): a daemon it leaves behind must not hold them.
    if (SYS3(SYS_dup3, c->null_fd, 0, 0) < 0 || SYS3(SYS_dup3, c->null_fd, 1, 0) < 0 || SYS3(SYS_dup3, c->err_fd, 2, 0) < 0)
        raw_exit(127);
    SYS3(SYS_close_range, 3, ~0U, 0);
    uint64_t empty = 0;
    SYS4(SYS_rt_sigprocmask, SIG_SETMASK, &empty, 0, 8); // we blocked everything; a program expects nothing blocked
    SYS3(SYS_execve, c->op->source, c->op->argv, c->op->envp);
    raw_exit(127);
    return 0;
}

// Returns 0 and the program's wait status in *status, or -errno when it could not be run.
static int step_run(const struct sbx_op *op, struct sbx_spawn_args *a, int *status)
{
    int err_pipe[2];
    long rc = SYS2(SYS_pipe2, err_pipe, O_CLOEXEC);
    if (rc < 0)
        return (int)rc;
    long null_fd = SYS4(SYS_openat, AT_FDCWD, "/dev/null", O_RDWR | O_CLOEXEC, 0);
    if (null_fd < 0) {
        SYS1(SYS_close, err_pipe[0]);
        SYS1(SYS_close, err_pipe[1]);
        return (int)null_fd;
    }
    struct run_child c = {op, (int)null_fd, err_pipe[1]};
    int pidfd = -1;
    int pid = clone(run_child_main, a->stack + 2 * a->stack_size, CLONE_VM | CLONE_VFORK | CLONE_PIDFD | SIGCHLD, &c, &pidfd);
    SYS1(SYS_close, err_pipe[1]);
    SYS1(SYS_close, null_fd);
    if (pid < 0) {
        SYS1(SYS_close, err_pipe[0]);
        return -EAGAIN; // glibc's clone sets errno, which we may not read (see the header comment)
    }
    // Read its stderr until it exits: a program that writes more than a pipe holds must not block.
    // A daemon it forks may keep the pipe open, so the end is the exit, not EOF.
    SYS3(SYS_fcntl, err_pipe[0], F_SETFL, O_NONBLOCK);
    size_t used = 0, room = op->output && op->arg > 0 ? (size_t)op->arg - 1 : 0;
    char discard[256];
    struct pollfd fds[2] = {{err_pipe[0], POLLIN, 0}, {pidfd, POLLIN, 0}};
    for (;;) {
        SYS5(SYS_ppoll, fds, 2, 0, 0, 8); // no timeout; poll(2) has no syscall of its own on aarch64
        for (;;) {
            char *into = used < room ? op->output + used : discard;
            size_t want = used < room ? room - used : sizeof discard;
            long n = SYS3(SYS_read, err_pipe[0], into, want);
            if (n <= 0)
                break;
            if (into != discard)
                used += (size_t)n;
        }
        if (fds[1].revents)
            break;
        if (fds[0].revents & POLLHUP)
            fds[0].fd = -1; // every writer is gone: poll ignores a negative fd; wait for the exit alone
    }
    if (op->output && op->arg > 0)
        op->output[used] = 0;
    SYS1(SYS_close, err_pipe[0]);
    siginfo_t info;
    memset(&info, 0, sizeof info);
    do
        rc = SYS5(SYS_waitid, P_PIDFD, pidfd, &info, WEXITED, 0);
    while (rc == -EINTR);
    SYS1(SYS_close, pidfd);
    if (rc < 0)
        return (int)rc;
    *status = info.si_code == CLD_EXITED ? (info.si_status & 0xff) << 8 : (info.si_status & 0x7f);
    return 0;
}

static int run_step(struct root_cache *cache, const struct sbx_op *op, struct sbx_spawn_args *a)
{
    long rc;
    if (op->root)
        return run_step_in_root(cache, op, a);
    root_cache_close(cache);
    switch (op->kind) {
    case SBX_OP_MOUNT:
        return (int)SYS5(SYS_mount, op->source, op->target, op->fstype, op->flags, op->data);
    case SBX_OP_MOUNT_SETATTR:
        return step_mount_setattr(op);
    case SBX_OP_MKDIR:
        rc = SYS3(SYS_mkdirat, AT_FDCWD, op->target, op->arg);
        return rc == -EEXIST ? 0 : (int)rc;
    case SBX_OP_SYMLINK:
        rc = SYS3(SYS_symlinkat, op->source, AT_FDCWD, op->target);
        return rc == -EEXIST ? 0 : (int)rc;
    case SBX_OP_CREATE_FILE:
        // O_EXCL: an existing file is fine (EEXIST), and it is never opened for writing (which a
        // read-only mount would refuse with EROFS).
        rc = SYS4(SYS_openat, AT_FDCWD, op->target, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOCTTY | O_NOFOLLOW, op->arg);
        if (rc == -EEXIST)
            return 0;
        if (rc < 0)
            return (int)rc;
        SYS1(SYS_close, rc);
        return 0;
    case SBX_OP_PIVOT_ROOT:
        return step_pivot_root(op, 0, 0);
    case SBX_OP_SETHOSTNAME:
        return (int)SYS2(SYS_sethostname, op->source, sbx_length(op->source));
    case SBX_OP_LOOPBACK_UP:
        return (int)sbx_loopback_up();
    case SBX_OP_UMOUNT:
        return (int)SYS2(SYS_umount2, op->target, MNT_DETACH);
    case SBX_OP_CLEAR_GROUPS:
        return (int)SYS2(SYS_setgroups, 0, 0);
    case SBX_OP_CHDIR:
        return (int)SYS1(SYS_chdir, op->target);
    case SBX_OP_UNSHARE:
        return (int)SYS1(SYS_unshare, op->flags);
    default:
        return -EINVAL;
    }
}

// Moves the fds the child needs to fixed numbers and closes every other one: nothing of the
// parent's (other sandboxes' pipes, the runtime's own fds) may reach the payload.
// After this: 0,1,2 the payload's stdio; 3 sync; 4 report; 5 life; 6 the sandbox-init executable.
static int arrange_fds(struct sbx_spawn_args *a)
{
    int wanted[7] = {a->stdin_fd, a->stdout_fd, a->stderr_fd, a->sync_fd, a->report_fd, a->life_fd, a->init_fd};
    int moved[7];
    for (int i = 0; i < 7; i++) {
        // F_DUPFD picks the lowest free fd >= 7: never one of the targets 0-6 (which the dup3s
        // below overwrite) nor another wanted fd (in use). Not a higher base: F_DUPFD fails with
        // EINVAL at a base not below RLIMIT_NOFILE (fcntl(2)), and a base of 64 made every sandbox
        // fail under `ulimit -n 64`, which bwrap and unshare(1) run under.
        long fd = SYS3(SYS_fcntl, wanted[i], F_DUPFD, SBX_FD_INIT_EXE + 1);
        if (fd < 0) {
            // Nothing moved yet: the report pipe is still where the parent put it (EMFILE: no
            // number free below RLIMIT_NOFILE for the copies).
            report(a->report_fd, SBX_REPORT_SETUP_FAILED, a->op_count + 3, (int)-fd, 0);
            return (int)fd;
        }
        moved[i] = (int)fd;
    }
    for (int i = 0; i < 7; i++) {
        long rc = SYS3(SYS_dup3, moved[i], i, 0);
        if (rc < 0)
            return (int)rc;
    }
    long rc = SYS3(SYS_close_range, 7, ~0U, 0);
    if (rc < 0)
        return (int)rc;
    // 3 and 6 close at the exec of sandbox-init; 4 and 5 are inherited by it.
    SYS3(SYS_fcntl, SBX_FD_SYNC, F_SETFD, FD_CLOEXEC);
    SYS3(SYS_fcntl, SBX_FD_INIT_EXE, F_SETFD, FD_CLOEXEC);
    return 0;
}

// Before exec, a failure is reported to sandbox-init as (stage, errno) on the close-on-exec status
// pipe; EOF on that pipe means the exec succeeded.
static void payload_fail(struct sbx_spawn_args *a, int32_t stage, long rc)
{
    int32_t record[2] = {stage, (int32_t)-rc};
    SYS3(SYS_write, a->status_fd, record, sizeof record);
    raw_exit(127);
}

static int payload_main(void *arg)
{
    struct sbx_spawn_args *a = arg;
    // Runs on its own stack, still in the supervisor's address space (CLONE_VM), until execve. The
    // set-up below is ours, not the payload's code, so it runs while PID 1 detaches the old root
    // and execs sandbox-init (start_payload_before_detach; the seccomp filter's load alone is 60 to
    // 90 us). Only the execve waits until sandbox-init (PID 1, by then in an address space of its
    // own) says go: from then on nothing in the sandbox can reach the supervisor's memory through
    // PID 1.
    SYS1(SYS_close, a->go_write_fd);
    // Nothing of PID 1's may leak in: keep 0-2, the go pipe and the status pipe (both close-on-exec).
    // Before the filter, which might refuse close_range.
    int keep_low = a->go_fd < a->status_fd ? a->go_fd : a->status_fd;
    int keep_high = a->go_fd < a->status_fd ? a->status_fd : a->go_fd;
    if (keep_low > 3)
        SYS3(SYS_close_range, 3, keep_low - 1, 0);
    if (keep_high > keep_low + 1)
        SYS3(SYS_close_range, keep_low + 1, keep_high - 1, 0);
    SYS3(SYS_close_range, keep_high + 1, ~0U, 0);

    if (a->flags & SBX_FLAG_SETSID)
        SYS0(SYS_setsid); // no controlling terminal: TIOCSTI into the caller's terminal is refused
    if (a->flags & SBX_FLAG_NO_NEW_PRIVS)
        SYS5(SYS_prctl, PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
    if (a->workdir) {
        long rc = SYS1(SYS_chdir, a->workdir);
        if (rc < 0)
            payload_fail(a, 1, rc);
    }
    if (a->last_capability >= 0) {
        // Bound what root in the sandbox's user namespace can hold to docker's default set: the
        // bounding set survives exec, and an exec'ing root gets exactly it (capabilities(7)).
        // Capability numbers are contiguous: the first one the kernel refuses as invalid (EINVAL,
        // prctl(2)) is past its last (/proc/sys/kernel/cap_last_cap), and so is every one after it.
        for (int cap = 0; cap <= a->last_capability && cap < 64; cap++) {
            if (!(a->keep_capabilities & (1ULL << cap))) {
                long rc = SYS5(SYS_prctl, PR_CAPBSET_DROP, cap, 0, 0, 0);
                if (rc == -EINVAL)
                    break;
                if (rc < 0)
                    payload_fail(a, 3, rc);
            }
        }
        SYS5(SYS_prctl, PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0);
    }
    // The image's or --user's ids, last: changing to a non-zero uid clears the effective
    // capabilities the steps above needed (capabilities(7), "Effect of user ID changes").
    if (a->gid >= 0) {
        long rc = SYS2(SYS_setgroups, 0, 0);
        if (rc < 0 && rc != -EPERM) // EPERM: setgroups is denied in a single-id map, and only 0 exists
            payload_fail(a, 5, rc);
        rc = SYS3(SYS_setresgid, a->gid, a->gid, a->gid);
        if (rc < 0)
            payload_fail(a, 5, rc);
    }
    if (a->uid >= 0) {
        long rc = SYS3(SYS_setresuid, a->uid, a->uid, a->uid);
        if (rc < 0)
            payload_fail(a, 5, rc);
    }
    uint64_t empty = 0;
    SYS4(SYS_rt_sigprocmask, SIG_SETMASK, &empty, 0, 8);
    if (a->seccomp_length) {
        // Last, so that it filters the payload and nothing of ours: after no_new_privs, which lets an
        // unprivileged process install a filter (seccomp(2)). execve must be allowed by the filter.
        struct sock_fprog prog = {(unsigned short)a->seccomp_length, (struct sock_filter *)a->seccomp_filter};
        long rc = SYS3(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog);
        if (rc < 0)
            payload_fail(a, 4, rc);
    }
    // The go byte; under the filter, so a profile must allow read(2), as runc's needs the calls
    // that open and write its exec fifo after its filter is loaded.
    char go;
    long got = SYS3(SYS_read, a->go_fd, &go, 1);
    if (got != 1)
        payload_fail(a, 6, got < 0 ? got : -EPIPE);

    long rc;
    int seen_eacces = 0;
    const char *file = a->file;
    int has_slash = 0;
    for (const char *p = file; *p; p++)
        if (*p == '/')
            has_slash = 1;
    if (has_slash || !a->search_path) {
        rc = SYS3(SYS_execve, file, a->argv, a->envp);
    } else {
        // execvp(3)'s search, without its allocation: each PATH entry joined with the name.
        size_t name_len = sbx_length(file);
        const char *p = a->search_path;
        rc = -ENOENT;
        for (;;) {
            const char *end = p;
            while (*end && *end != ':')
                end++;
            size_t dir_len = (size_t)(end - p);
            if (dir_len + 1 + name_len + 1 <= a->path_buffer_size) {
                char *buf = a->path_buffer;
                size_t n = 0;
                if (dir_len == 0)
                    buf[n++] = '.';
                for (size_t i = 0; i < dir_len; i++)
                    buf[n++] = p[i];
                buf[n++] = '/';
                for (size_t i = 0; i <= name_len; i++)
                    buf[n++] = file[i];
                rc = SYS3(SYS_execve, buf, a->argv, a->envp);
                if (rc == -EACCES) {
                    // Only a file that exists but may not be executed makes this "not executable"
                    // (126); an unreadable directory on PATH just does not hold the command (127),
                    // as with exec.LookPath in runc and the shells' own search.
                    struct stat st;
                    if (SYS4(SYS_newfstatat, AT_FDCWD, buf, &st, 0) == 0)
                        seen_eacces = 1;
                    else
                        rc = -ENOENT;
                }
                else if (rc != -ENOENT && rc != -ENOTDIR)
                    break;
            }
            if (!*end)
                break;
            p = end + 1;
        }
        if (seen_eacces && (rc == -ENOENT || rc == -ENOTDIR))
            rc = -EACCES;
    }
    payload_fail(a, 2, rc);
    return 0;
}

// The payload's process, cloned by PID 1 with the pipes between it and sandbox-init: "go" (init ->
// payload) and the exec status (payload -> init, close-on-exec in the payload), whose read end goes
// to *status_read. Returns its pid; on failure PID 1 reports and exits.
static int start_payload(struct sbx_spawn_args *a, int *status_read)
{
    int go_pipe[2], status_pipe[2];
    long rc = SYS2(SYS_pipe2, go_pipe, O_CLOEXEC);
    if (rc == 0)
        rc = SYS2(SYS_pipe2, status_pipe, O_CLOEXEC);
    if (rc < 0) {
        report(SBX_FD_REPORT, SBX_REPORT_SETUP_FAILED, a->op_count, (int)-rc, 0);
        raw_exit(125);
    }
    a->go_fd = go_pipe[0];
    a->go_write_fd = go_pipe[1];
    a->status_fd = status_pipe[1];
    *status_read = status_pipe[0];
    // glibc's clone() switches to the new stack in assembly and calls payload_main there; its child
    // path touches no thread-local state. (A raw clone syscall would return onto this frame with a
    // foreign stack pointer.) The payload gets its own copy of the fd table (no CLONE_FILES).
    char *payload_stack_top = a->stack + 2 * a->stack_size;
    int payload = clone(payload_main, payload_stack_top, CLONE_VM | SIGCHLD, a);
    if (payload < 0) {
        report(SBX_FD_REPORT, SBX_REPORT_SETUP_FAILED, a->op_count, EAGAIN, 0);
        raw_exit(125);
    }
    return payload;
}

// The payload's clone during the plan's last step, the pivot into the new root: between
// pivot_root(".", ".") and the detach of the old root (step_pivot_root). The detach waits for an
// expedited RCU grace period (fs/namespace.c, namespace_unlock: 60 to 70 us here, more when other
// CPUs are busy), in which PID 1 sleeps: the payload's own set-up (its capabilities, ids and seccomp
// filter, payload_main) runs meanwhile instead of after sandbox-init's exec. Its root and working
// directory are the new root already (pivot_root moves every task's, fs_struct.c chroot_fs_refs),
// and it execs only once sandbox-init says go, long after the detach.
struct payload_start {
    struct sbx_spawn_args *args;
    int pid;
    int status_read;
};

static void start_payload_before_detach(void *arg)
{
    struct payload_start *p = arg;
    p->pid = start_payload(p->args, &p->status_read);
}

static int init_main(void *arg)
{
    struct sbx_spawn_args *a = arg;
    // Every signal is blocked (the parent blocked them around clone) and stays blocked through the
    // exec of sandbox-init, which takes them from a signalfd.
    reset_signal_dispositions();
    // The spare's network namespace, before arrange_fds closes our copy of its fd. Should that fail,
    // we make one below as without a spare.
    int net_joined = (a->clone_flags & CLONE_NEWNET) && a->spare_joined &&
                     SYS2(SYS_setns, a->spare_netns_fd, CLONE_NEWNET) == 0;
    // Its IPC and UTS namespaces likewise: the joining child left them out of our clone. Should
    // joining one fail, we make our own, as clone(2) would have. The prepared mount namespace too,
    // where the plan's steps marked SBX_OPT_PREPARED are done already; joining it (setns(2) needs
    // CAP_SYS_ADMIN and CAP_SYS_CHROOT in its owner, the spare's user namespace, which we have)
    // makes its root, the scratch tmpfs, our root and working directory. Failing that, a copy of
    // our own mounts as clone(2) would have made, and every step runs.
    uint64_t still_shared = 0;
    a->mount_prepared = 0;
    if (a->spare_joined) {
        if ((a->clone_flags & CLONE_NEWIPC) && SYS2(SYS_setns, a->spare_ipcns_fd, CLONE_NEWIPC) != 0)
            still_shared |= CLONE_NEWIPC;
        if ((a->clone_flags & CLONE_NEWUTS) && SYS2(SYS_setns, a->spare_utsns_fd, CLONE_NEWUTS) != 0)
            still_shared |= CLONE_NEWUTS;
        if ((a->clone_flags & CLONE_NEWNS) && a->spare_mntns_fd >= 0) {
            if (SYS2(SYS_setns, a->spare_mntns_fd, CLONE_NEWNS) == 0)
                a->mount_prepared = 1;
            else
                still_shared |= CLONE_NEWNS;
        }
    }
    if (still_shared) {
        long rc = SYS1(SYS_unshare, still_shared);
        if (rc < 0) {
            report(SBX_FD_REPORT, SBX_REPORT_SETUP_FAILED, a->op_count + 2, (int)-rc, 0);
            raw_exit(125);
        }
    }
    if (arrange_fds(a) < 0)
        raw_exit(125);

    // The network namespace is made here, not by clone(2): it is the slow one (a loopback device,
    // its sysctl tables: most of the 0.7 ms that clone took with it), and here it is made while the
    // parent writes our id maps (newuidmap and newgidmap take about 2 ms) instead of before. The new
    // user namespace's capabilities are ours already, whether or not the maps are written yet
    // (user_namespaces(7), "Capabilities"), and it owns the network namespace either way.
    if ((a->clone_flags & CLONE_NEWNET) && !net_joined) {
        long rc = SYS1(SYS_unshare, CLONE_NEWNET);
        if (rc < 0) {
            report(SBX_FD_REPORT, SBX_REPORT_SETUP_FAILED, a->op_count + 2, (int)-rc, 0);
            raw_exit(125);
        }
    }

    char go;
    if (SYS3(SYS_read, 3, &go, 1) != 1)
        raw_exit(125); // the parent gave up before releasing us
    SYS1(SYS_close, 3);

    struct root_cache cache = {NULL, -1, -1, 0, {0}};
    struct payload_start payload = {a, -1, -1};
    for (int i = 0; i < a->op_count; i++) {
        const struct sbx_op *op = &a->ops[i];
        int rc, detail = 0; // reported with a failure: what SBX_OP_BUILD_DEV was making (enum sbx_dev_part)
        // A spare's loopback is up already (the holder brought it up); SIOCSIFFLAGS would only
        // wait for the RTNL lock, which the holder's next spare or a torn-down namespace may hold.
        if (op->kind == SBX_OP_LOOPBACK_UP && net_joined)
            continue;
        if ((op->options & SBX_OPT_PREPARED) && a->mount_prepared)
            continue;
        if ((op->options & SBX_OPT_OVERLAY_PREPARED) && a->mount_prepared && a->overlay_prepared)
            continue;
        if (op->kind == SBX_OP_RUN) {
            int status = 0;
            root_cache_close(&cache);
            rc = step_run(op, a, &status);
            if (rc == 0 && status != 0) {
                // error 0: the program ran and failed; value: its wait status.
                report(SBX_FD_REPORT, SBX_REPORT_SETUP_FAILED, i, 0, status);
                raw_exit(125);
            }
        } else if (op->kind == SBX_OP_BUILD_DEV) {
            root_cache_close(&cache);
            rc = (int)sbx_build_dev(&detail);
        } else if (op->kind == SBX_OP_PIVOT_ROOT && i == a->op_count - 1) {
            root_cache_close(&cache);
            rc = step_pivot_root(op, start_payload_before_detach, &payload);
        } else {
            rc = run_step(&cache, op, a);
        }
        if (rc == -ENOENT && (op->options & SBX_OPT_OPTIONAL))
            continue;
        if (rc < 0) {
            report(SBX_FD_REPORT, SBX_REPORT_SETUP_FAILED, i, -rc, detail);
            raw_exit(125);
        }
    }
    root_cache_close(&cache);
    if (payload.pid < 0) // a plan that does not end with the pivot
        payload.pid = start_payload(a, &payload.status_read);
    int go_pipe[2] = {a->go_fd, a->go_write_fd}, status_pipe[2] = {payload.status_read, a->status_fd};
    long rc;

    // PID 1 becomes sandbox-init, a small static program in an address space of its own: it must
    // not share the supervisor's memory, or anything in the sandbox that can ptrace it (or open
    // /proc/1/mem) could write into the supervisor outside every namespace. sandbox-init makes
    // itself non-dumpable first thing (ptrace(2), "Ptrace access mode checking"; CVE-2019-5736 for
    // /proc/1/exe), then releases the payload.
    // The pipes may sit on 7 and 8 already: park the ends we keep out of the way first, above 8
    // (a low base, as in arrange_fds: a low RLIMIT_NOFILE must not fail the start).
    long go_end = SYS3(SYS_fcntl, go_pipe[1], F_DUPFD, SBX_FD_INIT_STATUS + 1);
    long status_end = SYS3(SYS_fcntl, status_pipe[0], F_DUPFD, SBX_FD_INIT_STATUS + 1);
    SYS1(SYS_close, go_pipe[0]);
    SYS1(SYS_close, go_pipe[1]);
    SYS1(SYS_close, status_pipe[0]);
    SYS1(SYS_close, status_pipe[1]);
    if (go_end < 0 || status_end < 0 ||
        SYS3(SYS_dup3, go_end, SBX_FD_INIT_GO, 0) < 0 || SYS3(SYS_dup3, status_end, SBX_FD_INIT_STATUS, 0) < 0) {
        report(SBX_FD_REPORT, SBX_REPORT_SETUP_FAILED, a->op_count, EBADF, 0);
        raw_exit(125);
    }
    SYS1(SYS_close, go_end);
    SYS1(SYS_close, status_end);
    // PID 1 holds no stdio: a daemonised grandchild decides when output ends, not us.
    SYS1(SYS_close, 0);
    SYS1(SYS_close, 1);
    SYS1(SYS_close, 2);
    char pid_text[24];
    sbx_append_decimal(pid_text, 0, payload.pid);
    char *init_argv[] = {"sandbox-init", pid_text, 0};
    char *init_envp[] = {0};
    rc = SYS5(SYS_execveat, SBX_FD_INIT_EXE, "", init_argv, init_envp, AT_EMPTY_PATH);
    report(SBX_FD_REPORT, SBX_REPORT_SETUP_FAILED, a->op_count + 1, (int)-rc, 0);
    raw_exit(125);
    return 0;
}

// Clones PID 1 of a new sandbox. Returns its pid (in the caller's namespace) and a pidfd, or -errno.
// clone(2)s a CLONE_VM child that runs fn on the top of stack, with `flags` (CLONE_NEW*, CLONE_VFORK)
// and a pidfd. Every signal is blocked around the clone, glibc's internal ones too (raw rt_sigprocmask),
// so that the child starts with nothing deliverable until it has reset the dispositions.
// Returns the child's pid and its pidfd in *pidfd_out, or -errno.
static int clone_blocked(int (*fn)(void *), char *stack_top, uint64_t flags, void *arg, int *pidfd_out)
{
    uint64_t all = ~0ULL, old = 0;
    int pidfd = -1;
    SYS4(SYS_rt_sigprocmask, SIG_SETMASK, &all, &old, 8);
    int pid = clone(fn, stack_top, (int)flags | CLONE_VM | CLONE_PIDFD | SIGCHLD, arg, &pidfd);
    int err = errno;
    SYS4(SYS_rt_sigprocmask, SIG_SETMASK, &old, 0, 8);
    if (pid < 0)
        return -err;
    *pidfd_out = pidfd;
    return pid;
}

// ---- Joining a held user namespace -------------------------------------------------------------
//
// With a subordinate range, a new user namespace needs newuidmap and newgidmap to write its maps:
// two setuid programs, about 2 ms of every start. So a long-lived holder (sandbox-init
// --hold-userns, below) keeps one user namespace with the subordinate map, and a sandbox makes its
// own user namespace nested in that one: a process inside the held namespace has CAP_SETUID and
// CAP_SETGID there, so it may write any map of the ids the held namespace has (user_namespaces(7),
// "Defining user and group ID mappings": rules 1, 2 and 4b). Each sandbox still has a user
// namespace of its own: root in one sandbox has no capability over another's namespaces.
//
// setns(2) into a user namespace refuses a caller that shares its thread group or its fs_struct
// (kernel/user_namespace.c, userns_install()), so a first child joins: CLONE_VM but not CLONE_FS,
// and CLONE_VFORK, so that the parent thread stays suspended while that child runs on its stack
// and uses its thread-local errno (glibc's clone() writes it). The joining child clones PID 1 with
// CLONE_PARENT, which makes PID 1 our child as before (its exit signal is the joiner's, SIGCHLD),
// writes PID 1's maps, and exits.
//
// With a spare from the holder (its user namespace already nested in the held one, its maps already
// written), the joining child joins the spare's user namespace instead and clones PID 1 without
// CLONE_NEWUSER; PID 1 joins the spare's network namespace instead of making one. setns(2) lets us
// in: the spare's owner is our uid and its parent's parent is our namespace, which gives us every
// capability in it (kernel/capability.c: cap_capable() walks up to the namespace whose parent is
// ours). Should joining the spare fail, the held namespace is joined as before.

static int join_main(void *arg)
{
    struct sbx_spawn_args *a = arg;
    a->spare_joined = a->spare_userns_fd >= 0 && SYS2(SYS_setns, a->spare_userns_fd, CLONE_NEWUSER) == 0;
    if (!a->spare_joined) {
        long rc = SYS2(SYS_setns, a->userns_fd, CLONE_NEWUSER);
        if (rc < 0) {
            a->join_error = (int)-rc;
            return 0;
        }
    }
    // PID 1's stack is the first half; we run on the payload's half, which PID 1 uses only once it
    // has been released, long after we have exited. CLONE_NEWNET is left to PID 1 (init_main); a
    // spare's user namespace is PID 1's already.
    uint64_t flags = a->clone_flags & ~(uint64_t)(CLONE_NEWNET | CLONE_NEWUSER);
    if (!a->spare_joined)
        flags |= CLONE_NEWUSER;
    else
        flags &= ~(uint64_t)(CLONE_NEWIPC | CLONE_NEWUTS); // PID 1 joins the spare's (init_main)
    if (a->spare_joined && a->spare_mntns_fd >= 0)
        flags &= ~(uint64_t)CLONE_NEWNS; // likewise its prepared mount namespace
    int pidfd = -1;
    int pid = clone(init_main, a->stack + a->stack_size, (int)flags | CLONE_VM | CLONE_PIDFD | CLONE_PARENT | SIGCHLD, a, &pidfd);
    if (pid < 0) {
        a->join_error = errno; // ours to read: the parent thread is suspended (CLONE_VFORK)
        return 0;
    }
    a->joined_pid = pid;
    a->joined_pidfd = pidfd;
    if (a->spare_joined)
        return 0; // the holder wrote the spare's maps
    long rc = sbx_write_proc_file(pid, "uid_map", a->nested_uid_map);
    if (rc == 0)
        rc = sbx_write_proc_file(pid, "gid_map", a->nested_gid_map);
    if (rc < 0)
        a->join_error = (int)-rc;
    return 0;
}

static int spawn_in_held_userns(struct sbx_spawn_args *args, int *pidfd_out)
{
    args->join_error = 0;
    args->joined_pid = -1;
    args->joined_pidfd = -1;
    int joiner_pidfd = -1;
    // CLONE_FILES: PID 1's pidfd, made by the joiner's clone, must land in our fd table.
    int joiner = clone_blocked(join_main, args->stack + 2 * args->stack_size, CLONE_VFORK | CLONE_FILES, args, &joiner_pidfd);
    if (joiner < 0)
        return joiner;
    siginfo_t info;
    while (SYS5(SYS_waitid, P_PIDFD, joiner_pidfd, &info, WEXITED, 0) == -EINTR) {
    }
    close(joiner_pidfd);
    if (args->join_error != 0) {
        if (args->joined_pidfd >= 0) {
            // PID 1 waits for the sync byte, which it will never get: kill and reap it.
            SYS4(SYS_pidfd_send_signal, args->joined_pidfd, SIGKILL, 0, 0);
            while (SYS5(SYS_waitid, P_PIDFD, args->joined_pidfd, &info, WEXITED, 0) == -EINTR) {
            }
            close(args->joined_pidfd);
            args->joined_pidfd = -1;
        }
        return -args->join_error;
    }
    *pidfd_out = args->joined_pidfd;
    return args->joined_pid;
}

SBX_EXPORT int sbx_spawn(struct sbx_spawn_args *args, int *pidfd_out)
{
    args->spare_joined = 0;
    if (args->userns_fd >= 0)
        return spawn_in_held_userns(args, pidfd_out);
    // CLONE_NEWNET is left to the child (init_main).
    return clone_blocked(init_main, args->stack + args->stack_size, args->clone_flags & ~(uint64_t)CLONE_NEWNET, args, pidfd_out);
}

// ---- The holder of a user namespace -----------------------------------------------------------
//
// Started once, then reused by every sandbox with the same map until it has been idle for a while.
// The parent clones a first child into a new user namespace, writes its maps with newuidmap and
// newgidmap (IdMapWriter), and releases it. That child clones the holder (in the same namespace)
// and exits at once, so the holder is nobody's child but init's (or a subreaper's): a long-lived
// caller, such as an MSBuild node, is not left with a zombie when the holder exits. The holder
// execs sandbox-init --hold-userns, which hands the namespace to whoever connects to the listening
// socket it inherits (sandbox_init.c).

struct sbx_holder_args {
    int32_t sync_fd;       // read: one byte once the parent has written the maps
    int32_t status_fd;     // write, close-on-exec: the errno of a failed exec; EOF means it exec'd
    int32_t listen_fd;     // the listening socket: fd 3 of the holder
    int32_t init_fd;       // the sandbox-init executable
    char *const *argv;
    char *stack;           // 2 * stack_size bytes: the first child's stack, then the holder's
    uint64_t stack_size;
};

SBX_EXPORT int sbx_holder_args_size(void) { return (int)sizeof(struct sbx_holder_args); }

static int holder_main(void *arg);

static int holder_starter_main(void *arg)
{
    struct sbx_holder_args *a = arg;
    reset_signal_dispositions();
    char go;
    if (SYS3(SYS_read, a->sync_fd, &go, 1) != 1)
        raw_exit(125);
    // glibc's clone() for the new stack (see init_main); a failure is reported like a failed exec.
    // The holder's exit signal goes to whoever adopts it.
    int pid = clone(holder_main, a->stack + 2 * a->stack_size, CLONE_VM | SIGCHLD, a);
    if (pid < 0) {
        int32_t error = EAGAIN;
        SYS3(SYS_write, a->status_fd, &error, sizeof error);
        raw_exit(125);
    }
    raw_exit(0);
    return 0;
}

static int holder_main(void *arg)
{
    struct sbx_holder_args *a = arg;
    // A daemon: its own session (no terminal's SIGHUP or SIGINT reaches it), no hold on any mount
    // point, and nothing of ours but the socket: /dev/null as stdio, so that it never keeps a
    // caller's pipe open (a CI step waits for EOF on its output).
    SYS0(SYS_setsid);
    SYS1(SYS_chdir, "/");
    int wanted[3] = {a->listen_fd, a->init_fd, a->status_fd};
    long moved[3];
    for (int i = 0; i < 3; i++) {
        moved[i] = SYS3(SYS_fcntl, wanted[i], F_DUPFD, 3 + 3); // above the targets 3-5 (arrange_fds says why not higher)
        if (moved[i] < 0)
            raw_exit(125);
    }
    long null_fd = SYS4(SYS_openat, AT_FDCWD, "/dev/null", O_RDWR, 0);
    if (null_fd < 0)
        raw_exit(125);
    for (int fd = 0; fd < 3; fd++)
        SYS3(SYS_dup3, null_fd, fd, 0);
    for (int i = 0; i < 3; i++) {
        if (SYS3(SYS_dup3, moved[i], 3 + i, i == 0 ? 0 : O_CLOEXEC) < 0)
            raw_exit(125);
    }
    SYS3(SYS_close_range, 6, ~0U, 0);
    char *envp[] = {0};
    long rc = SYS5(SYS_execveat, 4, "", a->argv, envp, AT_EMPTY_PATH);
    int32_t error = (int32_t)-rc;
    SYS3(SYS_write, 5, &error, sizeof error);
    raw_exit(127);
    return 0;
}

// Clones the holder's starter into a new user namespace; it waits for the sync byte. Returns its
// pid (and a pidfd) or -errno: the parent writes the maps for that pid, then reaps it.
SBX_EXPORT int sbx_holder_spawn(struct sbx_holder_args *args, int *pidfd_out)
{
    return clone_blocked(holder_starter_main, args->stack + args->stack_size, CLONE_NEWUSER, args, pidfd_out);
}

// A copy of an executable in a sealed memfd (memfd_create(2)): the holder runs for minutes, and an
// executable that runs cannot be rewritten (ETXTBSY), which would break the next build that copies
// sandbox-init over the one it runs. Returns the memfd (close-on-exec) or -errno.
SBX_EXPORT int sbx_executable_copy(int fd)
{
    int copy = memfd_create("sandbox-userns", MFD_CLOEXEC | MFD_ALLOW_SEALING);
    if (copy < 0)
        return -errno;
    struct stat st;
    if (fstat(fd, &st) != 0)
        goto fail;
    off_t offset = 0;
    while (offset < st.st_size) {
        ssize_t n = sendfile(copy, fd, &offset, (size_t)(st.st_size - offset));
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            if (n == 0)
                errno = EIO;
            goto fail;
        }
    }
    if (fcntl(copy, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE | F_SEAL_SEAL) != 0)
        goto fail;
    return copy;
fail:;
    int err = errno;
    close(copy);
    return -err;
}

// A SOCK_SEQPACKET socket (close-on-exec) and the address of path; -errno when path does not fit.
static int unix_socket(const char *path, struct sockaddr_un *address)
{
    memset(address, 0, sizeof *address);
    address->sun_family = AF_UNIX;
    size_t n = strlen(path);
    if (n >= sizeof address->sun_path)
        return -ENAMETOOLONG;
    memcpy(address->sun_path, path, n);
    int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
    return fd < 0 ? -errno : fd;
}

// A listening SOCK_SEQPACKET socket at path (close-on-exec), or -errno.
SBX_EXPORT int sbx_userns_listen(const char *path)
{
    struct sockaddr_un address;
    int fd = unix_socket(path, &address);
    if (fd < 0)
        return fd;
    if (bind(fd, (struct sockaddr *)&address, sizeof address) != 0 || listen(fd, 64) != 0) {
        int err = errno;
        close(fd);
        return -err;
    }
    return fd;
}

// Whether fds a and b are the same namespace (nsfs: one inode per namespace).
static int same_namespace(int a, int b)
{
    struct stat sa, sb;
    return fstat(a, &sa) == 0 && fstat(b, &sb) == 0 && sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
}

// 0 when fd is a user namespace owned by our effective uid whose parent is the namespace `parent`;
// -EINVAL for another type, -EPERM for anything else.
static int owned_child_userns(int fd, int parent)
{
    if (ioctl(fd, NS_GET_NSTYPE) != CLONE_NEWUSER)
        return -EINVAL;
    uid_t owner = (uid_t)-1;
    if (ioctl(fd, NS_GET_OWNER_UID, &owner) != 0 || owner != geteuid())
        return -EPERM;
    int theirs = ioctl(fd, NS_GET_PARENT);
    if (theirs < 0)
        return -EPERM;
    int same = same_namespace(theirs, parent);
    close(theirs);
    return same ? 0 : -EPERM;
}

// 0 when fd is a user namespace that this process may use as a holder's: a direct child of our
// own user namespace, owned by our effective uid. Anything else (another type, someone else's, a
// namespace nested deeper, such as one a sandbox made inside itself) is -EPERM or -EINVAL: joining
// it could give its owner capabilities over the sandbox.
SBX_EXPORT int sbx_userns_verify(int fd)
{
    int ours = open("/proc/self/ns/user", O_RDONLY | O_CLOEXEC);
    if (ours < 0)
        return -EPERM;
    int rc = owned_child_userns(fd, ours);
    close(ours);
    return rc;
}

// 0 when fd is a namespace of the given type owned by the user namespace user, else -errno.
static int owned_namespace(int fd, int type, int user)
{
    if (ioctl(fd, NS_GET_NSTYPE) != type)
        return -EINVAL;
    int owning = ioctl(fd, NS_GET_USERNS);
    if (owning < 0)
        return -EPERM;
    int owned = same_namespace(owning, user);
    close(owning);
    return owned ? 0 : -EPERM;
}

// 0 when spare[] (user, net, ipc, uts) is a spare of the held namespace held: a user namespace of
// our uid nested in held, and network, IPC and UTS namespaces owned by that one (so root in the
// sandbox has CAP_NET_ADMIN and CAP_SYS_ADMIN over them). Anything else is not joined.
// (spare[SBX_SPARE_MNT] is checked by prepared_mount_verify.)
static int spare_verify(int held, const int *spare)
{
    int rc = owned_child_userns(spare[SBX_SPARE_USER], held);
    if (rc == 0)
        rc = owned_namespace(spare[SBX_SPARE_NET], CLONE_NEWNET, spare[SBX_SPARE_USER]);
    if (rc == 0)
        rc = owned_namespace(spare[SBX_SPARE_IPC], CLONE_NEWIPC, spare[SBX_SPARE_USER]);
    if (rc == 0)
        rc = owned_namespace(spare[SBX_SPARE_UTS], CLONE_NEWUTS, spare[SBX_SPARE_USER]);
    return rc;
}

// 0 when mnt is a mount namespace owned by the spare's user namespace and holder_mnt, the holder's
// own mount namespace, from which it was copied, is ours: a namespace made from another mount
// table than the caller's would show the sandbox other files than the ones its plan names.
static int prepared_mount_verify(int user, int mnt, int holder_mnt)
{
    int rc = owned_namespace(mnt, CLONE_NEWNS, user);
    if (rc < 0)
        return rc;
    int ours = open("/proc/self/ns/mnt", O_RDONLY | O_CLOEXEC);
    if (ours < 0)
        return -EPERM;
    int same = same_namespace(ours, holder_mnt);
    close(ours);
    return same ? 0 : -EXDEV;
}

// Connects to a holder at path: the connected socket (close-on-exec), or -errno: -ENOENT or
// -ECONNREFUSED when no holder listens there. The holder answers a connection at once, so a caller
// may connect early and do other work while the holder wakes up and sends (on a two-CPU machine
// that wake-up took most of a fetch's 150 us), then take the answer with sbx_userns_receive.
SBX_EXPORT int sbx_userns_connect(const char *path)
{
    struct sockaddr_un address;
    int fd = unix_socket(path, &address);
    if (fd < 0)
        return fd;
    // A holder that is stopped must not hang the run: after a second, do without it.
    struct timeval timeout = {1, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
    if (connect(fd, (struct sockaddr *)&address, sizeof address) != 0) {
        int err = errno;
        close(fd);
        return -err;
    }
    return fd;
}

// Reads what the holder connected at fd hands over (the caller still closes fd): the user
// namespace fd (close-on-exec), verified by sbx_userns_verify; or -errno. When the holder also
// hands over a spare that spare_verify accepts, spare[0..SBX_SPARE_COUNT) gets its fds (user, net,
// ipc, uts, and the prepared mount namespace if it came and prepared_mount_verify accepts it;
// close-on-exec); else they are -1. spare[SBX_SPARE_COUNT] is the length of what overlay (of
// SBX_OVERLAY_HINT_SIZE bytes) received: the overlay the prepared namespace has mounted, or 0.
SBX_EXPORT int sbx_userns_receive(int fd, int *spare, char *overlay)
{
    for (int i = 0; i < SBX_SPARE_COUNT; i++)
        spare[i] = -1;
    spare[SBX_SPARE_COUNT] = 0;
    char byte;
    struct iovec iov[2] = {{&byte, 1}, {overlay, SBX_OVERLAY_HINT_SIZE}};
    union {
        struct cmsghdr header;
        char space[CMSG_SPACE((2 + SBX_SPARE_COUNT) * sizeof(int))];
    } control;
    memset(&control, 0, sizeof control);
    struct msghdr message = {0};
    message.msg_iov = iov;
    message.msg_iovlen = 2;
    message.msg_control = control.space;
    message.msg_controllen = sizeof control.space;
    ssize_t n;
    do
        n = recvmsg(fd, &message, MSG_CMSG_CLOEXEC);
    while (n < 0 && errno == EINTR);
    if (n < 0)
        return -errno;
    struct cmsghdr *c = CMSG_FIRSTHDR(&message);
    if (c == NULL || c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
        return -EPROTO;
    // Every fd the kernel installed is closed unless it is taken (at most MAX_FDS fit in our buffer;
    // more would have been closed by the kernel, with MSG_CTRUNC): 1 ('n'), the held namespace;
    // 5 ('p'), with a spare; 7 ('m'), with its prepared mount namespace and the holder's own.
    enum { MAX_FDS = 2 + SBX_SPARE_COUNT, WITH_SPARE = SBX_SPARE_COUNT };
    int fds[MAX_FDS];
    size_t bytes = c->cmsg_len >= CMSG_LEN(0) ? c->cmsg_len - CMSG_LEN(0) : 0;
    int count = bytes / sizeof(int) > MAX_FDS ? MAX_FDS : (int)(bytes / sizeof(int));
    if (count == 0)
        return -EPROTO;
    memcpy(fds, CMSG_DATA(c), count * sizeof(int));
    int expected = byte == 'n' ? 1 : byte == 'p' ? WITH_SPARE : byte == 'm' || byte == 'o' ? MAX_FDS : -1;
    // 'o' carries the overlay after the byte (its two strings' NULs included); the others nothing.
    int rc = n < 1 || (byte == 'o' ? n < 4 || overlay[n - 2] != 0 : n != 1) || (message.msg_flags & (MSG_CTRUNC | MSG_TRUNC)) ||
             count != expected ? -EPROTO : sbx_userns_verify(fds[0]);
    if (rc < 0) {
        for (int i = 0; i < count; i++)
            close(fds[i]);
        return rc;
    }
    if (count > 1) {
        if (spare_verify(fds[0], fds + 1) == 0) {
            for (int i = 0; i < SBX_SPARE_MNT; i++)
                spare[i] = fds[1 + i];
            if (count == MAX_FDS && prepared_mount_verify(fds[1 + SBX_SPARE_USER], fds[1 + SBX_SPARE_MNT], fds[MAX_FDS - 1]) == 0) {
                spare[SBX_SPARE_MNT] = fds[1 + SBX_SPARE_MNT];
                spare[SBX_SPARE_COUNT] = byte == 'o' ? (int)n - 1 : 0;
            } else if (count == MAX_FDS)
                close(fds[1 + SBX_SPARE_MNT]);
        } else {
            for (int i = 1; i < WITH_SPARE; i++)
                close(fds[i]);
            if (count == MAX_FDS)
                close(fds[1 + SBX_SPARE_MNT]);
        }
        if (count == MAX_FDS)
            close(fds[MAX_FDS - 1]);
    }
    return fds[0];
}

// sbx_userns_connect and sbx_userns_receive in one: what the holder at path hands over, or -errno.
SBX_EXPORT int sbx_userns_fetch(const char *path, int *spare, char *overlay)
{
    for (int i = 0; i < SBX_SPARE_COUNT; i++)
        spare[i] = -1;
    spare[SBX_SPARE_COUNT] = 0;
    int fd = sbx_userns_connect(path);
    if (fd < 0)
        return fd;
    int rc = sbx_userns_receive(fd, spare, overlay);
    close(fd);
    return rc;
}

// Waits for PID 1 to exit and returns its wait status and rusage (which includes the payload and
// every descendant PID 1 reaped). Blocking; call once the report pipe reached EOF.
SBX_EXPORT int sbx_wait(int pidfd, int *status_out, int64_t *user_usec, int64_t *system_usec)
{
    siginfo_t info;
    struct rusage usage;
    memset(&info, 0, sizeof info);
    memset(&usage, 0, sizeof usage);
    long rc;
    do
        rc = SYS5(SYS_waitid, P_PIDFD, pidfd, &info, WEXITED, &usage);
    while (rc == -EINTR);
    if (rc < 0)
        return (int)rc;
    *status_out = info.si_code == CLD_EXITED ? (info.si_status & 0xff) << 8 : (info.si_status & 0x7f);
    *user_usec = (int64_t)usage.ru_utime.tv_sec * 1000000 + usage.ru_utime.tv_usec;
    *system_usec = (int64_t)usage.ru_stime.tv_sec * 1000000 + usage.ru_stime.tv_usec;
    return 0;
}

SBX_EXPORT int sbx_pidfd_kill(int pidfd, int sig)
{
    return (int)SYS4(SYS_pidfd_send_signal, pidfd, sig, 0, 0);
}

// ---- signals to the caller, forwarded to the sandbox (docker's --sig-proxy) --------------------
//
// .NET's PosixSignalRegistration runs its handlers on a thread it starts at the first registration
// (a clone, an 8 MiB stack, the terminal's settings read), and exit_group then waits for that
// thread too: 0.25 ms of a warm `sandbox run` (300 runs alternating with and without it, perf
// sched tracepoints; 0.12 ms of it while the executor sets up, on the same CPUs). Here a handler
// writes the signal's number into a pipe that the supervisor's poll(2) loop waits on beside the
// sandbox's own pipes, and the loop forwards it: no thread.
//
// One pipe per process, made at the first call and never closed: a handler still running on
// another thread (any thread that does not block a signal may take it) must never write into an
// fd number that was closed and reused. Its write end is non-blocking: with 64 KiB of signals
// unread, more are dropped rather than block a handler. The handler makes one raw write(2), which
// is async-signal-safe and leaves errno alone.

#define SBX_MAX_SIGNAL 64

static int signal_pipe[2] = {-1, -1};
static struct sigaction saved_actions[SBX_MAX_SIGNAL + 1];

static void forward_signal(int signal)
{
    unsigned char number = (unsigned char)signal;
    SYS3(SYS_write, signal_pipe[1], &number, 1);
}

// Puts back the actions sbx_signals_forward replaced for signals[0..count).
SBX_EXPORT void sbx_signals_restore(const int *signals, int count)
{
    for (int i = 0; i < count; i++) {
        if (signals[i] > 0 && signals[i] <= SBX_MAX_SIGNAL)
            sigaction(signals[i], &saved_actions[signals[i]], NULL);
    }
}

// From now on, signals[0..count) (each 1..64, and not SIGKILL or SIGSTOP) are written into the
// pipe instead of taking their action. Returns the pipe's read end (non-blocking, close-on-exec;
// the caller must not close it), emptied of any number an earlier forwarding left, or -errno
// (then no action is changed). Not for two callers at once: the saved actions are per process.
SBX_EXPORT int sbx_signals_forward(const int *signals, int count)
{
    if (signal_pipe[0] < 0) {
        int fds[2];
        long rc = SYS2(SYS_pipe2, fds, O_CLOEXEC | O_NONBLOCK);
        if (rc < 0)
            return (int)rc;
        signal_pipe[0] = fds[0];
        signal_pipe[1] = fds[1];
    }
    unsigned char drain[64];
    while (SYS3(SYS_read, signal_pipe[0], drain, sizeof drain) > 0) {
    }
    struct sigaction action;
    memset(&action, 0, sizeof action);
    action.sa_handler = forward_signal;
    action.sa_flags = SA_RESTART;
    // The other forwarded signals wait while the handler runs, so no two writes interleave (and
    // each is one byte, which a pipe writes atomically anyway).
    sigemptyset(&action.sa_mask);
    for (int i = 0; i < count; i++) {
        if (signals[i] > 0 && signals[i] <= SBX_MAX_SIGNAL)
            sigaddset(&action.sa_mask, signals[i]);
    }
    for (int i = 0; i < count; i++) {
        int error = signals[i] > 0 && signals[i] <= SBX_MAX_SIGNAL ? 0 : EINVAL;
        // A signal ignored when we got here stays ignored, and is not forwarded: `nohup sandbox
        // run …` must outlive a hangup, and a background job of a script (started with SIGINT and
        // SIGQUIT ignored) a Ctrl-C meant for the foreground, as for any program (POSIX, "Shell
        // Command Language" 2.11: signals ignored on entry to a non-interactive shell stay ignored;
        // bash, make and ssh do not catch them either). Its saved action is that SIG_IGN.
        if (!error && sigaction(signals[i], NULL, &saved_actions[signals[i]]) == 0 && saved_actions[signals[i]].sa_handler == SIG_IGN)
            continue;
        if (!error && sigaction(signals[i], &action, &saved_actions[signals[i]]) < 0)
            error = errno;
        if (error) {
            sbx_signals_restore(signals, i);
            return -error;
        }
    }
    return signal_pipe[0];
}

// ---- handing the address space's teardown to a child -----------------------------------------
//
// A process's exit unmaps its address space before its parent learns of it (do_exit: exit_mm comes
// before exit_notify). For the NativeAOT CLI that was 0.25 to 0.35 ms between its exit_group and
// its caller's wake-up (perf tracepoints, median 343 us), mostly unmapping the ~1,400 pages it has
// mapped. A CLONE_VM child that outlives us holds the address space, so that our exit only drops a
// reference; it waits on our pidfd, which becomes readable once our whole thread group has exited
// (pidfd_open(2)), and then exits and unmaps it, off our caller's path (median 90 us from
// exit_group to the caller's wake-up). It holds no fd but the pidfd (a caller reading our output to
// its end would wait for it), keeps every signal blocked (our handlers are .NET's: they must not
// run on its stack), makes only raw system calls on a small stack of its own, and is named
// "sandbox-exit". It lives beside us, asleep, and outlives us by the unmapping, a fraction of a
// millisecond.
//
// It runs at our own priority. It ran as SCHED_IDLE for a while, so that our caller, woken by our
// exit at the same moment, would run before the unmapping. On a machine whose CPUs are all busy
// (eight busy loops on two CPUs) that gave sandbox runs tails of 0.9 to 1.9 s (90th percentile 80
// to 270 ms; bubblewrap's longest 48 ms), and at our own priority the longest was 52 to 72 ms.
// The likely cause: unmapping takes sleeping locks that others need (the executable's i_mmap_rwsem
// for one, which the next start of the same executable takes to map it), and a SCHED_IDLE task
// preempted while it holds one makes them wait until no ordinary task wants a CPU; the kernel's
// rwsems have no priority inheritance. Unloaded, the two measured the same (400 paired rounds, two copies each).

static char teardown_stack[16384] __attribute__((aligned(64)));

static int teardown_main(void *arg)
{
    int pidfd = (int)(long)arg;
    if (pidfd > 0)
        SYS3(SYS_close_range, 0, pidfd - 1, 0);
    SYS3(SYS_close_range, pidfd + 1, ~0U, 0);
    struct pollfd wait_for = {pidfd, POLLIN, 0};
    while (SYS3(SYS_poll, &wait_for, 1, -1) == -EINTR) {
    }
    raw_exit(0);
    return 0;
}

// Returns the child's pid or -errno. The child only waits for our exit, so it may be made at any
// time before it: the CLI makes it once its sandbox has started, while it would only wait for PID 1
// (made right before the exit, its clone was on the exit's path). Once per process: there is one
// stack for the child (-EALREADY after the first call).
SBX_EXPORT int sbx_defer_teardown(void)
{
    static int made;
    if (__atomic_exchange_n(&made, 1, __ATOMIC_SEQ_CST))
        return -EALREADY;
    long pidfd = SYS2(SYS_pidfd_open, SYS0(SYS_getpid), 0);
    if (pidfd < 0)
        return (int)pidfd;
    uint64_t all = ~0ULL, old = 0;
    SYS4(SYS_rt_sigprocmask, SIG_SETMASK, &all, &old, 8);
    // Its command line is ours (it is read from the address space we share): a name of its own
    // tells it apart in ps and /proc/PID/comm. Given before the clone, so that it has it from the
    // start, even if we exit before it first runs.
    char name[16] = {0};
    SYS5(SYS_prctl, PR_GET_NAME, (long)name, 0, 0, 0);
    SYS5(SYS_prctl, PR_SET_NAME, (long)"sandbox-exit", 0, 0, 0);
    int pid = clone(teardown_main, teardown_stack + sizeof teardown_stack, CLONE_VM | SIGCHLD, (void *)pidfd);
    int error = pid < 0 ? errno : 0;
    SYS5(SYS_prctl, PR_SET_NAME, (long)name, 0, 0, 0);
    SYS4(SYS_rt_sigprocmask, SIG_SETMASK, &old, 0, 8);
    SYS1(SYS_close, pidfd);
    return pid < 0 ? -error : pid;
}

// ---- file operations inside a user namespace (the layer store's owners) ----------------------
//
// An unprivileged user cannot chown a file to one of its subordinate ids, nor remove what such an
// id owns in a 0700 directory. Root of a user namespace whose map holds those ids can (the
// kernel's capable_wrt_inode_uidgid(): CAP_CHOWN, CAP_DAC_OVERRIDE and CAP_FOWNER count for inodes
// whose owner and group are mapped). So the store clones a child into a new user namespace, the
// parent writes the map with newuidmap/newgidmap (as for a sandbox), and the child runs a list of
// operations with raw system calls only: the same rules as the sandbox's child (CLONE_VM, no errno,
// no allocation, every signal blocked and reset to its default).
//
// Paths are relative to `root` and resolved with openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS |
// RESOLVE_NO_XDEV): a symlink in a layer can never send a chown or an unlink elsewhere; the last
// component is never followed (AT_SYMLINK_NOFOLLOW, O_NOFOLLOW).

enum sbx_file_op_kind {
    SBX_FILE_CHOWN = 1,        // lchown(path, uid, gid), then chmod(mode & 07777) unless a symlink
    SBX_FILE_REMOVE_TREE = 2,  // rm -rf path: never follows a symlink, never crosses a mount
};

struct sbx_file_op {
    int32_t kind;
    uint32_t mode;             // SBX_FILE_CHOWN: the st_mode the entry has (type checked) and keeps
    uint32_t uid;              // SBX_FILE_CHOWN: ids inside the namespace
    uint32_t gid;
    const char *path;          // relative to root: no leading '/'; the last component is not "." or ".."
};

struct sbx_file_args {
    uint64_t clone_flags;      // CLONE_NEWUSER; CLONE_VM, CLONE_PIDFD and SIGCHLD are added here
    const char *root;          // an absolute directory every path is beneath
    const struct sbx_file_op *ops;
    int64_t op_count;
    int32_t sync_fd;           // read end: one byte once the parent has written the maps (EOF: give up)
    int32_t reserved;
    char *stack;
    uint64_t stack_size;
    char *buffer;              // scratch: two paths of SBX_PATH_MAX, then getdents64 records
    uint64_t buffer_size;
    // Written by the child (CLONE_VM: the same memory), read by the parent once it reaped the child.
    int64_t failed_op;         // -1 when every operation succeeded
    int32_t error;             // the errno of the failed operation
    int32_t reserved2;
    int64_t removed_bytes;     // st_size of the regular files removed (per name)
};

#define SBX_PATH_MAX 4096

SBX_EXPORT int sbx_file_op_size(void) { return (int)sizeof(struct sbx_file_op); }
SBX_EXPORT int sbx_file_args_size(void) { return (int)sizeof(struct sbx_file_args); }

static long open_beneath(long rootfd, const char *relative, long flags)
{
    struct open_how how;
    memset(&how, 0, sizeof how);
    how.flags = (uint64_t)(flags | O_CLOEXEC);
    how.resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV;
    return SYS4(SYS_openat2, rootfd, *relative ? relative : ".", &how, sizeof how);
}

static int str_eq(const char *a, const char *b)
{
    while (*a && *a == *b) {
        a++;
        b++;
    }
    return *a == *b;
}

// Copies path into buf and cuts it into its parent (buf, "" for the root) and last component
// (*name, inside buf). -EINVAL for names no operation may act on.
static int split_path(const char *path, char *buf, const char **name)
{
    size_t len = sbx_length(path);
    if (len == 0 || len >= SBX_PATH_MAX || path[0] == '/')
        return -EINVAL;
    for (size_t i = 0; i <= len; i++)
        buf[i] = path[i];
    size_t slash = len;
    while (slash > 0 && buf[slash - 1] != '/')
        slash--;
    *name = buf + slash;
    if (**name == 0 || str_eq(*name, ".") || str_eq(*name, ".."))
        return -EINVAL;
    if (slash == 0)
        buf[0] = 0, *name = path; // no parent: the name is the whole (unchanged) path
    else
        buf[slash - 1] = 0;
    return 0;
}

struct parent_cache {
    long fd;                   // the open parent directory, or -1
    char *path;                // its path (SBX_PATH_MAX bytes of the scratch buffer)
};

// The parent directory of the current operation: consecutive operations in one directory (the
// usual order) share one openat2.
static long cached_parent(long rootfd, struct parent_cache *cache, const char *parent)
{
    if (cache->fd >= 0 && str_eq(cache->path, parent))
        return cache->fd;
    if (cache->fd >= 0)
        SYS1(SYS_close, cache->fd);
    cache->fd = -1;
    long fd = open_beneath(rootfd, parent, O_PATH | O_DIRECTORY);
    if (fd < 0)
        return fd;
    size_t n = sbx_length(parent);
    for (size_t i = 0; i <= n; i++)
        cache->path[i] = parent[i];
    cache->fd = fd;
    return fd;
}

static int file_chown(long parent, const char *name, const struct sbx_file_op *op)
{
    struct stat st;
    long rc = SYS4(SYS_newfstatat, parent, name, &st, AT_SYMLINK_NOFOLLOW);
    if (rc < 0)
        return (int)rc;
    // The store made this entry and holds the layer's lock: a different type means the list and
    // the tree disagree, and nothing is changed.
    if ((st.st_mode & S_IFMT) != (op->mode & S_IFMT))
        return -ESTALE;
    rc = SYS5(SYS_fchownat, parent, name, op->uid, op->gid, AT_SYMLINK_NOFOLLOW);
    if (rc < 0)
        return (int)rc;
    if (S_ISLNK(st.st_mode))
        return 0;
    // chown(2) clears setuid, and setgid on group-executable files, of non-directories (even for
    // root; LTP chown05): the entry's own mode goes back on. Not a symlink (checked above), so
    // fchmodat, which follows one, acts on the entry itself.
    return (int)SYS3(SYS_fchmodat, parent, name, op->mode & 07777);
}

struct linux_dirent64_head {
    uint64_t d_ino;
    int64_t d_off;
    unsigned short d_reclen;
    unsigned char d_type;
    char d_name[];
};

// rm -rf of parent/name with one directory fd open at a time: a directory is listed from its start
// again after each descent (entries removed meanwhile are gone), so depth costs no fds and no
// memory; ".." leads back up, never above the tree's top (depth counts).
static int remove_tree(long parent, const char *name, char *dents, size_t dents_size, int64_t *bytes)
{
    struct stat st;
    long rc = SYS4(SYS_newfstatat, parent, name, &st, AT_SYMLINK_NOFOLLOW);
    if (rc == -ENOENT)
        return 0;
    if (rc < 0)
        return (int)rc;
    if (!S_ISDIR(st.st_mode)) {
        rc = SYS3(SYS_unlinkat, parent, name, 0);
        if (rc == 0 && S_ISREG(st.st_mode))
            *bytes += st.st_size;
        return rc == -ENOENT ? 0 : (int)rc;
    }
    uint64_t device = st.st_dev;
    long fd = SYS4(SYS_openat, parent, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC, 0);
    if (fd < 0)
        return (int)fd;
    long depth = 0;
    for (;;) {
        int seen = 0, descended = 0;
        SYS3(SYS_lseek, fd, 0, SEEK_SET);
        for (;;) {
            long n = SYS3(SYS_getdents64, fd, dents, dents_size);
            if (n < 0) {
                SYS1(SYS_close, fd);
                return (int)n;
            }
            if (n == 0)
                break;
            for (long off = 0; off < n && !descended;) {
                struct linux_dirent64_head *d = (struct linux_dirent64_head *)(dents + off);
                off += d->d_reclen;
                const char *entry = d->d_name;
                if (str_eq(entry, ".") || str_eq(entry, ".."))
                    continue;
                seen = 1;
                rc = SYS4(SYS_newfstatat, fd, entry, &st, AT_SYMLINK_NOFOLLOW);
                if (rc == -ENOENT)
                    continue;
                if (rc < 0) {
                    SYS1(SYS_close, fd);
                    return (int)rc;
                }
                if (!S_ISDIR(st.st_mode)) {
                    rc = SYS3(SYS_unlinkat, fd, entry, 0);
                    if (rc == 0 && S_ISREG(st.st_mode))
                        *bytes += st.st_size;
                    if (rc < 0 && rc != -ENOENT) {
                        SYS1(SYS_close, fd);
                        return (int)rc;
                    }
                    continue;
                }
                rc = SYS3(SYS_unlinkat, fd, entry, AT_REMOVEDIR);
                if (rc == 0 || rc == -ENOENT)
                    continue;
                if (rc != -ENOTEMPTY && rc != -EEXIST) {
                    SYS1(SYS_close, fd);
                    return (int)rc;
                }
                if (st.st_dev != device) {
                    SYS1(SYS_close, fd);
                    return -EXDEV; // a mount point inside: not ours to empty
                }
                long child = SYS4(SYS_openat, fd, entry, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC, 0);
                if (child < 0) {
                    SYS1(SYS_close, fd);
                    return (int)child;
                }
                SYS1(SYS_close, fd);
                fd = child;
                depth++;
                descended = 1;
            }
            if (descended)
                break;
        }
        if (descended || seen)
            continue; // list the (new) current directory again from its start
        // Empty: go up; the parent's next listing removes it.
        if (depth == 0) {
            SYS1(SYS_close, fd);
            rc = SYS3(SYS_unlinkat, parent, name, AT_REMOVEDIR);
            return rc == -ENOENT ? 0 : (int)rc;
        }
        long up = SYS4(SYS_openat, fd, "..", O_RDONLY | O_DIRECTORY | O_CLOEXEC, 0);
        SYS1(SYS_close, fd);
        if (up < 0)
            return (int)up;
        fd = up;
        depth--;
    }
}

static int file_ops_main(void *arg)
{
    struct sbx_file_args *a = arg;
    // Every signal is blocked (the parent blocked them around clone) and stays blocked: .NET's
    // handlers must never run on this stack (DESIGN.md). SIGKILL still ends us.
    reset_signal_dispositions();
    SYS5(SYS_prctl, PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
    char go;
    if (SYS3(SYS_read, a->sync_fd, &go, 1) != 1)
        raw_exit(125); // the parent could not write the maps and gave up
    long rootfd = SYS4(SYS_openat, AT_FDCWD, a->root, O_PATH | O_DIRECTORY | O_CLOEXEC, 0);
    if (rootfd < 0) {
        a->failed_op = 0;
        a->error = (int32_t)-rootfd;
        raw_exit(1);
    }
    char *split = a->buffer;
    struct parent_cache cache = {-1, a->buffer + SBX_PATH_MAX};
    cache.path[0] = 0;
    char *dents = a->buffer + 2 * SBX_PATH_MAX;
    size_t dents_size = a->buffer_size - 2 * SBX_PATH_MAX;
    for (int64_t i = 0; i < a->op_count; i++) {
        const struct sbx_file_op *op = &a->ops[i];
        const char *name;
        int rc = split_path(op->path, split, &name);
        if (rc == 0) {
            long parent = cached_parent(rootfd, &cache, split);
            if (parent < 0)
                rc = (int)parent;
            else if (op->kind == SBX_FILE_CHOWN)
                rc = file_chown(parent, name, op);
            else if (op->kind == SBX_FILE_REMOVE_TREE)
                rc = remove_tree(parent, name, dents, dents_size, &a->removed_bytes);
            else
                rc = -EINVAL;
        }
        if (rc < 0) {
            a->failed_op = i;
            a->error = -rc;
            raw_exit(1);
        }
    }
    raw_exit(0);
    return 0;
}

// Clones the child of sbx_file_args in its new user namespace. Returns its pid, or -errno. The
// caller writes the maps, writes one byte to the sync pipe, and reaps the child with sbx_wait.
SBX_EXPORT int sbx_file_spawn(struct sbx_file_args *args, int *pidfd_out)
{
    if (args->buffer_size < 2 * SBX_PATH_MAX + 32768)
        return -EINVAL;
    args->failed_op = -1;
    args->error = 0;
    args->removed_bytes = 0;
    return clone_blocked(file_ops_main, args->stack + args->stack_size, args->clone_flags, args, pidfd_out);
}

extern char **environ;

// Runs n helper programs (newuidmap and newgidmap) side by side and waits for all of them: each gets
// /dev/null as stdin and stdout and a pipe as stderr, whose first errsize-1 bytes land in
// errbufs + i * errsize. statuses[i] is the wait status, or -errno when the helper could not be
// started. posix_spawn(3): a vfork-style spawn, much cheaper than System.Diagnostics.Process (which
// sets up SIGCHLD handling, threads and streams: ~1 ms of a warm start per helper).
SBX_EXPORT void sbx_run_helpers(int n, const char *const *files, char *const *const *argvs, int *statuses, char *errbufs, int errsize)
{
    pid_t pids[8];
    int errfds[8];
    if (n > 8)
        n = 8;
    sigset_t none, all;
    sigemptyset(&none);
    sigfillset(&all);
    for (int i = 0; i < n; i++) {
        pids[i] = -1;
        errfds[i] = -1;
        errbufs[i * errsize] = 0;
        int pipefd[2];
        if (pipe2(pipefd, O_CLOEXEC) != 0) {
            statuses[i] = -errno;
            continue;
        }
        posix_spawn_file_actions_t actions;
        posix_spawnattr_t attr;
        posix_spawn_file_actions_init(&actions);
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
        posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0);
        posix_spawn_file_actions_adddup2(&actions, pipefd[1], 2);
        // A setuid helper gets nothing of ours beyond stdio, whatever we inherited without
        // close-on-exec (glibc >= 2.34).
        posix_spawn_file_actions_addclosefrom_np(&actions, 3);
        posix_spawnattr_init(&attr);
        // The runtime's handlers and mask must not reach the helper.
        posix_spawnattr_setsigmask(&attr, &none);
        posix_spawnattr_setsigdefault(&attr, &all);
        posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
        int rc = posix_spawnp(&pids[i], files[i], &actions, &attr, argvs[i], environ);
        posix_spawn_file_actions_destroy(&actions);
        posix_spawnattr_destroy(&attr);
        close(pipefd[1]);
        if (rc != 0) {
            pids[i] = -1;
            statuses[i] = -rc;
            close(pipefd[0]);
            continue;
        }
        errfds[i] = pipefd[0];
    }
    for (int i = 0; i < n; i++) {
        if (pids[i] < 0)
            continue;
        // Read to EOF first (the helper's exit closes the pipe): a chatty helper never blocks on a full pipe.
        int got = 0;
        char sink[256];
        for (;;) {
            char *into = got < errsize - 1 ? errbufs + i * errsize + got : sink;
            size_t room = got < errsize - 1 ? (size_t)(errsize - 1 - got) : sizeof sink;
            ssize_t r = read(errfds[i], into, room);
            if (r < 0 && errno == EINTR)
                continue;
            if (r <= 0)
                break;
            if (into != sink)
                got += (int)r;
        }
        errbufs[i * errsize + got] = 0;
        close(errfds[i]);
        int status = 0;
        pid_t w;
        do
            w = waitpid(pids[i], &status, 0);
        while (w < 0 && errno == EINTR);
        statuses[i] = w < 0 ? -errno : status;
    }
}
