using System.Diagnostics;
using System.Net;
using System.Net.Sockets;

namespace Sandbox.IntegrationTests;

/// <summary>
/// The escape suite: attempts modelled on the attacks real runtimes have suffered, each run inside a
/// default sandbox as the unprivileged user, each expected to fail in a stated way. Every row names
/// the defence that stops it; the payload prints BLOCKED or ESCAPED and the test wants BLOCKED.
/// </summary>
[System.Runtime.Versioning.SupportedOSPlatform("linux")]
[TestFixture]
[Parallelizable(ParallelScope.None)]
public sealed class EscapeTests
{
    public sealed record Attempt(string Name, string Defence, string Script, string[]? Options = null)
    {
        public override string ToString() => Name;
    }

    // Each script prints BLOCKED when the attempt failed as expected and ESCAPED otherwise.
    private static readonly Attempt[] s_attempts =
    {
        new("write /proc/sysrq-trigger", "/proc/sysrq-trigger bound read-only (runc's readonlyPaths)",
            "if echo h > /proc/sysrq-trigger 2>/dev/null; then echo ESCAPED; else echo BLOCKED; fi"),
        new("write /proc/sys", "/proc/sys bound read-only",
            "if echo 1 > /proc/sys/kernel/sysrq 2>/dev/null || echo 1 > /proc/sys/vm/drop_caches 2>/dev/null; then echo ESCAPED; else echo BLOCKED; fi"),
        new("write /sys", "the host's /sys is part of the read-only root",
            "if echo x > /sys/kernel/uevent_helper 2>/dev/null || mkdir /sys/fs/cgroup/escape 2>/dev/null; then echo ESCAPED; else echo BLOCKED; fi"),
        new("open a host fd by number", "every fd but 0-2 is closed before exec (close_range)",
            "for fd in 3 4 5 6 7 8 9 10 11 12 20 50 63 64 65 100; do if [ -e /proc/self/fd/$fd ] && [ $fd -ne 3 ]; then echo ESCAPED; exit; fi; done; echo BLOCKED"),
        new("chdir out through /proc/self/cwd", "pivot_root with the old root detached; cwd set after pivot (CVE-2024-21626)",
            "cd /proc/self/cwd/../../../.. && [ \"$(pwd -P)\" = / ] && [ ! -e /oldroot ] && [ ! -e /newroot ] && ! ls /proc/1/cwd/ >/dev/null 2>&1 && echo BLOCKED || echo ESCAPED"),
        new("reach the host through /proc/1/root", "PID 1 (sandbox-init) is non-dumpable",
            "if ls /proc/1/root/ >/dev/null 2>&1 || readlink /proc/1/root >/dev/null 2>&1 || readlink /proc/1/fd/4 >/dev/null 2>&1 || readlink /proc/1/cwd >/dev/null 2>&1; then echo ESCAPED; else echo BLOCKED; fi"),
        new("overwrite /proc/self/exe", "the binary lies on the read-only root (CVE-2019-5736)",
            "cp /bin/sh /tmp/sh && if /tmp/sh -c 'echo x > /proc/self/exe' 2>/dev/null || echo x >> /proc/1/exe 2>/dev/null; then echo ESCAPED; else echo BLOCKED; fi"),
        new("mknod a block device", "device nodes cannot be created in a user namespace; /dev is a private tmpfs",
            "if mknod /tmp/sda b 8 0 2>/dev/null || mknod /dev/sda b 8 0 2>/dev/null; then echo ESCAPED; else echo BLOCKED; fi"),
        new("mount a new procfs over the masks", "no CAP_SYS_ADMIN (docker's capability set) and seccomp denies mount",
            "mkdir -p /tmp/p; if mount -t proc proc /tmp/p 2>/dev/null || mount -t sysfs sysfs /tmp/p 2>/dev/null || umount /proc/kcore /proc/keys 2>/dev/null; then echo ESCAPED; else echo BLOCKED; fi"),
        new("ptrace PID 1", "sandbox-init is non-dumpable in its own address space",
            "python3 -c 'import ctypes,sys; l=ctypes.CDLL(None); sys.exit(0 if l.ptrace(16,1,0,0)==0 else 1)' && echo ESCAPED || echo BLOCKED"),
        new("unshare a user namespace to regain capabilities", "seccomp denies unshare and clone with CLONE_NEW* flags",
            "if unshare -Ur true 2>/dev/null || unshare -U true 2>/dev/null; then echo ESCAPED; else echo BLOCKED; fi"),
        // x86_64 numbers: keyctl 250 (KEYCTL_JOIN_SESSION_KEYRING = 1 works for any user without a
        // filter), userfaultfd 323, perf_event_open via python is awkward: keyctl and userfaultfd
        // succeed unfiltered, so they show the filter at work.
        new("use the kernel keyring / userfaultfd", "seccomp denies keyctl and userfaultfd (EPERM)",
            "python3 -c 'import ctypes,sys; l=ctypes.CDLL(None,use_errno=True); r=[l.syscall(250,1,0,0,0,0), l.syscall(323,1)]; sys.exit(0 if any(x>=0 for x in r) else 1)' && echo ESCAPED || echo BLOCKED"),
        new("read the caller's ~/.ssh", "$HOME is a fresh tmpfs",
            "if cat \"$HOME/.ssh/id_ed25519\" 2>/dev/null | grep -q SECRET-KEY; then echo ESCAPED; else echo BLOCKED; fi"),
        new("read the CI runner's environment", "clean environment; the runner's processes are in another PID namespace",
            "if env | grep -q SANDBOX_ESCAPE_SECRET || cat /proc/*/environ 2>/dev/null | tr '\\0' '\\n' | grep -q SANDBOX_ESCAPE_SECRET; then echo ESCAPED; else echo BLOCKED; fi"),
        new("fill the disk through a sized --tmpfs", "tmpfs size= bounds the mount",
            "head -c 20000000 /dev/zero > /tmp/fill 2>/dev/null; s=$(stat -c %s /tmp/fill); [ \"$s\" -le 8388608 ] && echo BLOCKED || echo ESCAPED",
            ["--tmpfs", "/tmp:size=8m"]),
    };

    private static IEnumerable<Attempt> Attempts => s_attempts;

    [OneTimeSetUp]
    public void Unprivileged() => Require.Unprivileged();

    [TestCaseSource(nameof(Attempts))]
    public void AttemptIsBlocked(Attempt attempt)
    {
        string home = Environment.GetEnvironmentVariable("HOME")!;
        string ssh = Path.Combine(home, ".ssh");
        Directory.CreateDirectory(ssh);
        string key = Path.Combine(ssh, "id_ed25519");
        bool madeKey = !File.Exists(key);
        if (madeKey)
            File.WriteAllText(key, "SECRET-KEY (a fixture of the escape suite)\n");
        try
        {
            var env = new Dictionary<string, string> { ["SANDBOX_ESCAPE_SECRET"] = "runner-token" };
            CliResult r = SandboxCli.Run(["run", .. attempt.Options ?? [], "--", "/bin/sh", "-c", attempt.Script], env: env);
            TestContext.Out.WriteLine($"{attempt.Name}: {r.StdoutText.Trim()} — stopped by: {attempt.Defence}");
            Assert.That(r.StdoutText.Trim(), Is.EqualTo("BLOCKED"), $"{attempt.Name} was not stopped ({attempt.Defence})\n{r}");
        }
        finally
        {
            if (madeKey)
                File.Delete(key);
        }
    }

    [Test]
    public void OwnBinariesStayReadOnlyInsideAWritableBind()
    {
        // Stopped by: the runtime directory is bound read-only over any writable bind that holds it
        // (the outcome of CVE-2019-5736: a payload replacing what the host runs next).
        string runtime = Path.GetDirectoryName(SandboxCli.Binary)!;
        string workspace = Path.GetDirectoryName(runtime)!;
        CliResult r = SandboxCli.Run("run", "-v", $"{workspace}:{workspace}", "--", "/bin/sh", "-c",
            $"if echo x >> '{runtime}/sandbox-init' 2>/dev/null || echo x >> '{runtime}/libsandbox_exec.so' 2>/dev/null || touch '{runtime}/planted' 2>/dev/null; then echo ESCAPED; else echo BLOCKED; fi; touch '{workspace}/.sandbox-escape-probe' && echo workspace-writable");
        File.Delete(Path.Combine(workspace, ".sandbox-escape-probe"));
        Assert.That(r.StdoutText, Does.StartWith("BLOCKED"), r.ToString());
        Assert.That(r.StdoutText, Does.Contain("workspace-writable"), "the rest of the bind stays writable");
    }

    [Test]
    public void HostLoopbackIsUnreachable()
    {
        // Stopped by: a private network namespace with only its own loopback.
        var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        try
        {
            int port = ((IPEndPoint)listener.LocalEndpoint).Port;
            CliResult r = SandboxCli.Run("run", "--", "/bin/bash", "-c", $"if echo hi > /dev/tcp/127.0.0.1/{port}; then echo ESCAPED; else echo BLOCKED; fi");
            Assert.That(r.StdoutText.Trim(), Is.EqualTo("BLOCKED"), r.ToString());
        }
        finally
        {
            listener.Stop();
        }
    }

    [Test]
    public void TheCallersSessionSocketsAreOutOfReach()
    {
        // Stopped by: an empty tmpfs over $XDG_RUNTIME_DIR (and /run/user), where systemd --user,
        // the D-Bus session bus and the agents listen; a read-only bind alone lets connect(2) through.
        // Outside /tmp and $HOME, which are fresh anyway: under /var/tmp, as a runtime dir can be.
        Require.That(Directory.Exists("/var/tmp"), "no /var/tmp to put a runtime directory outside /tmp and $HOME");
        string runtime = Path.Combine("/var/tmp", "sandbox-xdg-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(runtime, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
        string socket = Path.Combine(runtime, "bus");
        using var listener = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        try
        {
            listener.Bind(new UnixDomainSocketEndPoint(socket));
            listener.Listen(1);
            string script = $"if [ -e '{socket}' ] || ls -A '{runtime}' | grep -q .; then echo ESCAPED; else echo BLOCKED; fi";
            // No holder in that directory: it would outlive the test by its idle time.
            var env = new Dictionary<string, string> { ["XDG_RUNTIME_DIR"] = runtime, ["SANDBOX_USERNS_IDLE"] = "0" };
            CliResult r = SandboxCli.Run(["run", "--", "/bin/sh", "-c", script], env: env);
            Assert.That(r.StdoutText.Trim(), Is.EqualTo("BLOCKED"), r.ToString());

            // What the caller binds there on purpose is reachable.
            CliResult bound = SandboxCli.Run(["run", "-v", $"{socket}:{socket}", "--", "/bin/sh", "-c", $"[ -S '{socket}' ] && echo bound"], env: env);
            Assert.That(bound.StdoutText.Trim(), Is.EqualTo("bound"), bound.ToString());
        }
        finally
        {
            listener.Dispose();
            Directory.Delete(runtime, recursive: true);
        }
    }

    [Test]
    public void HostProcessCannotBeKilledByPid()
    {
        // Stopped by: the PID namespace (host pids do not exist inside).
        using var victim = Process.Start("sleep", "60")!;
        try
        {
            CliResult r = SandboxCli.Sh($"if kill -9 {victim.Id} 2>/dev/null; then echo ESCAPED; else echo BLOCKED; fi");
            Assert.That(r.StdoutText.Trim(), Is.EqualTo("BLOCKED"), r.ToString());
            Assert.That(victim.HasExited, Is.False);
        }
        finally
        {
            victim.Kill();
        }
    }

    [Test]
    public void TiocstiCannotInjectIntoTheCallersTerminal()
    {
        // Stopped by: setsid (the payload has no controlling terminal) and the user namespace, which
        // lacks CAP_SYS_ADMIN over the terminal's namespace (tty_ioctl(4), TIOCSTI).
        Require.Command("/usr/bin/script");
        string probe = "import fcntl,termios,sys\ntry:\n    fcntl.ioctl(0, termios.TIOCSTI, b'x')\n    print('ESCAPED')\nexcept OSError as e:\n    print('BLOCKED', e.errno)\n";
        string file = Path.Combine(Path.GetTempPath(), $"tiocsti-{Guid.NewGuid():N}.py");
        File.WriteAllText(file, probe);
        try
        {
            string command = $"'{SandboxCli.Binary}' run -i -v {file}:/tmp/probe.py:ro -- /usr/bin/python3 /tmp/probe.py";
            using var p = Process.Start(new ProcessStartInfo("/usr/bin/script", new[] { "-qec", command, "/dev/null" })
            {
                RedirectStandardOutput = true,
                RedirectStandardInput = true,
                UseShellExecute = false,
            })!;
            p.StandardInput.Close();
            string output = p.StandardOutput.ReadToEnd();
            p.WaitForExit();
            Assert.That(output, Does.Contain("BLOCKED").And.Not.Contain("ESCAPED"), output);
        }
        finally
        {
            File.Delete(file);
        }
    }
}
