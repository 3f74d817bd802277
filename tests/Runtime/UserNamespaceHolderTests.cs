using System.Diagnostics;
using NUnit.Framework;
using Sandbox.Linux;
using Sandbox.Runtime;

namespace Sandbox.Tests.Runtime;

/// <summary>
/// The held user namespace's pure parts (socket place and name, the nested map, the idle setting)
/// and the check that decides whether an offered namespace may be joined (sbx_userns_verify), on
/// real namespaces made with unshare(1).
/// </summary>
[System.Runtime.Versioning.SupportedOSPlatform("linux")]
public class UserNamespaceHolderTests
{
    private static readonly IdMapPlan Range = new(IdMapKind.SubordinateRange, 1000, 1000, new IdRange(100000, 65536), new IdRange(200000, 65536));

    [Test]
    public void TheNestedMapKeepsTheHoldersTwoExtents() =>
        // One extent of 0..65536 would span two of the holder's and be refused (map_id_range_down).
        Assert.That(UserNamespaceHolder.NestedMap(new IdRange(100000, 65536)), Is.EqualTo("0 0 1\n1 1 65536\n"));

    [TestCase(null, 300)]
    [TestCase("", 300)]
    [TestCase("5", 5)]
    [TestCase("0", 0)]
    public void IdleSecondsComeFromTheEnvironmentAndZeroTurnsHoldersOff(string? value, int expected) =>
        Assert.That(UserNamespaceHolder.IdleSeconds(name => name == UserNamespaceHolder.IdleVariable ? value : null), Is.EqualTo(expected));

    [TestCase("-1")]
    [TestCase("soon")]
    [TestCase("5s")]
    [TestCase("99999999")]
    public void AnIdleTimeThatIsNoNumberOfSecondsIsAnErrorThatSaysWhatToSet(string value)
    {
        var e = Assert.Throws<SandboxException>(() => UserNamespaceHolder.IdleSeconds(name => name == UserNamespaceHolder.IdleVariable ? value : null));
        Assert.That(e!.Code, Is.EqualTo(SandboxErrorCode.InvalidSpec));
        Assert.That(e.ExitCode, Is.EqualTo(125));
        Assert.That(e.Message, Does.StartWith($"SANDBOX_USERNS_IDLE={value} is not a number of seconds from 0 to 604800").And.Contain("0 to start no holder"));
    }

    [Test]
    public void TheSocketLivesInTheRuntimeDirOrTmp()
    {
        Assert.That(UserNamespaceHolder.SocketDirectoryPath(Env(("XDG_RUNTIME_DIR", "/run/user/1000"), ("TMPDIR", "/var/tmp")), 1000), Is.EqualTo("/run/user/1000/sandbox"));
        Assert.That(UserNamespaceHolder.SocketDirectoryPath(Env(("TMPDIR", "/var/tmp")), 1000), Is.EqualTo("/var/tmp/sandbox-1000"));
        Assert.That(UserNamespaceHolder.SocketDirectoryPath(Env(("XDG_RUNTIME_DIR", "relative"), ("TMPDIR", "also/relative")), 1000), Is.EqualTo("/tmp/sandbox-1000"),
            "relative values are ignored");
    }

    [Test]
    public void APrivateDirectoryIsMade0700AndAcceptedAgain()
    {
        string root = Directory.CreateTempSubdirectory("holder-").FullName;
        try
        {
            string dir = Path.Combine(root, "sandbox");
            Assert.That(UserNamespaceHolder.IsPrivateDirectory(dir, Syscalls.EffectiveUserId), Is.True);
            Assert.That(File.GetUnixFileMode(dir), Is.EqualTo(UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute));
            Assert.That(UserNamespaceHolder.IsPrivateDirectory(dir, Syscalls.EffectiveUserId), Is.True, "existing");
            Assert.That(UserNamespaceHolder.IsPrivateDirectory(dir, Syscalls.EffectiveUserId + 1), Is.False, "someone else's");
        }
        finally
        {
            Directory.Delete(root, recursive: true);
        }
    }

    [Test]
    public void ADirectoryOthersCanEnterOrASymlinkIsRefused()
    {
        string root = Directory.CreateTempSubdirectory("holder-").FullName;
        try
        {
            uint uid = Syscalls.EffectiveUserId;
            string open = Path.Combine(root, "open");
            Directory.CreateDirectory(open, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute | UnixFileMode.GroupRead | UnixFileMode.GroupExecute);
            Assert.That(UserNamespaceHolder.IsPrivateDirectory(open, uid), Is.False, "0750");

            string target = Path.Combine(root, "private");
            Directory.CreateDirectory(target, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
            File.CreateSymbolicLink(Path.Combine(root, "link"), target);
            Assert.That(UserNamespaceHolder.IsPrivateDirectory(Path.Combine(root, "link"), uid), Is.False, "a symlink, even to a private directory");
        }
        finally
        {
            Directory.Delete(root, recursive: true);
        }
    }

    [Test]
    public void TheHolderIsToldItsIdleTimeAndTheNestedMapsOfItsSpares()
    {
        var range = Range with { SubordinateGids = new IdRange(200000, 1000) };
        Assert.That(UserNamespaceHolder.HolderArguments(range, 300),
            Is.EqualTo(new[] { "sandbox-init", "--hold-userns", "300", "0 0 1\n1 1 65536\n", "0 0 1\n1 1 1000\n" }),
            "the spares' maps are the held namespace's ids one to one, as a sandbox's nested map (NestedMap)");
    }

    [Test]
    public void ASingleIdMapHasAHolderOfItsOwnWhoseSparesMapTheOneId()
    {
        var single = new IdMapPlan(IdMapKind.SingleId, 1000, 1000, null, null);
        Assert.That(UserNamespaceHolder.NestedMaps(single), Is.EqualTo(("0 0 1\n", "0 0 1\n")));
        Assert.That(UserNamespaceHolder.HolderArguments(single, 60), Is.EqualTo(new[] { "sandbox-init", "--hold-userns", "60", "0 0 1\n", "0 0 1\n" }));

        string? path = UserNamespaceHolder.SocketPath("/run/user/1000/sandbox", single);
        Assert.That(path, Does.Match(@"^/run/user/1000/sandbox/userns-[0-9a-f]{16}\.sock$"));
        Assert.That(path, Is.Not.EqualTo(UserNamespaceHolder.SocketPath("/run/user/1000/sandbox", Range)), "not the subordinate range's holder");
        Assert.That(path, Is.Not.EqualTo(UserNamespaceHolder.SocketPath("/run/user/1000/sandbox", single with { HostGid = 1001 })), "one per map");
    }

    [Test]
    public void TheSocketNameFollowsTheMapAndATooLongPathGivesNone()
    {
        string? one = UserNamespaceHolder.SocketPath("/run/user/1000/sandbox", Range);
        Assert.That(one, Does.Match(@"^/run/user/1000/sandbox/userns-[0-9a-f]{16}\.sock$"));
        Assert.That(UserNamespaceHolder.SocketPath("/run/user/1000/sandbox", Range), Is.EqualTo(one));
        Assert.That(UserNamespaceHolder.SocketPath("/run/user/1000/sandbox", Range with { SubordinateUids = new IdRange(300000, 65536) }), Is.Not.EqualTo(one),
            "a changed /etc/subuid gets another holder");
        Assert.That(UserNamespaceHolder.SocketPath("/" + new string('d', 80), Range), Is.Null, "sun_path holds 107 bytes");
    }

    [Test]
    public void OnlyADirectChildOfOurUserNamespaceOwnedByUsMayBeJoined()
    {
        using (SafeFileHandleScope net = new("/proc/self/ns/net"))
            Assert.That(NativeExecutor.UserNamespaceVerify(net.Fd), Is.EqualTo(-22), "not a user namespace: EINVAL");
        using (SafeFileHandleScope own = new("/proc/self/ns/user"))
            Assert.That(NativeExecutor.UserNamespaceVerify(own.Fd), Is.EqualTo(-1), "our own namespace is no child of itself: EPERM");

        using (var child = new Unshared("unshare", "--user", "sleep", "30"))
            Assert.That(NativeExecutor.UserNamespaceVerify(child.UserNamespace.Fd), Is.EqualTo(0), "a direct child we own");
        // What a sandbox could make inside itself and offer: one level deeper, still owned by us.
        using (var nested = new Unshared("unshare", "--user", "--map-root-user", "unshare", "--user", "sleep", "30"))
            Assert.That(NativeExecutor.UserNamespaceVerify(nested.UserNamespace.Fd), Is.EqualTo(-1), "nested deeper: EPERM");
    }

    [Test]
    public void NoHolderListeningGivesConnectionRefusedOrNoEntry()
    {
        string root = Directory.CreateTempSubdirectory("holder-").FullName;
        try
        {
            Assert.That(NativeExecutor.UserNamespaceFetch(Path.Combine(root, "none.sock"), out _, out _), Is.EqualTo(-2), "ENOENT");
            int listening = NativeExecutor.UserNamespaceListen(Path.Combine(root, "closed.sock"));
            Assert.That(listening, Is.GreaterThanOrEqualTo(0));
            Tmds.Linux.LibC.close(listening);
            Assert.That(NativeExecutor.UserNamespaceFetch(Path.Combine(root, "closed.sock"), out _, out _), Is.EqualTo(-111), "ECONNREFUSED");
        }
        finally
        {
            Directory.Delete(root, recursive: true);
        }
    }

    [Test]
    public void ARequestAheadIsNoneWhenHoldersAreOffAndUnconnectedWhenNoHolderListens()
    {
        string root = Directory.CreateTempSubdirectory("holder-").FullName;
        try
        {
            Assert.That(UserNamespaceHolder.Request(Range, Env(("XDG_RUNTIME_DIR", root), (UserNamespaceHolder.IdleVariable, "0"))), Is.Null);
            using HolderRequest? request = UserNamespaceHolder.Request(Range, Env(("XDG_RUNTIME_DIR", root)));
            Assert.That(request, Is.Not.Null);
            Assert.That(request!.Plan, Is.EqualTo(Range));
            Assert.That(request.Connection, Is.Null, "no socket there: no connection, and TryAcquire starts a holder");
        }
        finally
        {
            Directory.Delete(root, recursive: true);
        }
    }

    /// <summary>
    /// A request connects before the holder answers; a holder that never does (stopped, say) must not
    /// hang the run: the answer is awaited for a second (SO_RCVTIMEO), as a fetch's is.
    /// </summary>
    [Test]
    public void AnAnswerNoHolderSendsIsAwaitedForASecondOnly()
    {
        string root = Directory.CreateTempSubdirectory("holder-").FullName;
        int listening = -1;
        try
        {
            string dir = UserNamespaceHolder.SocketDirectoryPath(Env(("XDG_RUNTIME_DIR", root)), Syscalls.EffectiveUserId);
            Directory.CreateDirectory(dir);
            listening = NativeExecutor.UserNamespaceListen(UserNamespaceHolder.SocketPath(dir, Range)!);
            Assert.That(listening, Is.GreaterThanOrEqualTo(0));
            using HolderRequest? request = UserNamespaceHolder.Request(Range, Env(("XDG_RUNTIME_DIR", root)));
            Assert.That(request?.Connection, Is.Not.Null, "the listening socket takes the connection into its backlog");
            var clock = Stopwatch.StartNew();
            int rc = NativeExecutor.UserNamespaceReceive(request!.Connection!, out NativeSpareFds spare, out string? overlay);
            Assert.That(rc, Is.EqualTo(-11), "EAGAIN: the receive timed out");
            Assert.That((spare.User, spare.Network, spare.Ipc, spare.Uts, spare.Mount, overlay), Is.EqualTo((-1, -1, -1, -1, -1, (string?)null)));
            Assert.That(clock.Elapsed, Is.GreaterThan(TimeSpan.FromMilliseconds(900)).And.LessThan(TimeSpan.FromSeconds(10)));
        }
        finally
        {
            if (listening >= 0)
                Tmds.Linux.LibC.close(listening);
            Directory.Delete(root, recursive: true);
        }
    }

    private static Func<string, string?> Env(params (string Name, string Value)[] values) =>
        name => values.FirstOrDefault(v => v.Name == name).Value;

    private sealed class SafeFileHandleScope(string path) : IDisposable
    {
        private readonly Microsoft.Win32.SafeHandles.SafeFileHandle _handle = Syscalls.OpenReadOnly(path);

        public int Fd => (int)_handle.DangerousGetHandle();

        public void Dispose() => _handle.Dispose();
    }

    /// <summary>A process started in new user namespaces by unshare(1), and its innermost user namespace.</summary>
    private sealed class Unshared : IDisposable
    {
        private readonly Process _process;

        public Unshared(string file, params string[] args)
        {
            string ours = new FileInfo("/proc/self/ns/user").LinkTarget!;
            _process = Process.Start(new ProcessStartInfo(file, args) { UseShellExecute = false })!;
            // unshare(1) execs the next program once its namespace exists: wait for sleep(1) itself.
            var sw = Stopwatch.StartNew();
            int pid = _process.Id;
            while (sw.Elapsed < TimeSpan.FromSeconds(10))
            {
                if (File.Exists($"/proc/{pid}/comm") && File.ReadAllText($"/proc/{pid}/comm").Trim() == "sleep")
                    break;
                Thread.Sleep(10);
            }
            Assert.That(new FileInfo($"/proc/{pid}/ns/user").LinkTarget, Is.Not.EqualTo(ours), "unshare --user did not make a namespace");
            UserNamespace = new SafeFileHandleScope($"/proc/{pid}/ns/user");
        }

        public SafeFileHandleScope UserNamespace { get; }

        public void Dispose()
        {
            UserNamespace.Dispose();
            _process.Kill();
            _process.WaitForExit();
            _process.Dispose();
        }
    }
}
