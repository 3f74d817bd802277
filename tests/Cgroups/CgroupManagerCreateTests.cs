using System.Collections.Immutable;
using Sandbox.Cgroups;

namespace Sandbox.Tests.Cgroups;

/// <summary>CgroupManager.Create's policy when the host cannot enforce limits.</summary>
public class CgroupManagerCreatePolicyTests : V2HostTests
{
    private string _job = null!;
    private List<string> _warnings = null!;

    [SetUp]
    public void SetUp()
    {
        _job = _host.AddCgroup("/user.slice/job", procs: ""); // not delegated
        _warnings = [];
    }

    private string Detail => $"{_job} is not delegated to this user (cgroup.procs and cgroup.subtree_control are not writable)";

    [TestCase(LimitsPolicy.Required)]
    [TestCase(LimitsPolicy.BestEffort)]
    public void NoLimits_NotUsable_IsNullAndSilent(LimitsPolicy policy)
    {
        Assert.That(CgroupManager.Create(ResourceLimits.None, policy, _host.Host, _warnings.Add), Is.Null);
        Assert.That(_warnings, Is.Empty);
        Assert.That(Directory.GetDirectories(_job), Is.Empty);
    }

    [Test]
    public void MemoryLimit_Required_Throws()
    {
        var e = Assert.Throws<SandboxException>(() =>
            CgroupManager.Create(new ResourceLimits { MemoryBytes = 512L << 20 }, LimitsPolicy.Required, _host.Host, _warnings.Add));
        Assert.That(e!.Code, Is.EqualTo(SandboxErrorCode.LimitsUnavailable));
        Assert.That(e.Message, Does.StartWith($"resource limits cannot be enforced here: {Detail}. Fix: "));
        Assert.That(e.Message, Does.Contain("systemd-run"));
        Assert.That(_warnings, Is.Empty);
    }

    [Test]
    public void MemoryLimit_BestEffort_WarnsOnceAndIsNull()
    {
        var cgroup = CgroupManager.Create(new ResourceLimits { MemoryBytes = 512L << 20 }, LimitsPolicy.BestEffort, _host.Host, _warnings.Add);

        Assert.That(cgroup, Is.Null);
        Assert.That(_warnings, Has.Count.EqualTo(1));
        Assert.That(_warnings[0], Does.Contain("running WITHOUT limits"));
        Assert.That(_warnings[0], Is.EqualTo($"warning: resource limits cannot be enforced here: {Detail}; running WITHOUT limits (--limits=best-effort)"));
    }

    [Test]
    public void MissingController_Required_ThrowsWithTheDelegateFix()
    {
        string other = _host.AddCgroup("/user.slice/job", controllers: "memory pids", procs: "");
        _host.Delegate(other);

        var e = Assert.Throws<SandboxException>(() =>
            CgroupManager.Create(new ResourceLimits { Cpus = 1.5 }, LimitsPolicy.Required, _host.Host, _warnings.Add));

        Assert.That(e!.Code, Is.EqualTo(SandboxErrorCode.LimitsUnavailable));
        Assert.That(e.Message, Is.EqualTo(
            $"resource limits cannot be enforced here: the delegated cgroup {other} lacks the cpu controller(s) (it has: memory pids). Fix: enable them in the parent's cgroup.subtree_control (systemd: Delegate=memory pids cpu io)"));
    }

    [Test]
    public void InvalidLimits_AreRejectedBeforeProbing()
    {
        var e = Assert.Throws<SandboxException>(() =>
            CgroupManager.Create(new ResourceLimits { PidsLimit = 0 }, LimitsPolicy.BestEffort, _host.Host, _warnings.Add));
        Assert.That(e!.Code, Is.EqualTo(SandboxErrorCode.InvalidSpec));
        Assert.That(_warnings, Is.Empty);
        Assert.That(_host.Asked, Is.Empty);
    }

    [Test]
    public void V1_UnwritableMemory_Required_ThrowsWithTheChownFix()
    {
        using var v1 = new V1Host();
        v1.MakeWritable(v1.PidsCi, v1.CpuCi);

        var e = Assert.Throws<SandboxException>(() =>
            CgroupManager.Create(new ResourceLimits { MemoryBytes = 1L << 30 }, LimitsPolicy.Required, v1.Host, _warnings.Add));

        Assert.That(e!.Code, Is.EqualTo(SandboxErrorCode.LimitsUnavailable));
        Assert.That(e.Message, Does.StartWith($"resource limits cannot be enforced here: cgroup v1: no writable cgroup directory for memory ({v1.MemoryCi} not writable by this user). Fix: ask an administrator"));
        Assert.That(e.Message, Does.Contain("chown"));
    }
}

/// <summary>
/// CgroupManager.Create on a usable fake v2 tree. The code opens interface files O_WRONLY without
/// O_CREAT (as cgroupfs provides them), so the tests pre-create them, in the child directory too:
/// its name is predicted with <see cref="CgroupHelpers.NextName"/>.
/// </summary>
public class CgroupManagerCreateV2Tests : V2HostTests
{
    private string _job = null!;
    private List<string> _warnings = null!;
    private readonly List<SandboxCgroup> _created = [];

    [SetUp]
    public void SetUp()
    {
        _job = _host.AddCgroup("/user.slice/job", controllers: "cpu io memory pids", procs: "", subtreeControl: "cpu io memory pids");
        _host.Delegate(_job);
        _warnings = [];
    }

    [TearDown]
    public void TearDown()
    {
        foreach (SandboxCgroup c in _created)
        {
            // Plain directories with files in them cannot be rmdir'ed; empty them as cgroupfs would be.
            foreach (string dir in c.Paths.Where(Directory.Exists))
            {
                foreach (string f in Directory.GetFiles(dir))
                    File.Delete(f);
            }
            c.Dispose();
        }
    }

    private SandboxCgroup CreateOk(ResourceLimits limits, LimitsPolicy policy = LimitsPolicy.Required)
    {
        SandboxCgroup? cgroup = CgroupManager.Create(limits, policy, _host.Host, _warnings.Add);
        Assert.That(cgroup, Is.Not.Null);
        _created.Add(cgroup!);
        Assert.That(_warnings, Is.Empty);
        return cgroup!;
    }

    private string PrepareChild(params string[] files)
    {
        string child = Path.Combine(_job, CgroupHelpers.NextName(V2Host.Pid));
        Directory.CreateDirectory(child);
        foreach (string f in files)
            File.WriteAllText(Path.Combine(child, f), "");
        return child;
    }

    private static string Read(string dir, string file) => File.ReadAllText(Path.Combine(dir, file));

    [Test]
    public void NoLimits_StillMakesACgroupForTheUsageReport()
    {
        string expected = Path.Combine(_job, CgroupHelpers.NextName(V2Host.Pid));

        SandboxCgroup cgroup = CreateOk(ResourceLimits.None);

        Assert.That(cgroup, Is.InstanceOf<CgroupV2>());
        Assert.That(cgroup.Version, Is.EqualTo("v2"));
        Assert.That(cgroup.Paths, Is.EqualTo(new[] { expected }));
        Assert.That(Directory.Exists(expected), Is.True);
        Assert.That(cgroup.Limits, Is.SameAs(ResourceLimits.None));
        Assert.That(Directory.GetFiles(expected), Is.Empty, "no limits: nothing written");
    }

    [Test]
    public void AnAbandonedEmptySandboxCgroupOfADeadCliIsRemovedByTheNextRun()
    {
        string old = DateTimeAged(Path.Combine(_job, "sandbox-77777-1"), TimeSpan.FromMinutes(5));
        string young = DateTimeAged(Path.Combine(_job, "sandbox-77777-2"), TimeSpan.FromSeconds(1));
        string live = DateTimeAged(Path.Combine(_job, $"sandbox-{V2Host.Pid}-999"), TimeSpan.FromMinutes(5));
        string populated = DateTimeAged(Path.Combine(_job, "sandbox-77777-3"), TimeSpan.FromMinutes(5));
        File.WriteAllText(Path.Combine(populated, "cgroup.procs"), "123\n"); // rmdir fails, as EBUSY does on cgroupfs
        string notOurs = DateTimeAged(Path.Combine(_job, "sandbox-77777-x"), TimeSpan.FromMinutes(5));
        string leaf = DateTimeAged(Path.Combine(_job, CgroupManager.SupervisorLeaf), TimeSpan.FromMinutes(5));

        CreateOk(ResourceLimits.None);

        Assert.That(Directory.Exists(old), Is.False, "its CLI (77777) is gone and it is empty");
        Assert.That(Directory.Exists(young), Is.True, "too young: a CLI of another PID namespace may be about to move its PID 1 in");
        Assert.That(Directory.Exists(live), Is.True, "its CLI is alive");
        Assert.That(Directory.Exists(populated), Is.True, "still holds a process");
        Assert.That(Directory.Exists(notOurs), Is.True, "not a name sandbox gives");
        Assert.That(Directory.Exists(leaf), Is.True);
    }

    private static string DateTimeAged(string dir, TimeSpan age)
    {
        Directory.CreateDirectory(dir);
        Directory.SetLastWriteTimeUtc(dir, DateTime.UtcNow - age);
        return dir;
    }

    [TestCase("sandbox-4242-1", 4242)]
    [TestCase("sandbox-1-12345", 1)]
    [TestCase("sandbox-4242-1.scope", null)]
    [TestCase("sandbox-12-ab12cd34.scope", null)]
    [TestCase("sandbox.supervisor", null)]
    [TestCase("sandbox--1-2", null)]
    [TestCase("sandbox-+1-2", null)]
    [TestCase("other-1-2", null)]
    public void OnlyNamesSandboxGivesHaveAnOwner(string name, int? owner) =>
        Assert.That(CgroupHelpers.CallOwnerOf(name), Is.EqualTo(owner));

    [Test]
    public void Dispose_RemovesTheDirectory()
    {
        SandboxCgroup cgroup = CreateOk(ResourceLimits.None);
        string dir = cgroup.Paths[0];

        cgroup.Dispose();

        Assert.That(Directory.Exists(dir), Is.False);
    }

    [Test]
    public void AllLimits_AreWritten()
    {
        string child = PrepareChild("memory.max", "memory.swap.max", "pids.max", "cpu.max");
        var limits = new ResourceLimits { MemoryBytes = 512L << 20, MemoryAndSwapBytes = 768L << 20, PidsLimit = 64, Cpus = 1.5 };

        SandboxCgroup cgroup = CreateOk(limits);

        Assert.That(cgroup.Paths, Is.EqualTo(new[] { child }));
        Assert.That(cgroup.Limits, Is.SameAs(limits));
        Assert.That(Read(child, "memory.max"), Is.EqualTo("536870912"));
        Assert.That(Read(child, "memory.swap.max"), Is.EqualTo("268435456"), "v2 swap.max is swap only: 768m - 512m");
        Assert.That(Read(child, "pids.max"), Is.EqualTo("65"), "the payload's 64, and one for sandbox-init (PID 1)");
        Assert.That(Read(child, "cpu.max"), Is.EqualTo("150000 100000"));
        Assert.That(Read(_job, "cgroup.subtree_control"), Is.EqualTo("cpu io memory pids"), "already enabled: not written again");
    }

    [TestCase(null, "1073741824")] // docker: as much swap as memory
    [TestCase(-1L, "max")]
    [TestCase(1L << 30, "0")] // memory-swap == memory: no swap
    public void SwapMax(long? memoryAndSwap, string expected)
    {
        string child = PrepareChild("memory.max", "memory.swap.max");

        CreateOk(new ResourceLimits { MemoryBytes = 1L << 30, MemoryAndSwapBytes = memoryAndSwap });

        Assert.That(Read(child, "memory.max"), Is.EqualTo("1073741824"));
        Assert.That(Read(child, "memory.swap.max"), Is.EqualTo(expected));
    }

    [Test]
    public void NoSwapAccounting_SwapMaxIsNotWritten()
    {
        string child = PrepareChild("memory.max");

        CreateOk(new ResourceLimits { MemoryBytes = 1L << 30, MemoryAndSwapBytes = 2L << 30 });

        Assert.That(Read(child, "memory.max"), Is.EqualTo("1073741824"));
        Assert.That(File.Exists(Path.Combine(child, "memory.swap.max")), Is.False);
    }

    [TestCase(0.01, "1000 100000")] // the least --cpus accepts: 1 ms per period
    [TestCase(0.5, "50000 100000")]
    [TestCase(2.0, "200000 100000")]
    [TestCase(0.123456, "12346 100000")]
    public void CpuMax(double cpus, string expected)
    {
        string child = PrepareChild("cpu.max");

        CreateOk(new ResourceLimits { Cpus = cpus });

        Assert.That(Read(child, "cpu.max"), Is.EqualTo(expected));
    }

    [Test]
    public void DeviceReadRate_IoMax()
    {
        string child = PrepareChild("io.max");

        CreateOk(new ResourceLimits { DeviceReadBps = [new DeviceRate("/dev/null", 1 << 20)] });

        Assert.That(Read(child, "io.max"), Is.EqualTo("1:3 rbps=1048576"));
    }

    [Test]
    public void DeviceWriteRate_IoMax()
    {
        string child = PrepareChild("io.max");

        CreateOk(new ResourceLimits { DeviceWriteBps = [new DeviceRate("/dev/zero", 2 << 20)] });

        Assert.That(Read(child, "io.max"), Is.EqualTo("1:5 wbps=2097152"));
    }

    [Test]
    public void NotADevice_IsInvalidSpec_AndTheCgroupIsRemoved()
    {
        string notADevice = Path.Combine(_job, "cgroup.procs");
        string child = Path.Combine(_job, CgroupHelpers.NextName(V2Host.Pid));

        var e = Assert.Throws<SandboxException>(() =>
            CgroupManager.Create(new ResourceLimits { DeviceReadBps = [new DeviceRate(notADevice, 1024)] }, LimitsPolicy.Required, _host.Host, _warnings.Add));

        Assert.That(e!.Code, Is.EqualTo(SandboxErrorCode.InvalidSpec));
        Assert.That(e.Message, Does.StartWith($"device {notADevice}: "));
        Assert.That(Directory.Exists(child), Is.False);
    }

    [Test]
    public void LimitFileMissing_IsCgroupFailed_AndTheCgroupIsRemoved()
    {
        // What a plain directory (no memory.max) looks like to the code: the write fails.
        string child = Path.Combine(_job, CgroupHelpers.NextName(V2Host.Pid));

        var e = Assert.Throws<SandboxException>(() =>
            CgroupManager.Create(new ResourceLimits { MemoryBytes = 1L << 30 }, LimitsPolicy.Required, _host.Host, _warnings.Add));

        Assert.That(e!.Code, Is.EqualTo(SandboxErrorCode.CgroupFailed));
        Assert.That(e.Message, Does.StartWith($"cgroup: writing '1073741824' to {Path.Combine(child, "memory.max")} failed: "));
        Assert.That(Directory.Exists(child), Is.False, "Create disposes the half-made cgroup");
    }

    [Test]
    public void SupervisorLeaf_TheSupervisorMovesFirst()
    {
        File.WriteAllText(Path.Combine(_job, "cgroup.procs"), $"{V2Host.Pid}\n");
        string leaf = Path.Combine(_job, "sandbox.supervisor");
        Directory.CreateDirectory(leaf);
        File.WriteAllText(Path.Combine(leaf, "cgroup.procs"), "");
        string expected = Path.Combine(_job, CgroupHelpers.NextName(V2Host.Pid));

        SandboxCgroup cgroup = CreateOk(ResourceLimits.None);

        Assert.That(File.ReadAllText(Path.Combine(leaf, "cgroup.procs")), Is.EqualTo(V2Host.Pid.ToString(System.Globalization.CultureInfo.InvariantCulture)));
        Assert.That(cgroup.Paths, Is.EqualTo(new[] { expected }), "sandboxes are siblings of the leaf, not below it");
    }

    [Test]
    public void EnableControllers_MemoryAndPidsForTheReport_PlusTheRequiredOnes_InOrder()
    {
        File.WriteAllText(Path.Combine(_job, "cgroup.subtree_control"), "");
        PrepareChild("cpu.max");

        CreateOk(new ResourceLimits { Cpus = 1 });

        // "+memory", then "+pids", then "+cpu", each written at offset 0 of the plain file; "+io" is not needed.
        Assert.That(Read(_job, "cgroup.subtree_control"), Is.EqualTo(PlainFile.AfterWrites("", "+memory", "+pids", "+cpu")));
        Assert.That(Read(_job, "cgroup.subtree_control"), Is.EqualTo("+cpusry"));
    }

    [Test]
    public void EnableControllers_NoLimits_MemoryAndPidsOnly()
    {
        File.WriteAllText(Path.Combine(_job, "cgroup.subtree_control"), "");

        CreateOk(ResourceLimits.None);

        Assert.That(Read(_job, "cgroup.subtree_control"), Is.EqualTo(PlainFile.AfterWrites("", "+memory", "+pids")));
    }

    [Test]
    public void EnableControllers_OnlyWhatIsMissing()
    {
        File.WriteAllText(Path.Combine(_job, "cgroup.subtree_control"), "memory");

        CreateOk(ResourceLimits.None);

        Assert.That(Read(_job, "cgroup.subtree_control"), Is.EqualTo(PlainFile.AfterWrites("memory", "+pids")));
        Assert.That(Read(_job, "cgroup.subtree_control"), Is.EqualTo("+pidsy"));
    }

    [Test]
    public void EnableControllers_OnlyWhatIsAvailable()
    {
        File.WriteAllText(Path.Combine(_job, "cgroup.controllers"), "memory io\n");
        File.WriteAllText(Path.Combine(_job, "cgroup.subtree_control"), "");

        CreateOk(ResourceLimits.None);

        Assert.That(Read(_job, "cgroup.subtree_control"), Is.EqualTo("+memory"));
    }

    [Test]
    public void EnableControllers_FailureOfAnUnrequiredOne_IsIgnored()
    {
        // A directory where cgroup.subtree_control should be: reads give nothing, writes fail (EISDIR).
        string subtree = Path.Combine(_job, "cgroup.subtree_control");
        File.Delete(subtree);
        Directory.CreateDirectory(subtree);

        SandboxCgroup cgroup = CreateOk(ResourceLimits.None);

        Assert.That(cgroup.Paths, Has.Count.EqualTo(1));
    }

    [Test]
    public void EnableControllers_FailureOfARequiredOne_IsCgroupFailed()
    {
        string subtree = Path.Combine(_job, "cgroup.subtree_control");
        File.Delete(subtree);
        Directory.CreateDirectory(subtree);

        var e = Assert.Throws<SandboxException>(() =>
            CgroupManager.Create(new ResourceLimits { MemoryBytes = 1L << 30 }, LimitsPolicy.Required, _host.Host, _warnings.Add));

        Assert.That(e!.Code, Is.EqualTo(SandboxErrorCode.CgroupFailed));
        Assert.That(e.Message, Does.StartWith($"cgroup: cannot enable the memory controller in {_job}: "));
        Assert.That(Directory.GetDirectories(_job), Is.EqualTo(new[] { subtree }), "no sandbox cgroup was made");
    }

    [Test]
    public void ParentAboveABusyLeaf_IsWhereTheCgroupGoes()
    {
        string slice = _host.AddCgroup("/user.slice", controllers: "cpu io memory pids", procs: "", subtreeControl: "cpu io memory pids");
        _host.Delegate(slice);
        File.WriteAllText(Path.Combine(_job, "cgroup.procs"), $"{V2Host.Pid}\n777\n");
        string expected = Path.Combine(slice, CgroupHelpers.NextName(V2Host.Pid));

        SandboxCgroup cgroup = CreateOk(ResourceLimits.None);

        Assert.That(cgroup.Paths, Is.EqualTo(new[] { expected }));
    }

    [Test]
    public void AddProcess_WritesCgroupProcs()
    {
        SandboxCgroup cgroup = CreateOk(ResourceLimits.None);
        string procs = Path.Combine(cgroup.Paths[0], "cgroup.procs");
        File.WriteAllText(procs, "");

        cgroup.AddProcess(31337);

        Assert.That(File.ReadAllText(procs), Is.EqualTo("31337"));
    }

    [Test]
    public void AddProcess_Failure_IsCgroupFailed()
    {
        SandboxCgroup cgroup = CreateOk(ResourceLimits.None);

        var e = Assert.Throws<SandboxException>(() => cgroup.AddProcess(31337));

        Assert.That(e!.Code, Is.EqualTo(SandboxErrorCode.CgroupFailed));
        Assert.That(e.Message, Does.StartWith($"cgroup: writing '31337' to {Path.Combine(cgroup.Paths[0], "cgroup.procs")} failed: "));
    }

    [Test]
    public void Kill_WritesCgroupKill_WhenTheKernelHasIt()
    {
        SandboxCgroup cgroup = CreateOk(ResourceLimits.None);
        string kill = Path.Combine(cgroup.Paths[0], "cgroup.kill");

        cgroup.Kill();
        Assert.That(File.Exists(kill), Is.False, "before Linux 5.14 there is no cgroup.kill: nothing is made");

        File.WriteAllText(kill, "0");
        cgroup.Kill();
        Assert.That(File.ReadAllText(kill), Is.EqualTo("1"));
    }

    [Test]
    public void ReadUsage()
    {
        SandboxCgroup cgroup = CreateOk(ResourceLimits.None);
        string dir = cgroup.Paths[0];
        File.WriteAllText(Path.Combine(dir, "memory.peak"), "104857600\n");
        File.WriteAllText(Path.Combine(dir, "memory.events"), "low 0\nhigh 0\nmax 9\noom 2\noom_kill 2\noom_group_kill 0\n");
        File.WriteAllText(Path.Combine(dir, "pids.events"), "max 5\n");
        File.WriteAllText(Path.Combine(dir, "cpu.stat"), "usage_usec 1500000\nuser_usec 1000000\nsystem_usec 500000\n");

        Assert.That(cgroup.ReadUsage(), Is.EqualTo(new ResourceUsage(104_857_600, 2, 5, TimeSpan.FromSeconds(1.5), "v2")));
    }

    [Test]
    public void ReadUsage_NothingThere()
    {
        SandboxCgroup cgroup = CreateOk(ResourceLimits.None);

        Assert.That(cgroup.ReadUsage(), Is.EqualTo(new ResourceUsage(null, 0, 0, null, "v2")));
    }
}

/// <summary>CgroupManager.Create on a usable fake v1 host (pre-created directories, as an administrator would).</summary>
public class CgroupManagerCreateV1Tests
{
    private V1Host _host = null!;
    private readonly List<SandboxCgroup> _created = [];
    private List<string> _warnings = null!;

    [SetUp]
    public void SetUp()
    {
        _host = new V1Host(withBlkio: true);
        _host.MakeAllWritable();
        _warnings = [];
    }

    [TearDown]
    public void TearDown()
    {
        foreach (SandboxCgroup c in _created)
        {
            // Never leave a cgroup.procs behind: v1 Kill would SIGKILL the pids listed in it.
            foreach (string dir in c.Paths.Where(Directory.Exists))
            {
                foreach (string f in Directory.GetFiles(dir))
                    File.Delete(f);
            }
            c.Dispose();
        }
        _created.Clear();
        _host.Dispose();
    }

    private SandboxCgroup CreateOk(ResourceLimits limits)
    {
        SandboxCgroup? cgroup = CgroupManager.Create(limits, LimitsPolicy.Required, _host.Host, _warnings.Add);
        Assert.That(cgroup, Is.Not.Null);
        _created.Add(cgroup!);
        Assert.That(_warnings, Is.Empty);
        return cgroup!;
    }

    private static void Touch(string dir, params string[] files)
    {
        Directory.CreateDirectory(dir);
        foreach (string f in files)
            File.WriteAllText(Path.Combine(dir, f), "");
    }

    private static string Read(string dir, string file) => File.ReadAllText(Path.Combine(dir, file));

    [Test]
    public void AbandonedSandboxCgroupsAreRemovedFromEveryHierarchy()
    {
        var abandoned = new[] { _host.MemoryCi, _host.PidsCi, _host.CpuCi, _host.BlkioCi }.Select(parent => Path.Combine(parent, "sandbox-77777-1")).ToList();
        foreach (string dir in abandoned)
        {
            Directory.CreateDirectory(dir);
            Directory.SetLastWriteTimeUtc(dir, DateTime.UtcNow - TimeSpan.FromMinutes(5));
        }

        SandboxCgroup cgroup = CreateOk(ResourceLimits.None);

        Assert.That(abandoned.Where(Directory.Exists), Is.Empty);
        Assert.That(cgroup.Paths.All(Directory.Exists), Is.True, "the new run's own directories");
    }

    [Test]
    public void NoLimits_OneDirectoryPerHierarchy()
    {
        string name = CgroupHelpers.NextName(V1Host.Pid);

        SandboxCgroup cgroup = CreateOk(ResourceLimits.None);

        Assert.That(cgroup, Is.InstanceOf<CgroupV1>());
        Assert.That(cgroup.Version, Is.EqualTo("v1"));
        Assert.That(cgroup.Paths, Is.EquivalentTo(new[]
        {
            Path.Combine(_host.MemoryCi, name),
            Path.Combine(_host.PidsCi, name),
            Path.Combine(_host.CpuCi, name), // cpu and cpuacct share it
            Path.Combine(_host.BlkioCi, name),
        }));
        Assert.That(cgroup.Paths.All(Directory.Exists), Is.True);
    }

    [Test]
    public void Dispose_RemovesEveryDirectory()
    {
        SandboxCgroup cgroup = CreateOk(ResourceLimits.None);
        var paths = cgroup.Paths.ToList();

        cgroup.Dispose();

        Assert.That(paths.Where(Directory.Exists), Is.Empty);
    }

    [Test]
    public void Limits_AreWritten()
    {
        string name = CgroupHelpers.NextName(V1Host.Pid);
        string mem = Path.Combine(_host.MemoryCi, name), pids = Path.Combine(_host.PidsCi, name);
        string cpu = Path.Combine(_host.CpuCi, name), blkio = Path.Combine(_host.BlkioCi, name);
        Touch(mem, "memory.limit_in_bytes", "memory.memsw.limit_in_bytes");
        Touch(pids, "pids.max");
        Touch(cpu, "cpu.cfs_period_us", "cpu.cfs_quota_us");
        Touch(blkio, "blkio.throttle.read_bps_device", "blkio.throttle.write_bps_device");
        var limits = new ResourceLimits
        {
            MemoryBytes = 512L << 20,
            PidsLimit = 100,
            Cpus = 0.5,
            DeviceReadBps = [new DeviceRate("/dev/null", 1 << 20)],
            DeviceWriteBps = [new DeviceRate("/dev/zero", 2 << 20)],
        };

        SandboxCgroup cgroup = CreateOk(limits);

        Assert.That(cgroup.Limits, Is.SameAs(limits));
        Assert.That(Read(mem, "memory.limit_in_bytes"), Is.EqualTo("536870912"));
        Assert.That(Read(mem, "memory.memsw.limit_in_bytes"), Is.EqualTo("1073741824"), "v1 memsw is memory + swap: twice the memory by default");
        Assert.That(Read(pids, "pids.max"), Is.EqualTo("101"), "the payload's 100, and one for sandbox-init (PID 1)");
        Assert.That(Read(cpu, "cpu.cfs_period_us"), Is.EqualTo("100000"));
        Assert.That(Read(cpu, "cpu.cfs_quota_us"), Is.EqualTo("50000"));
        Assert.That(Read(blkio, "blkio.throttle.read_bps_device"), Is.EqualTo("1:3 1048576"));
        Assert.That(Read(blkio, "blkio.throttle.write_bps_device"), Is.EqualTo("1:5 2097152"));
    }

    [TestCase(-1L, "-1")]
    [TestCase(3L << 30, "3221225472")]
    public void MemswFromMemorySwap(long memoryAndSwap, string expected)
    {
        string mem = Path.Combine(_host.MemoryCi, CgroupHelpers.NextName(V1Host.Pid));
        Touch(mem, "memory.limit_in_bytes", "memory.memsw.limit_in_bytes");

        CreateOk(new ResourceLimits { MemoryBytes = 1L << 30, MemoryAndSwapBytes = memoryAndSwap });

        Assert.That(Read(mem, "memory.limit_in_bytes"), Is.EqualTo("1073741824"));
        Assert.That(Read(mem, "memory.memsw.limit_in_bytes"), Is.EqualTo(expected));
    }

    [Test]
    public void NoSwapAccounting_MemswIsNotWritten()
    {
        string mem = Path.Combine(_host.MemoryCi, CgroupHelpers.NextName(V1Host.Pid));
        Touch(mem, "memory.limit_in_bytes");

        CreateOk(new ResourceLimits { MemoryBytes = 1L << 30 });

        Assert.That(File.Exists(Path.Combine(mem, "memory.memsw.limit_in_bytes")), Is.False);
    }

    [Test]
    public void LimitFileMissing_IsCgroupFailed_AndEveryDirectoryIsRemoved()
    {
        string name = CgroupHelpers.NextName(V1Host.Pid);

        var e = Assert.Throws<SandboxException>(() =>
            CgroupManager.Create(new ResourceLimits { PidsLimit = 10 }, LimitsPolicy.Required, _host.Host, _warnings.Add));

        Assert.That(e!.Code, Is.EqualTo(SandboxErrorCode.CgroupFailed));
        Assert.That(e.Message, Does.StartWith($"cgroup: writing '11' to {Path.Combine(_host.PidsCi, name, "pids.max")} failed: "));
        Assert.That(Directory.Exists(Path.Combine(_host.MemoryCi, name)), Is.False);
        Assert.That(Directory.Exists(Path.Combine(_host.PidsCi, name)), Is.False);
        Assert.That(Directory.Exists(Path.Combine(_host.CpuCi, name)), Is.False);
        Assert.That(Directory.Exists(Path.Combine(_host.BlkioCi, name)), Is.False);
    }

    [Test]
    public void ReadUsage()
    {
        SandboxCgroup cgroup = CreateOk(ResourceLimits.None);
        string name = Path.GetFileName(cgroup.Paths[0]);
        File.WriteAllText(Path.Combine(_host.MemoryCi, name, "memory.max_usage_in_bytes"), "123456789\n");
        File.WriteAllText(Path.Combine(_host.MemoryCi, name, "memory.oom_control"), "oom_kill_disable 0\nunder_oom 0\noom_kill 1\n");
        File.WriteAllText(Path.Combine(_host.PidsCi, name, "pids.events"), "max 3\n");
        File.WriteAllText(Path.Combine(_host.CpuCi, name, "cpuacct.usage"), "2500000000\n");

        Assert.That(cgroup.ReadUsage(), Is.EqualTo(new ResourceUsage(123_456_789, 1, 3, TimeSpan.FromSeconds(2.5), "v1")));
    }

    [Test]
    public void ReadUsage_NothingThere()
    {
        SandboxCgroup cgroup = CreateOk(ResourceLimits.None);

        Assert.That(cgroup.ReadUsage(), Is.EqualTo(new ResourceUsage(null, 0, 0, null, "v1")));
    }
}
