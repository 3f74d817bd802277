// sandbox-init: PID 1 of every sandbox, after the native executor has set the sandbox up.
//
// The executor's child shares the supervisor's address space (CLONE_VM, see sandbox_exec.c); it
// execs this small static program so that PID 1 has an address space of its own, which it makes
// non-dumpable: then nothing in the sandbox can ptrace PID 1 or open /proc/1/mem or /proc/1/exe
// (ptrace(2), "Ptrace access mode checking"; CVE-2019-5736). Static, because it runs inside any root
// file system, with or without a libc.
//
// It is built without a libc (-nostdlib, its own _start, raw system calls): every sandbox starts it,
// and glibc's start-up alone took 0.5 ms of CPU here against 0.05 ms for a program without it
// (`perf stat -r 200` of an empty main, static, on this kernel under KVM): glibc probes the CPU with
// dozens of CPUID instructions (init_cpu_features, the cache-size tables), and in a virtual machine
// each CPUID traps to the hypervisor (about 5 us each, measured).
//
// Its job is what an init does in a container (tini, docker-init): release the payload, reap every
// orphan, forward SIGINT/SIGTERM/SIGHUP/SIGQUIT/SIGUSR1/SIGUSR2/SIGWINCH to the payload, report the
// payload's exact wait status, and exit when the payload does (the kernel then kills the rest of
// the PID namespace) or when the parent dies (die-with-parent).
//
// usage (by the executor only): sandbox-init PAYLOAD_PID, with fds 4, 5, 7, 8 as in sandbox_protocol.h
// and every signal blocked.
//
// It is also the holder of a user namespace (sandbox_exec.c, "Joining a held user namespace"):
// sandbox-init --hold-userns IDLE_SECONDS UID_MAP GID_MAP, started inside that namespace with a
// listening socket at fd 3, hands the namespace to every process of its own user that connects, and
// exits once no one has connected for IDLE_SECONDS. Sandboxes that joined keep the namespace alive
// themselves. With the maps of a sandbox's nested user namespace, it also makes the next sandbox's
// user, network, IPC, UTS and mount namespaces ahead of time (a spare; see "spares" below).
#include <linux/errno.h>
#include <linux/fcntl.h>
#include <linux/mount.h>
#include <linux/time_types.h>
#include <linux/poll.h>
#include <linux/prctl.h>
#include <linux/resource.h>
#include <linux/sched.h>
#include <linux/signal.h>
#include <linux/signalfd.h>
#include <linux/wait.h>

#include "sandbox_kernel.h"
#include "sandbox_protocol.h"
#include "sandbox_syscall.h"

// The kernel's sigset_t is one 64-bit word on x86_64 and aarch64 (rt_sigprocmask(2): sigsetsize 8).
#define KERNEL_SIGSET_SIZE 8
#define SIGNAL_BIT(sig) (1ULL << ((sig) - 1))

static void report_with_times(int32_t kind, int32_t step, int32_t error, int32_t value, int64_t user_usec, int64_t system_usec)
{
    struct sbx_report r = {kind, step, error, value, user_usec, system_usec};
    // 32 bytes < PIPE_BUF: one atomic write (pipe(7)).
    SYS3(SYS_write, SBX_FD_REPORT, &r, sizeof r);
}

static void report(int32_t kind, int32_t step, int32_t error, int32_t value)
{
    report_with_times(kind, step, error, value, 0, 0);
}

static __attribute__((noreturn)) void exit_with(int code)
{
    for (;;)
        SYS1(SYS_exit_group, code);
}

// A decimal number up to PID_MAX_LIMIT (a pid, or the holder's idle seconds); -1 when the text is not one.
static long parse_decimal(const char *text)
{
    long value = 0;
    if (text == 0 || *text == 0)
        return -1;
    for (; *text; text++) {
        if (*text < '0' || *text > '9' || value > 4194304) // PID_MAX_LIMIT
            return -1;
        value = value * 10 + (*text - '0');
    }
    return value;
}

static long read_retrying(int fd, void *buffer, unsigned long size)
{
    long n;
    do
        n = SYS3(SYS_read, fd, buffer, size);
    while (n == -EINTR);
    return n;
}

// ---- spares: the next sandbox's namespaces, made ahead of time --------------------------------
// A new network namespace is the slowest part of a sandbox's start: copy_net_ns() registers a
// loopback device and its sysctl tables in every per-network subsystem (0.6 ms here, measured with
// a C loop of unshare(CLONE_NEWNET) in a user namespace; bringing lo up is 0.1 ms more). So while no
// one is waiting, a child of the holder makes the pair the next sandbox would make: a user
// namespace nested in ours with the sandbox's map, and a network namespace owned by that one, so
// that root in the sandbox keeps CAP_NET_ADMIN over its own network (a network namespace the holder
// itself made would belong to the held namespace, out of the sandbox's reach). Each pair goes to
// one caller only and is then closed here; a caller that finds none makes its own, as before.
// The spare's IPC and UTS namespaces come with it: made at the start, by the clone of PID 1, they
// took 29 and 7 µs of every start (a C loop of unshare(2) in fresh children in a user namespace,
// 200 each), on the path where the caller waits. Unlike the mount namespace, neither copies
// anything of the host that could change before the spare is used.
//
// The mount namespace does: it is a copy of our mounts when it is made. It comes with the spare
// too, already in the state every plan starts from (the first steps of RootfsPlanner.Plan, marked
// there as done in a prepared namespace): mounts made slaves, a scratch tmpfs at /tmp with /newroot
// and /oldroot in it, pivoted into with the host's tree at /oldroot. That was the namespace's copy
// (33 µs) and about 60 to 120 µs of steps at every start. Two rules keep it a copy of what the
// caller sees: it is dropped when our mount table changes (a POLLPRI on /proc/self/mounts, proc(5))
// and the caller takes it only when its own mount namespace is ours (we send ours with it).

enum { SPARE_USER, SPARE_NET, SPARE_IPC, SPARE_UTS, SPARE_MNT, SPARE_COUNT };

// Characters, not pointers: this program is loaded with no dynamic linker to relocate a table of
// pointers (a static PIE that nobody relocates reads them as raw offsets).
static const char spare_names[SPARE_COUNT][8] = {"ns/user", "ns/net", "ns/ipc", "ns/uts", "ns/mnt"};

struct spare {
    long ns[SPARE_COUNT]; // -1 when there is none
};

static void spare_close(struct spare *s)
{
    for (int i = 0; i < SPARE_COUNT; i++) {
        if (s->ns[i] >= 0)
            SYS1(SYS_close, s->ns[i]);
        s->ns[i] = -1;
    }
}

// A process's namespace ("ns/user", "ns/net"), opened read-only.
static long open_namespace(long pid, const char *name)
{
    char path[SBX_PROC_PATH_SIZE];
    sbx_proc_path(path, pid, name);
    return SYS4(SYS_openat, AT_FDCWD, path, O_RDONLY | O_CLOEXEC, 0);
}

// The holder's listening socket (sbx_holder_args.listen_fd in sandbox_exec.c becomes fd 3).
#define HOLDER_FD_LISTEN 3

// A spare is made by a child of ours, the maker, which runs as SCHED_IDLE (sched(7); any thread may
// lower its own policy so): it gets a CPU only when no ordinary task wants one, and the holder stays
// free to answer callers meanwhile. Made at ordinary priority, in the holder itself, it competed
// with the very task that had to run first: the taker's exit (time_for_spare) woke the holder and the
// taker's parent together, often on one CPU while the other sat idle, and the holder ran first for
// the whole 0.6 ms of the spare (sched_switch traces of warm runs on two CPUs: one run in four;
// sched_yield(2) before it did not change that). A caller that comes while a spare is being made
// gets none, as when making one fails, and makes its own.
struct spare_maker {
    long pid;    // 0 when there is no maker
    long pidfd;  // readable once it has exited: then it is reaped (reap_maker)
    long report; // read end: 'r' once its namespaces exist, then 'm' once its mount namespace is
                 // prepared ('f': that failed); EOF if it failed; -1 once done with
    long gate;   // write end: 'g' once we have written its maps (it may prepare its mount namespace
                 // now: it can create files only once its ids are mapped, or EOVERFLOW); closed
                 // once we have opened its namespaces or given up (it exits then)
    int preparing;      // 'g' sent: the next report is about the mount namespace
    int mounts_changed; // our mount table changed while it worked: its mount namespace is not taken
};

// The overlay the last caller's plan mounts as its root, as it told us after the hand-over
// ("DIRECTORY\0DATA\0LAYERS\0": the directory its lowerdir names are relative to, the mount's
// data, and which directories the layers are: inode and ctime of each, which only the caller
// compares, so that layers removed and stored again at the same paths are not taken for these),
// and the one the spare's prepared namespace has mounted. A caller that runs the same image again
// finds its root mounted already (sandbox_exec.c, SBX_OPT_OVERLAY_PREPARED); the overlay mount, its
// upper's work-directory probes included, was 64 µs of every image run (a C loop). Plain arrays:
// this program has no dynamic loader to relocate pointers.
#define OVERLAY_HINT_SIZE 8192
static char overlay_hint[OVERLAY_HINT_SIZE];
static long overlay_hint_length;
static char maker_overlay[OVERLAY_HINT_SIZE];
static long maker_overlay_length;
static char spare_overlay[OVERLAY_HINT_SIZE];
static long spare_overlay_length;

// Well formed: three NUL-terminated strings filling exactly `length` bytes.
static int overlay_hint_valid(const char *hint, long length)
{
    long nuls = 0;
    for (long i = 0; i < length; i++)
        nuls += hint[i] == 0;
    return length > 3 && nuls == 3 && hint[length - 1] == 0 && hint[0] != 0;
}

static void copy_bytes(char *to, const char *from, long length)
{
    for (long i = 0; i < length; i++)
        to[i] = from[i];
}

// In the prepared namespace: the steps of the caller's plan that mount its root (RootfsPlanner's
// AddOverlayRoot, marked OverlayPreparedBySpare; keep the two in step): its upper and work
// directories on the scratch tmpfs, the overlay at /newroot. 0, or -errno.
static long mount_overlay(const char *hint)
{
    const char *directory = hint, *data = hint;
    while (*data)
        data++;
    data++;
    long rc = SYS3(SYS_mkdirat, AT_FDCWD, "/upper", 0755);
    if (rc == 0)
        rc = SYS3(SYS_mkdirat, AT_FDCWD, "/work", 0755);
    if (rc == 0)
        rc = SYS1(SYS_chdir, directory);
    if (rc == 0)
        rc = SYS5(SYS_mount, "overlay", "/newroot", "overlay", 0, data);
    SYS1(SYS_chdir, "/");
    return rc;
}

// The maker's mount namespace, brought to where every plan starts (RootfsPlanner.Plan's steps marked
// PreparedBySpare; keep the two in step): our mounts made slaves of the host's, so that nothing
// mounted here propagates back (mount_namespaces(7)); a tmpfs at /tmp with newroot and oldroot in
// it; the tmpfs made the root, the host's tree kept at /oldroot; and the sandbox's /dev on it, built
// by the code the executor runs for the plan's SBX_OP_BUILD_DEV (sbx_build_dev), which PID 1 then
// skips. Built, /dev is nine mounts and fourteen entries: 130 us of a start against 12 us for the
// bind every plan makes of it (C loops in a user namespace on this project's CI machine; a mount
// costs 10 to 13 us there). Its tmpfs, devpts and shm instances belong to the spare's user
// namespace, the sandbox's own, as they would if PID 1 made them. 0, or -errno.
static long prepare_mount_namespace(void)
{
    long rc = SYS5(SYS_mount, 0, "/", 0, MS_REC | MS_SLAVE, 0);
    if (rc == 0)
        rc = SYS5(SYS_mount, "tmpfs", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755");
    if (rc == 0)
        rc = SYS3(SYS_mkdirat, AT_FDCWD, "/tmp/newroot", 0755);
    if (rc == 0)
        rc = SYS3(SYS_mkdirat, AT_FDCWD, "/tmp/oldroot", 0755);
    if (rc == 0)
        rc = SYS1(SYS_chdir, "/tmp");
    if (rc == 0)
        rc = SYS2(SYS_pivot_root, ".", "oldroot");
    if (rc == 0)
        rc = SYS1(SYS_chdir, "/");
    int part; // the maker reports only that it failed: the sandbox then builds /dev itself, and says why
    if (rc == 0)
        rc = sbx_build_dev(&part);
    return rc;
}

// Starts a maker, or leaves *m empty when that fails (then no spare this time).
static void start_spare(struct spare_maker *m)
{
    int report[2], gate[2];
    if (SYS2(SYS_pipe2, report, O_CLOEXEC) < 0)
        return;
    if (SYS2(SYS_pipe2, gate, O_CLOEXEC) < 0) {
        SYS1(SYS_close, report[0]);
        SYS1(SYS_close, report[1]);
        return;
    }
    // fork(2)-like (no CLONE_VM): the child returns here on a copy of our stack. Its pidfd comes
    // with it (CLONE_PIDFD: stored through clone's third argument, parent_tid, on x86_64 and
    // aarch64 alike).
    int pidfd = -1;
    long pid = SYS5(SYS_clone, CLONE_PIDFD | SIGCHLD, 0, &pidfd, 0, 0);
    if (pid == 0) {
        SYS1(SYS_close, HOLDER_FD_LISTEN);
        SYS1(SYS_close, report[0]);
        SYS1(SYS_close, gate[1]);
        int no_priority = 0; // struct sched_param
        SYS3(SYS_sched_setscheduler, 0, SCHED_IDLE, &no_priority); // on failure, it only competes
        // The new user namespace is made first (user_namespaces(7)) and gives us every capability
        // there, maps or not; it owns the new network namespace, so we may bring lo up at once.
        char byte = 'r';
        if (SYS1(SYS_unshare, CLONE_NEWUSER | CLONE_NEWNET | CLONE_NEWIPC | CLONE_NEWUTS | CLONE_NEWNS) != 0 || sbx_loopback_up() != 0 ||
            SYS3(SYS_write, report[1], &byte, 1) != 1)
            exit_with(1);
        // 'g' once the holder has written our maps: the mount namespace is prepared, and reported.
        // EOF: we may go (the holder has opened what it takes, or gave up).
        if (read_retrying(gate[0], &byte, 1) == 1) {
            // 'o': with the last caller's overlay mounted at /newroot as well.
            byte = prepare_mount_namespace() == 0 ? 'm' : 'f';
            if (byte == 'm' && maker_overlay_length > 0 && mount_overlay(maker_overlay) == 0)
                byte = 'o';
            if (SYS3(SYS_write, report[1], &byte, 1) == 1)
                read_retrying(gate[0], &byte, 1);
        }
        exit_with(0);
    }
    SYS1(SYS_close, report[1]);
    SYS1(SYS_close, gate[0]);
    if (pid < 0) {
        SYS1(SYS_close, report[0]);
        SYS1(SYS_close, gate[1]);
        return;
    }
    m->pid = pid;
    m->pidfd = pidfd;
    m->report = report[0];
    m->gate = gate[1];
    m->preparing = 0;
    m->mounts_changed = 0;
}

// What the maker forked now will mount (it has its own copy of our memory).
static void remember_maker_overlay(void)
{
    copy_bytes(maker_overlay, overlay_hint, overlay_hint_length);
    maker_overlay_length = overlay_hint_length;
}

// Done with the maker's reports: closing the gate lets it exit at its own pace; it is reaped once its
// pidfd says so, not waited for here, where its low priority would hold us up.
static void maker_done(struct spare_maker *m)
{
    SYS1(SYS_close, m->report);
    SYS1(SYS_close, m->gate);
    m->report = -1;
    m->gate = -1;
    m->preparing = 0;
}

// The maker's first report (its report pipe is readable): its namespaces become the spare, with the
// sandbox's maps, or *s stays empty when it failed. The spare is usable from now on, without a
// mount namespace; the maker goes on to prepare one (finish_mount).
static void finish_spare(struct spare_maker *m, struct spare *s, const char *uid_map, const char *gid_map)
{
    char byte;
    if (read_retrying(m->report, &byte, 1) == 1 && sbx_write_proc_file(m->pid, "uid_map", uid_map) == 0 &&
        sbx_write_proc_file(m->pid, "gid_map", gid_map) == 0) {
        int opened = 1;
        for (int i = 0; i < SPARE_MNT; i++) {
            s->ns[i] = open_namespace(m->pid, spare_names[i]);
            opened &= s->ns[i] >= 0;
        }
        if (!opened)
            spare_close(s);
        else if (SYS3(SYS_write, m->gate, "g", 1) == 1) {
            m->preparing = 1;
            return;
        }
    }
    maker_done(m);
}

// Its second report: the prepared mount namespace joins the spare, unless the spare was handed over
// meanwhile (a caller that came first took it without) or our mounts changed since it was copied.
static void finish_mount(struct spare_maker *m, struct spare *s)
{
    char byte;
    if (read_retrying(m->report, &byte, 1) == 1 && (byte == 'm' || byte == 'o') && !m->mounts_changed && s->ns[SPARE_USER] >= 0) {
        long mnt = open_namespace(m->pid, spare_names[SPARE_MNT]);
        s->ns[SPARE_MNT] = mnt >= 0 ? mnt : -1;
        spare_overlay_length = 0;
        if (mnt >= 0 && byte == 'o') {
            copy_bytes(spare_overlay, maker_overlay, maker_overlay_length);
            spare_overlay_length = maker_overlay_length;
        }
    }
    maker_done(m);
}

// The maker has exited (its pidfd is readable).
static void reap_maker(struct spare_maker *m)
{
    SYS4(SYS_wait4, m->pid, 0, 0, 0);
    SYS1(SYS_close, m->pidfd);
    if (m->report >= 0) {
        // It exited before its last report (a signal): no spare, or one without a mount namespace.
        SYS1(SYS_close, m->report);
        SYS1(SYS_close, m->gate);
    }
    m->preparing = 0;
    m->pid = 0;
    m->pidfd = -1;
    m->report = -1;
    m->gate = -1;
}

// ---- the holder of a user namespace ----------------------------------------------------------
// Socket structures as the kernel takes them (include/linux/socket.h: struct user_msghdr), with the
// values of include/uapi/asm-generic/socket.h, which x86_64 and aarch64 both use.
#define SOL_SOCKET 1
#define SCM_RIGHTS 1
#define SO_PEERCRED 17
#define MSG_NOSIGNAL 0x4000
#define MSG_DONTWAIT 0x40

struct io_vector {
    void *base;
    unsigned long length;
};

struct message_header {
    void *name;
    int name_length;
    struct io_vector *iov;
    unsigned long iov_length;
    void *control;
    unsigned long control_length;
    unsigned int flags;
};

struct fd_control {
    unsigned long length; // struct cmsghdr: cmsg_len, cmsg_level, cmsg_type, then the data
    int level;
    int type;
    int fds[2 + SPARE_COUNT];
    int padding;          // CMSG_SPACE(7 * sizeof(int)) is 48 bytes on 64-bit
};

struct peer_credentials {
    int pid;
    unsigned int uid;
    unsigned int gid;
};

// Hands the held namespace over ('n', one fd), with the spare if there is one ('p', five fds: the
// held namespace, the spare's user, network, IPC and UTS namespaces; 'm', seven: those, its
// prepared mount namespace and our own mount namespace, for the caller to check it is its own;
// 'o', as 'm' with the overlay it has mounted after the byte). A spare handed over is ours no
// more: returns the pid of the caller that took it, 0 when it took none, -1 when nothing was sent.
static long hand_over(long connection, long ns, long own_mnt, struct spare *spare)
{
    struct peer_credentials peer;
    unsigned int length = sizeof peer;
    // Only processes of our own user (as our user namespace sees them) get the namespace; to anyone
    // else it would be of no use anyway, as joining it needs CAP_SYS_ADMIN over it.
    if (SYS5(SYS_getsockopt, connection, SOL_SOCKET, SO_PEERCRED, &peer, &length) != 0 ||
        peer.uid != (unsigned int)SYS0(SYS_geteuid))
        return -1;
    int with_spare = spare->ns[SPARE_USER] >= 0;
    int with_mount = with_spare && spare->ns[SPARE_MNT] >= 0 && own_mnt >= 0;
    int fds = with_mount ? 2 + SPARE_COUNT : with_spare ? SPARE_COUNT : 1;
    char byte = with_mount ? (spare_overlay_length > 0 ? 'o' : 'm') : with_spare ? 'p' : 'n';
    struct io_vector iov[2] = {{&byte, 1}, {spare_overlay, byte == 'o' ? (unsigned long)spare_overlay_length : 0}};
    // cmsg_len is CMSG_LEN(fds * sizeof(int)); the buffer's length is CMSG_SPACE of it (cmsg(3)),
    // the data rounded up to 8 bytes.
    struct fd_control control = {sizeof(unsigned long) + 2 * sizeof(int) + fds * sizeof(int), SOL_SOCKET, SCM_RIGHTS,
                                 {(int)ns, (int)spare->ns[SPARE_USER], (int)spare->ns[SPARE_NET], (int)spare->ns[SPARE_IPC],
                                  (int)spare->ns[SPARE_UTS], (int)spare->ns[SPARE_MNT], (int)own_mnt},
                                 0};
    unsigned long space = sizeof(unsigned long) + 2 * sizeof(int) + ((fds * sizeof(int) + 7) & ~7UL);
    struct message_header message = {0, 0, iov, byte == 'o' ? 2 : 1, &control, space, 0};
    if (SYS3(SYS_sendmsg, connection, &message, MSG_NOSIGNAL) != 1 + (long)iov[1].length)
        return -1;
    if (!with_spare)
        return 0;
    spare_close(spare);
    spare_overlay_length = 0;
    return peer.pid > 0 ? peer.pid : 0;
}

// The last caller's overlay hint from its connection: one message (SOCK_SEQPACKET), or EOF from a
// caller whose plan mounts none (the hint is kept then: a directory root stacks its bind over a
// mounted overlay). The connection is closed once read; when nothing is there yet, it is kept for
// later unless poll said it was readable (then whatever it has is all it will have).
static void take_hint(long *hinting, int readable)
{
    char hint[OVERLAY_HINT_SIZE];
    long n = SYS6(SYS_recvfrom, *hinting, hint, sizeof hint, MSG_DONTWAIT, 0, 0);
    if (n == -EAGAIN && !readable)
        return;
    if (n > 0 && overlay_hint_valid(hint, n)) {
        copy_bytes(overlay_hint, hint, n);
        overlay_hint_length = n;
    }
    SYS1(SYS_close, *hinting);
    *hinting = -1;
}

// The longest the next spare waits for the caller that took the last one to exit (say, an MSBuild
// node, which runs many sandboxes and lives on).
#define SPARE_DELAY_NS 50000000

// Whether it is time to make the next spare: the caller that took the last one (taker: its pidfd,
// or -1 if none or unknown) has exited, or SPARE_DELAY_NS have passed; not while a caller waits to
// be accepted. Made while that sandbox still starts, it competes with it for the CPU and the
// kernel's network locks: on two CPUs, 400 interleaved starts measured no gain at all that way
// (6.72 against 6.65 ms), against 0.65 ms (8.36 against 7.71 ms) made after the taker's exit.
// Nor 1 ms after that exit (to let the taker's parent wake up first): the next run's start then
// shared the CPU with it, and two builds interleaved (300 rounds, each run after an untimed one of
// its own) gave 6.08 against 5.94 and 5.38 against 5.27 ms for the delay.
static int time_for_spare(long taker)
{
    struct pollfd fds[2] = {{HOLDER_FD_LISTEN, POLLIN, 0}, {(int)taker, POLLIN, 0}};
    struct __kernel_timespec wait = {0, taker >= 0 ? SPARE_DELAY_NS : 0};
    long ready = SYS5(SYS_ppoll, fds, taker >= 0 ? 2 : 1, &wait, 0, KERNEL_SIGSET_SIZE);
    if (ready == -EINTR)
        return 0;
    return ready <= 0 || !(fds[0].revents & POLLIN);
}

// CLOCK_MONOTONIC (linux/time.h; not included: its struct timespec is not needed here).
#define HOLDER_CLOCK_MONOTONIC 1

static long long monotonic_ns(void)
{
    struct __kernel_timespec now = {0, 0};
    SYS2(SYS_clock_gettime, HOLDER_CLOCK_MONOTONIC, &now);
    return (long long)now.tv_sec * 1000000000LL + now.tv_nsec;
}

static int hold_userns(long argc, char **argv)
{
    SYS5(SYS_prctl, PR_SET_DUMPABLE, 0, 0, 0, 0);
    SYS5(SYS_prctl, PR_SET_NAME, "sandbox-userns", 0, 0, 0);
    long idle = argc == 5 ? parse_decimal(argv[2]) : -1;
    if (idle <= 0)
        return 125;
    const char *uid_map = argv[3], *gid_map = argv[4];
    // The executor blocked every signal around clone: SIGTERM and the rest act normally again.
    unsigned long long none = 0;
    SYS4(SYS_rt_sigprocmask, 2 /* SIG_SETMASK */, &none, 0, KERNEL_SIGSET_SIZE);
    long ns = SYS4(SYS_openat, AT_FDCWD, "/proc/self/ns/user", O_RDONLY | O_CLOEXEC, 0);
    if (ns < 0)
        return 125;
    // Our mount namespace, sent with a prepared one, and our mount table, watched: a change makes
    // the prepared namespace of the spare (or of the one being made) out of date.
    long own_mnt = SYS4(SYS_openat, AT_FDCWD, "/proc/self/ns/mnt", O_RDONLY | O_CLOEXEC, 0);
    long mounts = SYS4(SYS_openat, AT_FDCWD, "/proc/self/mounts", O_RDONLY | O_CLOEXEC, 0);
    if (mounts < 0 && own_mnt >= 0) {
        // Unwatched, a prepared namespace could go stale: spares then go without one (hand_over).
        SYS1(SYS_close, own_mnt);
        own_mnt = -1;
    }
    struct spare spare = {{-1, -1, -1, -1, -1}};
    struct spare_maker maker = {0, -1, -1, -1, 0, 0};
    long taker = -1;
    long hinting = -1; // the last connection served: its caller sends the overlay its plan mounts, then closes
    int want_spare = 1;
    // Idle means no caller for `idle` seconds: a deadline that only an accepted connection moves.
    // Other wake-ups (a change of the host's mounts, a spare made) leave it where it is; restarted
    // at each of them, the timeout never ran out on a host whose mounts keep changing (containers
    // starting, CI jobs), and holders no caller could reach any more (their socket replaced) ran on.
    long long deadline = monotonic_ns() + idle * 1000000000LL;
    for (;;) {
        // A spare is started only while no caller waits. One attempt per hand-over: a failure (say,
        // user.max_net_namespaces reached) is not retried in a loop.
        if (want_spare && spare.ns[SPARE_USER] < 0 && maker.pid == 0 && time_for_spare(taker)) {
            if (taker >= 0)
                SYS1(SYS_close, taker);
            taker = -1;
            // The taker's hint came early in its run, but time_for_spare waited without reading it:
            // read now, or this spare would carry the overlay of the run before.
            if (hinting >= 0)
                take_hint(&hinting, 0);
            remember_maker_overlay();
            start_spare(&maker);
            want_spare = 0;
        }
        // A negative fd is ignored (poll(2)): the maker's report counts until it is read, its pidfd
        // until it is reaped.
        struct pollfd fds[5] = {{HOLDER_FD_LISTEN, POLLIN, 0}, {(int)maker.report, POLLIN, 0}, {(int)maker.pidfd, POLLIN, 0},
                                {(int)mounts, POLLPRI, 0}, {(int)hinting, POLLIN, 0}};
        long long left = deadline - monotonic_ns();
        if (left <= 0)
            return 0; // idle: a new caller finds the socket refusing and starts another holder
        struct __kernel_timespec timeout = {left / 1000000000LL, left % 1000000000LL};
        long ready = SYS5(SYS_ppoll, fds, 5, &timeout, 0, KERNEL_SIGSET_SIZE);
        if (ready == 0)
            return 0;
        if (ready < 0) {
            if (ready == -EINTR)
                continue;
            return 125;
        }
        if (fds[3].revents) {
            // The poll itself takes note of the change (fs/proc_namespace.c, mounts_poll).
            if (spare.ns[SPARE_MNT] >= 0)
                SYS1(SYS_close, spare.ns[SPARE_MNT]);
            spare.ns[SPARE_MNT] = -1;
            spare_overlay_length = 0;
            maker.mounts_changed = 1;
            continue;
        }
        if (fds[4].revents) {
            take_hint(&hinting, 1);
            continue;
        }
        if (fds[1].revents) {
            if (maker.preparing)
                finish_mount(&maker, &spare);
            else
                finish_spare(&maker, &spare, uid_map, gid_map);
            continue;
        }
        if (fds[2].revents) {
            reap_maker(&maker);
            continue;
        }
        long connection = SYS4(SYS_accept4, HOLDER_FD_LISTEN, 0, 0, O_CLOEXEC);
        if (connection < 0)
            continue;
        deadline = monotonic_ns() + idle * 1000000000LL;
        long took = hand_over(connection, ns, own_mnt, &spare);
        if (took < 0) {
            SYS1(SYS_close, connection);
        } else {
            if (hinting >= 0)
                SYS1(SYS_close, hinting);
            hinting = connection;
        }
        if (took > 0) {
            if (taker >= 0)
                SYS1(SYS_close, taker);
            // pidfd_open(2): readable once that process has exited. -errno (it is gone already, or
            // not in our PID namespace) means no wait.
            taker = SYS2(SYS_pidfd_open, took, 0);
            if (taker < 0)
                taker = -1;
        }
        want_spare = spare.ns[SPARE_USER] < 0;
    }
}

// The payload has exited with wait status `status`: end the sandbox, then report. Our own exit would
// kill the rest of the PID namespace too, but the parent would then have to wait for all of that
// exit to know the sandbox is gone, namespaces' teardown included (the mount namespace's unmounts
// wait for an expedited RCU grace period: about 0.3 ms here). Killed and reaped here, nothing of the
// sandbox runs any more when the report arrives, and the parent may go on while the kernel tears
// down what is left (bubblewrap's parent does not wait for that either).
static void finish(int status)
{
    // kill(2) with -1 from a namespace's init: every process in the namespace (and in namespaces
    // below it) but us. We are root in the sandbox's user namespace with every capability, so
    // CAP_KILL covers them all, whatever their ids (user_namespaces(7)).
    SYS2(SYS_kill, -1, SIGKILL);
    for (;;) {
        long pid = SYS4(SYS_wait4, -1, 0, __WALL, 0);
        if (pid == -EINTR)
            continue;
        if (pid < 0)
            break; // ECHILD: every child reaped
    }
    struct rusage usage;
    int64_t user = 0, system = 0;
    if (SYS2(SYS_getrusage, RUSAGE_CHILDREN, &usage) == 0) {
        user = (int64_t)usage.ru_utime.tv_sec * 1000000 + usage.ru_utime.tv_usec;
        system = (int64_t)usage.ru_stime.tv_sec * 1000000 + usage.ru_stime.tv_usec;
    }
    // Our copies of the payload's stdin, stdout and stderr: closed, so that the parent's output pipes
    // are at their end when the report arrives.
    for (int fd = 0; fd <= 2; fd++)
        SYS1(SYS_close, fd);
    report_with_times(SBX_REPORT_EXITED, 0, 0, status, user, system);
}

static int init_main(long argc, char **argv)
{
    if (argc >= 2 && sbx_str_equal(argv[1], "--hold-userns"))
        return hold_userns(argc, argv);
    SYS5(SYS_prctl, PR_SET_DUMPABLE, 0, 0, 0, 0);
    if (argc != 2)
        return 125;
    long payload = parse_decimal(argv[1]);
    if (payload <= 0)
        return 125;

    unsigned long long forwarded = SIGNAL_BIT(SIGINT) | SIGNAL_BIT(SIGTERM) | SIGNAL_BIT(SIGHUP) | SIGNAL_BIT(SIGQUIT) |
                                   SIGNAL_BIT(SIGUSR1) | SIGNAL_BIT(SIGUSR2) | SIGNAL_BIT(SIGCHLD) | SIGNAL_BIT(SIGWINCH);
    // Every signal is still blocked (inherited through exec); blocked signals are queued even for a
    // namespace's init (kernel/signal.c, sig_ignored()), so the parent's SIGTERM reaches us here.
    long sfd = SYS4(SYS_signalfd4, -1, &forwarded, KERNEL_SIGSET_SIZE, SFD_CLOEXEC | SFD_NONBLOCK);
    if (sfd < 0) {
        report(SBX_REPORT_SETUP_FAILED, -1, (int32_t)-sfd, 0);
        return 125;
    }

    // Release the payload, then learn whether its exec worked: EOF on the status pipe means it did
    // (the payload's write end is close-on-exec); a record means it failed before or at exec.
    // EPIPE: the payload has exited already, having failed in its set-up (it does that before it
    // waits for this byte); its record says why, below.
    long written = SYS3(SYS_write, SBX_FD_INIT_GO, "g", 1);
    if (written != 1 && written != -EPIPE) {
        report(SBX_REPORT_SETUP_FAILED, -1, written < 0 ? (int32_t)-written : EIO, 0);
        return 125;
    }
    SYS1(SYS_close, SBX_FD_INIT_GO);
    int32_t failure[2];
    long n = read_retrying(SBX_FD_INIT_STATUS, failure, sizeof failure);
    SYS1(SYS_close, SBX_FD_INIT_STATUS);
    if (n < 0) {
        report(SBX_REPORT_SETUP_FAILED, -1, (int32_t)-n, 0);
        return 125;
    }
    if (n == (long)sizeof failure) {
        int status;
        SYS4(SYS_wait4, payload, &status, 0, 0);
        report(SBX_REPORT_EXEC_FAILED, failure[0], failure[1], 0);
        return 127;
    }
    report(SBX_REPORT_STARTED, 0, 0, (int32_t)payload);

    struct pollfd fds[2] = {{(int)sfd, POLLIN, 0}, {SBX_FD_LIFE, POLLIN, 0}};
    for (;;) {
        // poll(2) has no system call of its own on aarch64: ppoll with no timeout and no mask.
        if (SYS5(SYS_ppoll, fds, 2, 0, 0, KERNEL_SIGSET_SIZE) < 0)
            continue;
        if (fds[1].revents) {
            // The parent is gone (its write end closed): our exit kills every process in the PID
            // namespace (pid_namespaces(7)).
            return 137;
        }
        struct signalfd_siginfo si;
        while (SYS3(SYS_read, sfd, &si, sizeof si) == (long)sizeof si) {
            if (si.ssi_signo != SIGCHLD)
                SYS2(SYS_kill, payload, si.ssi_signo);
        }
        for (;;) {
            int status = 0;
            long pid = SYS4(SYS_wait4, -1, &status, WNOHANG, 0);
            if (pid <= 0)
                break;
            if (pid == payload) {
                finish(status);
                return 0;
            }
        }
    }
}

// The entry point: the kernel leaves argc at the stack pointer, argv right above it (the System V
// ABI's process start-up state). Called with the stack aligned as a C call expects.
__attribute__((used)) static void start_c(long *stack)
{
    exit_with(init_main(stack[0], (char **)(stack + 1)));
}

#if defined(__x86_64__)
__asm__(".text\n.global _start\n_start:\n"
        "    xor %ebp, %ebp\n"
        "    mov %rsp, %rdi\n"
        "    and $-16, %rsp\n"
        "    call start_c\n"
        "    hlt\n");
#elif defined(__aarch64__)
__asm__(".text\n.global _start\n_start:\n"
        "    mov x29, #0\n"
        "    mov x30, #0\n"
        "    mov x0, sp\n"
        "    bl start_c\n"
        "    brk #0\n");
#endif
