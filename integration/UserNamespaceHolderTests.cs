using System.Globalization;
using System.Net.Sockets;
using System.Runtime.InteropServices;
using Sandbox.Runtime;

namespace Sandbox.IntegrationTests;

/// <summary>
/// The default id mode's held user namespace (Runtime/UserNamespaceHolder.cs): one holder per map,
/// reused by every sandbox, each of which nests a user namespace of its own in it.
/// Every test gets its own socket directory ($TMPDIR/sandbox-UID in a temp dir) and stops the
/// holders it started.
/// </summary>
[System.Runtime.Versioning.SupportedOSPlatform("linux")]
[TestFixture]
[Parallelizable(ParallelScope.None)]
public sealed class UserNamespaceHolderTests
{
    private const string PrintIds = "readlink /proc/self/ns/user; cat /proc/self/uid_map; sleep 0.5";
    private IdMapPlan _range = null!;

    [OneTimeSetUp]
    public void RequireRange()
    {
        Require.Unprivileged();
        _range = Require.SubordinateRange();
    }

    [Test]
    public void SandboxesNestUserNamespacesOfTheirOwnInOneHeldNamespace()
    {
        using var tmp = new HolderDir();
        using var volume = new TempDir();
        // Two at once: one starts the holder, the other waits for it (the lock) and joins it.
        Task<CliResult> first = Task.Run(() => Run(tmp, PrintIds));
        Task<CliResult> second = Task.Run(() => Run(tmp, PrintIds));
        CliResult a = first.Result, b = second.Result;
        Assert.That(a.ExitCode, Is.EqualTo(0), a.ToString());
        Assert.That(b.ExitCode, Is.EqualTo(0), b.ToString());

        // Nested: the map is the holder's ids one to one, in its two extents.
        string nested = $"0 0 1\n1 1 {_range.SubordinateUids!.Count}\n";
        Assert.That(MapOf(a), Is.EqualTo(nested));
        Assert.That(MapOf(b), Is.EqualTo(nested));
        Assert.That(UserNamespaceOf(a), Is.Not.EqualTo(UserNamespaceOf(b)), "each sandbox has a user namespace of its own");

        int holder = SingleHolder(tmp);
        Assert.That(File.ReadAllText($"/proc/{holder}/comm").Trim(), Is.EqualTo("sandbox-userns"));
        string held = new FileInfo($"/proc/{holder}/ns/user").LinkTarget!;
        Assert.That(held, Is.Not.EqualTo(UserNamespaceOf(a)).And.Not.EqualTo(UserNamespaceOf(b)));
        // It holds nothing of its caller's: no pipe of ours (we read our stdout to EOF above). Once
        // it has made its spare, that is, as it uses a pipe of its own meanwhile.
        WaitForSpare(holder);
        var fds = FileDescriptorsOf(holder);
        Assert.That(fds, Has.None.Contains("pipe:"), string.Join(", ", fds));

        // Through both levels, ids land where newuidmap would have put them.
        CliResult c = Run(tmp, "touch /tmp/w/f && chown 1000:1001 /tmp/w/f", options: ["-v", $"{volume.Path}:/tmp/w"]);
        Assert.That(c.ExitCode, Is.EqualTo(0), c.ToString());
        var (uid, gid) = Owner(Path.Combine(volume.Path, "f"));
        Assert.That(uid, Is.EqualTo(_range.SubordinateUids.Start + 999));
        Assert.That(gid, Is.EqualTo(_range.SubordinateGids!.Start + 1000));
        Assert.That(SingleHolder(tmp), Is.EqualTo(holder), "the third run reused the holder");
    }

    [Test]
    public void TheNextSandboxGetsTheUserAndNetworkNamespacesTheHolderMadeAheadOfTime()
    {
        Require.Command("/bin/busybox");
        using var tmp = new HolderDir();
        Assert.That(Run(tmp, "true").ExitCode, Is.EqualTo(0));
        int holder = SingleHolder(tmp);
        Spare spare = WaitForSpare(holder);

        // NET_ADMIN: root in the sandbox must own its network namespace, as without a spare. It stays
        // a while, so that its namespaces' inodes cannot be reused by the holder's next spare.
        const string Script = "readlink /proc/self/ns/user /proc/self/ns/net /proc/self/ns/ipc /proc/self/ns/uts /proc/self/ns/mnt; cat /proc/self/uid_map; " +
                              "/bin/busybox hostname; /bin/busybox ip link set lo mtu 1280 && /bin/busybox ip link show lo && sleep 2";
        Task<CliResult> running = Task.Run(() => Run(tmp, Script, options: ["--cap-add", "NET_ADMIN", "--hostname", "spare-test"]));

        // A spare goes to one sandbox only: the holder makes the next one, and the next run gets that.
        Spare next = WaitForSpare(holder, other: spare.User);
        Assert.That(next.Network, Is.Not.EqualTo(spare.Network));
        CliResult second = running.Result;
        Assert.That(second.ExitCode, Is.EqualTo(0), second.ToString());
        string[] lines = second.StdoutText.Split('\n');
        Assert.That(lines[0], Is.EqualTo(spare.User), "the sandbox's user namespace is the spare's");
        Assert.That(lines[1], Is.EqualTo(spare.Network), "the sandbox's network namespace is the spare's");
        Assert.That(lines[2], Is.EqualTo(spare.Ipc), "the sandbox's IPC namespace is the spare's");
        Assert.That(lines[3], Is.EqualTo(spare.Uts), "the sandbox's UTS namespace is the spare's");
        Assert.That(lines[4], Is.EqualTo(spare.Mount), "the sandbox's mount namespace is the spare's prepared one");
        Assert.That(lines[2], Is.Not.EqualTo(new FileInfo("/proc/self/ns/ipc").LinkTarget), "not the host's IPC namespace");
        Assert.That(lines[3], Is.Not.EqualTo(new FileInfo("/proc/self/ns/uts").LinkTarget), "not the host's UTS namespace");
        Assert.That(Columns(lines[5]), Is.EqualTo("0 0 1"), "nested in the held namespace");
        Assert.That(lines, Does.Contain("spare-test"), "the hostname is set in the spare's UTS namespace");
        Assert.That(second.StdoutText, Does.Contain("lo: <LOOPBACK,UP,LOWER_UP> mtu 1280"), "loopback up, and ours to change");

        CliResult third = Run(tmp, "readlink /proc/self/ns/user /proc/self/ns/net /proc/self/ns/ipc /proc/self/ns/uts /proc/self/ns/mnt");
        Assert.That(third.ExitCode, Is.EqualTo(0), third.ToString());
        Assert.That(third.StdoutText, Is.EqualTo($"{next.User}\n{next.Network}\n{next.Ipc}\n{next.Uts}\n{next.Mount}\n"));
        Assert.That(SingleHolder(tmp), Is.EqualTo(holder));
    }

    [Test]
    public void TheDevOfAPreparedMountNamespaceIsTheOneASandboxBuildsItself()
    {
        // The spare's maker builds /dev on its scratch root with the code the executor runs for the
        // plan's BuildDevStep (sandbox_kernel.h, sbx_build_dev), and the sandbox binds it: the same
        // entries, modes, owners, devices and mounts, and it works. Compared with a run without a
        // holder, whose executor builds it (its mount namespace may have the first one's inode number
        // again: nsfs reuses them).
        using var tmp = new HolderDir();
        Assert.That(Run(tmp, "true").ExitCode, Is.EqualTo(0));
        Spare spare = WaitForSpare(SingleHolder(tmp));
        const string Script = "readlink /proc/self/ns/mnt; cd /dev && stat -c '%n %A %u %g %t:%T %N' * pts/* shm; " +
                              "grep ' /dev' /proc/self/mountinfo | cut -d' ' -f4-; echo written > /dev/shm/f && cat /dev/shm/f; head -c 2 /dev/zero | od -An -tx1; " +
                              "echo gone > /dev/null && echo nothing-left";

        CliResult prepared = Run(tmp, Script);
        CliResult built = Run(tmp, Script, idle: "0");
        Assert.That(prepared.ExitCode, Is.EqualTo(0), prepared.ToString());
        Assert.That(built.ExitCode, Is.EqualTo(0), built.ToString());
        string[] fromSpare = prepared.StdoutText.Split('\n'), ownBuild = built.StdoutText.Split('\n');
        Assert.That(fromSpare[0], Is.EqualTo(spare.Mount), "the sandbox joined the spare's prepared mount namespace");
        Assert.That(fromSpare.Skip(1), Is.EqualTo(ownBuild.Skip(1)), prepared.StdoutText + "\n---\n" + built.StdoutText);
        Assert.That(fromSpare, Has.Some.Matches<string>(l => l.StartsWith("null crw-rw-rw-", StringComparison.Ordinal)));
        Assert.That(fromSpare, Has.Some.Matches<string>(l => l.StartsWith("ptmx l", StringComparison.Ordinal) && l.Contains("'pts/ptmx'")));
        Assert.That(fromSpare, Has.Some.Matches<string>(l => l.StartsWith("shm drwxrwxrwt", StringComparison.Ordinal)));
        Assert.That(fromSpare, Has.Some.Matches<string>(l => l.StartsWith("/ /dev/pts rw,nosuid,noexec", StringComparison.Ordinal) && l.Contains(" - devpts devpts rw,mode=620,ptmxmode=666")));
        Assert.That(fromSpare.Count(l => l.Contains(" /dev/", StringComparison.Ordinal) && l.Contains(" - devtmpfs ", StringComparison.Ordinal)), Is.EqualTo(6), "the six devices bound from the host");
        Assert.That(prepared.StdoutText, Does.EndWith("written\n 00 00\nnothing-left\n"));
    }

    [Test]
    public void TheNextSpareComesWithTheOverlayOfTheRunThatTookTheLastOne()
    {
        // The holder reads the taker's overlay hint before it starts the next spare's maker
        // (sandbox_init.c, take_hint): run B after a run of A gets a spare with A's overlay, which
        // it cannot use, and the run of B after it must get B's. Under strace (mount calls only),
        // that last run's PID 1 must mount no overlay of its own. The holder is started (and its
        // maps written by newuidmap) before strace, which would keep newuidmap from being setuid.
        Require.Command("/usr/bin/strace");
        string image = TestImages.Path("image-oci.tar");
        using var tmp = new HolderDir();
        using var storeA = new TempDir();
        using var storeB = new TempDir();
        const string Probe = "cat /added.txt";
        foreach (string store in new[] { storeA.Path, storeB.Path })
        {
            CliResult r = Run(tmp, Probe, options: ["--root", store, image]);
            Assert.That(r.ExitCode, Is.EqualTo(0), r.ToString());
            Assert.That(r.StdoutText, Is.EqualTo("added in layer 3\n"), r.ToString());
        }
        // The import's helper may have started a holder for its own map too: ours is the one with
        // the subordinate range's nested map on its command line.
        string nested = $"1 1 {_range.SubordinateUids!.Count}";
        int holder = Holders(tmp).Single(pid => File.ReadAllText($"/proc/{pid}/cmdline").Replace('\0', ' ').Contains(nested, StringComparison.Ordinal));
        WaitForSpare(holder);

        string trace = Path.Combine(tmp.Path, "mounts.trace");
        CliResult traced = SandboxCli.Shell(
            $"TMPDIR='{tmp.Path}' XDG_RUNTIME_DIR= strace -f -e trace=mount -o '{trace}' '{SandboxCli.Binary}' run --userns subuid --root '{storeB.Path}' '{image}' -- /bin/sh -c '{Probe}'");
        Assert.That(traced.ExitCode, Is.EqualTo(0), traced.ToString());
        Assert.That(traced.StdoutText, Is.EqualTo("added in layer 3\n"), traced.ToString());
        string mounts = File.ReadAllText(trace);
        Assert.That(mounts, Does.Contain("mount(\"/dev\""), "the sandbox joined the spare's prepared mount namespace (its /dev bound in)");
        Assert.That(mounts, Does.Not.Contain("mount(\"overlay\""), "the spare came with B's overlay mounted: " + mounts);
        Assert.That(Holders(tmp), Does.Contain(holder));
    }

    [Test]
    public void AnImageRemovedAndImportedAgainIsNotRunOnTheSparesStaleOverlay()
    {
        // The spare comes with the last run's overlay mounted. `image rm`, `image prune` and a new
        // import put the same layers at the same paths, with the same mount data: the spare's
        // overlay still has the removed directories as its lower layers, an empty root.
        string image = TestImages.Path("image-oci.tar");
        using var tmp = new HolderDir();
        using var store = new TempDir();
        var env = new Dictionary<string, string> { ["TMPDIR"] = tmp.Path, ["XDG_RUNTIME_DIR"] = "" };
        CliResult Cli(params string[] args) => SandboxCli.Run(args, env: env);
        Assert.That(Cli("image", "import", "--root", store.Path, image, "--name", "again:1").ExitCode, Is.EqualTo(0));
        CliResult first = Run(tmp, "cat /added.txt", options: ["--root", store.Path, "again:1"]);
        Assert.That(first.StdoutText, Is.EqualTo("added in layer 3\n"), first.ToString());
        string nested = $"1 1 {_range.SubordinateUids!.Count}";
        int holder = Holders(tmp).Single(pid => File.ReadAllText($"/proc/{pid}/cmdline").Replace('\0', ' ').Contains(nested, StringComparison.Ordinal));
        WaitForSpare(holder);

        Assert.That(Cli("image", "rm", "--root", store.Path, "again:1").ExitCode, Is.EqualTo(0));
        CliResult prune = Cli("image", "prune", "--root", store.Path);
        Assert.That(prune.StdoutText, Does.Contain("Deleted 3 layer(s)"), prune.ToString());
        Assert.That(Cli("image", "import", "--root", store.Path, image, "--name", "again:1").ExitCode, Is.EqualTo(0));
        CliResult after = Run(tmp, "cat /added.txt", options: ["--root", store.Path, "again:1"]);
        Assert.That(after.ExitCode, Is.EqualTo(0), after.ToString());
        Assert.That(after.StdoutText, Is.EqualTo("added in layer 3\n"), after.ToString());
    }

    [Test]
    public void APreparedMountNamespaceIsDroppedWhenTheHoldersMountsChange()
    {
        // The spare's mount namespace is a copy of the holder's mounts, made ahead of time: after a
        // mount, a sandbox must see it (here through -v), not the copy. As root of a user and mount
        // namespace of our own (unshare -Urm), where this test may mount, with the holder started in
        // it; the script waits until that holder's spare has its prepared mount namespace (two mount
        // namespaces among its fds: its own and the spare's) before it mounts.
        Require.Command("/usr/bin/unshare");
        using var tmp = new HolderDir();
        string mountPoint = Path.Combine(tmp.Path, "mp");
        Directory.CreateDirectory(mountPoint);
        string cli = SandboxCli.Binary;
        string script = $$"""
            export TMPDIR='{{tmp.Path}}' XDG_RUNTIME_DIR=
            '{{cli}}' run --userns single -- true || exit 11
            ours=$(readlink /proc/self/ns/mnt)
            for i in $(seq 100); do
              for p in $(pgrep -x sandbox-userns); do
                [ "$(readlink /proc/$p/ns/mnt)" = "$ours" ] && [ "$(ls -l /proc/$p/fd | grep -c 'mnt:')" = 2 ] && ready=1
              done
              [ -n "$ready" ] && break
              sleep 0.1
            done
            [ -n "$ready" ] || exit 12
            mount -t tmpfs none '{{mountPoint}}' && echo mounted-after > '{{mountPoint}}/f' || exit 13
            '{{cli}}' run --userns single -v '{{mountPoint}}:/tmp/x' -- cat /tmp/x/f
            """;
        CliResult r = SandboxCli.Shell($"unshare --user --map-root-user --mount /bin/sh -c '{script.Replace("'", "'\\''")}'");
        Assert.That(r.ExitCode, Is.EqualTo(0), r.ToString());
        Assert.That(r.StdoutText, Is.EqualTo("mounted-after\n"), "the sandbox saw the mount made after its spare was prepared");
    }

    [Test]
    public void AnIdleHolderExitsWhileTheHostsMountsKeepChanging()
    {
        // Idle means no sandbox start for SANDBOX_USERNS_IDLE seconds. The holder also wakes at each
        // change of the mount table (to drop its prepared spare): those wake-ups must not restart the
        // idle time, or on a host where mounts change all the time (containers, CI jobs) it never ends.
        // As in the test above, in a user and mount namespace of our own where this test may mount.
        Require.Command("/usr/bin/unshare");
        using var tmp = new HolderDir();
        string mountPoint = Path.Combine(tmp.Path, "churn");
        Directory.CreateDirectory(mountPoint);
        string cli = SandboxCli.Binary;
        string script = $$"""
            export TMPDIR='{{tmp.Path}}' XDG_RUNTIME_DIR= {{UserNamespaceHolder.IdleVariable}}=2
            '{{cli}}' run --userns single -- true || exit 11
            ours=$(readlink /proc/self/ns/mnt)
            holders() { for p in $(pgrep -x sandbox-userns); do [ "$(readlink /proc/$p/ns/mnt)" = "$ours" ] && echo $p; done; }
            [ -n "$(holders)" ] || exit 12
            i=0
            while [ $i -lt 25 ]; do
              mount -t tmpfs none '{{mountPoint}}' && umount '{{mountPoint}}' || exit 13
              sleep 0.2; i=$((i + 1))
            done
            echo "left: $(holders | wc -l)"
            """;
        CliResult r = SandboxCli.Shell($"unshare --user --map-root-user --mount /bin/sh -c '{script.Replace("'", "'\\''")}'", TimeSpan.FromSeconds(60));
        Assert.That(r.ExitCode, Is.EqualTo(0), r.ToString());
        Assert.That(r.StdoutText, Does.Contain("left: 0"), "the holder outlived its 2 s idle time while mounts changed every 0.2 s: " + r);
    }

    [Test]
    public void ASpareThatIsNotNestedInTheHeldNamespaceIsNotJoined()
    {
        using var tmp = new HolderDir();
        var (holder, socket) = StartedHolder(tmp);
        // The held namespace stays ours to offer (this fd keeps it) after its holder is gone.
        using var held = File.OpenHandle($"/proc/{holder}/ns/user");
        Kill(holder);

        // A user namespace of ours with a network namespace, but a direct child of ours rather than
        // of the held one, and without a map: joining it would run the sandbox as nobody.
        using var unshare = System.Diagnostics.Process.Start("unshare", ["--user", "--net", "--ipc", "--uts", "sleep", "60"])!;
        try
        {
            string ours = new FileInfo("/proc/self/ns/user").LinkTarget!;
            Assert.That(HostProcesses.WaitUntil(() => new FileInfo($"/proc/{unshare.Id}/ns/user").LinkTarget != ours, TimeSpan.FromSeconds(5)), Is.True);
            using var bogusUser = File.OpenHandle($"/proc/{unshare.Id}/ns/user");
            using var bogusNetwork = File.OpenHandle($"/proc/{unshare.Id}/ns/net");
            using var bogusIpc = File.OpenHandle($"/proc/{unshare.Id}/ns/ipc");
            using var bogusUts = File.OpenHandle($"/proc/{unshare.Id}/ns/uts");
            var (impostor, serving) = Impostor(socket, connection => FileDescriptorPassing.Send((int)connection.Handle, 'p',
                (int)held.DangerousGetHandle(), (int)bogusUser.DangerousGetHandle(), (int)bogusNetwork.DangerousGetHandle(),
                (int)bogusIpc.DangerousGetHandle(), (int)bogusUts.DangerousGetHandle()));
            using Socket listening = impostor;

            CliResult r = Run(tmp, "readlink /proc/self/ns/net; " + PrintIds + "; readlink /proc/self/ns/ipc");
            Assert.That(serving.Wait(TimeSpan.FromSeconds(5)), Is.True, "the run took what was offered");
            Assert.That(r.ExitCode, Is.EqualTo(0), r.ToString());
            string[] lines = r.StdoutText.Split('\n');
            Assert.That(lines[0], Is.Not.EqualTo(new FileInfo($"/proc/{unshare.Id}/ns/net").LinkTarget), "not the offered network namespace");
            Assert.That(lines[1], Is.Not.EqualTo(new FileInfo($"/proc/{unshare.Id}/ns/user").LinkTarget), "not the offered user namespace");
            Assert.That(Columns(lines[2]), Is.EqualTo("0 0 1"), "nested in the held namespace, as without a spare");
            Assert.That(lines[^2], Does.StartWith("ipc:").And.Not.EqualTo(new FileInfo($"/proc/{unshare.Id}/ns/ipc").LinkTarget), "not the offered IPC namespace");
        }
        finally
        {
            unshare.Kill();
            unshare.WaitForExit();
        }
    }

    [Test]
    public void ALongLivedCallerIsNotLeftWithTheHolderAsItsChild()
    {
        // In-process, as an MSBuild node runs sandboxes: the holder must not be our child, or its
        // idle exit would leave a zombie here for as long as we live.
        using var tmp = new HolderDir();
        string? tmpdir = Environment.GetEnvironmentVariable("TMPDIR"), runtime = Environment.GetEnvironmentVariable("XDG_RUNTIME_DIR");
        Environment.SetEnvironmentVariable("TMPDIR", tmp.Path);
        Environment.SetEnvironmentVariable("XDG_RUNTIME_DIR", null);
        try
        {
            var spec = new SandboxSpec(["/bin/true"]) { UserNamespace = UserNamespaceMode.Subuid };
            using (SandboxExecution execution = SandboxRunner.Start(spec))
            {
                ExitedEvent exited = execution.ReadEvents().OfType<ExitedEvent>().Single();
                Assert.That(exited.Result.ExitCode, Is.EqualTo(0));
            }
            int holder = SingleHolder(tmp);
            string stat = File.ReadAllText($"/proc/{holder}/stat");
            int parent = int.Parse(stat[(stat.LastIndexOf(')') + 2)..].Split(' ')[1], CultureInfo.InvariantCulture);
            Assert.That(parent, Is.Not.EqualTo(Environment.ProcessId), "the holder was adopted, not left to us");
        }
        finally
        {
            Environment.SetEnvironmentVariable("TMPDIR", tmpdir);
            Environment.SetEnvironmentVariable("XDG_RUNTIME_DIR", runtime);
        }
    }

    [Test]
    public void AnIdleHolderExitsAndTheNextRunStartsAnother()
    {
        using var tmp = new HolderDir();
        CliResult r = Run(tmp, "true", idle: "1");
        Assert.That(r.ExitCode, Is.EqualTo(0), r.ToString());
        int holder = SingleHolder(tmp);
        Assert.That(HostProcesses.WaitUntil(() => !IsRunning(holder), TimeSpan.FromSeconds(10)), Is.True, "the holder should exit after 1 s idle");

        AssertNested(Run(tmp, PrintIds, idle: "1"));
        Assert.That(SingleHolder(tmp), Is.Not.EqualTo(holder));
    }

    [Test]
    public void WithHoldersOffNewuidmapWritesTheMap()
    {
        using var tmp = new HolderDir();
        AssertMappedByNewuidmap(Run(tmp, PrintIds, idle: "0"));
        Assert.That(Directory.Exists(SocketDirectory(tmp)), Is.False);
    }

    [Test]
    public void AStaleSocketAndAListenerThatSendsNothingAreReplaced()
    {
        using var tmp = new HolderDir();
        var (holder, socket) = StartedHolder(tmp);

        // Killed: its socket file stays behind and refuses connections.
        Kill(holder);
        AssertNested(Run(tmp, PrintIds));
        int second = SingleHolder(tmp);

        // Something else listening there, which hands over nothing: it is not trusted, and replaced.
        Kill(second);
        var (impostor, accepting) = Impostor(socket, _ => { });
        using Socket listening = impostor;
        AssertNested(Run(tmp, PrintIds));
        Assert.That(accepting.Wait(TimeSpan.FromSeconds(5)), Is.True, "the run should have asked the impostor first");
        Assert.That(SingleHolder(tmp), Is.Not.EqualTo(second));
    }

    [Test]
    public void ANamespaceThatCannotHoldASandboxIsJoinedInVainAndNewuidmapWritesTheMap()
    {
        using var tmp = new HolderDir();
        var (holder, socket) = StartedHolder(tmp);
        Kill(holder);

        // A user namespace of ours with no map at all: it passes the check (a direct child of
        // ours, owned by us), but no user namespace can be made in it (the creator's ids are not
        // mapped there), so the run must fall back to newuidmap.
        using var unshare = System.Diagnostics.Process.Start("unshare", ["--user", "sleep", "60"])!;
        try
        {
            string ours = new FileInfo("/proc/self/ns/user").LinkTarget!;
            Assert.That(HostProcesses.WaitUntil(() => new FileInfo($"/proc/{unshare.Id}/ns/user").LinkTarget != ours, TimeSpan.FromSeconds(5)), Is.True);
            using var unmapped = File.OpenHandle($"/proc/{unshare.Id}/ns/user");
            var (impostor, serving) = Impostor(socket, connection => FileDescriptorPassing.Send((int)connection.Handle, (int)unmapped.DangerousGetHandle()));
            using Socket listening = impostor;

            CliResult r = Run(tmp, PrintIds);
            Assert.That(serving.Wait(TimeSpan.FromSeconds(5)), Is.True, "the run took the offered namespace");
            AssertMappedByNewuidmap(r);
        }
        finally
        {
            unshare.Kill();
            unshare.WaitForExit();
        }
    }

    [Test]
    public void AStarterThatHoldsTheLockAndStopsMakesTheRunDoWithoutAHolder()
    {
        using var tmp = new HolderDir();
        Directory.CreateDirectory(SocketDirectory(tmp), UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
        // As if a CLI had taken the starter's lock and been stopped (SIGSTOP) before it let go.
        using (Storage.FileLock.Acquire(Path.Combine(SocketDirectory(tmp), "userns.lock"), exclusive: true))
        {
            AssertMappedByNewuidmap(Run(tmp, PrintIds));
            Assert.That(Holders(tmp), Is.Empty);
        }
    }

    [Test]
    public void AMalformedIdleTimeIsRefusedWithExit125AndSaysWhatToSet()
    {
        using var tmp = new HolderDir();
        CliResult r = Run(tmp, "echo ran", idle: "5m");
        Assert.That(r.ExitCode, Is.EqualTo(125), r.ToString());
        Assert.That(r.StdoutText, Does.Not.Contain("ran"));
        Assert.That(r.Stderr, Does.Contain("SANDBOX_USERNS_IDLE=5m is not a number of seconds from 0 to 604800").And.Contain("or unset it"));
    }

    [Test]
    public void ADirectoryOthersCanEnterIsNotUsed()
    {
        using var tmp = new HolderDir();
        string dir = SocketDirectory(tmp);
        Directory.CreateDirectory(dir, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute | UnixFileMode.OtherRead | UnixFileMode.OtherExecute);
        AssertMappedByNewuidmap(Run(tmp, PrintIds));
        Assert.That(Directory.GetFileSystemEntries(dir), Is.Empty);
    }

    private static CliResult Run(HolderDir tmp, string script, string? idle = null, string[]? options = null)
    {
        var env = new Dictionary<string, string> { ["TMPDIR"] = tmp.Path, ["XDG_RUNTIME_DIR"] = "" };
        if (idle is not null)
            env[UserNamespaceHolder.IdleVariable] = idle;
        return SandboxCli.Run(["run", "--userns", "subuid", .. options ?? [], "--", "/bin/sh", "-c", script], env: env);
    }

    /// <summary>Something else than a holder listening at the holder's socket path; it serves the first connection with <paramref name="serve"/>.</summary>
    private static (Socket Listener, Task Served) Impostor(string path, Action<Socket> serve)
    {
        File.Delete(path);
        var listener = new Socket(AddressFamily.Unix, SocketType.Seqpacket, ProtocolType.Unspecified);
        listener.Bind(new UnixDomainSocketEndPoint(path));
        listener.Listen(8);
        return (listener, Task.Run(() =>
        {
            using Socket connection = listener.Accept();
            serve(connection);
        }));
    }

    /// <summary>
    /// The holder's spare once it has one (its user and network namespaces besides the held one), as
    /// /proc shows them; one whose user namespace is not <paramref name="other"/>, when given.
    /// </summary>
    private static Spare WaitForSpare(int holder, string? other = null)
    {
        // The holder keeps its own user and mount namespaces open; the spare's are the others.
        string held = new FileInfo($"/proc/{holder}/ns/user").LinkTarget!, ownMounts = new FileInfo($"/proc/{holder}/ns/mnt").LinkTarget!;
        List<string?> fds = [];
        bool made = HostProcesses.WaitUntil(() =>
        {
            fds = FileDescriptorsOf(holder);
            return fds.Count(f => f!.StartsWith("user:", StringComparison.Ordinal) && f != held && f != other) == 1 &&
                   fds.Count(f => f!.StartsWith("net:", StringComparison.Ordinal)) == 1 && fds.Count(f => f!.StartsWith("ipc:", StringComparison.Ordinal)) == 1 &&
                   fds.Count(f => f!.StartsWith("uts:", StringComparison.Ordinal)) == 1 &&
                   fds.Count(f => f!.StartsWith("mnt:", StringComparison.Ordinal) && f != ownMounts) == 1 && !fds.Any(f => f!.StartsWith("pipe:", StringComparison.Ordinal));
        }, TimeSpan.FromSeconds(10));
        Assert.That(made, Is.True, "the holder should make a spare while idle: " + string.Join(", ", fds));
        string Single(string type) => fds.Single(f => f!.StartsWith(type + ":", StringComparison.Ordinal) && f != held && f != ownMounts)!;
        return new Spare(Single("user"), Single("net"), Single("ipc"), Single("uts"), Single("mnt"));
    }

    private sealed record Spare(string User, string Network, string Ipc, string Uts, string Mount);

    private static List<string?> FileDescriptorsOf(int pid) =>
        Directory.GetFiles($"/proc/{pid}/fd").Select(f => new FileInfo(f).LinkTarget).Where(t => t is not null).ToList();

    private static void Kill(int holder)
    {
        HostProcesses.Signal(holder, "KILL");
        Assert.That(HostProcesses.WaitUntil(() => !IsRunning(holder), TimeSpan.FromSeconds(5)), Is.True, $"holder {holder} was not killed");
    }

    // Exit 0, in a user namespace nested in the holder's: its map is the holder's ids.
    private static void AssertNested(CliResult r)
    {
        Assert.That(r.ExitCode, Is.EqualTo(0), r.ToString());
        Assert.That(MapOf(r), Does.StartWith("0 0 1\n"), "nested in the holder's namespace");
    }

    // Exit 0, in a user namespace whose map newuidmap wrote: host ids, no holder.
    private void AssertMappedByNewuidmap(CliResult r)
    {
        Assert.That(r.ExitCode, Is.EqualTo(0), r.ToString());
        Assert.That(MapOf(r), Does.StartWith($"0 {Linux.Syscalls.RealUserId} 1\n1 {_range.SubordinateUids!.Start} "), "newuidmap wrote the map");
    }

    private static string SocketDirectory(HolderDir tmp) => Path.Combine(tmp.Path, $"sandbox-{Linux.Syscalls.EffectiveUserId}");

    private static string UserNamespaceOf(CliResult r) => r.StdoutText.Split('\n')[0];

    // /proc/self/uid_map, its columns joined by single spaces.
    private static string MapOf(CliResult r) =>
        string.Concat(r.StdoutText.Split('\n').Skip(1).Where(l => l.Trim().Length > 0).Select(l => Columns(l) + "\n"));

    // A line of /proc/PID/uid_map (columns padded with spaces) as "inside outside count".
    private static string Columns(string line) => string.Join(' ', line.Split(' ', StringSplitOptions.RemoveEmptyEntries));

    // After a first run: its holder, the only one listening in tmp, and that holder's socket.
    private static (int Holder, string Socket) StartedHolder(HolderDir tmp)
    {
        Assert.That(Run(tmp, "true").ExitCode, Is.EqualTo(0));
        return (SingleHolder(tmp), Directory.GetFiles(SocketDirectory(tmp), "userns-*.sock").Single());
    }

    /// <summary>The pids of the processes listening on a socket in this test's socket directory.</summary>
    private static List<int> Holders(HolderDir tmp)
    {
        // /proc/net/unix: Num RefCount Protocol Flags Type St Inode Path; flag 00010000 is a listener.
        string prefix = SocketDirectory(tmp) + "/";
        var inodes = File.ReadLines("/proc/net/unix").Skip(1)
            .Select(l => l.Split(' ', StringSplitOptions.RemoveEmptyEntries))
            .Where(f => f.Length >= 8 && f[3] == "00010000" && f[7].StartsWith(prefix, StringComparison.Ordinal))
            .Select(f => $"socket:[{f[6]}]")
            .ToHashSet();
        var pids = new List<int>();
        foreach (int pid in HostProcesses.WithMarker("--hold-userns", "sandbox-init"))
        {
            try
            {
                if (inodes.Contains(new FileInfo($"/proc/{pid}/fd/3").LinkTarget ?? "") && IsRunning(pid))
                    pids.Add(pid);
            }
            catch (IOException)
            {
            }
        }
        // A holder making its next spare has a child, its maker (sandbox_init.c, start_spare: a fork,
        // so with the listening socket at fd 3 until it closes it): it is not a second holder.
        var listening = pids.ToHashSet();
        pids.RemoveAll(pid => ParentOf(pid) is int parent && listening.Contains(parent));
        return pids;
    }

    private static int? ParentOf(int pid)
    {
        try
        {
            foreach (string line in File.ReadLines($"/proc/{pid}/status"))
            {
                if (line.StartsWith("PPid:", StringComparison.Ordinal))
                    return int.Parse(line.AsSpan(5).Trim(), System.Globalization.CultureInfo.InvariantCulture);
            }
        }
        catch (IOException)
        {
        }
        return null;
    }

    private static int SingleHolder(HolderDir tmp)
    {
        List<int> holders = Holders(tmp);
        Assert.That(holders, Has.Count.EqualTo(1), "one holder listens in the test's socket directory");
        return holders[0];
    }

    /// <summary>A temp dir for $TMPDIR of the runs (the holder's socket goes in it); disposing it stops the holders listening there.</summary>
    private sealed class HolderDir : IDisposable
    {
        private readonly TempDir _dir = new();

        public string Path => _dir.Path;

        public void Dispose()
        {
            foreach (int pid in Holders(this))
                HostProcesses.Signal(pid, "TERM");
            _dir.Dispose();
        }
    }

    // Gone, or a zombie nobody reaped yet (its parent, our CLI, has exited).
    private static bool IsRunning(int pid)
    {
        try
        {
            string stat = File.ReadAllText($"/proc/{pid}/stat");
            return stat[(stat.LastIndexOf(')') + 2)..][0] != 'Z';
        }
        catch (IOException)
        {
            return false;
        }
    }

    private static (long Uid, long Gid) Owner(string path)
    {
        using var stat = System.Diagnostics.Process.Start(new System.Diagnostics.ProcessStartInfo("stat", ["-c", "%u %g", path]) { RedirectStandardOutput = true })!;
        string[] ids = stat.StandardOutput.ReadToEnd().Trim().Split(' ');
        stat.WaitForExit();
        return (long.Parse(ids[0], CultureInfo.InvariantCulture), long.Parse(ids[1], CultureInfo.InvariantCulture));
    }
}

/// <summary>sendmsg(2) with SCM_RIGHTS fds, which .NET's Socket cannot send.</summary>
internal static class FileDescriptorPassing
{
    [StructLayout(LayoutKind.Sequential)]
    private struct IoVector
    {
        public IntPtr Base;
        public nuint Length;
    }

    [StructLayout(LayoutKind.Sequential)]
    private struct MessageHeader
    {
        public IntPtr Name;
        public int NameLength;
        public IntPtr Iov;
        public nuint IovLength;
        public IntPtr Control;
        public nuint ControlLength;
        public int Flags;
    }

    [DllImport("libc", SetLastError = true)]
    private static extern nint sendmsg(int socket, ref MessageHeader message, int flags);

    public static void Send(int socket, int fd) => Send(socket, 'n', fd);

    /// <summary>One byte, <paramref name="tag"/>, with <paramref name="fds"/>: as a holder hands over ('n': its namespace; 'p': with a spare).</summary>
    public static void Send(int socket, char tag, params int[] fds)
    {
        // struct cmsghdr { size_t len = CMSG_LEN(4n) = 16 + 4n; int level = SOL_SOCKET; int type = SCM_RIGHTS; } + the fds, padded to 8.
        int length = 16 + 4 * fds.Length, space = (length + 7) & ~7;
        IntPtr control = Marshal.AllocHGlobal(space);
        IntPtr data = Marshal.AllocHGlobal(8);
        IntPtr iov = Marshal.AllocHGlobal(Marshal.SizeOf<IoVector>());
        try
        {
            for (int i = 0; i < space; i++)
                Marshal.WriteByte(control, i, 0);
            Marshal.WriteInt64(control, 0, length);
            Marshal.WriteInt32(control, 8, 1);
            Marshal.WriteInt32(control, 12, 1);
            for (int i = 0; i < fds.Length; i++)
                Marshal.WriteInt32(control, 16 + 4 * i, fds[i]);
            Marshal.WriteByte(data, (byte)tag);
            Marshal.StructureToPtr(new IoVector { Base = data, Length = 1 }, iov, false);
            var message = new MessageHeader { Iov = iov, IovLength = 1, Control = control, ControlLength = (nuint)space };
            Assert.That(sendmsg(socket, ref message, 0), Is.EqualTo((nint)1), $"sendmsg: errno {Marshal.GetLastPInvokeError()}");
        }
        finally
        {
            Marshal.FreeHGlobal(control);
            Marshal.FreeHGlobal(data);
            Marshal.FreeHGlobal(iov);
        }
    }
}
