using System.Collections.Immutable;

namespace Sandbox.Security.Seccomp;

/// <summary>Sandbox's built-in seccomp profiles.</summary>
public static class SeccompProfiles
{
    /// <summary>clone(2) flags that make a new namespace (include/uapi/linux/sched.h).</summary>
    public static class CloneFlags
    {
        public const uint NewNs = 0x00020000;
        public const uint NewCgroup = 0x02000000;
        public const uint NewUts = 0x04000000;
        public const uint NewIpc = 0x08000000;
        public const uint NewUser = 0x10000000;
        public const uint NewPid = 0x20000000;
        public const uint NewNet = 0x40000000;

        /// <summary>
        /// 0x7E020000, the mask in Docker's default.json clone rule. CLONE_NEWTIME (0x80) is not in it
        /// and need not be: in clone(2)'s flags the low byte is the exit signal, so CLONE_NEWTIME can
        /// only be asked for through clone3 and unshare, both refused outright.
        /// </summary>
        public const uint AnyNamespace = NewNs | NewCgroup | NewUts | NewIpc | NewUser | NewPid | NewNet;
    }

    /// <summary>Terminal ioctls that push input into a terminal (include/uapi/asm-generic/ioctls.h; the same numbers on x86_64 and aarch64).</summary>
    public const uint TIOCSTI = 0x5412;
    public const uint TIOCLINUX = 0x541C;

    /// <summary>AF_VSOCK (include/linux/socket.h): sockets to the hypervisor, which no network namespace confines.</summary>
    public const uint AF_VSOCK = 40;

    /// <summary>personality(2) values Docker's default.json allows: PER_LINUX, PER_LINUX32, UNAME26, UNAME26|PER_LINUX32, and 0xffffffff (query only).</summary>
    public static readonly ImmutableArray<uint> AllowedPersonalities = [0x0, 0x8, 0x20000, 0x20008, 0xffffffff];

    /// <summary>
    /// Calls the default profile answers with EPERM, whatever their arguments; each group says why.
    /// Names an architecture does not have are skipped when compiling (stime, vm86 and create_module
    /// exist only on some).
    /// </summary>
    public static readonly ImmutableArray<string> Denied =
    [
        // The kernel keyring is not namespaced: keys of the host's users are one keyctl away, and it
        // has had use-after-frees reachable from any process (CVE-2016-0728).
        "add_key", "keyctl", "request_key",
        // Replacing the kernel or loading code into it.
        "kexec_load", "kexec_file_load", "init_module", "finit_module", "delete_module", "create_module",
        "get_kernel_syms", "query_module",
        // Large attack surface with a history of privilege escalations: the eBPF verifier
        // (CVE-2017-16995, CVE-2021-3490), perf (CVE-2013-2094), and userfaultfd, which makes kernel
        // races reliably winnable (hence vm.unprivileged_userfaultfd). Docker allows them only with
        // CAP_BPF / CAP_PERFMON / CAP_SYS_PTRACE, which a sandbox never has.
        "bpf", "perf_event_open", "userfaultfd",
        // io_uring performs file and network operations that seccomp never sees, and has been the
        // source of many container escapes; Docker 25 and containerd 2 dropped it (moby#46762).
        "io_uring_setup", "io_uring_enter", "io_uring_register",
        // Host-wide state: process accounting, swap, the clock. adjtimex stays allowed: its only
        // argument is a pointer, which a filter cannot follow (seccomp_filter.rst), and the kernel
        // itself refuses every write mode without CAP_SYS_TIME in the initial user namespace, so
        // only read-only use (modes == 0) succeeds. clock_adjtime is refused outright, as asked
        // for the write path; note that glibc's adjtimex() and ntp_gettime() wrappers are
        // implemented with clock_adjtime, so read-only queries through glibc get EPERM.
        "acct", "swapon", "swapoff", "settimeofday", "clock_settime", "clock_adjtime", "stime",
        // File handles bypass the mount namespace: open_by_handle_at opened host files from Docker
        // 0.11 containers ("shocker", 2014); name_to_handle_at is its other half.
        "open_by_handle_at", "name_to_handle_at",
        // Host administration and obsolete interfaces: reboot (in a PID namespace it kills that
        // namespace's init), the kernel log (kernel addresses), quotas, nfsd, raw port I/O, vm86,
        // and calls kept for old binaries only.
        "reboot", "syslog", "lookup_dcookie", "quotactl", "quotactl_fd", "nfsservctl", "ioperm", "iopl",
        "vm86", "vm86old", "uselib", "sysfs", "_sysctl", "ustat", "vhangup",
        // The mount table is set up before exec and then fixed: no remounting /proc or /sys over the
        // masks, no unmounting them, no new mount API (new calls of that family, such as
        // open_tree_attr, are above the table's numbers and get ENOSYS).
        "pivot_root", "mount", "umount", "umount2",
        "fsopen", "fsconfig", "fsmount", "fspick", "move_mount", "open_tree", "mount_setattr",
        // No new namespaces: in a new user namespace a payload would be root again, with every
        // capability, and could mount or unshare what this filter denies (Docker: CAP_SYS_ADMIN only).
        "setns", "unshare",
    ];

    /// <summary>
    /// The default profile: a deny-list. Everything not named is allowed, so that `dotnet test`,
    /// compilers and shells work unchanged; what Docker's and podman's default profiles deny and a
    /// CI payload has no business doing gets EPERM (see <see cref="Denied"/>), plus:
    /// <list type="bullet">
    /// <item>clone with any CLONE_NEW* flag → EPERM (flags are argument 0 on x86_64 and aarch64).</item>
    /// <item>clone3 → ENOSYS: its flags are in a struct the filter cannot read, and ENOSYS makes
    /// glibc (2.34+) fall back to clone, where they can be checked: Docker's approach.</item>
    /// <item>personality: only the values Docker allows (<see cref="AllowedPersonalities"/>);
    /// others (ADDR_NO_RANDOMIZE, READ_IMPLIES_EXEC, MMAP_PAGE_ZERO: CVE-2009-1895) → EPERM.</item>
    /// <item>ioctl TIOCSTI / TIOCLINUX → EPERM: typing into the terminal outside (bubblewrap
    /// CVE-2017-5226, flatpak CVE-2023-28100), compared on the low 32 bits (CVE-2019-10063).</item>
    /// <item>socket(AF_VSOCK) → EPERM, as in Docker's default.json.</item>
    /// <item>syscall numbers above the table's highest → ENOSYS; foreign ABIs (i386 on x86_64) →
    /// KILL_PROCESS (see <see cref="SeccompCompiler"/>).</item>
    /// </list>
    /// Allowed on purpose: ptrace, process_vm_readv/writev, kcmp, pidfd_getfd and process_madvise
    /// (Docker allows them on Linux ≥ 4.8, where seccomp runs again after a tracer changes a call:
    /// processes in the sandbox may debug each other, and nothing outside is visible to them);
    /// chroot; the NUMA calls (mbind, set_mempolicy: libnuma and runtimes probe them).
    /// </summary>
    public static SeccompProfile Default { get; } = BuildDefault();

    private static SeccompProfile BuildDefault()
    {
        var rules = ImmutableArray.CreateBuilder<SeccompRule>();
        rules.Add(new SeccompRule(Denied, SeccompAction.Eperm) { Comment = "denied outright" });
        rules.Add(new SeccompRule("clone3", SeccompAction.Enosys) { Comment = "flags unreadable: make glibc fall back to clone" });

        rules.Add(new SeccompRule("clone", SeccompAction.Allow, SeccompArgCondition.MaskedEqual(0, CloneFlags.AnyNamespace, 0, lowWordOnly: true))
        {
            Comment = "clone without CLONE_NEW* flags",
        });
        rules.Add(new SeccompRule("clone", SeccompAction.Eperm) { Comment = "clone making a namespace" });

        foreach (uint persona in AllowedPersonalities)
        {
            // personality(2) takes an unsigned int: the kernel ignores the register's upper half.
            rules.Add(new SeccompRule("personality", SeccompAction.Allow, SeccompArgCondition.EqualTo(0, persona, lowWordOnly: true)));
        }
        rules.Add(new SeccompRule("personality", SeccompAction.Eperm) { Comment = "other personalities" });

        // ioctl's cmd is an unsigned int: compare the low word only, or a high bit slips past.
        rules.Add(new SeccompRule("ioctl", SeccompAction.Eperm, SeccompArgCondition.EqualTo(1, TIOCSTI, lowWordOnly: true)));
        rules.Add(new SeccompRule("ioctl", SeccompAction.Eperm, SeccompArgCondition.EqualTo(1, TIOCLINUX, lowWordOnly: true)));

        rules.Add(new SeccompRule("socket", SeccompAction.Eperm, SeccompArgCondition.EqualTo(0, AF_VSOCK, lowWordOnly: true)));

        return new SeccompProfile
        {
            Name = "default",
            DefaultAction = SeccompAction.Allow,
            Rules = rules.ToImmutable(),
            ForeignArchitectureAction = SeccompAction.KillProcess,
            UnknownSyscallAction = SeccompAction.Enosys,
        };
    }
}
