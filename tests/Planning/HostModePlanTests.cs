using System.Collections.Immutable;
using Sandbox.Rootfs;
using Sandbox.Runtime;
using Sandbox.Tests.TestSupport;

namespace Sandbox.Tests.Planning;

public class HostModePlanTests
{
    private FakeHost _host = null!;

    [SetUp]
    public void SetUp() => _host = new FakeHost();

    [TearDown]
    public void TearDown() => _host.Dispose();

    private RuntimePlan Plan(SandboxSpec? spec = null) =>
        SandboxPlanner.Plan(spec ?? new SandboxSpec(["dotnet", "test"]), _host.Context);

    private static int IndexOf(ImmutableArray<SetupStep> steps, SetupStep step)
    {
        int i = steps.IndexOf(step);
        Assert.That(i, Is.GreaterThanOrEqualTo(0), $"missing step: {step}");
        return i;
    }

    /// <summary>The steps after the leading process-level ones (groups, cgroup namespace): the mounts.</summary>
    private static List<SetupStep> MountSequence(ImmutableArray<SetupStep> steps) =>
        steps.SkipWhile(s => s is ClearGroupsStep or UnshareCgroupNamespaceStep).ToList();

    [Test]
    public void Steps_StartWithPropagationScratchPivotAndReadOnlyRoot()
    {
        var steps = MountSequence(Plan().Steps.Unconfined());

        SetupStep[] expected =
        {
            // The five steps a holder's prepared mount namespace has done (sandbox_init.c, prepare_mount_namespace).
            new MountStep(null, "/", null, MountFlags.Recursive | MountFlags.Slave) { PreparedBySpare = true },
            new MountStep("tmpfs", "/tmp", "tmpfs", MountFlags.NoSuid | MountFlags.NoDev, "mode=0755") { PreparedBySpare = true },
            new MakeDirectoryStep("/tmp/newroot") { PreparedBySpare = true },
            new MakeDirectoryStep("/tmp/oldroot") { PreparedBySpare = true },
            new PivotRootStep("/tmp", "oldroot") { PreparedBySpare = true },
            new MountStep("/oldroot", "/newroot", null, MountFlags.Bind | MountFlags.Recursive),
            new SetMountAttributesStep("/newroot", MountAttributes.ReadOnly | MountAttributes.NoSuid, MountAttributes.None, Recursive: true),
        };
        Assert.That(steps.Take(expected.Length), Is.EqualTo(expected));
        // Those five, and the step that builds /dev (sandbox_kernel.h, sbx_build_dev): nothing else.
        var prepared = Plan().Steps.Unconfined().Where(s => s.PreparedBySpare).ToList();
        Assert.That(prepared, Is.EqualTo(expected.Take(5).Append(new BuildDevStep { PreparedBySpare = true })));
    }

    [Test]
    public void PropagationStep_HasSlaveAndRecursiveWithKernelValues()
    {
        var first = (MountStep)MountSequence(Plan().Steps.Unconfined())[0];
        Assert.That((ulong)first.Flags, Is.EqualTo((1UL << 19) | 16384UL));
        Assert.That(first.Source, Is.Null);
        Assert.That(first.Target, Is.EqualTo("/"));
    }

    [Test]
    public void HostMode_CreatesNoMountPointsInTheReadOnlyRoot()
    {
        var steps = Plan().Steps.Unconfined();
        int readOnly = IndexOf(steps, new SetMountAttributesStep("/newroot", MountAttributes.ReadOnly | MountAttributes.NoSuid, MountAttributes.None, true));
        var beforeReadOnly = steps.Take(readOnly).OfType<MakeDirectoryStep>().Select(s => s.Target);
        Assert.That(beforeReadOnly, Is.EqualTo(new[] { "/tmp/newroot", "/tmp/oldroot" }));
    }

    [Test]
    public void Proc_IsMountedAfterTheRootIsReadOnly()
    {
        var steps = Plan().Steps.Unconfined();
        int readOnly = IndexOf(steps, new SetMountAttributesStep("/newroot", MountAttributes.ReadOnly | MountAttributes.NoSuid, MountAttributes.None, true));
        int proc = IndexOf(steps, new MountStep("proc", "/newroot/proc", "proc", MountFlags.NoSuid | MountFlags.NoDev | MountFlags.NoExec));
        Assert.That(proc, Is.GreaterThan(readOnly));
    }

    [Test]
    public void RuncsMaskedPaths_AreMaskedWhenTheStepsRun_AfterDevNullAndProcExist()
    {
        var steps = Plan().Steps.Unconfined();
        int devNull = IndexOf(steps, BoundDev);
        int proc = IndexOf(steps, new MountStep("proc", "/newroot/proc", "proc", MountFlags.NoSuid | MountFlags.NoDev | MountFlags.NoExec));
        // Each one, whatever this host has: the executor decides by what it finds (a directory gets a
        // read-only empty tmpfs, anything else /dev/null) and skips what is missing.
        foreach (string path in new[] { "/proc/acpi", "/proc/asound", "/proc/interrupts", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
                     "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi", "/sys/firmware", "/sys/devices/virtual/powercap" })
        {
            int mask = IndexOf(steps, new MaskStep("/newroot" + path, "/newroot/dev/null") { Optional = true });
            Assert.That(mask, Is.GreaterThan(devNull), path);
            Assert.That(mask, Is.GreaterThan(proc), path);
        }
    }

    [Test]
    public void MaskSteps_AreResolvedInTheNewRoot()
    {
        var mask = Plan().Steps.OfType<MaskStep>().First(m => m.Target == "/newroot/proc/kcore");
        Assert.That(mask.ResolveIn, Is.EqualTo("/newroot"), "a symlink in the root can never send a mask to the host");
    }

    [Test]
    public void ProcSys_IsBoundOntoItselfAndMadeReadOnly()
    {
        var steps = Plan().Steps.Unconfined();
        int bind = IndexOf(steps, new MountStep("/newroot/proc/sys", "/newroot/proc/sys", null, MountFlags.Bind | MountFlags.Recursive) { Optional = true });
        var readOnly = new SetMountAttributesStep(
            "/newroot/proc/sys",
            MountAttributes.ReadOnly | MountAttributes.NoSuid | MountAttributes.NoDev | MountAttributes.NoExec,
            MountAttributes.None,
            Recursive: true) { Optional = true };
        Assert.That(steps[bind + 1], Is.EqualTo(readOnly));
        // A proc file on the read-only list works the same way.
        Assert.That(steps, Does.Contain(new MountStep("/newroot/proc/sysrq-trigger", "/newroot/proc/sysrq-trigger", null, MountFlags.Bind | MountFlags.Recursive) { Optional = true }));
    }

    [Test]
    public void Tmp_AndHome_GetFreshTmpfs()
    {
        var steps = Plan().Steps.Unconfined();
        Assert.That(steps, Does.Contain(new MountStep("tmpfs", "/newroot/tmp", "tmpfs", MountFlags.NoSuid | MountFlags.NoDev, "mode=1777")));
        Assert.That(steps, Does.Contain(new MountStep("tmpfs", "/newroot" + _host.Home, "tmpfs", MountFlags.NoSuid | MountFlags.NoDev, "mode=0755")));
    }

    /// <summary>The /dev built on the scratch root (by the executor, or in a holder's prepared mount namespace), bound onto the new root.</summary>
    private static readonly MountStep BoundDev = new("/dev", "/newroot/dev", null, MountFlags.Bind | MountFlags.Recursive);

    [Test]
    public void Dev_IsBuiltOnTheScratchRoot_AndBoundOntoTheNewRootRightAfterIt()
    {
        // What /dev holds is the native code's (sandbox_kernel.h, sbx_build_dev); the integration
        // tests check the result (devices, links, modes, owners, mounts) in a real sandbox.
        var steps = Plan().Steps.Unconfined();
        int build = IndexOf(steps, new BuildDevStep { PreparedBySpare = true });
        int pivot = IndexOf(steps, new PivotRootStep("/tmp", "oldroot") { PreparedBySpare = true });
        Assert.That(build, Is.GreaterThan(pivot), "on the scratch root, with the host's /dev at /oldroot/dev");
        Assert.That(IndexOf(steps, BoundDev), Is.EqualTo(build + 1));
        Assert.That(steps.OfType<BuildDevStep>().Count(), Is.EqualTo(1));
        Assert.That(steps.Select(s => s.TargetPath), Has.None.StartWith("/newroot/dev/"), "nothing else builds in it");
    }

    [Test]
    public void LastStep_PivotsIntoNewRootAndDetachesTheOldOne()
    {
        Assert.That(Plan().Steps[^1], Is.EqualTo(new PivotRootStep("/newroot", null)));
    }

    [Test]
    public void NetworkNone_PrivateNetworkWithLoopbackUp()
    {
        var plan = Plan(new SandboxSpec(["true"]) { Network = NetworkMode.None });
        Assert.That(plan.Namespaces, Is.EqualTo(NamespaceSet.All));
        Assert.That(plan.Namespaces.HasFlag(NamespaceSet.Network), Is.True);
        Assert.That(plan.Steps.OfType<LoopbackUpStep>().Count(), Is.EqualTo(1));
    }

    [Test]
    public void NetworkHost_NoNetworkNamespaceAndNoLoopbackStep()
    {
        var plan = Plan(new SandboxSpec(["true"]) { Network = NetworkMode.Host });
        Assert.That(plan.Namespaces, Is.EqualTo(NamespaceSet.All & ~NamespaceSet.Network));
        Assert.That(plan.Steps.OfType<LoopbackUpStep>(), Is.Empty);
    }

    [Test]
    public void Hostname_IsAlwaysSet_TheDefaultWhenEmpty()
    {
        Assert.That(Plan().Steps, Does.Contain(new SetHostnameStep("sandbox")));
        Assert.That(Plan(new SandboxSpec(["true"]) { Hostname = "build-42" }).Steps, Does.Contain(new SetHostnameStep("build-42")));
        // Empty is the default (docker's --hostname ""), never the host's name the new UTS namespace starts with.
        Assert.That(Plan(new SandboxSpec(["true"]) { Hostname = "" }).Steps.OfType<SetHostnameStep>(), Is.EqualTo(new[] { new SetHostnameStep("sandbox") }));
    }

    [Test]
    public void Hostname_AndLoopback_ComeBeforeTheFinalPivot()
    {
        var steps = Plan().Steps.Unconfined();
        int hostname = IndexOf(steps, new SetHostnameStep("sandbox"));
        int loopback = steps.IndexOf(steps.OfType<LoopbackUpStep>().Single());
        Assert.That(hostname, Is.LessThan(steps.Length - 1));
        Assert.That(loopback, Is.EqualTo(steps.Length - 2));
    }

    [Test]
    public void NoSubuidRange_SingleIdMapAndNoClearGroups()
    {
        var plan = Plan();
        Assert.That(plan.IdMaps, Is.EqualTo(new IdMapPlan(IdMapKind.SingleId, 1000, 1000)));
        Assert.That(plan.Steps.OfType<ClearGroupsStep>(), Is.Empty);
    }

    [TestCase("70000", "70000:0")]
    [TestCase("65537", "65537:0")]
    [TestCase("1000:65537", "1000:65537")]
    public void SubuidRange_AUserOutsideIt_FailsNamingTheMapAndTheFix(string user, string ids)
    {
        var host = WithSubordinateRanges();
        var e = Assert.Throws<SandboxException>(() => SandboxPlanner.Plan(new SandboxSpec(["true"]) { User = user }, host));
        Assert.That(e!.ExitCode, Is.EqualTo(125));
        Assert.That(e.Message, Does.Contain($"--user {user}: {ids} is not mapped")
            .And.Contain("1-65536→100000-165535").And.Contain("use ids up to 65536:65536").And.Contain("usermod --add-subuids"));
        Assert.That(SandboxPlanner.Plan(new SandboxSpec(["true"]) { User = "65536:65536" }, host).Process.Uid, Is.EqualTo(65536));
    }

    [Test]
    public void SubuidRange_AUserOtherThanRoot_OwnsTheFreshHome()
    {
        Assert.That(HomeMountData(SandboxPlanner.Plan(new SandboxSpec(["true"]) { User = "1000:1001" }, WithSubordinateRanges())),
            Is.EqualTo("mode=0755,uid=1000,gid=1001"));
        // Root's home stays root's.
        Assert.That(HomeMountData(SandboxPlanner.Plan(new SandboxSpec(["true"]) { User = "0" }, WithSubordinateRanges())), Is.EqualTo("mode=0755"));
    }

    [TestCase(UserNamespaceMode.Single, "--userns single")]
    [TestCase(UserNamespaceMode.Auto, "you have no subordinate range")]
    public void AnExplicitUserOtherThanRootUnderASingleIdMapIsRefusedNotRunAsRoot(UserNamespaceMode mode, string why)
    {
        var e = Assert.Throws<SandboxException>(() => Plan(new SandboxSpec(["true"]) { User = "1000:1001", UserNamespace = mode }));
        Assert.That(e!.ExitCode, Is.EqualTo(125));
        Assert.That(e.Message, Does.StartWith($"--user 1000:1001: only root (0) exists in a single-id user namespace ({why}), so the command would run as root: use --userns subuid"));
        Assert.That(Plan(new SandboxSpec(["true"]) { User = "0:0", UserNamespace = mode }).Process.Uid, Is.EqualTo(0));
    }

    private string? HomeMountData(RuntimePlan plan) =>
        plan.Steps.OfType<MountStep>().Single(m => m.Target == "/newroot" + _host.Home && m.FileSystemType == "tmpfs").Data;

    private HostContext WithSubordinateRanges()
    {
        string bin = _host.Dir.CreateDirectory("idbin");
        _host.Dir.CreateFile("idbin/newuidmap");
        _host.Dir.CreateFile("idbin/newgidmap");
        string subuid = _host.Dir.CreateFile("subuid", "alice:100000:65536\n");
        string subgid = _host.Dir.CreateFile("subgid", "alice:200000:65536\n");
        return _host.Context with { Identity = _host.Identity with { SubUidFile = subuid, SubGidFile = subgid, SearchPath = bin } };
    }

    [Test]
    public void SubuidRange_ClearsGroupsFirst()
    {
        var plan = SandboxPlanner.Plan(new SandboxSpec(["true"]) { UserNamespace = UserNamespaceMode.Auto }, WithSubordinateRanges());

        Assert.That(plan.IdMaps.Kind, Is.EqualTo(IdMapKind.SubordinateRange));
        Assert.That(plan.IdMaps.SubordinateUids, Is.EqualTo(new IdRange(100000, 65536)));
        Assert.That(plan.IdMaps.SubordinateGids, Is.EqualTo(new IdRange(200000, 65536)));
        Assert.That(plan.Steps[0], Is.EqualTo(new ClearGroupsStep()));
        Assert.That(plan.Steps.OfType<ClearGroupsStep>().Count(), Is.EqualTo(1));
        Assert.That(MountSequence(plan.Steps)[0], Is.EqualTo(new MountStep(null, "/", null, MountFlags.Recursive | MountFlags.Slave) { PreparedBySpare = true }));
    }

    [Test]
    public void CgroupNamespace_IsUnsharedOnceBeforeAnyMount()
    {
        var steps = Plan().Steps.Unconfined();
        Assert.That(steps.OfType<UnshareCgroupNamespaceStep>().Count(), Is.EqualTo(1));
        int unshare = steps.IndexOf(new UnshareCgroupNamespaceStep());
        int firstMount = steps.IndexOf(steps.OfType<MountStep>().First());
        Assert.That(unshare, Is.LessThan(firstMount));
        Assert.That(steps[unshare + 1], Is.EqualTo(new MountStep(null, "/", null, MountFlags.Recursive | MountFlags.Slave) { PreparedBySpare = true }));
    }

    [Test]
    public void Process_UsesTheCommandHostPathAndRootWorkdir()
    {
        var plan = Plan(new SandboxSpec(["dotnet", "test", "--no-build"]));
        Assert.That(plan.Process.File, Is.EqualTo("dotnet"));
        Assert.That(plan.Process.Arguments, Is.EqualTo(new[] { "dotnet", "test", "--no-build" }));
        Assert.That(plan.Process.SearchPath, Is.EqualTo(FakeHost.HostPath));
        Assert.That(plan.Process.WorkingDirectory, Is.EqualTo("/"));
        Assert.That(plan.Process.NoNewPrivileges, Is.True);
        Assert.That(plan.Process.NewSession, Is.True);
    }

    [Test]
    public void Process_KeepsAnAbsoluteWorkdir()
    {
        var plan = Plan(new SandboxSpec(["true"]) { WorkingDirectory = "/work/src" });
        Assert.That(plan.Process.WorkingDirectory, Is.EqualTo("/work/src"));
    }

    [Test]
    public void ExtraTmpfs_IsMountedWithItsParentsCreated()
    {
        var steps = Plan(new SandboxSpec(["true"]) { TmpfsMounts = ["/tmp/a/../cache//x"] }).Steps.Unconfined();
        int tmp = IndexOf(steps, new MountStep("tmpfs", "/newroot/tmp", "tmpfs", MountFlags.NoSuid | MountFlags.NoDev, "mode=1777"));
        int mkdir = IndexOf(steps, new MakeDirectoryStep("/newroot/tmp/cache/x"));
        int mount = IndexOf(steps, new MountStep("tmpfs", "/newroot/tmp/cache/x", "tmpfs", MountFlags.NoSuid | MountFlags.NoDev, "mode=1777"));
        Assert.That(mkdir, Is.GreaterThan(tmp));
        Assert.That(mount, Is.GreaterThan(mkdir));
    }

    [Test]
    public void HomeFiles_AreMadeInTheFreshHomeBeforeAnyBindBelowIt()
    {
        string below = _host.Dir.CreateDirectory("cache-below-home");
        var spec = new SandboxSpec(["true"])
        {
            HomeFiles = [".local/share/NuGet/Migrations/1", "marker"],
            Binds = [new BindMount(below, _host.Home + "/.local")],
        };
        var steps = Plan(spec).Steps.Unconfined();
        string home = "/newroot" + _host.Home;
        int tmpfs = IndexOf(steps, new MountStep("tmpfs", home, "tmpfs", MountFlags.NoSuid | MountFlags.NoDev, "mode=0755"));
        SetupStep[] expected =
        {
            new MakeDirectoryStep(home + "/.local"),
            new MakeDirectoryStep(home + "/.local/share"),
            new MakeDirectoryStep(home + "/.local/share/NuGet"),
            new MakeDirectoryStep(home + "/.local/share/NuGet/Migrations"),
            new CreateFileStep(home + "/.local/share/NuGet/Migrations/1"),
            new CreateFileStep(home + "/marker"),
        };
        Assert.That(steps.Skip(tmpfs + 1).Take(expected.Length), Is.EqualTo(expected));
        // The bind below $HOME comes later: it covers the files, it never receives them.
        int bind = IndexOf(steps, new MountStep("/oldroot" + below, home + "/.local", null, MountFlags.Bind | MountFlags.Recursive));
        Assert.That(bind, Is.GreaterThan(tmpfs + expected.Length));
    }

    [Test]
    public void NoHomeFiles_NoStepsAfterTheHomeTmpfs()
    {
        var steps = Plan().Steps.Unconfined();
        Assert.That(steps.OfType<CreateFileStep>().Where(f => f.Target.StartsWith("/newroot" + _host.Home, StringComparison.Ordinal)), Is.Empty);
    }

    [Test]
    public void HomeUnderTmp_IsRecreatedInTheFreshTmpBeforeItsTmpfs()
    {
        // The fixture's home is under the system temp directory, hidden by the sandbox's fresh /tmp.
        if (!_host.Home.StartsWith("/tmp/", StringComparison.Ordinal))
            Skip.Because($"the temp directory is not under /tmp (TMPDIR={Environment.GetEnvironmentVariable("TMPDIR")})");
        var steps = Plan().Steps.Unconfined();
        int tmp = IndexOf(steps, new MountStep("tmpfs", "/newroot/tmp", "tmpfs", MountFlags.NoSuid | MountFlags.NoDev, "mode=1777"));
        int homeTmpfs = IndexOf(steps, new MountStep("tmpfs", "/newroot" + _host.Home, "tmpfs", MountFlags.NoSuid | MountFlags.NoDev, "mode=0755"));
        int homeDir = IndexOf(steps, new MakeDirectoryStep("/newroot" + _host.Home));
        int parentDir = IndexOf(steps, new MakeDirectoryStep("/newroot" + System.IO.Path.GetDirectoryName(_host.Home)));
        Assert.That(parentDir, Is.GreaterThan(tmp));
        Assert.That(homeDir, Is.EqualTo(homeTmpfs - 1));
        Assert.That(parentDir, Is.LessThan(homeDir));
    }

    [Test]
    public void Home_IsTheResolvedHostHome()
    {
        string link = _host.Dir.Combine("home-link");
        Directory.CreateSymbolicLink(link, _host.Home);
        var plan = SandboxPlanner.Plan(new SandboxSpec(["true"]), _host.Context with { Home = link });
        Assert.That(plan.Process.Environment, Does.Contain("HOME=" + _host.Home));
        Assert.That(plan.Steps.Unconfined(), Does.Contain(new MountStep("tmpfs", "/newroot" + _host.Home, "tmpfs", MountFlags.NoSuid | MountFlags.NoDev, "mode=0755")));
    }

    [TestCase(null)]
    [TestCase("/")]
    [TestCase("relative/home")]
    public void UnusableHome_FallsBackToRoot(string? home)
    {
        var plan = SandboxPlanner.Plan(new SandboxSpec(["true"]), _host.Context with { Home = home });
        Assert.That(plan.Process.Environment, Does.Contain("HOME=/root"));
        Assert.That(plan.Steps.Unconfined(), Does.Contain(new MountStep("tmpfs", "/newroot/root", "tmpfs", MountFlags.NoSuid | MountFlags.NoDev, "mode=0755")));
    }

    [Test]
    public void TheUsersSocketDirectoriesAreHiddenByAnEmptyTmpfsBeforeAnyBindIntoThem()
    {
        // Planning takes the directories as given (HostContext.Current() keeps those that exist).
        const string sockets = "/run/user";
        string agent = _host.Dir.CreateDirectory("agent");
        var host = _host.Context with { SocketDirectories = [sockets] };
        var spec = new SandboxSpec(["true"]) { Binds = [new BindMount(agent, sockets + "/agent")] };
        var steps = SandboxPlanner.Plan(spec, host).Steps.Unconfined();

        int hidden = IndexOf(steps, new MountStep("tmpfs", "/newroot" + sockets, "tmpfs", MountFlags.NoSuid | MountFlags.NoDev | MountFlags.NoExec, "mode=0755"));
        int readOnly = IndexOf(steps, new SetMountAttributesStep("/newroot", MountAttributes.ReadOnly | MountAttributes.NoSuid, MountAttributes.None, true));
        int bind = IndexOf(steps, new MountStep("/oldroot" + agent, "/newroot" + sockets + "/agent", null, MountFlags.Bind | MountFlags.Recursive));
        Assert.That(hidden, Is.GreaterThan(readOnly));
        Assert.That(bind, Is.GreaterThan(hidden), "what the caller binds there on purpose stays reachable");

        // Another root has none of the host's directories to hide.
        string root = _host.Dir.CreateDirectory("rootdir");
        var other = SandboxPlanner.Plan(new SandboxSpec(["true"]) { Root = RootSpec.Directory(root) }, host).Steps.Unconfined();
        Assert.That(other.OfType<MountStep>().Select(m => m.Target), Has.None.EqualTo("/newroot" + sockets));
    }

    [TestCase("/usr")]
    [TestCase("/var")]
    [TestCase("/etc")]
    public void ARuntimeDirectoryThatIsASystemTopDirectoryIsNotHidden(string sockets)
    {
        var host = _host.Context with { SocketDirectories = [sockets] };
        var steps = SandboxPlanner.Plan(new SandboxSpec(["true"]), host).Steps.Unconfined();
        Assert.That(steps.OfType<MountStep>().Select(m => m.Target), Has.None.EqualTo("/newroot" + sockets));
    }

    [Test]
    public void AHomeBelowASocketDirectoryIsMadeAgainAndMountedOnTopOfItsTmpfs()
    {
        // Outside /tmp, which is fresh anyway: a home below a runtime directory under /var/tmp.
        string parent = Path.Combine("/var/tmp", "sandbox-tests-" + Guid.NewGuid().ToString("N"));
        string homeDir = Directory.CreateDirectory(Path.Combine(parent, "home")).FullName;
        try
        {
            var host = _host.Context with { Home = homeDir, SocketDirectories = [parent] };
            var steps = SandboxPlanner.Plan(new SandboxSpec(["true"]), host).Steps.Unconfined();
            int hidden = IndexOf(steps, new MountStep("tmpfs", "/newroot" + parent, "tmpfs", MountFlags.NoSuid | MountFlags.NoDev | MountFlags.NoExec, "mode=0755"));
            int mkdir = IndexOf(steps, new MakeDirectoryStep("/newroot" + homeDir));
            int home = IndexOf(steps, new MountStep("tmpfs", "/newroot" + homeDir, "tmpfs", MountFlags.NoSuid | MountFlags.NoDev, "mode=0755"));
            Assert.That(mkdir, Is.GreaterThan(hidden));
            Assert.That(home, Is.GreaterThan(mkdir));
        }
        finally
        {
            Directory.Delete(parent, recursive: true);
        }
    }

    [Test]
    public void SocketDirectoriesAreRunUserAndTheRuntimeDirectoryOutsideIt()
    {
        Func<string, bool> all = _ => true, none = _ => false;
        Assert.That(HostContext.UserSocketDirectories("/run/user/1000", all), Is.EqualTo(new[] { "/run/user" }), "already under /run/user");
        Assert.That(HostContext.UserSocketDirectories("/var/run-xdg", all), Is.EqualTo(new[] { "/run/user", "/var/run-xdg" }));
        Assert.That(HostContext.UserSocketDirectories("/var/run-xdg", p => p != "/run/user"), Is.EqualTo(new[] { "/var/run-xdg" }));
        Assert.That(HostContext.UserSocketDirectories("relative/dir", none), Is.Empty);
        Assert.That(HostContext.UserSocketDirectories(null, none), Is.Empty);
        // $TMPDIR: the .NET diagnostic sockets of the CLI and of MSBuild, ssh-agent's, tmux's.
        Assert.That(HostContext.UserSocketDirectories("/run/user/1000", all, "/var/tmp/ci-job"), Is.EqualTo(new[] { "/run/user", "/var/tmp/ci-job" }));
        Assert.That(HostContext.UserSocketDirectories(null, p => p != "/run/user", "/var/tmp/ci-job"), Is.EqualTo(new[] { "/var/tmp/ci-job" }));
        Assert.That(HostContext.UserSocketDirectories(null, none, "/var/tmp/ci-job"), Is.Empty);
        Assert.That(HostContext.UserSocketDirectories("/", all), Is.EqualTo(new[] { "/run/user" }), "never the whole root");
        Assert.That(HostContext.UserSocketDirectories("/missing", p => p == "/run/user"), Is.EqualTo(new[] { "/run/user" }));
    }

    [Test]
    public void ASocketDirectoryUnderTheFreshTmpOrHomeNeedsNoTmpfsOfItsOwn()
    {
        var host = _host.Context with { SocketDirectories = ["/tmp/runtime-alice", _host.Home + "/.run"] };
        var steps = SandboxPlanner.Plan(new SandboxSpec(["true"]), host).Steps.Unconfined();
        Assert.That(steps.OfType<MountStep>().Select(m => m.Target), Has.None.EqualTo("/newroot/tmp/runtime-alice").And.None.EqualTo("/newroot" + _host.Home + "/.run"));
    }

    [Test]
    public void ContainerEngineSocketsAreCoveredWithDevNullUnlessBoundOnPurpose()
    {
        var host = _host.Context with { EngineSockets = ["/run/docker.sock", "/run/libvirt/libvirt-sock"] };
        var steps = SandboxPlanner.Plan(new SandboxSpec(["true"]), host).Steps.Unconfined();
        int dev = IndexOf(steps, BoundDev);
        int docker = IndexOf(steps, new MountStep("/newroot/dev/null", "/newroot/run/docker.sock", null, MountFlags.Bind) { Optional = true });
        IndexOf(steps, new MountStep("/newroot/dev/null", "/newroot/run/libvirt/libvirt-sock", null, MountFlags.Bind) { Optional = true });
        Assert.That(docker, Is.GreaterThan(dev), "its /dev/null exists first");

        // A -v of the socket is the caller's choice: it is bound after the cover, so it wins.
        string socket = _host.Dir.CreateFile("docker.sock");
        var bound = SandboxPlanner.Plan(new SandboxSpec(["true"]) { Binds = [new BindMount(socket, "/run/docker.sock")] }, host).Steps.Unconfined();
        int cover = IndexOf(bound, new MountStep("/newroot/dev/null", "/newroot/run/docker.sock", null, MountFlags.Bind) { Optional = true });
        int bind = IndexOf(bound, new MountStep("/oldroot" + socket, "/newroot/run/docker.sock", null, MountFlags.Bind | MountFlags.Recursive));
        Assert.That(bind, Is.GreaterThan(cover));

        // Another root has none of the host's sockets.
        string root = _host.Dir.CreateDirectory("engine-root");
        var other = SandboxPlanner.Plan(new SandboxSpec(["true"]) { Root = RootSpec.Directory(root) }, host).Steps.Unconfined();
        Assert.That(other.OfType<MountStep>().Select(m => m.Target), Has.None.EqualTo("/newroot/run/docker.sock"));
    }

    [Test]
    public void EngineSocketsThatExistAreFoundOnceEach()
    {
        Assert.That(HostContext.ExistingEngineSockets(_ => false), Is.Empty);
        var docker = HostContext.ExistingEngineSockets(p => p.EndsWith("/docker.sock", StringComparison.Ordinal));
        Assert.That(docker, Does.Contain("/run/docker.sock"));
        if (new FileInfo("/var/run").LinkTarget is "/run" or "../run")
            Assert.That(docker.Length, Is.EqualTo(1), "/var/run/docker.sock is /run/docker.sock here");
        Assert.That(HostContext.KnownEngineSockets, Does.Contain("/var/run/docker.sock").And.Contain("/var/snap/lxd/common/lxd/unix.socket"));
    }

    [Test]
    public void MissingHome_FallsBackToRoot()
    {
        var host = _host.Context with { Home = _host.Dir.Combine("no-such-home") };
        var steps = SandboxPlanner.Plan(new SandboxSpec(["true"]), host).Steps.Unconfined();
        Assert.That(steps, Does.Contain(new MountStep("tmpfs", "/newroot/root", "tmpfs", MountFlags.NoSuid | MountFlags.NoDev, "mode=0755")));
    }

    [TestCase("/tmp/build/out", true)]
    [TestCase("/tmp", true)]
    [TestCase("/srv/build", false)] // the host's root is read-only there: the chdir's error says so
    public void AMissingWorkingDirectoryIsMadeWhereTheSandboxCanWrite(string workdir, bool made)
    {
        var steps = SandboxPlanner.Plan(new SandboxSpec(["true"]) { WorkingDirectory = workdir }, _host.Context).Steps.Unconfined();
        var hostname = steps.IndexOf(new SetHostnameStep("sandbox"));
        int make = steps.LastIndexOf(new MakeDirectoryStep("/newroot" + workdir));
        Assert.That(make >= 0, Is.EqualTo(made));
        if (made) // after every mount, before the pivot (the hostname step is just before it)
            Assert.That(make, Is.LessThan(hostname).And.GreaterThan(steps.LastIndexOf(steps.OfType<MountStep>().Last())));

        var inHome = SandboxPlanner.Plan(new SandboxSpec(["true"]) { WorkingDirectory = _host.Home + "/src/app" }, _host.Context).Steps.Unconfined();
        Assert.That(inHome, Does.Contain(new MakeDirectoryStep("/newroot" + _host.Home + "/src/app")));
        var inTmpfs = SandboxPlanner.Plan(new SandboxSpec(["true"]) { WorkingDirectory = "/mnt/w", TmpfsMounts = ["/mnt"] }, _host.Context).Steps.Unconfined();
        Assert.That(inTmpfs, Does.Contain(new MakeDirectoryStep("/newroot/mnt/w")));
    }

    [TestCase("/usr")]
    [TestCase("/etc")]
    [TestCase("/var")]
    [TestCase("/usr/")]
    public void AHomeThatIsASystemDirectory_FallsBackToRoot_NotHidingIt(string home)
    {
        var host = _host.Context with { Home = home };
        var steps = SandboxPlanner.Plan(new SandboxSpec(["true"]), host).Steps.Unconfined();
        Assert.That(steps, Does.Contain(new MountStep("tmpfs", "/newroot/root", "tmpfs", MountFlags.NoSuid | MountFlags.NoDev, "mode=0755")));
        Assert.That(steps.OfType<MountStep>().Where(m => m.Target == "/newroot" + home.TrimEnd('/')), Is.Empty);
        Assert.That(SandboxPlanner.BuildEnvironment(new SandboxSpec(["true"]), host, out _), Does.Contain("HOME=/root"));
    }

    private static string? Target(SetupStep step) => step switch
    {
        MountStep m => m.Target,
        SetMountAttributesStep a => a.Target,
        MakeDirectoryStep d => d.Target,
        CreateFileStep f => f.Target,
        SymlinkStep s => s.Path,
        _ => null,
    };

    [Test]
    public void EveryStepUnderTheNewRoot_IsResolvedInsideIt()
    {
        var steps = Plan().Steps;
        var underNewRoot = steps.Where(s => Target(s) is string t && t.StartsWith("/newroot/", StringComparison.Ordinal)).ToList();
        Assert.That(underNewRoot, Has.Count.GreaterThan(10));
        Assert.That(underNewRoot.Select(s => s.ResolveIn), Is.All.EqualTo("/newroot"));
        // The root bind itself and the steps before it act on the scratch root.
        Assert.That(steps.Where(s => Target(s) is "/newroot" or "/tmp" or "/").Select(s => s.ResolveIn), Is.All.Null);
    }
}
