using System.Collections.Immutable;
using Sandbox.Security.Seccomp;

namespace Sandbox.Tests.Security;

/// <summary>The default profile, compiled for each architecture and run in <see cref="BpfInterpreter"/>.</summary>
[TestFixtureSource(nameof(Architectures))]
public class DefaultSeccompProfileTests
{
    private static readonly uint Allow = SeccompReturn.Allow;
    private static readonly uint Eperm = SeccompReturn.ErrnoValue(LinuxErrno.EPERM);
    private static readonly uint Enosys = SeccompReturn.ErrnoValue(LinuxErrno.ENOSYS);

    private const ulong SIGCHLD = 17;
    // What glibc's pthread_create passes to clone (CLONE_VM | CLONE_FS | CLONE_FILES | CLONE_SIGHAND |
    // CLONE_THREAD | CLONE_SYSVSEM | CLONE_SETTLS | CLONE_PARENT_SETTID | CLONE_CHILD_CLEARTID).
    private const ulong ThreadFlags = 0x3d0f00;

    public static IEnumerable<string> Architectures => SeccompArchitecture.All.Select(a => a.Name);

    private readonly SeccompArchitecture _arch;
    private ImmutableArray<BpfInstruction> _program;

    public DefaultSeccompProfileTests(string arch)
    {
        _arch = SeccompArchitecture.All.Single(a => a.Name == arch);
    }

    [OneTimeSetUp]
    public void Compile()
    {
        _program = SeccompCompiler.Compile(SeccompProfiles.Default, _arch);
        TestContext.Progress.WriteLine($"default seccomp program for {_arch}: {_program.Length} instructions");
    }

    private uint Run(string syscall, params ulong[] args) => BpfInterpreter.Run(_program, SeccompInput.For(_arch, syscall, args));

    [Test]
    public void EveryNumberIsDecidedInAShortPath()
    {
        // The kernel emulates the program once for every syscall number each time a sandbox loads it
        // (kernel/seccomp.c seccomp_cache_prepare): the path's length is start-up time. A linear list
        // of JEQs walked ~65 instructions for an allowed call; the binary search walks at most ~15.
        int longest = 0, longestNr = -1;
        for (int nr = 0; nr <= _arch.MaxSyscall; nr++)
        {
            BpfInterpreter.Run(_program, SeccompInput.For(_arch, nr), out int executed);
            if (executed > longest)
                (longest, longestNr) = (executed, nr);
        }
        TestContext.Progress.WriteLine($"{_arch}: longest path without argument loads {longest} instructions (nr {longestNr})");
        Assert.That(longest, Is.LessThanOrEqualTo(20), $"nr {longestNr} runs {longest} instructions");
    }

    [TestCase("execve")]
    [TestCase("read")]
    [TestCase("write")]
    [TestCase("openat")]
    [TestCase("close")]
    [TestCase("mmap")]
    [TestCase("futex")]
    [TestCase("wait4")]
    [TestCase("exit_group")]
    [TestCase("ptrace")]
    [TestCase("process_vm_readv")]
    [TestCase("process_vm_writev")]
    [TestCase("kcmp")]
    [TestCase("pidfd_getfd")]
    [TestCase("adjtimex")]
    [TestCase("seccomp")]
    [TestCase("prctl")]
    [TestCase("chroot")]
    [TestCase("mknodat")]
    [TestCase("setsid")]
    public void EverydayCallsAreAllowed(string syscall)
    {
        Assert.That(Run(syscall), Is.EqualTo(Allow), syscall);
    }

    [Test]
    public void ShellAndDotnetCallsAreAllowed()
    {
        // A sample of what `bash -c`, gcc and `dotnet test` call (strace -f -c).
        string[] calls =
        [
            "read", "write", "openat", "close", "fstat", "newfstatat", "lseek", "mmap", "mprotect", "munmap", "brk",
            "rt_sigaction", "rt_sigprocmask", "rt_sigreturn", "pread64", "pwrite64", "readv", "writev",
            "sched_yield", "mremap", "msync", "mincore", "madvise", "dup", "dup3", "nanosleep", "getpid",
            "sendfile", "socket", "connect", "accept4", "sendto", "recvfrom", "sendmsg", "recvmsg", "bind", "listen",
            "getsockname", "socketpair", "setsockopt", "getsockopt", "clone", "execve", "exit", "wait4", "kill",
            "uname", "fcntl", "flock", "fsync", "ftruncate", "getcwd", "chdir", "fchdir", "renameat2", "mkdirat",
            "unlinkat", "symlinkat", "readlinkat", "fchmodat", "fchownat", "umask", "getrlimit", "getrusage",
            "sysinfo", "getuid", "getgid", "geteuid", "getegid", "setpgid", "getppid", "setsid", "capget", "capset",
            "sigaltstack", "statfs", "fstatfs", "prctl", "gettid", "futex", "sched_getaffinity", "sched_setaffinity",
            "set_tid_address", "clock_gettime", "clock_nanosleep", "exit_group", "epoll_wait", "epoll_ctl", "tgkill",
            "waitid", "inotify_init1", "inotify_add_watch", "openat2", "pipe2", "eventfd2", "epoll_create1",
            "prlimit64", "getrandom", "memfd_create", "statx", "rseq", "membarrier", "set_robust_list",
            "get_robust_list", "pidfd_open", "close_range", "faccessat2", "execveat", "copy_file_range",
            "timerfd_create", "timerfd_settime", "signalfd4", "getdents64", "utimensat", "ioctl", "personality",
            "landlock_create_ruleset", "mbind", "get_mempolicy",
        ];
        Assert.Multiple(() =>
        {
            // aarch64 has only the newer form of some (epoll_pwait, not epoll_wait).
            foreach (string call in calls.Where(c => _arch.TryGetSyscall(c, out _)))
                Assert.That(Run(call), Is.EqualTo(Allow), call);
        });
    }

    [TestCase("keyctl")]
    [TestCase("add_key")]
    [TestCase("request_key")]
    [TestCase("bpf")]
    [TestCase("perf_event_open")]
    [TestCase("userfaultfd")]
    [TestCase("kexec_load")]
    [TestCase("kexec_file_load")]
    [TestCase("init_module")]
    [TestCase("finit_module")]
    [TestCase("delete_module")]
    [TestCase("acct")]
    [TestCase("swapon")]
    [TestCase("swapoff")]
    [TestCase("settimeofday")]
    [TestCase("clock_settime")]
    [TestCase("clock_adjtime")]
    [TestCase("open_by_handle_at")]
    [TestCase("name_to_handle_at")]
    [TestCase("reboot")]
    [TestCase("syslog")]
    [TestCase("lookup_dcookie")]
    [TestCase("quotactl")]
    [TestCase("pivot_root")]
    [TestCase("mount")]
    [TestCase("umount2")]
    [TestCase("fsopen")]
    [TestCase("fsconfig")]
    [TestCase("fsmount")]
    [TestCase("fspick")]
    [TestCase("move_mount")]
    [TestCase("open_tree")]
    [TestCase("mount_setattr")]
    [TestCase("setns")]
    [TestCase("unshare")]
    [TestCase("io_uring_setup")]
    [TestCase("vhangup")]
    public void DeniedCallsGetEperm(string syscall)
    {
        Assert.That(Run(syscall), Is.EqualTo(Eperm), syscall);
        // Whatever the arguments.
        Assert.That(Run(syscall, ulong.MaxValue, 0, 1, 2, 3, 4), Is.EqualTo(Eperm), syscall);
    }

    [Test]
    public void EveryDeniedNameTheArchitectureHasGetsEperm()
    {
        Assert.Multiple(() =>
        {
            foreach (string name in SeccompProfiles.Denied.Where(n => _arch.TryGetSyscall(n, out _)))
                Assert.That(Run(name), Is.EqualTo(Eperm), name);
        });
    }

    [Test]
    public void UnshareIsDeniedWhateverItsFlags()
    {
        const ulong CLONE_NEWUSER = 0x10000000, CLONE_FILES = 0x400, CLONE_FS = 0x200;
        Assert.That(Run("unshare", CLONE_NEWUSER), Is.EqualTo(Eperm));
        Assert.That(Run("unshare", CLONE_FILES), Is.EqualTo(Eperm));
        Assert.That(Run("unshare", CLONE_FS), Is.EqualTo(Eperm));
        Assert.That(Run("unshare", 0), Is.EqualTo(Eperm));
    }

    [Test]
    public void CloneWithoutNamespaceFlagsIsAllowed()
    {
        Assert.That(Run("clone", SIGCHLD), Is.EqualTo(Allow), "fork");
        Assert.That(Run("clone", ThreadFlags), Is.EqualTo(Allow), "pthread_create");
        Assert.That(Run("clone", 0x4111 /* CLONE_VM | CLONE_VFORK | SIGCHLD: posix_spawn */), Is.EqualTo(Allow), "posix_spawn");
        // Bits in the upper half of the register are not namespace flags.
        Assert.That(Run("clone", 0xffffffff_00000000 | SIGCHLD), Is.EqualTo(Allow));
    }

    [TestCase(0x10000000UL, TestName = "CLONE_NEWUSER")]
    [TestCase(0x00020000UL, TestName = "CLONE_NEWNS")]
    [TestCase(0x02000000UL, TestName = "CLONE_NEWCGROUP")]
    [TestCase(0x04000000UL, TestName = "CLONE_NEWUTS")]
    [TestCase(0x08000000UL, TestName = "CLONE_NEWIPC")]
    [TestCase(0x20000000UL, TestName = "CLONE_NEWPID")]
    [TestCase(0x40000000UL, TestName = "CLONE_NEWNET")]
    public void CloneWithANamespaceFlagGetsEperm(ulong flag)
    {
        Assert.That(Run("clone", flag | SIGCHLD), Is.EqualTo(Eperm));
        Assert.That(Run("clone", flag | ThreadFlags), Is.EqualTo(Eperm));
        Assert.That(Run("clone", flag | 0xffffffff_00000000), Is.EqualTo(Eperm), "high bits do not hide it");
    }

    [Test]
    public void Clone3GetsEnosysSoGlibcFallsBackToClone()
    {
        Assert.That(Run("clone3"), Is.EqualTo(Enosys));
        Assert.That(Run("clone3", 0x7fff0000, 88), Is.EqualTo(Enosys));
    }

    [TestCase(0x0UL)]
    [TestCase(0x8UL)]
    [TestCase(0x20000UL)]
    [TestCase(0x20008UL)]
    [TestCase(0xffffffffUL)]
    public void PersonalityDockerAllowsIsAllowed(ulong persona)
    {
        Assert.That(Run("personality", persona), Is.EqualTo(Allow));
        // The kernel takes an unsigned int: garbage in the upper half must not turn a query into EPERM.
        Assert.That(Run("personality", persona | 0xdead0000_00000000), Is.EqualTo(Allow));
    }

    [TestCase(0x4UL)]
    [TestCase(0x0040000UL, TestName = "ADDR_NO_RANDOMIZE")]
    [TestCase(0x0400000UL, TestName = "READ_IMPLIES_EXEC")]
    [TestCase(0x0100000UL, TestName = "MMAP_PAGE_ZERO")]
    [TestCase(0xfffffffeUL)]
    public void OtherPersonalitiesGetEperm(ulong persona)
    {
        Assert.That(Run("personality", persona), Is.EqualTo(Eperm));
    }

    [Test]
    public void TerminalInjectionIoctlsGetEperm()
    {
        Assert.That(Run("ioctl", 0, SeccompProfiles.TIOCSTI, 0x7ffd0000), Is.EqualTo(Eperm));
        Assert.That(Run("ioctl", 0, SeccompProfiles.TIOCLINUX, 0x7ffd0000), Is.EqualTo(Eperm));
        // CVE-2019-10063: cmd is an unsigned int; a high bit must not smuggle TIOCSTI past the filter.
        Assert.That(Run("ioctl", 0, 0x1_00000000 | SeccompProfiles.TIOCSTI), Is.EqualTo(Eperm));
        Assert.That(Run("ioctl", 0, 0x5401 /* TCGETS */), Is.EqualTo(Allow));
        Assert.That(Run("ioctl", 1, 0x5413 /* TIOCGWINSZ */), Is.EqualTo(Allow));
        Assert.That(Run("ioctl", 3, 0x541B /* FIONREAD */), Is.EqualTo(Allow));
    }

    [Test]
    public void VsockSocketsGetEperm()
    {
        Assert.That(Run("socket", SeccompProfiles.AF_VSOCK, 1, 0), Is.EqualTo(Eperm));
        Assert.That(Run("socket", 2 /* AF_INET */, 1, 0), Is.EqualTo(Allow));
        Assert.That(Run("socket", 1 /* AF_UNIX */, 1, 0), Is.EqualTo(Allow));
        Assert.That(Run("socket", 16 /* AF_NETLINK */, 3, 0), Is.EqualTo(Allow));
    }

    [Test]
    public void NumbersAboveTheTableGetEnosys()
    {
        Assert.That(BpfInterpreter.Run(_program, SeccompInput.For(_arch, 999)), Is.EqualTo(Enosys));
        Assert.That(BpfInterpreter.Run(_program, SeccompInput.For(_arch, _arch.MaxSyscall + 1)), Is.EqualTo(Enosys));
        Assert.That(BpfInterpreter.Run(_program, SeccompInput.For(_arch, _arch.MaxSyscall)), Is.EqualTo(Allow));
        Assert.That(BpfInterpreter.Run(_program, SeccompInput.For(_arch, -2)), Is.EqualTo(Enosys));
        Assert.That(BpfInterpreter.Run(_program, SeccompInput.For(_arch, int.MinValue)), Is.EqualTo(Enosys));
    }

    [Test]
    public void MinusOneIsLeftToTheKernelForTracers()
    {
        // A tracer cancels a call by setting nr to -1 and the return value itself; an ERRNO would
        // overwrite that value. Nothing runs: the kernel answers a plain syscall(-1) with ENOSYS.
        Assert.That(BpfInterpreter.Run(_program, SeccompInput.For(_arch, -1)), Is.EqualTo(Allow));
        Assert.That(BpfInterpreter.Run(_program, SeccompInput.For(_arch, -1, 0x10000000)), Is.EqualTo(Allow));
    }

    [Test]
    public void ForeignArchitecturesAreKilled()
    {
        var i386 = new SeccompInput(11 /* i386 execve */, SeccompArchitecture.AuditArchI386, 0, [0, 0, 0, 0, 0, 0]);
        Assert.That(BpfInterpreter.Run(_program, i386), Is.EqualTo(SeccompReturn.KillProcess));
        SeccompArchitecture other = SeccompArchitecture.All.Single(a => a != _arch);
        var foreign = SeccompInput.For(other, "read");
        Assert.That(BpfInterpreter.Run(_program, foreign), Is.EqualTo(SeccompReturn.KillProcess));
        Assert.That(BpfInterpreter.Run(_program, new SeccompInput(0, 0x40000028 /* ARM */, 0, [0, 0, 0, 0, 0, 0])), Is.EqualTo(SeccompReturn.KillProcess));
    }

    [Test]
    public void EveryNumberAgreesWithTheProfilesMeaning()
    {
        // All numbers of the table and around it, each with argument patterns that hit every
        // argument rule's edges: the program answers what the profile says.
        ulong[][] argSets =
        [
            [0, 0, 0, 0, 0, 0],
            [SIGCHLD, 0, 0, 0, 0, 0],
            [0x10000000 | SIGCHLD, 0, 0, 0, 0, 0],
            [8, SeccompProfiles.TIOCSTI, 0, 0, 0, 0],
            [SeccompProfiles.AF_VSOCK, SeccompProfiles.TIOCLINUX, 0, 0, 0, 0],
            [0xffffffff, 0x1_00005412, 0, 0, 0, 0],
            [0x20008, 1, 2, 3, 4, 5],
            [ulong.MaxValue, ulong.MaxValue, ulong.MaxValue, ulong.MaxValue, ulong.MaxValue, ulong.MaxValue],
        ];
        int checkedCount = 0;
        Assert.Multiple(() =>
        {
            for (int nr = -2; nr <= _arch.MaxSyscall + 3; nr++)
            {
                foreach (ulong[] args in argSets)
                {
                    SeccompInput input = SeccompInput.For(_arch, nr, args);
                    uint expected = BpfInterpreter.Expected(SeccompProfiles.Default, _arch, input);
                    Assert.That(BpfInterpreter.Run(_program, input), Is.EqualTo(expected), $"nr {nr} ({_arch.SyscallName(nr)}) args {string.Join(",", args)}");
                    checkedCount++;
                }
            }
        });
        Assert.That(checkedCount, Is.GreaterThan(2000));
    }

    [Test]
    public void ProgramIsSmallAndValid()
    {
        TestContext.Out.WriteLine(BpfProgram.Disassemble(_program));
        Assert.That(SeccompCompiler.Verify(_program), Is.Null);
        Assert.That(_program.Length, Is.LessThan(200));
        // Checks arch first (seccomp_filter.rst), then loads nr.
        Assert.That(_program[0], Is.EqualTo(Bpf.LoadAbsolute(SeccompData.Arch)));
        Assert.That(_program[1].K, Is.EqualTo(_arch.AuditArch));
        Assert.That(_program[2], Is.EqualTo(Bpf.Return(SeccompReturn.KillProcess)));
        Assert.That(_program[3], Is.EqualTo(Bpf.LoadAbsolute(SeccompData.Nr)));
        Assert.That(_program[^1], Is.EqualTo(Bpf.Return(SeccompReturn.Allow)));
    }

    [Test]
    public void UnknownNamesAreOnlyThoseTheArchitectureLacks()
    {
        IReadOnlyList<string> unknown = SeccompCompiler.UnknownNames(SeccompProfiles.Default, _arch);
        // stime, vm86, vm86old and umount are i386 (and other 32-bit) calls; aarch64 also lacks the
        // x86 I/O port calls and the calls the generic table never had.
        Assert.That(unknown, Does.Contain("stime"));
        Assert.That(unknown, Does.Not.Contain("keyctl").And.Not.Contain("unshare").And.Not.Contain("mount"));
        if (_arch == SeccompArchitecture.Aarch64)
            Assert.That(unknown, Is.SupersetOf(new[] { "ioperm", "iopl", "create_module", "uselib", "_sysctl" }));
    }
}

/// <summary>What only x86_64 has: x32 numbers and the x86 I/O-port and legacy calls.</summary>
public class DefaultSeccompProfileX86_64Tests
{
    private static readonly uint Eperm = SeccompReturn.ErrnoValue(LinuxErrno.EPERM);
    private static readonly uint Enosys = SeccompReturn.ErrnoValue(LinuxErrno.ENOSYS);
    private readonly SeccompArchitecture _arch = SeccompArchitecture.X86_64;
    private readonly ImmutableArray<BpfInstruction> _program = SeccompCompiler.Compile(SeccompProfiles.Default, SeccompArchitecture.X86_64);

    private uint Run(string syscall, params ulong[] args) => BpfInterpreter.Run(_program, SeccompInput.For(_arch, syscall, args));

    [Test]
    public void X86OnlyCallsAreDeniedOnX86_64()
    {
        foreach (string name in new[] { "ioperm", "iopl", "create_module", "uselib", "sysfs", "_sysctl", "ustat", "nfsservctl", "get_kernel_syms", "query_module" })
            Assert.That(Run(name), Is.EqualTo(Eperm), name);
    }

    [Test]
    public void X32NumbersGetEnosysBeforeAnyRule()
    {
        uint bit = _arch.X32SyscallBit!.Value;
        // x32's keyctl and unshare would otherwise match no x86_64 rule and fall through to ALLOW.
        foreach (string name in new[] { "keyctl", "unshare", "mount", "read" })
        {
            int x32 = (int)(bit | (uint)_arch.Syscall(name));
            Assert.That(BpfInterpreter.Run(_program, SeccompInput.For(_arch, x32)), Is.EqualTo(Enosys), name);
        }
    }
}
