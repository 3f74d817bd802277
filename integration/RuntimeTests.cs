using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using System.Security.Cryptography;
using System.Text;

namespace Sandbox.IntegrationTests;

/// <summary>Real sandboxes through the real CLI, as an unprivileged user (issue: runtime core).</summary>
[TestFixture]
[Parallelizable(ParallelScope.None)]
public sealed class RuntimeTests
{
    [OneTimeSetUp]
    public void Unprivileged()
    {
        Require.Unprivileged();
        Assert.That(File.Exists(SandboxCli.Binary), Is.True, $"the CLI was not built next to the tests: {SandboxCli.Binary}");
    }

    [Test]
    public void RootInsideIsTheCallerOutside()
    {
        using var dir = new TempDir();
        CliResult r = SandboxCli.Sh("id -u; touch /tmp/work/made-inside", "--userns", "single", "-v", $"{dir.Path}:/tmp/work");
        Assert.That(r.ExitCode, Is.EqualTo(0), r.ToString());
        Assert.That(r.StdoutText.Trim(), Is.EqualTo("0"));
        Assert.That(OwnerUid(Path.Combine(dir.Path, "made-inside")), Is.EqualTo(Linux.Syscalls.RealUserId));
    }

    [Test]
    public void SubuidRangeLetsRootChownInside()
    {
        Runtime.IdMapPlan range = Require.SubordinateRange();
        using var dir = new TempDir();
        CliResult r = SandboxCli.Sh("touch /tmp/work/f && chown 1000:1000 /tmp/work/f && stat -c %u:%g /tmp/work/f", "--userns", "subuid", "-v", $"{dir.Path}:/tmp/work");
        Assert.That(r.ExitCode, Is.EqualTo(0), r.ToString());
        Assert.That(r.StdoutText.Trim(), Is.EqualTo("1000:1000"));
        // Outside, uid 1000 is the range's 1000th id (0 inside is the caller, 1 the range's first).
        Assert.That(OwnerUid(Path.Combine(dir.Path, "f")), Is.EqualTo(range.SubordinateUids!.Start + 999));

        CliResult single = SandboxCli.Sh("touch /tmp/f && chown 1000:1000 /tmp/f", "--userns", "single");
        Assert.That(single.ExitCode, Is.Not.EqualTo(0), "with a single-id map, uid 1000 does not exist inside");
    }

    [Test]
    public void AUserOtherThanRootOwnsTheFreshHomeAndAnUnmappedOneIsRefusedBeforeTheStart()
    {
        Runtime.IdMapPlan range = Require.SubordinateRange();
        CliResult r = SandboxCli.Sh("touch \"$HOME/made\" && stat -c %u:%g \"$HOME\" \"$HOME/made\" && id -u", "--userns", "subuid", "-u", "1000:1000");
        Assert.That(r.ExitCode, Is.EqualTo(0), r.ToString());
        Assert.That(r.StdoutText, Is.EqualTo("1000:1000\n1000:1000\n1000\n"), r.ToString());

        long outside = range.SubordinateUids!.Count + 1;
        CliResult unmapped = SandboxCli.Sh("true", "--userns", "subuid", "-u", outside.ToString(System.Globalization.CultureInfo.InvariantCulture));
        Assert.That(unmapped.ExitCode, Is.EqualTo(125), unmapped.ToString());
        Assert.That(unmapped.Stderr, Does.Contain($"{outside}:0 is not mapped in the sandbox").And.Contain("usermod --add-subuids"), unmapped.ToString());
    }

    [Test]
    public void ReadOnlyBindRefusesWritesAndReadWriteBindAcceptsThem()
    {
        using var ro = new TempDir();
        using var rw = new TempDir();
        File.WriteAllText(Path.Combine(ro.Path, "given"), "from the host");
        CliResult r = SandboxCli.Sh(
            "cat /tmp/ro/given; echo; if echo x > /tmp/ro/new; then echo ro-writable; else echo ro-refused; fi; echo y > /tmp/rw/new && echo rw-ok",
            "-v", $"{ro.Path}:/tmp/ro:ro", "-v", $"{rw.Path}:/tmp/rw");
        Assert.That(r.ExitCode, Is.EqualTo(0), r.ToString());
        Assert.That(r.StdoutText, Does.Contain("from the host").And.Contain("ro-refused").And.Contain("rw-ok").And.Not.Contain("ro-writable"));
        Assert.That(File.Exists(Path.Combine(ro.Path, "new")), Is.False);
        Assert.That(File.ReadAllText(Path.Combine(rw.Path, "new")), Is.EqualTo("y\n"));
    }

    [Test]
    public void HostRootIsReadOnlyAndTmpAndHomeAreFreshTmpfs()
    {
        string marker = Path.Combine(Path.GetTempPath(), $"sandbox-host-marker-{Guid.NewGuid():N}");
        File.WriteAllText(marker, "x");
        try
        {
            CliResult r = SandboxCli.Sh("touch /usr/probe 2>/dev/null && echo usr-writable; ls -A /tmp | wc -l; ls -A \"$HOME\" | wc -l; touch /tmp/a \"$HOME/b\" && echo tmp-home-writable; grep -E ' (/tmp|'\"$HOME\"') ' /proc/mounts | awk '{print $3}' | sort -u");
            Assert.That(r.ExitCode, Is.EqualTo(0), r.ToString());
            string[] lines = r.StdoutText.Split('\n', StringSplitOptions.RemoveEmptyEntries);
            Assert.That(lines, Does.Not.Contain("usr-writable"));
            Assert.That(lines[0], Is.EqualTo("0"), "/tmp starts empty: the host's " + marker + " must not be visible");
            Assert.That(lines[1], Is.EqualTo("0"), "$HOME starts empty");
            Assert.That(lines, Does.Contain("tmp-home-writable"));
            Assert.That(lines[^1], Is.EqualTo("tmpfs"));
        }
        finally
        {
            File.Delete(marker);
        }
    }

    [Test]
    public void OnlyStdioFileDescriptorsGetIn()
    {
        // bash opens fd 7 without close-on-exec, so the CLI inherits it: it must not reach the payload.
        string script = $"exec 7</etc/hostname; exec '{SandboxCli.Binary}' run -- ls /proc/self/fd";
        using var p = Process.Start(new ProcessStartInfo("/bin/bash", new[] { "-c", script }) { RedirectStandardOutput = true, RedirectStandardError = true })!;
        string stdout = p.StandardOutput.ReadToEnd();
        string stderr = p.StandardError.ReadToEnd();
        p.WaitForExit();
        Assert.That(p.ExitCode, Is.EqualTo(0), stderr);
        // 3 is the directory ls opened to list /proc/self/fd.
        Assert.That(stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries), Is.EquivalentTo(new[] { "0", "1", "2", "3" }));
    }

    [Test]
    public void OrphansAreReaped()
    {
        // The inner shell exits at once; its background sleep is re-parented to PID 1 and exits 0.2 s
        // later. Without a reaping init it would stay a zombie (Z).
        CliResult r = SandboxCli.Sh("sh -c 'sleep 0.2 & exit 0'; sleep 1; ps -eo pid=,ppid=,stat=,comm=");
        Assert.That(r.ExitCode, Is.EqualTo(0), r.ToString());
        var states = r.StdoutText.Split('\n', StringSplitOptions.RemoveEmptyEntries).Select(l => l.Split(' ', StringSplitOptions.RemoveEmptyEntries)).ToList();
        Assert.That(states.Select(s => s[2]), Has.None.StartsWith("Z"), r.StdoutText);
        Assert.That(states.Single(s => s[0] == "1")[1], Is.EqualTo("0"), "PID 1 is the sandbox's init");
    }

    /// <summary>
    /// The CLI forwards SIGHUP, SIGINT, SIGQUIT, SIGUSR1, SIGUSR2 and SIGTERM (docker's --sig-proxy)
    /// through a handler of the native executor that wakes the supervisor's poll loop: each one must
    /// arrive, in order, and none may end the CLI by its default action.
    /// </summary>
    [Test]
    public void EveryProxiedSignalReachesThePayload()
    {
        string[] names = ["HUP", "INT", "QUIT", "USR1", "USR2"];
        string traps = string.Join(" ", names.Select(n => $"trap 'echo got-{n}' {n};"));
        using var p = Process.Start(SandboxCli.StartInfo(["run", "--", "/bin/sh", "-c", $"{traps} trap 'echo got-TERM; exit 4' TERM; echo ready; while :; do sleep 0.05; done"]))!;
        p.StandardInput.Close();
        Assert.That(p.StandardOutput.ReadLine(), Is.EqualTo("ready"));
        foreach (string name in names)
        {
            HostProcesses.Signal(p.Id, name);
            Assert.That(p.StandardOutput.ReadLine(), Is.EqualTo($"got-{name}"), $"SIG{name} did not reach the payload");
            Assert.That(p.HasExited, Is.False, $"SIG{name} ended the CLI instead of being forwarded");
        }
        HostProcesses.Signal(p.Id, "TERM");
        Assert.That(p.WaitForExit(TimeSpan.FromSeconds(10)), Is.True, "the sandbox did not end after SIGTERM");
        Assert.That(p.StandardOutput.ReadToEnd().Trim(), Is.EqualTo("got-TERM"));
        Assert.That(p.ExitCode, Is.EqualTo(4), "the payload's own exit code after its trap, not 128+15");
    }

    [Test]
    public void PayloadHasNoNewPrivilegesAndItsOwnSession()
    {
        // Field 6 of /proc/PID/stat is the session id (proc(5)): setsid made the payload a session
        // leader without a controlling terminal, so TIOCSTI into the caller's terminal is refused.
        CliResult r = SandboxCli.Sh("grep NoNewPrivs /proc/self/status | tr -d '\t '; echo pid=$$; cut -d' ' -f6 /proc/$$/stat; cut -d' ' -f7 /proc/$$/stat");
        Assert.That(r.ExitCode, Is.EqualTo(0), r.ToString());
        string[] lines = r.StdoutText.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.That(lines[0], Is.EqualTo("NoNewPrivs:1"));
        Assert.That(lines[2], Is.EqualTo(lines[1]["pid=".Length..]), "the payload leads its own session");
        Assert.That(lines[3], Is.EqualTo("0"), "no controlling terminal");
    }

    [Test]
    public void PayloadKilledBySignalExitsWith128PlusN()
    {
        CliResult r = SandboxCli.Sh("kill -KILL $$");
        Assert.That(r.ExitCode, Is.EqualTo(137), r.ToString());
    }

    [Test]
    public void TimeoutKillsTheWholeTreeAndExits124()
    {
        string marker = "98765" + Random.Shared.Next(1000, 9999);
        CliResult r = SandboxCli.Run(["run", "--timeout", "1s", "--", "/bin/sh", "-c", $"setsid sleep {marker} & sleep {marker}.5 & sleep 10"]);
        Assert.That(r.ExitCode, Is.EqualTo(124), r.ToString());
        Assert.That(r.Elapsed, Is.LessThan(TimeSpan.FromSeconds(4)), "a 10 s sleep under --timeout 1s ends in about 1 s");
        Assert.That(r.Elapsed, Is.GreaterThanOrEqualTo(TimeSpan.FromSeconds(0.9)));
        Assert.That(r.Stderr, Does.Contain("timed out after 1s"));
        Assert.That(HostProcesses.WithMarker(marker, exceptExitHelpers: true), Is.Empty, "no process of the sandbox may survive, daemonised ones included");
    }

    [Test]
    public void KillingTheCliWithSigkillLeavesNothingBehind()
    {
        string marker = "87654" + Random.Shared.Next(1000, 9999);
        using var p = Process.Start(SandboxCli.StartInfo(["run", "--", "/bin/sh", "-c", $"setsid sleep {marker} & sleep {marker}.5"]))!;
        Assert.That(HostProcesses.WaitUntil(() => HostProcesses.WithMarker(marker, "sleep ").Count == 2, TimeSpan.FromSeconds(10)), Is.True,
            "the payload did not start: " + string.Join(",", HostProcesses.WithMarker(marker)));
        p.Kill(); // SIGKILL: no handler of ours runs
        p.WaitForExit();
        Assert.That(HostProcesses.WaitUntil(() => HostProcesses.WithMarker(marker).Count == 0, TimeSpan.FromSeconds(5)), Is.True,
            "the sandbox's processes outlived the CLI: " + string.Join(",", HostProcesses.WithMarker(marker)));
    }

    [Test]
    public void HostLoopbackListenerIsUnreachableWithNetworkNone()
    {
        var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        try
        {
            int port = ((IPEndPoint)listener.LocalEndpoint).Port;
            string probe = $"if echo hi > /dev/tcp/127.0.0.1/{port}; then echo connected; else echo refused; fi";
            CliResult none = SandboxCli.Run(["run", "--", "/bin/bash", "-c", probe]);
            Assert.That(none.StdoutText.Trim(), Is.EqualTo("refused"), none.ToString());

            // The same probe reaches the listener in the host's network: the test can tell the difference.
            CliResult host = SandboxCli.Run(["run", "--network", "host", "--", "/bin/bash", "-c", probe]);
            Assert.That(host.StdoutText.Trim(), Is.EqualTo("connected"), host.ToString());
        }
        finally
        {
            listener.Stop();
        }
    }

    [Test]
    public void LoopbackIsUpInsideAPrivateNetwork()
    {
        CliResult r = SandboxCli.Sh("cat /sys/class/net/lo/operstate 2>/dev/null; ls /sys/class/net | wc -l; python3 -c 'import socket; s=socket.socket(); s.bind((\"127.0.0.1\",0)); s.listen(); c=socket.create_connection(s.getsockname()); print(\"loopback-ok\")'");
        Assert.That(r.StdoutText, Does.Contain("loopback-ok"), r.ToString());
    }

    [TestCase("no-such-command-xyz", 127, "command not found")]
    [TestCase("/no/such/file", 127, "no such file")]
    [TestCase("/etc/passwd", 126, "cannot execute")]
    [TestCase("/etc", 126, "cannot execute: Permission denied (EACCES): it is a directory")]
    public void ExecFailuresFollowDockerExitCodes(string command, int expected, string message)
    {
        CliResult r = SandboxCli.Run("run", "--", command);
        Assert.That(r.ExitCode, Is.EqualTo(expected), r.ToString());
        Assert.That(r.Stderr, Does.StartWith("sandbox: ").And.Contain(message));
        Assert.That(r.Stderr.Trim().Split('\n'), Has.Length.EqualTo(1), "one line that names the cause");
    }

    [Test]
    public void SetupFailuresExit125WithTheCause()
    {
        CliResult missing = SandboxCli.Run("run", "-v", "/no/such/dir:/tmp/x", "--", "true");
        Assert.That(missing.ExitCode, Is.EqualTo(125), missing.ToString());
        Assert.That(missing.Stderr, Does.Contain("/no/such/dir does not exist"));

        using var dir = new TempDir();
        CliResult unmountable = SandboxCli.Run("run", "-v", $"{dir.Path}:/usr/no-such-target", "--", "true");
        Assert.That(unmountable.ExitCode, Is.EqualTo(125), unmountable.ToString());
        Assert.That(unmountable.Stderr, Does.Contain("setting up the sandbox failed").And.Contain("/usr/no-such-target"));

        CliResult workdir = SandboxCli.Run("run", "-w", "/no/such/dir", "--", "true");
        Assert.That(workdir.ExitCode, Is.EqualTo(125), workdir.ToString());
        Assert.That(workdir.Stderr, Does.Contain("working directory /no/such/dir").And.Contain("made only where the sandbox can write"));
        // Where the sandbox can write, a missing one is made, as docker and podman make it.
        CliResult made = SandboxCli.Run("run", "-w", "/tmp/new/dir", "--", "pwd");
        Assert.That(made.ExitCode, Is.EqualTo(0), made.ToString());
        Assert.That(made.StdoutText, Is.EqualTo("/tmp/new/dir\n"));
    }

    [Test]
    public void AHelpFlagAmongThePayloadsWordsIsThePayloads()
    {
        // Option parsing stops at the command (docker's rule): `sandbox run df -h` runs df -h.
        CliResult r = SandboxCli.Run("run", "sh", "-c", "echo ran with $0", "-h");
        Assert.That(r.ExitCode, Is.EqualTo(0), r.ToString());
        Assert.That(r.StdoutText, Is.EqualTo("ran with -h\n"), r.ToString());
        CliResult help = SandboxCli.Run("run", "-e", "X=1", "--help");
        Assert.That(help.ExitCode, Is.EqualTo(0), help.ToString());
        Assert.That(help.StdoutText, Does.Contain("Usage:").And.Contain("--hostname"), help.ToString());
    }

    [Test]
    public void PayloadExitCodeIsPassedThrough()
    {
        Assert.That(SandboxCli.Sh("exit 42").ExitCode, Is.EqualTo(42));
        Assert.That(SandboxCli.Sh("true").ExitCode, Is.EqualTo(0));
    }

    [Test]
    public void HostEnvironmentStaysOutUnlessPassed()
    {
        var env = new Dictionary<string, string> { ["SANDBOX_IT_SECRET"] = "hunter2", ["TERM"] = "xterm-it" };
        CliResult clean = SandboxCli.Run(["run", "--", "/usr/bin/env"], env: env);
        Assert.That(clean.ExitCode, Is.EqualTo(0), clean.ToString());
        var names = clean.StdoutText.Split('\n', StringSplitOptions.RemoveEmptyEntries).Select(l => l.Split('=')[0]).ToList();
        Assert.That(names, Is.EquivalentTo(new[] { "PATH", "HOME", "TERM" }));
        Assert.That(clean.StdoutText, Does.Not.Contain("hunter2"));

        CliResult passed = SandboxCli.Run(["run", "-e", "SANDBOX_IT_SECRET", "-e", "EXTRA=1", "--", "/usr/bin/env"], env: env);
        Assert.That(passed.StdoutText, Does.Contain("SANDBOX_IT_SECRET=hunter2\n").And.Contain("EXTRA=1\n"));
    }

    [Test]
    public void ProcIsFreshAndMaskedAndDevIsMinimal()
    {
        // runc's masked files that this kernel has (some kernels lack /proc/kcore).
        string[] masked = new[] { "kcore", "keys", "timer_list", "sched_debug", "latency_stats" }.Where(f => File.Exists("/proc/" + f)).ToArray();
        Assert.That(masked, Is.Not.Empty, "the host has none of the masked /proc files");
        CliResult r = SandboxCli.Sh(
            "ls /proc | grep -E '^[0-9]+$' | wc -l; " +
            "grep ' /proc/sys ' /proc/self/mountinfo | grep -c ' ro,'; " +
            "if echo 1 > /proc/sysrq-trigger; then echo sysrq-writable; fi; " +
            "ls /dev | tr '\\n' ' '; echo; " +
            string.Join("; ", masked.Select(f => $"wc -c < /proc/{f}")));
        Assert.That(r.ExitCode, Is.EqualTo(0), r.ToString());
        string[] lines = r.StdoutText.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.That(int.Parse(lines[0]), Is.InRange(2, 8), "only the sandbox's own processes (init, sh and the pipeline) are in /proc");
        Assert.That(lines[1].Trim(), Is.EqualTo("1"), "/proc/sys is read-only");
        Assert.That(r.StdoutText, Does.Not.Contain("sysrq-writable"));
        Assert.That(lines[2].Split(' ', StringSplitOptions.RemoveEmptyEntries),
            Is.EquivalentTo(new[] { "core", "fd", "full", "null", "ptmx", "pts", "random", "shm", "stderr", "stdin", "stdout", "tty", "urandom", "zero" }));
        Assert.That(lines.Skip(3).Select(l => l.Trim()), Is.EqualTo(masked.Select(_ => "0")), "masked /proc files read as empty: " + string.Join(",", masked));
    }

    /// <summary>
    /// runc's masked directories get a read-only empty tmpfs; the executor tells them from the masked
    /// files when it masks them (the planner stats nothing), so this checks what it found.
    /// </summary>
    [Test]
    public void MaskedDirectoriesAreEmptyAndReadOnly()
    {
        string[] masked = new[] { "/proc/acpi", "/proc/asound", "/proc/scsi", "/sys/firmware", "/sys/devices/virtual/powercap" }
            .Where(Directory.Exists).ToArray();
        Assert.That(masked, Is.Not.Empty, "the host has none of the masked directories");
        CliResult r = SandboxCli.Sh(string.Join("; ", masked.Select(d =>
            $"echo \"{d} $(ls -A {d} | wc -l) $(test -d {d} && echo dir) $(touch {d}/x 2>/dev/null && echo writable || echo read-only)\"")));
        Assert.That(r.ExitCode, Is.EqualTo(0), r.ToString());
        Assert.That(r.StdoutText.Split('\n', StringSplitOptions.RemoveEmptyEntries),
            Is.EqualTo(masked.Select(d => $"{d} 0 dir read-only")), r.ToString());
    }

    [Test]
    public void OptionsForHostnameWorkdirAndTmpfs()
    {
        CliResult r = SandboxCli.Run("run", "--hostname", "ci-box", "-w", "/tmp/scratch", "--tmpfs", "/tmp/scratch", "--",
            "/bin/sh", "-c", "hostname; pwd; grep ' /tmp/scratch ' /proc/mounts | cut -d' ' -f3");
        Assert.That(r.ExitCode, Is.EqualTo(0), r.ToString());
        Assert.That(r.StdoutText.Split('\n', StringSplitOptions.RemoveEmptyEntries), Is.EqualTo(new[] { "ci-box", "/tmp/scratch", "tmpfs" }));
    }

    [Test]
    public void StdinIsForwardedWhenGiven()
    {
        CliResult r = SandboxCli.Run(["run", "--", "/bin/cat"], stdin: Encoding.UTF8.GetBytes("hello through stdin\n"));
        Assert.That(r.StdoutText, Is.EqualTo("hello through stdin\n"), r.ToString());
    }

    [Test]
    public void OutputIsBinarySafeAndOrdered()
    {
        using var dir = new TempDir();
        byte[] data = RandomNumberGenerator.GetBytes(8 * 1024 * 1024 + 17);
        File.WriteAllBytes(Path.Combine(dir.Path, "blob"), data);
        CliResult r = SandboxCli.Run("run", "-v", $"{dir.Path}:/tmp/in:ro", "--", "/bin/cat", "/tmp/in/blob");
        Assert.That(r.ExitCode, Is.EqualTo(0), r.Stderr);
        Assert.That(r.Stdout.Length, Is.EqualTo(data.Length));
        Assert.That(SHA256.HashData(r.Stdout), Is.EqualTo(SHA256.HashData(data)));
    }

    [Test]
    public void OneGigabyteOfOutputPassesWithoutLoss()
    {
        using var p = Process.Start(SandboxCli.StartInfo(["run", "--", "/bin/sh", "-c", "head -c 1073741824 /dev/zero; echo done >&2"]))!;
        p.StandardInput.Close();
        var stderr = p.StandardError.ReadToEndAsync();
        long total = 0;
        bool allZero = true;
        byte[] buffer = new byte[1 << 20];
        Stream stdout = p.StandardOutput.BaseStream;
        int n;
        while ((n = stdout.Read(buffer, 0, buffer.Length)) > 0)
        {
            total += n;
            if (allZero && buffer.AsSpan(0, n).IndexOfAnyExcept((byte)0) >= 0)
                allZero = false;
        }
        Assert.That(p.WaitForExit(TimeSpan.FromSeconds(120)), Is.True);
        Assert.That(p.ExitCode, Is.EqualTo(0), stderr.Result);
        Assert.That(total, Is.EqualTo(1L << 30));
        Assert.That(allZero, Is.True);
        Assert.That(stderr.Result, Is.EqualTo("done\n"));
    }

    [Test]
    public void JsonEventsDescribeTheRun()
    {
        CliResult r = SandboxCli.Run("run", "--events", "json", "--", "/bin/sh", "-c", "echo out; echo err >&2; exit 3");
        Assert.That(r.ExitCode, Is.EqualTo(3), r.ToString());
        var events = r.StdoutText.Split('\n', StringSplitOptions.RemoveEmptyEntries).Select(l => System.Text.Json.JsonDocument.Parse(l).RootElement).ToList();
        Assert.That(events[0].GetProperty("event").GetString(), Is.EqualTo("started"));
        Assert.That(events[^1].GetProperty("event").GetString(), Is.EqualTo("exited"));
        Assert.That(events[^1].GetProperty("exitCode").GetInt32(), Is.EqualTo(3));
        Assert.That(events[^1].GetProperty("wallMs").GetDouble(), Is.GreaterThan(0));
        var outputs = events.Where(e => e.GetProperty("event").GetString() == "output").ToList();
        Assert.That(outputs.Select(o => (o.GetProperty("stream").GetString(), o.GetProperty("text").GetString())),
            Is.EquivalentTo(new[] { ("stdout", "out\n"), ("stderr", "err\n") }));

        CliResult failed = SandboxCli.Run("run", "--events", "json", "--", "no-such-command-xyz");
        var error = System.Text.Json.JsonDocument.Parse(failed.StdoutText.Trim()).RootElement;
        Assert.That(error.GetProperty("event").GetString(), Is.EqualTo("error"));
        Assert.That(error.GetProperty("code").GetString(), Is.EqualTo("SBX005"));
        Assert.That(failed.ExitCode, Is.EqualTo(127));
    }

    [Test]
    public void DirectoryRootRunsItsOwnBinaries()
    {
        Require.Command("/bin/busybox");
        using var dir = new TempDir();
        string rootfs = Path.Combine(dir.Path, "rootfs");
        Directory.CreateDirectory(Path.Combine(rootfs, "bin"));
        Directory.CreateDirectory(Path.Combine(rootfs, "etc"));
        File.Copy("/bin/busybox", Path.Combine(rootfs, "bin", "busybox"));
        foreach (string applet in new[] { "sh", "ls", "cat", "id", "touch", "echo" })
            File.CreateSymbolicLink(Path.Combine(rootfs, "bin", applet), "busybox");
        File.WriteAllText(Path.Combine(rootfs, "etc", "marker"), "inside-the-image\n");

        CliResult r = SandboxCli.Run("run", rootfs, "sh", "-c", "cat /etc/marker; ls /; touch /etc/new 2>/dev/null || echo root-read-only; id -u");
        Assert.That(r.ExitCode, Is.EqualTo(0), r.ToString());
        string[] lines = r.StdoutText.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.That(lines[0], Is.EqualTo("inside-the-image"));
        Assert.That(r.StdoutText, Does.Contain("root-read-only"));
        Assert.That(lines[^1], Is.EqualTo("0"));
        Assert.That(r.StdoutText, Does.Not.Contain("usr"), "the host's directories are not in the image root");
    }

    [Test]
    public void SymlinksInADirectoryRootCannotRedirectMountsToTheHost()
    {
        Require.Command("/bin/busybox");
        using var dir = new TempDir();
        string rootfs = Path.Combine(dir.Path, "rootfs");
        string victim = Path.Combine(dir.Path, "victim");
        Directory.CreateDirectory(Path.Combine(rootfs, "bin"));
        Directory.CreateDirectory(victim);
        File.Copy("/bin/busybox", Path.Combine(rootfs, "bin", "sh"));
        // A hostile image: absolute links that would point at the host if resolved outside the root
        // (the executor keeps the host's tree at /oldroot until it pivots).
        File.CreateSymbolicLink(Path.Combine(rootfs, "evil"), "/oldroot" + victim);
        File.CreateSymbolicLink(Path.Combine(rootfs, "tmp"), "/oldroot" + victim);
        using var source = new TempDir();

        CliResult r = SandboxCli.Run("run", "-v", $"{source.Path}:/evil/planted", "--tmpfs", "/evil/t", rootfs, "/bin/sh", "-c", "true");
        Assert.That(Directory.EnumerateFileSystemEntries(victim), Is.Empty, "the sandbox created something on the host through a symlink: " + r);
        Assert.That(r.ExitCode, Is.EqualTo(125), r.ToString());
    }

    [Test]
    public void Pid1CannotBeTracedOrReadFromInside()
    {
        // PID 1 is sandbox-init in an address space of its own, non-dumpable: no ptrace, no
        // /proc/1/mem, no /proc/1/exe (CVE-2019-5736), though it runs with the payload's ids.
        string script = "import ctypes, os\n" +
            "libc = ctypes.CDLL(None, use_errno=True)\n" +
            "print('attach', libc.ptrace(16, 1, 0, 0), ctypes.get_errno())\n" +
            "for p in ('/proc/1/mem', '/proc/1/exe', '/proc/1/environ'):\n" +
            "    try:\n" +
            "        open(p, 'rb').read(1); print(p, 'readable')\n" +
            "    except OSError as e:\n" +
            "        print(p, 'refused', e.errno)\n" +
            "print('comm', open('/proc/1/comm').read().strip())\n";
        CliResult r = SandboxCli.Run("run", "--", "/usr/bin/python3", "-c", script);
        Assert.That(r.ExitCode, Is.EqualTo(0), r.ToString());
        Assert.That(r.StdoutText, Does.Contain("attach -1 1\n"), "ptrace(PTRACE_ATTACH, 1) must fail with EPERM");
        Assert.That(r.StdoutText, Does.Not.Contain("readable"));
        Assert.That(r.StdoutText, Does.Contain("comm sandbox-init"));
    }

    private static uint OwnerUid(string path)
    {
        using var stat = Process.Start(new ProcessStartInfo("stat", new[] { "-c", "%u", path }) { RedirectStandardOutput = true })!;
        string text = stat.StandardOutput.ReadToEnd();
        stat.WaitForExit();
        return uint.Parse(text.Trim());
    }

    [Test]
    public void OutputGoesStraightToAFileOpenedForAppendAndToAPipeWhoseReaderLeaves()
    {
        // The CLI splices the payload's pipe to a file; a file opened O_APPEND refuses splice(2)
        // (EINVAL), so that case falls back to copying, and must lose nothing.
        using var dir = new TempDir();
        string file = Path.Combine(dir.Path, "log");
        File.WriteAllText(file, "before\n");
        string sandbox = SandboxCli.Binary;
        CliResult r = SandboxCli.Shell(
            $"'{sandbox}' run -- sh -c 'seq 1 20000; echo to-stderr >&2' >> '{file}' 2>&1; echo \"append=$?\"; " +
            // A reader that leaves after one line: the payload, writing into that pipe, must get
            // EPIPE/SIGPIPE, not run forever.
            $"'{sandbox}' run -- yes | head -n 1; echo pipe-done", TimeSpan.FromSeconds(30));
        Assert.That(r.StdoutText, Does.Contain("append=0").And.Contain("y\npipe-done"), r.ToString());
        string[] lines = File.ReadAllLines(file);
        Assert.That(lines[0], Is.EqualTo("before"));
        Assert.That(lines.Skip(1).Where(l => l != "to-stderr"), Is.EqualTo(Enumerable.Range(1, 20000).Select(i => i.ToString(System.Globalization.CultureInfo.InvariantCulture))));
        Assert.That(lines, Does.Contain("to-stderr"));
    }

    [Test]
    public void AFileGivenAsStdinIsReadThroughAPipeAndCannotBeChangedFromInside()
    {
        // Root inside has the file's owner's id: handed the caller's descriptor, it rewrote the file
        // through /proc/self/fd/0 and chmod'ed it. A named FIFO as stdout the same way.
        using var dir = new TempDir();
        string data = Path.Combine(dir.Path, "data.txt"), fifo = Path.Combine(dir.Path, "fifo");
        File.WriteAllText(data, "original\n");
        string sandbox = SandboxCli.Binary;
        CliResult r = SandboxCli.Shell(
            $"chmod 600 '{data}' && '{sandbox}' run -- sh -c 'cat; readlink /proc/self/fd/0; echo changed > /proc/self/fd/0; chmod 4777 /proc/self/fd/0' < '{data}'; " +
            $"stat -c %a '{data}'; mkfifo '{fifo}' && (cat '{fifo}' > /dev/null &) && '{sandbox}' run -- sh -c 'chmod 666 /proc/self/fd/1; echo x' > '{fifo}'; stat -c %a '{fifo}'");
        Assert.That(r.StdoutText, Does.StartWith("original\npipe:["), r.ToString());
        Assert.That(File.ReadAllText(data), Is.EqualTo("original\n"), r.ToString());
        Assert.That(r.StdoutText, Does.EndWith("\n600\n644\n"), r.ToString());
    }

    /// <summary>
    /// A file as stdin is relayed from where the caller's offset is, and the offset ends past what the
    /// payload read, no further: a `while read` loop over a list runs each item (the relay used to read
    /// the rest of the list into its pipe, and the loop stopped after the first), and a reader after
    /// the run goes on where the payload stopped.
    /// </summary>
    [Test]
    public void AFileAsStdinIsLeftAtWhatThePayloadRead()
    {
        using var dir = new TempDir();
        string list = Path.Combine(dir.Path, "list"), big = Path.Combine(dir.Path, "big");
        File.WriteAllText(list, "a\nb\nc\n");
        File.WriteAllBytes(big, new byte[3_000_000]);
        string sandbox = SandboxCli.Binary;
        CliResult r = SandboxCli.Shell(
            $"while read item; do echo \"item $item\"; '{sandbox}' run -- true; done < '{list}'; " +
            $"{{ '{sandbox}' run -- head -c 100000 > /dev/null; wc -c; }} < '{big}'; " +
            $"{{ read first; '{sandbox}' run -- cat; }} < '{list}'");
        Assert.That(r.StdoutText, Is.EqualTo("item a\nitem b\nitem c\n2900000\nb\nc\n"), r.ToString());
    }

    [Test]
    public void TheCallersTmpdirIsHiddenInHostMode()
    {
        // $TMPDIR holds the diagnostic socket of every .NET process of the user (this CLI's among
        // them), through which a client reads its environment and loads a library into it.
        string tmpdir = Path.Combine("/var/tmp", "sandbox-it-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(tmpdir);
        try
        {
            File.WriteAllText(Path.Combine(tmpdir, "socket-stand-in"), "");
            CliResult r = SandboxCli.Run(["run", "--", "/bin/sh", "-c", $"ls -A '{tmpdir}' | wc -l"], env: new Dictionary<string, string> { ["TMPDIR"] = tmpdir });
            Assert.That(r.ExitCode, Is.EqualTo(0), r.ToString());
            Assert.That(r.StdoutText.Trim(), Is.EqualTo("0"), r.ToString());
        }
        finally
        {
            Directory.Delete(tmpdir, recursive: true);
        }
    }

    [Test]
    public void RunsUnderALowOpenFileLimit()
    {
        // The executor moves the sandbox's descriptors through numbers just above its own (F_DUPFD
        // from 7), not from 64: fcntl(2) refuses a base at or above RLIMIT_NOFILE, and every sandbox
        // failed under `ulimit -n 64` (bwrap runs under 16). Too low a limit says which.
        CliResult r = SandboxCli.Shell($"ulimit -n 64 && '{SandboxCli.Binary}' run -- /bin/echo under-64");
        Assert.That(r.ExitCode, Is.EqualTo(0), r.ToString());
        Assert.That(r.StdoutText, Is.EqualTo("under-64\n"), r.ToString());
    }

    [Test]
    public void OutputThatCannotBeWrittenIsAFailureNotASilentLoss()
    {
        // /dev/full fails every write with ENOSPC, as a full disk or an exhausted quota would: the
        // relayed output is lost, which the CLI says (exit 125), where before it exited 0 with an
        // empty file. Both ways a relay writes: splice(2), and copying (O_APPEND refuses splice).
        string sandbox = SandboxCli.Binary;
        CliResult r = SandboxCli.Shell(
            $"'{sandbox}' run -- sh -c 'echo hi' > /dev/full; echo \"splice=$?\"; " +
            $"'{sandbox}' run -- head -c 3000000 /dev/zero >> /dev/full; echo \"copy=$?\"");
        Assert.That(r.StdoutText, Does.Contain("splice=125").And.Contain("copy=125"), r.ToString());
        Assert.That(r.Stderr, Does.Contain("writing the command's stdout failed: No space left on device (ENOSPC); its output there is incomplete (the command exited with exit code 0)"), r.ToString());
        Assert.That(r.Stderr, Does.Contain("(the command exited with signal 13 (SIGPIPE))"), r.ToString());
    }

    /// <summary>
    /// The CLI's own lines are best effort: with stderr on a full disk (/dev/full) a run still ends
    /// with the status that says what happened (the command's, 124, 127), and JSON events to a full
    /// stdout end with 125; before, each aborted (134), the JSON one with .NET's stack trace.
    /// </summary>
    [Test]
    public void MessagesThatCannotBeWrittenDoNotChangeTheExitStatus()
    {
        string sandbox = SandboxCli.Binary;
        CliResult r = SandboxCli.Shell(
            $"'{sandbox}' run --stats -- true 2>/dev/full; echo \"stats=$?\"; " +
            $"'{sandbox}' run --timeout 1s -- sleep 5 2>/dev/full; echo \"timeout=$?\"; " +
            $"'{sandbox}' run -- no-such-command 2>/dev/full; echo \"missing=$?\"; " +
            $"'{sandbox}' run --events json -- echo hi >/dev/full 2>/dev/null; echo \"json=$?\" >&2");
        Assert.That(r.StdoutText, Is.EqualTo("stats=0\ntimeout=124\nmissing=127\n"), r.ToString());
        Assert.That(r.Stderr, Is.EqualTo("json=125\n"), r.ToString());
    }

    /// <summary>
    /// JSON events into a pipe whose reader goes away end the run (SBX012, 125), as a pipeline's
    /// writer ends: the CLI used to drop the events and let `yes` run until something killed it.
    /// </summary>
    /// <summary>
    /// With SANDBOX_EXIT_WITH_PARENT=1 (what the MSBuild task sets), a CLI whose parent is killed with
    /// SIGKILL ends itself and its sandbox within a second or so; before, the build's SIGTERM or a
    /// crashed node left both running until the tests ended.
    /// </summary>
    [Test]
    public void ACliAskedToExitWithItsParentEndsItsSandboxWhenTheParentIsKilled()
    {
        using var dir = new TempDir();
        string pidFile = Path.Combine(dir.Path, "cli.pid");
        string marker = $"61.{Environment.ProcessId}";
        CliResult r = SandboxCli.Shell(
            $"sh -c 'SANDBOX_EXIT_WITH_PARENT=1 \"$0\" run -- sleep {marker} & echo $! > \"$1\"; wait' '{SandboxCli.Binary}' '{pidFile}' & parent=$!; " +
            $"sleep 2; kill -9 $parent; sleep 2.5; " +
            $"if kill -0 $(cat '{pidFile}') 2>/dev/null; then echo cli-alive; else echo cli-gone; fi; " +
            $"if pgrep -f '^sleep {marker}$' >/dev/null; then echo payload-alive; else echo payload-gone; fi", TimeSpan.FromSeconds(60));
        Assert.That(r.StdoutText, Is.EqualTo("cli-gone\npayload-gone\n"), r.ToString());
    }

    [Test]
    public void AnUnknownFlagWithJsonEventsIsAnErrorEvent()
    {
        // What the MSBuild task reads: an error event with the CLI's code (SBX001), not bare stderr
        // that the task could only report as a protocol failure (SBX102).
        CliResult r = SandboxCli.Run("run", "--events", "json", "--bogus", "--", "true");
        Assert.That(r.ExitCode, Is.EqualTo(125), r.ToString());
        Assert.That(r.StdoutText, Does.StartWith("{\"event\":\"error\",\"code\":\"SBX001\",\"exitCode\":125,\"message\":\"unknown flag: --bogus"), r.ToString());
    }

    [Test]
    public void ARemovedWorkingDirectoryIsNamed()
    {
        using var dir = new TempDir();
        string gone = Path.Combine(dir.Path, "gone");
        CliResult r = SandboxCli.Shell($"mkdir '{gone}' && cd '{gone}' && rmdir '{gone}' && '{SandboxCli.Binary}' run -v .:/tmp/w -- true");
        Assert.That(r.ExitCode, Is.EqualTo(125), r.ToString());
        Assert.That(r.Stderr, Does.StartWith("sandbox: the working directory was removed (").And.Contain("): cd to a directory that exists"), r.ToString());
    }

    /// <summary>
    /// Signals ignored when the CLI starts stay ignored, not forwarded: `nohup sandbox run …` outlives
    /// a SIGHUP, and a background job of a script (SIGINT ignored) a SIGINT; a SIGTERM still ends it
    /// (143). Before, each was caught and forwarded, and the sandbox died (129, 130).
    /// </summary>
    [Test]
    public void SignalsIgnoredAtStartAreNotForwarded()
    {
        string sandbox = SandboxCli.Binary;
        CliResult r = SandboxCli.Shell(
            $"nohup '{sandbox}' run -- sleep 3 >/dev/null 2>&1 & p=$!; sleep 1.5; kill -HUP $p; wait $p; echo \"hup=$?\"; " +
            $"'{sandbox}' run -- sleep 3 & p=$!; sleep 1.5; kill -INT $p; wait $p; echo \"int=$?\"; " +
            $"'{sandbox}' run -- sleep 3 & p=$!; sleep 1.5; kill -TERM $p; wait $p; echo \"term=$?\"", TimeSpan.FromSeconds(60));
        Assert.That(r.StdoutText, Is.EqualTo("hup=0\nint=0\nterm=143\n"), r.ToString());
    }

    /// <summary>
    /// stdout and stderr to one file (`> log 2>&1`) keep the order the payload wrote them in (one pipe
    /// for both); to two files they stay apart.
    /// </summary>
    [Test]
    public void StdoutAndStderrToOneFileKeepTheirOrder()
    {
        using var dir = new TempDir();
        string log = Path.Combine(dir.Path, "log"), o = Path.Combine(dir.Path, "o"), e = Path.Combine(dir.Path, "e");
        string sandbox = SandboxCli.Binary;
        string script = "echo 1; echo 2 >&2; echo 3; echo 4 >&2; echo 5";
        CliResult r = SandboxCli.Shell($"'{sandbox}' run -- sh -c '{script}' > '{log}' 2>&1 && '{sandbox}' run -- sh -c '{script}' > '{o}' 2> '{e}'");
        Assert.That(r.ExitCode, Is.EqualTo(0), r.ToString());
        Assert.That(File.ReadAllText(log), Is.EqualTo("1\n2\n3\n4\n5\n"));
        Assert.That(File.ReadAllText(o), Is.EqualTo("1\n3\n5\n"));
        Assert.That(File.ReadAllText(e), Is.EqualTo("2\n4\n"));
    }

    [Test]
    public void JsonEventsWhoseReaderWentAwayEndTheRun()
    {
        CliResult r = SandboxCli.Shell($"( timeout 30 '{SandboxCli.Binary}' run --events json -- yes; echo \"rc=$?\" >&2 ) | head -n 1 > /dev/null", TimeSpan.FromSeconds(60));
        Assert.That(r.Stderr, Does.Contain("sandbox: SBX012 the reader of the output went away (EPIPE): the command was stopped").And.Contain("rc=125"), r.ToString());
    }

    [Test]
    public void OutputSentToTheNullDeviceIsNotRelayedAndLargeOutputToAnAppendedFileIsCopiedWhole()
    {
        // stdout to /dev/null (opened O_APPEND, as shells and CI harnesses do): the payload gets a
        // /dev/null of its own, no pipe of ours; stderr, a file, still gets everything.
        using var dir = new TempDir();
        string err = Path.Combine(dir.Path, "err"), big = Path.Combine(dir.Path, "big");
        string sandbox = SandboxCli.Binary;
        CliResult r = SandboxCli.Shell(
            $"'{sandbox}' run -- sh -c 'a=$(readlink /proc/$$/fd/1); b=$(readlink /proc/$$/fd/2); echo $a $b >&2; head -c 10000000 /dev/zero' >> /dev/null 2>> '{err}'; echo \"null=$?\"; " +
            // 40 MB through the copying path (O_APPEND refuses splice): every byte, in order.
            $"'{sandbox}' run -- sh -c 'seq 1 5000000' >> '{big}'; echo \"big=$?\"");
        Assert.That(r.StdoutText, Does.Contain("null=0").And.Contain("big=0"), r.ToString());
        string[] links = File.ReadAllText(err).Trim().Split(' ');
        Assert.That(links[0], Is.EqualTo("/dev/null"), "stdout: the payload's own /dev/null");
        Assert.That(links[1], Does.StartWith("pipe:"), "stderr to a file: still our pipe");
        var expected = new System.Text.StringBuilder();
        for (int i = 1; i <= 5000000; i++)
            expected.Append(i).Append('\n');
        Assert.That(new FileInfo(big).Length, Is.EqualTo(expected.Length));
        Assert.That(File.ReadAllText(big) == expected.ToString(), "the appended file holds seq's output exactly");
    }

    [Test]
    public void OutputToAPipeGoesStraightIntoItWithFlagsOfItsOwn()
    {
        // `sandbox run ... | reader`: the payload writes into the reader's pipe itself (no relay), through
        // an open file description of its own: O_NONBLOCK set inside does not reach the caller's.
        string sandbox = SandboxCli.Binary;
        const string SetNonBlocking = "import fcntl, os; fcntl.fcntl(1, fcntl.F_SETFL, fcntl.fcntl(1, fcntl.F_GETFL) | os.O_NONBLOCK)";
        const string ShowNonBlocking = "import fcntl, os; print('caller-nonblocking=%s' % bool(fcntl.fcntl(1, fcntl.F_GETFL) & os.O_NONBLOCK))";
        CliResult r = SandboxCli.Shell(
            $"'{sandbox}' run -- sh -c 'readlink /proc/$$/fd/1' | sh -c 'read line; echo \"payload=$line reader=$(readlink /proc/$$/fd/0)\"'; " +
            $"{{ '{sandbox}' run -- python3 -c \"{SetNonBlocking}\"; python3 -c \"{ShowNonBlocking}\"; }} | cat");
        string stdout = r.StdoutText, why = r.ToString();
        var pipes = System.Text.RegularExpressions.Regex.Match(stdout, @"payload=(pipe:\[\d+\]) reader=(pipe:\[\d+\])");
        Assert.That(pipes.Success, why);
        Assert.That(pipes.Groups[1].Value, Is.EqualTo(pipes.Groups[2].Value), "the payload's stdout is the reader's pipe");
        Assert.That(stdout, Does.Contain("caller-nonblocking=False"), why);
    }

    [Test]
    public void ANetworkNamespaceTheHostRefusesIsReportedWithTheSysctlAndTheWayAround()
    {
        // PID 1 creates the network namespace itself, before it is released. user.max_net_namespaces
        // counts per user namespace: 0 in an outer one refuses ours.
        string sandbox = SandboxCli.Binary;
        CliResult r = SandboxCli.Shell(
            $"unshare -Ur sh -c 'echo 0 > /proc/sys/user/max_net_namespaces || exit 99; " +
            $"\"{sandbox}\" run --userns single -- true; echo refused=$?; \"{sandbox}\" run --userns single --network host -- true; echo host=$?'");
        Assert.That(r.StdoutText, Does.Contain("refused=125").And.Contain("host=0"), r.ToString());
        Assert.That(r.Stderr, Does.Contain("could not create the sandbox's network namespace").And.Contain("ENOSPC")
            .And.Contain("user.max_net_namespaces").And.Contain("--network host"), r.ToString());
    }

    [Test]
    public void TheStartedEventComesBeforeAnyOutputEvenWhenThePayloadWritesAtOnce()
    {
        for (int i = 0; i < 20; i++)
        {
            CliResult r = SandboxCli.Run("run", "--events", "json", "--", "sh", "-c", "head -c 300000 /dev/zero | tr '\\0' q; echo");
            string[] events = r.StdoutText.Split('\n', StringSplitOptions.RemoveEmptyEntries);
            Assert.That(events[0], Does.Contain("\"event\":\"started\""), r.StdoutText[..Math.Min(300, r.StdoutText.Length)]);
            Assert.That(events[^1], Does.Contain("\"event\":\"exited\""));
            int text = events.Where(e => e.Contains("\"output\"")).Sum(e => e.Count(c => c == 'q'));
            Assert.That(text, Is.EqualTo(300000));
        }
    }

    [Test]
    public void StandardDescriptorsTheCallerClosedBecomeTheNullDeviceNotDescriptorsOfTheCli() =>
        CheckClosedStandardDescriptors(SandboxCli.Binary);

    /// <summary>
    /// A caller that closes stdin, stdout or stderr (`&lt;&amp;-`): the number is then the lowest free
    /// one, which the runtime's internal pipe (JIT) or Console's dup of another stream (NativeAOT)
    /// took. Before StandardDescriptors the payload got those: under the JIT a `cat` read the
    /// runtime's pipe forever; under NativeAOT stdin was the caller's stdout file, and a closed
    /// stdout or stderr crashed the CLI (exit 134). Shared with NativeAotCliTests.
    /// </summary>
    internal static void CheckClosedStandardDescriptors(string sandbox)
    {
        using var dir = new TempDir();
        string file = Path.Combine(dir.Path, "out");
        CliResult r = SandboxCli.Shell(
            $"S='{sandbox}'; " +
            "$S run -- sh -c 'cat; echo stdin-cat=$?' <&-; echo stdin-rc=$?; " +
            $"$S run -- readlink /proc/self/fd/0 <&- > '{file}'; echo file-rc=$?; " +
            "$S run -- sh -c 'head -c 300000 /dev/zero; echo after-stdout >&2' >&-; echo stdout-rc=$?; " +
            "$S run -- /no/such/command 2>&-; echo stderr-rc=$?; " +
            "$S run -- sh -c 'echo to-stderr >&2; echo to-stdout' 2>&-; echo stderr-only-rc=$?; " +
            "$S run -- sh -c 'echo x; exit 3' <&- >&- 2>&-; echo all-rc=$?",
            TimeSpan.FromSeconds(40));
        Assert.That(r.StdoutText, Does.Contain("stdin-cat=0\nstdin-rc=0\n"), r.ToString());
        Assert.That(File.ReadAllText(file), Is.EqualTo("/dev/null\n"), "the payload's stdin, with the caller's closed and its stdout a file");
        Assert.That(r.StdoutText, Does.Contain("file-rc=0\n").And.Contain("stdout-rc=0\n").And.Contain("stderr-rc=127\n")
            .And.Contain("to-stdout\nstderr-only-rc=0\n").And.Contain("all-rc=3\n"), r.ToString());
        Assert.That(r.StdoutText, Does.Not.Contain("to-stderr").And.Not.Contain("command not found"), "stderr's lines on stdout");
        Assert.That(r.Stderr, Does.Contain("after-stdout"), r.ToString());
    }
}
