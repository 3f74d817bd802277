using System.Collections.Immutable;
using Sandbox.Security.Seccomp;
using Sandbox.Tests.TestSupport;

namespace Sandbox.Tests.Security;

/// <summary>
/// The compiled default program loaded into this machine's kernel: a small C probe (built here with
/// the C compiler the project's build already needs) sets no_new_privs, installs the program with
/// seccomp(SECCOMP_SET_MODE_FILTER), the way the native executor does, and makes real calls. This
/// checks what the interpreter cannot: that the kernel's verifier accepts the program and that the
/// kernel reads seccomp_data as the compiler assumes. No privileges needed.
/// </summary>
public class SeccompKernelTests
{
    private const string ProbeSource = """
        #define _GNU_SOURCE
        #include <errno.h>
        #include <fcntl.h>
        #include <linux/filter.h>
        #include <linux/seccomp.h>
        #include <signal.h>
        #include <stdio.h>
        #include <stdlib.h>
        #include <sys/prctl.h>
        #include <sys/resource.h>
        #include <sys/syscall.h>
        #include <sys/wait.h>
        #include <unistd.h>

        static void report(const char *name, long r) { printf("%s %d\n", name, r == -1 ? errno : 0); }

        static long child(long pid) { if (pid == 0) _exit(0); if (pid > 0) waitpid((pid_t)pid, NULL, 0); return pid; }

        int main(int argc, char **argv) {
            static unsigned char buf[4096 * 8];
            if (argc < 3) return 2;
            int fd = open(argv[1], O_RDONLY);
            ssize_t n = fd < 0 ? -1 : read(fd, buf, sizeof buf);
            if (n <= 0 || n % 8) { perror("read filter"); return 2; }
            close(fd);
            long above = strtol(argv[2], NULL, 10);
            struct sock_fprog prog = { .len = (unsigned short)(n / 8), .filter = (struct sock_filter *)buf };
            struct rlimit nocore = { 0, 0 };
            setrlimit(RLIMIT_CORE, &nocore);
            if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)) { perror("no_new_privs"); return 2; }
            report("load", syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog));
            fflush(stdout);
            report("getpid", syscall(SYS_getpid));
            report("keyctl", syscall(SYS_keyctl, 0 /* KEYCTL_GET_KEYRING_ID */, -3 /* session */, 0));
            report("bpf", syscall(SYS_bpf, 0xffff, NULL, 0));
            report("unshare", syscall(SYS_unshare, 0x10000000));
            report("clone3", syscall(435, NULL, 0));
            report("clone_newuser", child(syscall(SYS_clone, 0x10000000 | SIGCHLD, 0, 0, 0, 0)));
            report("clone_fork", child(syscall(SYS_clone, SIGCHLD, 0, 0, 0, 0)));
            report("fork", child(fork()));
            report("personality_query", syscall(SYS_personality, 0xffffffffUL));
            report("personality_norandom", syscall(SYS_personality, 0x0040000UL));
            char c = 'x';
            report("tiocsti", syscall(SYS_ioctl, 0, 0x5412UL, &c));
            report("tiocsti_high", syscall(SYS_ioctl, 0, 0x100005412UL, &c));
            report("socket_vsock", syscall(SYS_socket, 40, 1, 0));
            report("io_uring_setup", syscall(425, 0, NULL));
            report("above_table", syscall(above, -1, 0, 0, 0));
            report("minus_one", syscall(-1L));
            report("mount", syscall(SYS_mount, "none", "/nonexistent-sandbox-probe", "tmpfs", 0UL, NULL));
        #ifdef __x86_64__
            report("x32_getpid", syscall(0x40000000 | 39));
            fflush(stdout);
            pid_t pid = fork();
            if (pid == 0) { long r; __asm__ volatile("int $0x80" : "=a"(r) : "a"(20L) : "memory"); _exit(r > 0 ? 0 : 1); }
            int status = 0;
            waitpid(pid, &status, 0);
            printf("i386_int80 %d\n", WIFSIGNALED(status) ? -WTERMSIG(status) : WEXITSTATUS(status));
        #endif
            return 0;
        }
        """;

    [Test]
    public void KernelAcceptsAndEnforcesTheDefaultProgram()
    {
        if (!File.Exists("/proc/self/status") || !File.ReadAllText("/proc/self/status").Contains("Seccomp_filters:", StringComparison.Ordinal))
            Skip.Because("this kernel has no seccomp filters");
        SeccompArchitecture? current = SeccompArchitecture.TryCurrent;
        if (current is null)
            Skip.Because("no syscall table for this architecture");
        SeccompArchitecture arch = current!;

        using var dir = new TempDirectory();
        string source = dir.CreateFile("probe.c", ProbeSource);
        string probe = dir.Combine("probe");
        (int ccExit, string ccOut, string ccErr) = ChildProcess.Run(Environment.GetEnvironmentVariable("CC") ?? "cc", ["-O1", "-Wall", "-o", probe, source]);
        string ccOutput = ccOut + ccErr;
        if (ccExit == -1)
            Skip.Because("no C compiler: " + ccOutput);
        Assert.That(ccExit, Is.Zero, ccOutput);

        ImmutableArray<BpfInstruction> program = SeccompCompiler.Compile(SeccompProfiles.Default, arch);
        string filter = dir.Combine("filter.bpf");
        File.WriteAllBytes(filter, BpfProgram.ToBytes(program));

        (int exit, string output, string errors) = ChildProcess.Run(probe, [filter, (arch.MaxSyscall + 1).ToString(System.Globalization.CultureInfo.InvariantCulture)]);
        TestContext.Progress.WriteLine(output.ReplaceLineEndings(", ") + errors);
        Assert.That(exit, Is.Zero, output + errors);
        Dictionary<string, int> results = output.Split('\n', StringSplitOptions.RemoveEmptyEntries)
            .Select(l => l.Split(' ')).ToDictionary(p => p[0], p => int.Parse(p[1], System.Globalization.CultureInfo.InvariantCulture));

        const int EPERM = 1, ENOSYS = 38;
        Assert.That(results["load"], Is.Zero, "the kernel refused the program (EINVAL: invalid BPF)");
        Assert.Multiple(() =>
        {
            Assert.That(results["getpid"], Is.Zero);
            Assert.That(results["keyctl"], Is.EqualTo(EPERM));
            Assert.That(results["bpf"], Is.EqualTo(EPERM));
            Assert.That(results["unshare"], Is.EqualTo(EPERM));
            Assert.That(results["clone3"], Is.EqualTo(ENOSYS));
            Assert.That(results["clone_newuser"], Is.EqualTo(EPERM));
            Assert.That(results["clone_fork"], Is.Zero);
            Assert.That(results["fork"], Is.Zero);
            Assert.That(results["personality_query"], Is.Zero);
            Assert.That(results["personality_norandom"], Is.EqualTo(EPERM));
            Assert.That(results["tiocsti"], Is.EqualTo(EPERM));
            Assert.That(results["tiocsti_high"], Is.EqualTo(EPERM));
            Assert.That(results["socket_vsock"], Is.EqualTo(EPERM));
            Assert.That(results["io_uring_setup"], Is.EqualTo(EPERM));
            Assert.That(results["above_table"], Is.EqualTo(ENOSYS));
            Assert.That(results["minus_one"], Is.EqualTo(ENOSYS), "allowed by the filter, refused by the kernel");
            Assert.That(results["mount"], Is.EqualTo(EPERM));
            if (arch == SeccompArchitecture.X86_64)
            {
                Assert.That(results["x32_getpid"], Is.EqualTo(ENOSYS));
                // SIGSYS from the filter; SIGSEGV where the kernel has no i386 emulation at all.
                Assert.That(results["i386_int80"], Is.EqualTo(-31).Or.EqualTo(-11), "int 0x80 must not run");
            }
        });
    }
}
