using System.Diagnostics;
using System.Text.RegularExpressions;

namespace Sandbox.IntegrationTests;

/// <summary>
/// Resource limits in a plain login session, for real: the caller's cgroup (a logind session scope)
/// is not delegated, and the systemd user manager gives sandbox a delegated transient scope.
///
/// The cgroup2 guest (../shared/cgroup2-vm/run) is booted with systemd itself as PID 1 instead of its
/// own guest-init: CG2_KARGS passes a later init= (the kernel keeps the last one), a small wrapper
/// that does guest-init's mounts and then execs /lib/systemd/systemd. systemd-logind, the system and
/// user D-Bus (dbus, dbus-user-session) and user@UID.service then run from the host's own packages,
/// and the scenarios run in a real PAM login session (runuser -l, pam_systemd): the command starts
/// in /user.slice/user-UID.slice/session-N.scope, owned by root, exactly as after an ssh login.
/// Moving the supervisor from there into the user manager's tree needs the system manager's help
/// (AttachProcessesToUnit), which is what happens on a real host too.
/// </summary>
[TestFixture]
[Parallelizable(ParallelScope.None)]
public sealed class SystemdScopeTests
{
    private static Dictionary<string, Section>? s_sections;
    private static readonly object s_gate = new();

    private sealed record Section(int ExitCode, string Output);

    [OneTimeSetUp]
    public void Unprivileged() => Require.Unprivileged();

    // PID 1 of the guest: guest-init's mounts, a readable /etc/shadow stand-in, the test's units, then systemd.
    private const string InitScript = """
        #!/bin/sh
        # PID 1 of the guest until it execs systemd. The kernel passed CG2_RUN (the host's run dir).
        export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
        HERE=$(dirname "$0")
        mount -t proc proc /proc
        mount -t tmpfs -o mode=755,nosuid,nodev tmpfs /run
        mkdir -p /run/cg2 /run/systemd/system
        mount -t hostfs -o "$CG2_RUN" hostfs /run/cg2
        set -a; . /run/cg2/env; set +a
        # the host's / is read-only: state directories systemd's services write to
        mount -t tmpfs -o mode=755 tmpfs /var/lib/systemd
        mount -t tmpfs -o mode=1777 tmpfs /tmp
        mount -t tmpfs -o mode=1777 tmpfs /var/tmp
        for d in $CG2_RO; do mkdir -p "$d"; mount -t hostfs -o "ro,$d" hostfs "$d"; done
        busybox insmod /lib/modules/$(uname -r)/kernel/fs/overlayfs/overlay.ko 2>/dev/null ||
          busybox insmod /usr/lib/uml/modules/$(uname -r)/kernel/fs/overlayfs/overlay.ko 2>/dev/null
        # Root in the guest reads host files with the rights of the user UML runs as: /etc/shadow is
        # unreadable, and pam_unix's account check in user@.service's PAM stack (systemd-user) fails
        # with it. A readable stand-in: every account valid, no password.
        sed 's/^\([^:]*\):.*/\1:*:19000:0:99999:7:::/' /etc/passwd > /run/shadow
        chmod 640 /run/shadow
        mount --bind /run/shadow /etc/shadow
        cat > /run/systemd/system/cg2-login-test.target <<UNIT
        [Unit]
        Description=sandbox integration test
        Requires=cg2-login-test.service basic.target
        After=cg2-login-test.service
        UNIT
        cat > /run/systemd/system/cg2-login-test.service <<UNIT
        [Unit]
        Description=sandbox integration test: login sessions
        After=basic.target dbus.socket
        Wants=dbus.socket
        [Service]
        Type=oneshot
        ExecStart=/bin/sh $HERE/root.sh
        StandardOutput=tty
        StandardError=tty
        TTYPath=/dev/tty1
        UNIT
        exec /lib/systemd/systemd --unit=cg2-login-test.target
        """;

    // The test service (root): a login session with the user manager, then one without it.
    private const string RootScript = """
        set -a; . /run/cg2/env; set +a
        HERE=$(dirname "$0")
        runuser -l "$CG2_USER" -c "sh $HERE/scenarios.sh with-manager"
        rc=$?
        # A login session whose user manager does not run (masked, as if it had failed to start):
        # logind still creates the session, with no user bus and no private socket.
        systemctl mask --runtime --quiet "user@$CG2_UID.service" >/dev/null 2>&1
        systemctl daemon-reload
        systemctl stop "user@$CG2_UID.service"
        runuser -l "$CG2_USER" -c "sh $HERE/scenarios.sh without-manager" || rc=$?
        echo "$rc" > /run/cg2/rc
        sync
        busybox poweroff -f
        """;

    private static string Scenarios(string cli) => $$"""
        S='{{cli}}'
        section() { name=$1; shift; echo "=== $name"; "$@" 2>&1; echo "=== rc=$?"; }
        export HOME=/tmp/home-$(id -u); mkdir -p "$HOME"
        # No user-namespace holder: one started in the first login session would outlive it (by its
        # idle time), so logind would keep that user, its runtime dir and the manager's stale sockets
        # for the second session, which is to have none.
        export SANDBOX_USERNS_IDLE=0
        # until the payload has started (a file it makes) or the CLI ($2) has ended
        waitfor() { i=0; while [ ! -e "$1" ] && kill -0 "$2" 2>/dev/null && [ $i -lt 600 ]; do sleep 0.1; i=$((i+1)); done; }
        if [ "$1" = with-manager ]; then
          section session sh -c 'd=$(sed -n "s/^0:://p" /proc/self/cgroup); echo "cgroup $d"; [ -w "/sys/fs/cgroup$d/cgroup.procs" ] && echo procs-writable || echo procs-not-writable; echo "bus $DBUS_SESSION_BUS_ADDRESS"; echo "manager $(systemctl --user is-system-running)"'
          section check "$S" check
          section oom "$S" run --memory 100m -- sh -c 'head -c 500m /dev/zero | tail'
          section pids "$S" run --pids-limit 20 -- sh -c 'for i in $(seq 40); do sleep 3 & done; wait'
          mkdir -p /tmp/sync-placement
          "$S" run -v /tmp/sync-placement:/tmp/sync --memory 200m -- sh -c 'touch /tmp/sync/ready; sleep 5' > /tmp/placement.out 2>&1 & cli=$!
          waitfor /tmp/sync-placement/ready $cli
          section placement sh -c 'echo "cli $0"; for d in $(find /sys/fs/cgroup -name "sandbox*" -type d | sort); do echo "$d procs=[$(for p in $(cat $d/cgroup.procs); do printf "%s:%s " $p "$(cat /proc/$p/comm)"; done)] memory.max=$(cat $d/memory.max)"; done' "$cli"
          wait $cli; echo "placement run exited $?"; cat /tmp/placement.out
          # without $DBUS_SESSION_BUS_ADDRESS and without a user bus: the manager's private socket
          mkdir -p /tmp/rt && ln -s "$XDG_RUNTIME_DIR/systemd" /tmp/rt/systemd
          section private env -u DBUS_SESSION_BUS_ADDRESS XDG_RUNTIME_DIR=/tmp/rt "$S" run --memory 100m -- sh -c 'head -c 500m /dev/zero | tail'
          # systemd's sd-bus server once stalled a connection now and then (BeginWithAuthStream): again, a few times
          section private-again sh -c 'ok=0; for i in 1 2 3 4 5; do env -u DBUS_SESSION_BUS_ADDRESS XDG_RUNTIME_DIR=/tmp/rt "$0" run --pids-limit 5 -- true && ok=$((ok+1)); done; echo "ok $ok of 5"' "$S"
          # --stats alone needs a cgroup too (peak memory)
          section stats "$S" run --stats -- sh -c 'head -c 30m /dev/zero | tail >/dev/null'
          # no limits, no usage report: no cgroup, so no scope either
          mkdir -p /tmp/sync-nolimits
          "$S" run -v /tmp/sync-nolimits:/tmp/sync -- sh -c 'touch /tmp/sync/ready; sleep 3' & cli=$!
          waitfor /tmp/sync-nolimits/ready $cli
          section nolimits sh -c 'echo "payload started: $(ls /tmp/sync-nolimits)"; systemctl --user list-units --all --plain --no-legend --no-pager "sandbox-*" | cat; find /sys/fs/cgroup -name "sandbox*"; echo end'
          wait $cli
          sleep 1
          section leftovers sh -c 'systemctl --user list-units --all --plain --no-legend --no-pager "sandbox-*" | cat; find /sys/fs/cgroup -name "sandbox*"; echo end'
        else
          section nomanager-session sh -c 'echo "cgroup $(sed -n "s/^0:://p" /proc/self/cgroup)"; echo "runtime $XDG_RUNTIME_DIR: $(ls -A $XDG_RUNTIME_DIR | tr "\n" " ")"'
          section nomanager "$S" run --memory 100m -- true
          section besteffort "$S" run --memory 100m --limits best-effort -- sh -c 'echo ran'
        fi
        true
        """;

    private static Dictionary<string, Section> Run()
    {
        lock (s_gate)
        {
            if (s_sections is not null)
                return s_sections;
            string? vm = CgroupTests.FindVm();
            Require.That(vm is not null && File.Exists(vm), "the cgroup2 guest (../shared/cgroup2-vm/run) was not found; set SANDBOX_CGROUP2_VM");
            Require.That(File.Exists("/usr/bin/linux.uml"), "user-mode-linux is not installed (ci/setup-host installs it)");
            Require.That(File.Exists("/bin/busybox"), "busybox-static is not installed (ci/setup-host installs it)");
            Require.Command("/lib/systemd/systemd");
            Require.Command("/usr/bin/dbus-daemon");
            Require.That(File.Exists("/usr/lib/systemd/user/dbus.socket"), "dbus-user-session is not installed (ci/setup-host installs it)");
            Require.That(Directory.EnumerateFiles("/usr/lib", "pam_systemd.so", SearchOption.AllDirectories).Any() || File.Exists("/lib/x86_64-linux-gnu/security/pam_systemd.so"),
                "libpam-systemd is not installed (ci/setup-host installs it)");
            Require.Command("/usr/sbin/runuser");

            string dir = Directory.CreateTempSubdirectory("sandbox-sd-").FullName;
            try
            {
                // The kernel execs init.sh from the host's / (hostfs) before /tmp is covered: it must be executable.
                File.WriteAllText(Path.Combine(dir, "init.sh"), InitScript + "\n");
                if (OperatingSystem.IsLinux())
                {
                    File.SetUnixFileMode(Path.Combine(dir, "init.sh"), UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute |
                        UnixFileMode.GroupRead | UnixFileMode.GroupExecute | UnixFileMode.OtherRead | UnixFileMode.OtherExecute);
                }
                File.WriteAllText(Path.Combine(dir, "root.sh"), RootScript + "\n");
                File.WriteAllText(Path.Combine(dir, "scenarios.sh"), Scenarios(SandboxCli.Binary) + "\n");

                var psi = new ProcessStartInfo(vm!) { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
                psi.ArgumentList.Add("true"); // guest-init's command; systemd runs root.sh instead
                psi.Environment["CG2_USER"] = Environment.UserName;
                psi.Environment["CG2_TIMEOUT"] = "400";
                psi.Environment["CG2_KARGS"] = $"init={dir}/init.sh";
                // init.sh covers /tmp with a tmpfs, then mounts these back: our scripts, and the CLI when it lives under /tmp.
                psi.Environment["CG2_RO"] = AppContext.BaseDirectory.StartsWith("/tmp/", StringComparison.Ordinal) ? $"{dir} {AppContext.BaseDirectory.TrimEnd('/')}" : dir;
                var sw = Stopwatch.StartNew();
                using var p = Process.Start(psi)!;
                var stderr = p.StandardError.ReadToEndAsync();
                string output = p.StandardOutput.ReadToEnd().Replace("\r\n", "\n");
                p.WaitForExit();
                TestContext.Progress.WriteLine($"systemd guest ran in {sw.Elapsed.TotalSeconds:0.0} s");
                TestContext.Out.WriteLine(output);
                Assert.That(p.ExitCode, Is.EqualTo(0), $"the guest failed: {output}\n{stderr.Result}");

                var sections = new Dictionary<string, Section>();
                foreach (Match m in Regex.Matches(output, @"^=== (?<name>[\w-]+)\n(?<body>.*?)^=== rc=(?<rc>\d+)$", RegexOptions.Multiline | RegexOptions.Singleline))
                    sections[m.Groups["name"].Value] = new Section(int.Parse(m.Groups["rc"].Value), m.Groups["body"].Value);
                s_sections = sections;
                return sections;
            }
            finally
            {
                Directory.Delete(dir, recursive: true);
            }
        }
    }

    private static Section Get(string name)
    {
        var sections = Run();
        Assert.That(sections.ContainsKey(name), Is.True, $"no '{name}' section in the guest's output");
        return sections[name];
    }

    [Test]
    public void TheCommandStartsInANonDelegatedLoginSessionWithAUserManager()
    {
        // What the other tests rely on: without the user manager nothing could be enforced here.
        Section s = Get("session");
        Assert.That(s.Output, Does.Match(@"cgroup /user\.slice/user-\d+\.slice/session-[\w]+\.scope\n"));
        Assert.That(s.Output, Does.Contain("procs-not-writable"));
        Assert.That(s.Output, Does.Match(@"bus unix:path=/run/user/\d+/bus"));
        Assert.That(s.Output, Does.Match(@"manager (running|degraded)"));
    }

    [Test]
    public void CheckReportsLimitsEnforceableThroughTheUserManager()
    {
        Section s = Get("check");
        Assert.That(s.Output, Does.Match(
            @"\[ ok \] cgroups: v2, not delegated here, but the systemd user manager \(via .*/run/user/\d+/bus\) delegated a transient scope: delegated cgroup /sys/fs/cgroup/user\.slice/user-\d+\.slice/user@\d+\.service/app\.slice/sandbox-\d+-[0-9a-f]{8}\.scope \(controllers: [^)]*memory[^)]*\): memory, pids and cpu limits can be enforced"),
            s.Output);
    }

    [Test]
    public void MemoryLimitKillsAndReportsOutOfMemory()
    {
        Section s = Get("oom");
        Assert.That(s.ExitCode, Is.EqualTo(137), s.Output);
        Assert.That(s.Output, Does.Match(@"sandbox: killed: out of memory, limit 100 MiB, peak (9\d|10\d) MiB"));
    }

    [Test]
    public void PidsLimitStopsAForkLoopAndIsReported()
    {
        Section s = Get("pids");
        Assert.That(s.Output, Does.Match(@"sandbox: \d+ fork\(s\) refused: the pids limit \(20\) was reached"), s.Output);
        Assert.That(s.ExitCode, Is.Not.EqualTo(0));
    }

    [Test]
    public void TheSandboxCgroupIsInsideATransientScopeOfTheUserManager()
    {
        Section s = Get("placement");
        string cli = Regex.Match(s.Output, @"^cli (\d+)$", RegexOptions.Multiline).Groups[1].Value;
        Assert.That(cli, Is.Not.Empty, s.Output);
        const string Scope = @"/sys/fs/cgroup/user\.slice/user-\d+\.slice/user@\d+\.service/app\.slice/(?<scope>sandbox-(?<pid>\d+)-[0-9a-f]{8}\.scope)";
        // The supervisor (the CLI) left the scope's root for a leaf (no internal processes), and the
        // sandbox's own cgroup beside it carries the limit.
        // Beside the CLI: its teardown child (ProcessTeardown), made in its cgroup once the sandbox runs.
        Match supervisor = Regex.Match(s.Output, $@"^{Scope}/sandbox\.supervisor procs=\[{cli}:\S+ (\d+:sandbox-exit )?\]", RegexOptions.Multiline);
        Assert.That(supervisor.Success, Is.True, s.Output);
        Assert.That(supervisor.Groups["pid"].Value, Is.EqualTo(cli), "the scope is named after the CLI's pid");
        string scope = Regex.Escape(supervisor.Groups["scope"].Value);
        Assert.That(s.Output, Does.Match($@"(?m)^/sys/fs/cgroup/\S+/{scope}/sandbox-{cli}-\d+ procs=\[\d+:\S+ [^\]]*\] memory\.max=209715200$"));
        Assert.That(s.Output, Does.Match($@"(?m)^/sys/fs/cgroup/\S+/{scope} procs=\[\] "), "the scope's root holds no process");
    }

    [Test]
    public void ThePrivateSocketServesWhenThereIsNoUserBus()
    {
        Section s = Get("private");
        Assert.That(s.ExitCode, Is.EqualTo(137), s.Output);
        Assert.That(s.Output, Does.Match(@"sandbox: killed: out of memory, limit 100 MiB"));
    }

    [Test]
    public void ThePrivateSocketAnswersEveryTime()
    {
        Section s = Get("private-again");
        Assert.That(s.Output, Does.Contain("ok 5 of 5"), s.Output);
    }

    [Test]
    public void StatsAloneGetAScopeForPeakMemory()
    {
        Section s = Get("stats");
        Assert.That(s.ExitCode, Is.EqualTo(0), s.Output);
        Match m = Regex.Match(s.Output, @"sandbox: stats: wall [\d.]+m?s, cpu [\d.]+m?s, peak memory (?<peak>\d+) MiB, exit code 0");
        Assert.That(m.Success, Is.True, "peak memory comes from the cgroup: " + s.Output);
        Assert.That(int.Parse(m.Groups["peak"].Value), Is.InRange(25, 80), "tail held the 30 MB stream in memory");
    }

    [Test]
    public void ARunWithoutLimitsStartsNoScope()
    {
        Section s = Get("nolimits");
        Assert.That(s.Output, Does.Contain("payload started: ready"), "the listing must be taken while the sandbox runs");
        Assert.That(s.Output, Does.Contain("end"));
        Assert.That(s.Output.Split('\n').Where(l => l.Contains("sandbox-") || l.Contains("sandbox.supervisor")), Is.Empty,
            "a run that neither limits nor measures asked systemd for a scope");
    }

    [Test]
    public void ScopesGoAwayWithTheirProcesses()
    {
        Section s = Get("leftovers");
        Assert.That(s.Output, Does.Contain("end"));
        Assert.That(s.Output.Split('\n').Where(l => l.Contains("sandbox-") || l.Contains("sandbox.supervisor")), Is.Empty,
            "sandbox scopes or cgroups were left behind");
    }

    [Test]
    public void WithoutAUserManagerLimitsRequiredExit125AndSayWhatWasTried()
    {
        Section session = Get("nomanager-session");
        Assert.That(session.Output, Does.Match(@"cgroup /user\.slice/user-\d+\.slice/session-\w+\.scope\n"));
        Section s = Get("nomanager");
        Assert.That(s.ExitCode, Is.EqualTo(125), s.Output);
        Assert.That(s.Output, Does.Match(
            @"resource limits cannot be enforced here: /sys/fs/cgroup/user\.slice/user-\d+\.slice/session-\w+\.scope is not delegated to this user .*, and no systemd user manager gave a delegated scope \(the user bus /run/user/\d+/bus: no such socket; the manager's private socket /run/user/\d+/systemd/private: no such socket\)\. Fix: "));
        Assert.That(s.Output, Does.Contain("loginctl enable-linger").And.Contain("systemd-run --user --scope -p Delegate=yes").And.Contain("--limits=best-effort"));

        Section bestEffort = Get("besteffort");
        Assert.That(bestEffort.ExitCode, Is.EqualTo(0), bestEffort.Output);
        Assert.That(bestEffort.Output, Does.Contain("running WITHOUT limits").And.Contain("ran"));
    }
}
