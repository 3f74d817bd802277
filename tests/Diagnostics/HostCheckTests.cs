using System.Runtime.Versioning;
using Sandbox.Diagnostics;

namespace Sandbox.Tests.Diagnostics;

/// <summary>
/// HostCheck against a fake host in a temporary directory: fake /proc/sys files, subuid files, a PATH
/// with fake newuidmap/newgidmap, and a cgroup tree whose writability is decided by a set of paths.
/// Each test starts from a healthy cgroup v2 host and breaks one thing.
/// </summary>
[SupportedOSPlatform("linux")]
public sealed class HostCheckTests
{
    private const string User = "alice";
    private const uint Uid = 1000;

    private string _root = null!;
    private HashSet<string> _writable = null!;
    private string? _executorError;

    [SetUp]
    public void SetUp()
    {
        _environment.Clear();
        _root = Directory.CreateTempSubdirectory("hostcheck-").FullName;
        _writable = ["cgroup/user.slice/app.scope", "cgroup/user.slice/app.scope/cgroup.procs", "cgroup/user.slice/app.scope/cgroup.subtree_control"];
        _executorError = null;

        Write("proc/sys/kernel/osrelease", "6.8.0-45-generic\n");
        Write("proc/sys/user/max_user_namespaces", "63704\n");
        Write("proc/filesystems", "nodev\tsysfs\nnodev\tproc\n\text4\nnodev\toverlay\n");
        Write("etc/subuid", $"{User}:100000:65536\n");
        Write("etc/subgid", $"{User}:100000:65536\n");
        WriteHelper("newuidmap", setuid: true);
        WriteHelper("newgidmap", setuid: true);
        Write("proc/self/cgroup", "0::/user.slice/app.scope\n");
        Write("proc/self/mountinfo", "30 23 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate\n");
        Write("cgroup/cgroup.controllers", "cpuset cpu io memory pids\n");
        Write("cgroup/user.slice/app.scope/cgroup.controllers", "cpu memory pids\n");
        Write("cgroup/user.slice/app.scope/cgroup.procs", "");
        Write("cgroup/user.slice/app.scope/cgroup.subtree_control", "");
    }

    [TearDown]
    public void TearDown() => Directory.Delete(_root, recursive: true);

    private HostFacts Facts => new(
        Path.Combine(_root, "proc/sys"),
        Path.Combine(_root, "proc/filesystems"),
        Path.Combine(_root, "etc/subuid"),
        Path.Combine(_root, "etc/subgid"),
        Path.Combine(_root, "proc/self/cgroup"),
        Path.Combine(_root, "proc/self/mountinfo"),
        Path.Combine(_root, "cgroup"),
        Path.Combine(_root, "nothing-here") + ":" + Path.Combine(_root, "bin"),
        Uid,
        Uid,
        User)
    {
        IsWritable = path => _writable.Contains(Path.GetRelativePath(_root, path)),
        NativeExecutorLoadError = () => _executorError,
        GetEnvironmentVariable = name => _environment.GetValueOrDefault(name),
    };

    private readonly Dictionary<string, string> _environment = new();

    private void Write(string relative, string text)
    {
        string path = Path.Combine(_root, relative);
        Directory.CreateDirectory(Path.GetDirectoryName(path)!);
        File.WriteAllText(path, text);
    }

    private void WriteHelper(string name, bool setuid)
    {
        Write("bin/" + name, "#!/bin/sh\n");
        UnixFileMode mode = UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute | UnixFileMode.OtherExecute;
        File.SetUnixFileMode(Path.Combine(_root, "bin", name), setuid ? mode | UnixFileMode.SetUser : mode);
    }

    private CheckItem Item(string name, Func<string?>? probeUserNamespace = null, Func<string?>? probeOverlay = null) =>
        HostCheck.Run(Facts, probeUserNamespace, probeOverlay).Single(i => i.Name == name);

    [Test]
    public void HealthyHostIsAllOkInTheDocumentedOrder()
    {
        IReadOnlyList<CheckItem> items = HostCheck.Run(Facts);

        Assert.That(items.Select(i => i.Name), Is.EqualTo(new[]
        {
            HostCheck.UserNamespaces, HostCheck.IdMapping, HostCheck.Overlay, HostCheck.Cgroups, HostCheck.Executor,
        }));
        Assert.That(items.Select(i => i.Status), Is.All.EqualTo(CheckStatus.Ok));
        Assert.That(items.Select(i => i.Fix), Is.All.Null);
        Assert.That(HostCheck.CanRunSandboxes(items), Is.True);
    }

    // ---- user namespaces ----

    [TestCase("kernel/unprivileged_userns_clone", "0", CheckStatus.Missing, "sudo sysctl -w kernel.unprivileged_userns_clone=1")]
    [TestCase("kernel/unprivileged_userns_clone", "1", CheckStatus.Ok, null)]
    [TestCase("kernel/apparmor_restrict_unprivileged_userns", "1", CheckStatus.Missing, "sudo sysctl -w kernel.apparmor_restrict_unprivileged_userns=0")]
    [TestCase("kernel/apparmor_restrict_unprivileged_userns", "0", CheckStatus.Ok, null)]
    [TestCase("user/max_user_namespaces", "0", CheckStatus.Missing, "sudo sysctl -w user.max_user_namespaces=15000")]
    [TestCase("user/max_user_namespaces", "15000", CheckStatus.Ok, null)]
    public void UserNamespaceSysctl(string file, string value, CheckStatus expected, string? fix)
    {
        Write("proc/sys/" + file, value + "\n");

        CheckItem item = Item(HostCheck.UserNamespaces);

        Assert.That(item.Status, Is.EqualTo(expected));
        Assert.That(item.Fix, Is.EqualTo(fix));
        Assert.That(item.Detail, Does.Contain("not probed"));
    }

    [Test]
    public void AbsentSysctlsAreNotApplicable()
    {
        File.Delete(Path.Combine(_root, "proc/sys/user/max_user_namespaces"));

        CheckItem item = Item(HostCheck.UserNamespaces);

        Assert.That(item.Status, Is.EqualTo(CheckStatus.Ok));
        Assert.That(item.Detail, Does.Not.Contain("max_user_namespaces"));
    }

    [Test]
    public void SeveralBlockingSysctlsAreFixedByOneCommand()
    {
        Write("proc/sys/kernel/unprivileged_userns_clone", "0");
        Write("proc/sys/user/max_user_namespaces", "0");

        CheckItem item = Item(HostCheck.UserNamespaces);

        Assert.That(item.Fix, Is.EqualTo("sudo sysctl -w kernel.unprivileged_userns_clone=1 user.max_user_namespaces=15000"));
        Assert.That(item.Detail, Does.Contain("kernel.unprivileged_userns_clone = 0").And.Contain("user.max_user_namespaces = 0"));
    }

    [Test]
    public void UserNamespaceProbeDecides()
    {
        Write("proc/sys/kernel/apparmor_restrict_unprivileged_userns", "1");

        CheckItem succeeded = Item(HostCheck.UserNamespaces, probeUserNamespace: () => null);
        CheckItem failed = Item(HostCheck.UserNamespaces, probeUserNamespace: () => "clone: Operation not permitted\n(EPERM)");

        Assert.That(succeeded.Status, Is.EqualTo(CheckStatus.Ok));
        Assert.That(succeeded.Fix, Is.Null);
        Assert.That(failed.Status, Is.EqualTo(CheckStatus.Missing));
        Assert.That(failed.Detail, Is.EqualTo("creating one failed: clone: Operation not permitted (EPERM) (kernel.apparmor_restrict_unprivileged_userns = 1)"));
        Assert.That(failed.Fix, Is.EqualTo("sudo sysctl -w kernel.apparmor_restrict_unprivileged_userns=0"));
    }

    [Test]
    public void FailedProbeWithoutSysctlFindingPointsAtSeccomp()
    {
        CheckItem item = Item(HostCheck.UserNamespaces, probeUserNamespace: () => throw new InvalidOperationException("EPERM"));

        Assert.That(item.Status, Is.EqualTo(CheckStatus.Missing));
        Assert.That(item.Detail, Does.Contain("EPERM"));
        Assert.That(item.Fix, Does.Contain("--security-opt seccomp=unconfined"));
    }

    // ---- id mapping ----

    [Test]
    public void SubordinateRangesFound()
    {
        CheckItem item = Item(HostCheck.IdMapping);

        Assert.That(item.Status, Is.EqualTo(CheckStatus.Ok));
        Assert.That(item.Detail, Does.Contain("uids 100000-165535").And.Contain(Path.Combine(_root, "bin", "newuidmap")));
        Assert.That(item.Detail, Does.EndWith("--userns=auto picks subuid (image file owners kept)"));
    }

    [Test]
    public void TheRangeIsMappedOnceForAHolderUnlessHoldersAreOff()
    {
        Assert.That(Item(HostCheck.IdMapping).Detail,
            Does.Contain("newuidmap, run once for a user-namespace holder that sandboxes nest theirs in (it exits after 300 s idle)"));
        _environment["SANDBOX_USERNS_IDLE"] = "0";
        Assert.That(Item(HostCheck.IdMapping).Detail, Does.Contain("newuidmap, run for every sandbox (SANDBOX_USERNS_IDLE=0: no holder)"));
    }

    [Test]
    public void AMalformedHolderIdleTimeIsAWarningWithItsFix()
    {
        _environment["SANDBOX_USERNS_IDLE"] = "soon";
        CheckItem item = Item(HostCheck.IdMapping);
        Assert.That(item.Status, Is.EqualTo(CheckStatus.Warning));
        Assert.That(item.Detail, Does.Contain("newuidmap, but no sandbox with the range starts (SANDBOX_USERNS_IDLE=soon is not a number of seconds"));
        Assert.That(item.Fix, Is.EqualTo("unset SANDBOX_USERNS_IDLE or give it a number of seconds"));
    }

    [Test]
    public void SubuidMatchesByUidSkipsCommentsAndTakesTheFirstMatchingLine()
    {
        Write("etc/subuid", $"# {User}:1:1\nbob:100000:65536\n{Uid}:200000:65536\n{User}:300000:65536\n");
        Write("etc/subgid", $"\n{User}:400000:1000\n");

        CheckItem item = Item(HostCheck.IdMapping);

        Assert.That(item.Status, Is.EqualTo(CheckStatus.Ok));
        Assert.That(item.Detail, Does.Contain("uids 200000-265535 and gids 400000-400999"));
    }

    [Test]
    public void NoSubuidEntry()
    {
        Write("etc/subuid", "bob:100000:65536\n# alice:1:1\n");

        CheckItem item = Item(HostCheck.IdMapping);

        Assert.That(item.Status, Is.EqualTo(CheckStatus.Warning));
        Assert.That(item.Detail, Does.Contain($"no range for {User} in {Path.Combine(_root, "etc/subuid")}"));
        Assert.That(item.Detail, Does.EndWith("--userns=auto picks single (image file owners flattened to you)"));
        Assert.That(item.Fix, Is.EqualTo($"sudo usermod --add-subuids 100000-165535 {User}"));
    }

    [Test]
    public void NoSubuidOrSubgidFile()
    {
        File.Delete(Path.Combine(_root, "etc/subuid"));
        File.Delete(Path.Combine(_root, "etc/subgid"));

        CheckItem item = Item(HostCheck.IdMapping);

        Assert.That(item.Status, Is.EqualTo(CheckStatus.Warning));
        Assert.That(item.Fix, Is.EqualTo($"sudo usermod --add-subuids 100000-165535 --add-subgids 100000-165535 {User}"));
    }

    [Test]
    public void NewuidmapMissing()
    {
        File.Delete(Path.Combine(_root, "bin/newuidmap"));

        CheckItem item = Item(HostCheck.IdMapping);

        Assert.That(item.Status, Is.EqualTo(CheckStatus.Warning));
        Assert.That(item.Detail, Does.Contain("newuidmap not found on PATH").And.Not.Contain("newgidmap not found"));
        Assert.That(item.Detail, Does.EndWith("--userns=auto picks single (image file owners flattened to you)"));
        Assert.That(item.Fix, Is.EqualTo("sudo apt-get install uidmap"));
    }

    [Test]
    public void NewuidmapNotSetuidMayLackPrivileges()
    {
        WriteHelper("newgidmap", setuid: false);

        CheckItem item = Item(HostCheck.IdMapping);

        string newgidmap = Path.Combine(_root, "bin", "newgidmap");
        Assert.That(item.Status, Is.EqualTo(CheckStatus.Warning));
        Assert.That(item.Detail, Does.Contain($"{newgidmap} not setuid: may lack privileges"));
        Assert.That(item.Detail, Does.EndWith("--userns=auto picks subuid (image file owners kept)"));
        Assert.That(item.Fix, Is.EqualTo($"sudo chmod u+s {newgidmap}"));
    }

    [Test]
    public void HelpersAndRangesBothMissingGiveBothFixes()
    {
        File.Delete(Path.Combine(_root, "bin/newuidmap"));
        File.Delete(Path.Combine(_root, "bin/newgidmap"));
        Write("etc/subgid", "");

        CheckItem item = Item(HostCheck.IdMapping);

        Assert.That(item.Fix, Is.EqualTo($"sudo apt-get install uidmap; sudo usermod --add-subgids 100000-165535 {User}"));
    }

    // ---- overlayfs ----

    [TestCase("5.10.0-28-amd64", 5, 10, 0)]
    [TestCase("5.11", 5, 11, 0)]
    [TestCase("6.18.44-fc-v595", 6, 18, 44)]
    [TestCase(" 6.1.0+\n", 6, 1, 0)]
    [TestCase("6.1rc1", 6, 1, 0)]
    [TestCase("6.1.", 6, 1, 0)]
    [TestCase("6.1.2.3", 6, 1, 2)]
    [TestCase("6.1234567", 6, 123456, 0)]
    public void KernelVersionIsParsedLeniently(string release, int major, int minor, int patch) =>
        Assert.That(HostCheck.ParseKernelVersion(release), Is.EqualTo(new Version(major, minor, patch)));

    [TestCase("")]
    [TestCase("linux")]
    [TestCase("v6.1")]
    [TestCase("6")]
    [TestCase("6.")]
    [TestCase(".1")]
    [TestCase("1234567.1")]
    [TestCase("６.1")]
    public void UnparsableKernelVersion(string release) =>
        Assert.That(HostCheck.ParseKernelVersion(release), Is.Null);

    [TestCase("5.10.209", CheckStatus.Missing)]
    [TestCase("5.11.0", CheckStatus.Ok)]
    [TestCase("6.18.44-fc-v595", CheckStatus.Ok)]
    [TestCase("weird", CheckStatus.Warning)]
    public void OverlayNeedsKernel511(string release, CheckStatus expected)
    {
        Write("proc/sys/kernel/osrelease", release + "\n");

        CheckItem item = Item(HostCheck.Overlay);

        Assert.That(item.Status, Is.EqualTo(expected));
        Assert.That(item.Detail, Does.Contain(release));
        if (expected == CheckStatus.Ok)
            Assert.That(item.Fix, Is.Null);
        else
            Assert.That(item.Fix, Does.Contain("upgrade the kernel to 5.11 or later; fuse-overlayfs is the fallback (sudo apt-get install fuse-overlayfs)"));
    }

    [Test]
    public void OverlayNotInProcFilesystemsMayBeAModule()
    {
        Write("proc/filesystems", "nodev\tsysfs\n\text4\nnodev\toverlayfs-not-really\n");

        CheckItem item = Item(HostCheck.Overlay);

        Assert.That(item.Status, Is.EqualTo(CheckStatus.Warning));
        Assert.That(item.Detail, Does.Contain("overlay not in /proc/filesystems"));
        Assert.That(item.Fix, Is.EqualTo("sudo modprobe overlay"));
    }

    [Test]
    public void OverlayProbeDecides()
    {
        Write("proc/sys/kernel/osrelease", "5.4.0-ubuntu");

        CheckItem succeeded = Item(HostCheck.Overlay, probeOverlay: () => null);
        Write("proc/sys/kernel/osrelease", "6.8.0");
        CheckItem failed = Item(HostCheck.Overlay, probeOverlay: () => "mount overlay: EPERM");

        Assert.That(succeeded.Status, Is.EqualTo(CheckStatus.Ok));
        Assert.That(failed.Status, Is.EqualTo(CheckStatus.Missing));
        Assert.That(failed.Detail, Does.StartWith("mounting one failed: mount overlay: EPERM"));
        Assert.That(failed.Fix, Is.EqualTo("fuse-overlayfs is the fallback (sudo apt-get install fuse-overlayfs)"));
    }

    // ---- storage driver: what --storage-driver auto picks, when the caller asks ----

    [Test]
    public void StorageDriverIsReportedAfterOverlayOnlyWhenAsked()
    {
        var picked = HostCheck.Run(Facts, chooseStorage: () => new Sandbox.Rootfs.StorageDriverChoice(StorageDriver.Overlay, null, null));
        Assert.That(picked.Select(i => i.Name), Is.EqualTo(new[]
        {
            HostCheck.UserNamespaces, HostCheck.IdMapping, HostCheck.Overlay, HostCheck.Storage, HostCheck.Cgroups, HostCheck.Executor,
        }));
        CheckItem ok = picked.Single(i => i.Name == HostCheck.Storage);
        Assert.That(ok.Status, Is.EqualTo(CheckStatus.Ok));
        Assert.That(ok.Detail, Does.StartWith("--storage-driver auto picks overlay"));

        CheckItem fallback = HostCheck.Run(Facts, chooseStorage: () => new Sandbox.Rootfs.StorageDriverChoice(StorageDriver.Copy, null, "kernel overlayfs cannot be mounted (x); copying"))
            .Single(i => i.Name == HostCheck.Storage);
        Assert.That(fallback.Status, Is.EqualTo(CheckStatus.Warning));
        Assert.That(fallback.Detail, Is.EqualTo("--storage-driver auto picks copy"));
        Assert.That(fallback.Fix, Is.EqualTo("kernel overlayfs cannot be mounted (x); copying"));
    }

    // ---- cgroups: the runtime's own probe (tests/Cgroups covers it in depth); here, how it is reported ----

    [Test]
    public void CgroupV2Delegated()
    {
        CheckItem item = Item(HostCheck.Cgroups);

        Assert.That(item.Status, Is.EqualTo(CheckStatus.Ok));
        Assert.That(item.Detail, Does.StartWith("v2, delegated cgroup ").And.Contain("user.slice/app.scope").And.EndWith("can be enforced"));
        Assert.That(item.Fix, Is.Null);
    }

    [TestCase("cgroup/user.slice/app.scope/cgroup.procs")]
    [TestCase("cgroup/user.slice/app.scope/cgroup.subtree_control")]
    public void CgroupV2NotDelegatedWhenEitherFileIsReadOnly(string readOnly)
    {
        _writable.Remove(readOnly);

        CheckItem item = Item(HostCheck.Cgroups);

        Assert.That(item.Status, Is.EqualTo(CheckStatus.Warning));
        Assert.That(item.Detail, Does.Contain("is not delegated to this user"));
        Assert.That(item.Fix, Does.Contain("systemd-run --user --scope -p Delegate=yes"));
    }

    [Test]
    public void CgroupV2NotDelegated_TheSystemdUserManagerDelegatesAScope()
    {
        _writable.Clear();
        const string Scope = "user.slice/user-1000.slice/user@1000.service/app.slice/sandbox-1-0badcafe.scope";
        var systemd = new Sandbox.Tests.Cgroups.FakeUserManager(pid =>
        {
            // What systemd does: the scope, chowned to the user, holding this process.
            Write($"cgroup/{Scope}/cgroup.controllers", "cpu memory pids\n");
            Write($"cgroup/{Scope}/cgroup.procs", $"{pid}\n");
            Write($"cgroup/{Scope}/cgroup.subtree_control", "");
            _writable.UnionWith([$"cgroup/{Scope}", $"cgroup/{Scope}/cgroup.procs", $"cgroup/{Scope}/cgroup.subtree_control"]);
            Write("proc/self/cgroup", $"0::/{Scope}\n");
            return new Sandbox.Cgroups.SystemdScope("sandbox-1-0badcafe.scope", "the user bus /run/user/1000/bus");
        });

        CheckItem item = HostCheck.Run(Facts with { SystemdUserManager = systemd }).Single(i => i.Name == HostCheck.Cgroups);

        Assert.That(item.Status, Is.EqualTo(CheckStatus.Ok), item.Detail);
        Assert.That(item.Detail, Is.EqualTo(
            $"v2, not delegated here, but the systemd user manager (via the user bus /run/user/1000/bus) delegated a transient scope: delegated cgroup {Path.Combine(_root, "cgroup", Scope)} (controllers: cpu memory pids): memory, pids and cpu limits can be enforced"));
        Assert.That(systemd.Calls, Has.Count.EqualTo(1));
    }

    [Test]
    public void CgroupV2NotDelegated_NoSystemdUserManager()
    {
        _writable.Clear();
        var systemd = Sandbox.Tests.Cgroups.FakeUserManager.Unreachable(new Sandbox.Cgroups.SystemdAttempt("the user bus /run/user/1000/bus", "no such socket"));

        CheckItem item = HostCheck.Run(Facts with { SystemdUserManager = systemd }).Single(i => i.Name == HostCheck.Cgroups);

        Assert.That(item.Status, Is.EqualTo(CheckStatus.Warning));
        Assert.That(item.Detail, Does.EndWith("is not delegated to this user (cgroup.procs and cgroup.subtree_control are not writable), and no systemd user manager gave a delegated scope (the user bus /run/user/1000/bus: no such socket); limits need --limits=best-effort here"));
        Assert.That(item.Fix, Does.Contain("loginctl enable-linger").And.Contain("systemd-run --user --scope -p Delegate=yes"));
    }

    [Test]
    public void CgroupV2DelegatedWithoutMemoryController()
    {
        Write("cgroup/user.slice/app.scope/cgroup.controllers", "cpu pids\n");

        CheckItem item = Item(HostCheck.Cgroups);

        Assert.That(item.Status, Is.EqualTo(CheckStatus.Warning));
        Assert.That(item.Detail, Does.Contain("lacks the memory controller"));
        Assert.That(item.Fix, Does.Contain("Delegate="));
    }

    [Test]
    public void CgroupV1WithWritableDirectoriesIsEnforceable()
    {
        File.Delete(Path.Combine(_root, "cgroup/cgroup.controllers"));
        string v1 = Path.Combine(_root, "v1");
        Write("proc/self/mountinfo", $"""
            32 31 0:29 / {v1}/cpu rw,relatime - cgroup cgroup rw,cpu
            35 31 0:32 / {v1}/memory rw,relatime - cgroup cgroup rw,memory
            39 31 0:36 / {v1}/pids rw,relatime shared:9 - cgroup cgroup rw,pids
            41 31 0:38 / {v1}/unified rw,relatime - cgroup2 cgroup2 rw

            """);
        Write("proc/self/cgroup", "8:pids:/ci\n4:memory:/ci\n1:cpu:/ci\n0::/\n");
        _writable = ["v1/memory/ci", "v1/pids/ci", "v1/cpu/ci"];

        CheckItem item = Item(HostCheck.Cgroups);

        Assert.That(item.Status, Is.EqualTo(CheckStatus.Ok), item.Detail);
        Assert.That(item.Detail, Does.StartWith("v1, cgroup v1 directories"));

        _writable.Remove("v1/memory/ci");
        CheckItem notWritable = Item(HostCheck.Cgroups);
        Assert.That(notWritable.Status, Is.EqualTo(CheckStatus.Warning));
        Assert.That(notWritable.Fix, Does.Contain("chown"));
    }

    [Test]
    public void NoCgroupFilesystem()
    {
        File.Delete(Path.Combine(_root, "cgroup/cgroup.controllers"));
        Write("proc/self/mountinfo", "22 1 8:1 / / rw - ext4 /dev/sda1 rw\n");

        CheckItem item = Item(HostCheck.Cgroups);

        Assert.That(item.Status, Is.EqualTo(CheckStatus.Warning));
        Assert.That(item.Detail, Does.Contain("no cgroup file system is mounted"));
    }

    // ---- native executor, rendering ----

    [Test]
    public void MissingExecutorMeansNoSandboxes()
    {
        _executorError = "libsandbox_exec.so: cannot open shared object file";

        IReadOnlyList<CheckItem> items = HostCheck.Run(Facts);
        CheckItem item = items.Single(i => i.Name == HostCheck.Executor);

        Assert.That(item.Status, Is.EqualTo(CheckStatus.Missing));
        Assert.That(item.Detail, Is.EqualTo(_executorError));
        Assert.That(item.Fix, Does.Contain("dotnet build"));
        Assert.That(HostCheck.CanRunSandboxes(items), Is.False);
    }

    [Test]
    public void WarningsAloneStillRunSandboxes()
    {
        File.Delete(Path.Combine(_root, "etc/subuid"));

        Assert.That(HostCheck.CanRunSandboxes(HostCheck.Run(Facts)), Is.True);
    }

    [Test]
    public void BlockedUserNamespacesMeanNoSandboxes()
    {
        Write("proc/sys/user/max_user_namespaces", "0");

        Assert.That(HostCheck.CanRunSandboxes(HostCheck.Run(Facts)), Is.False);
    }

    [Test]
    public void RenderShowsStatusFixesAndSummary()
    {
        Write("proc/sys/kernel/unprivileged_userns_clone", "0");
        File.Delete(Path.Combine(_root, "bin/newgidmap"));

        string text = HostCheck.Render(HostCheck.Run(Facts));
        string[] lines = text.TrimEnd('\n').Split('\n');

        Assert.That(lines, Has.Length.EqualTo(8));
        Assert.That(lines[0], Does.StartWith("[FAIL] user namespaces: disabled: kernel.unprivileged_userns_clone = 0"));
        Assert.That(lines[1], Is.EqualTo("       fix: sudo sysctl -w kernel.unprivileged_userns_clone=1"));
        Assert.That(lines[2], Does.StartWith("[warn] id mapping: single-UID always"));
        Assert.That(lines[3], Is.EqualTo("       fix: sudo apt-get install uidmap"));
        Assert.That(lines[4], Does.StartWith("[ ok ] overlayfs in a user namespace: kernel 6.8.0-45-generic"));
        Assert.That(lines[5], Does.StartWith("[ ok ] cgroups: v2"));
        Assert.That(lines[6], Does.StartWith("[ ok ] native executor:"));
        Assert.That(lines[7], Is.EqualTo("3 ok, 1 warning(s), 1 missing: sandboxes cannot run until the [FAIL] items are fixed"));
    }

    [Test]
    public void RenderOfAHealthyHost() =>
        Assert.That(HostCheck.Render(HostCheck.Run(Facts)), Does.EndWith("5 ok, 0 warning(s), 0 missing: sandboxes can run\n").And.Not.Contain("fix:"));
}
