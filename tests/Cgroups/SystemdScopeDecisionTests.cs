using System.Globalization;
using Sandbox.Cgroups;

namespace Sandbox.Tests.Cgroups;

/// <summary>
/// Stands in for systemd at the <see cref="ISystemdUserManager"/> boundary (its D-Bus side is tested
/// against a real dbus-daemon in SystemdUserManagerTests, and against systemd itself in the
/// integration suite). <paramref name="start"/> does what systemd would to the fixture host.
/// </summary>
internal sealed class FakeUserManager(Func<int, SystemdScope> start) : ISystemdUserManager
{
    public List<int> Calls { get; } = [];

    public SystemdScope StartDelegatedScope(int pid, TimeSpan timeout)
    {
        Calls.Add(pid);
        return start(pid);
    }

    public static FakeUserManager Unreachable(params SystemdAttempt[] attempts) =>
        new(_ => throw new SystemdUnavailableException(attempts));
}

/// <summary>
/// CgroupManager's decisions around the systemd user manager: when it is asked for a delegated scope,
/// what happens inside the scope it gives, and what the user is told when none is given.
/// </summary>
public class SystemdScopeDecisionTests
{
    private const string Session = "/user.slice/user-1000.slice/session-2.scope";
    private const string ScopeName = "sandbox-4242-0123abcd.scope";
    private const string Scope = "/user.slice/user-1000.slice/user@1000.service/app.slice/" + ScopeName;

    private V2Host _host = null!;
    private string _session = null!;
    private List<string> _warnings = null!;

    [SetUp]
    public void SetUp()
    {
        _host = new V2Host(Session);
        _host.AddCgroup("/user.slice/user-1000.slice", procs: "");
        _session = _host.AddCgroup(Session, procs: $"{V2Host.Pid}\n77\n"); // root's: not delegated
        _warnings = [];
    }

    [TearDown]
    public void TearDown() => _host.Dispose();

    private static string Pid => V2Host.Pid.ToString(CultureInfo.InvariantCulture);

    /// <summary>What systemd does for StartTransientUnit(PIDs=[pid], Delegate=yes): a user-owned scope holding the process.</summary>
    /// <remarks>Also prepares the next sandbox cgroup's files, so it takes that name from the counter: ask <see cref="Child"/> for it.</remarks>
    private FakeUserManager Systemd(string controllers = "cpu memory pids", bool moveTheProcess = true)
    {
        string child = CgroupHelpers.NextName(V2Host.Pid);
        Child = Path.Combine(_host.Dir(Scope), child);
        return new(pid => StartScope(pid, child, controllers, moveTheProcess));
    }

    /// <summary>Where the next sandbox cgroup will be, inside the scope.</summary>
    private string Child { get; set; } = null!;

    private SystemdScope StartScope(int pid, string childName, string controllers, bool moveTheProcess)
    {
        Assert.That(pid, Is.EqualTo(V2Host.Pid));
        string dir = _host.AddCgroup(Scope, controllers: controllers, procs: $"{pid}\n");
        _host.Delegate(dir);
        // The files a cgroupfs would have (the code opens them without O_CREAT).
        Directory.CreateDirectory(Path.Combine(dir, CgroupManager.SupervisorLeaf));
        File.WriteAllText(Path.Combine(dir, CgroupManager.SupervisorLeaf, "cgroup.procs"), "");
        string child = Directory.CreateDirectory(Path.Combine(dir, childName)).FullName;
        File.WriteAllText(Path.Combine(child, "memory.max"), "");
        File.WriteAllText(Path.Combine(child, "pids.max"), "");
        if (moveTheProcess)
            _host.SetOwn(Scope);
        return new SystemdScope(ScopeName, "the user bus /run/user/1000/bus");
    }

    private static readonly SystemdAttempt[] s_nothingThere =
    [
        new("the user bus /run/user/1000/bus", "no such socket"),
        new("the manager's private socket /run/user/1000/systemd/private", "no such socket"),
    ];

    private string NotDelegated => $"{_session} is not delegated to this user (cgroup.procs and cgroup.subtree_control are not writable)";

    [Test]
    public void ADelegatedCgroupIsUsedAndSystemdIsNotAsked()
    {
        var systemd = Systemd();
        string job = _host.AddCgroup("/user.slice/job", procs: "");
        _host.Delegate(job);
        _host.SetOwn("/user.slice/job");
        File.WriteAllText(Path.Combine(Directory.CreateDirectory(Path.Combine(job, CgroupHelpers.NextName(V2Host.Pid))).FullName, "memory.max"), "");

        using SandboxCgroup? cgroup = CgroupManager.Create(new ResourceLimits { MemoryBytes = 100L << 20 }, LimitsPolicy.Required, _host.Host with { UserManager = systemd }, _warnings.Add);

        Assert.That(cgroup!.Paths[0], Does.StartWith(job + "/sandbox-"));
        Assert.That(systemd.Calls, Is.Empty);
    }

    [Test]
    public void NotDelegated_TheScopeFromTheUserManagerHoldsTheSandboxes()
    {
        var systemd = Systemd();
        string scope = _host.Dir(Scope);
        string expected = Child;

        using SandboxCgroup? cgroup = CgroupManager.Create(new ResourceLimits { MemoryBytes = 100L << 20, PidsLimit = 20 }, LimitsPolicy.Required,
            _host.Host with { UserManager = systemd }, _warnings.Add);

        Assert.That(systemd.Calls, Is.EqualTo(new[] { V2Host.Pid }), "asked once, for this process");
        Assert.That(cgroup!.Paths, Is.EqualTo(new[] { expected }));
        Assert.That(File.ReadAllText(Path.Combine(expected, "memory.max")), Is.EqualTo("104857600"));
        Assert.That(File.ReadAllText(Path.Combine(expected, "pids.max")), Is.EqualTo("21"));
        // The scope is a delegated root holding only us: we step into a leaf before enabling controllers.
        Assert.That(File.ReadAllText(Path.Combine(scope, CgroupManager.SupervisorLeaf, "cgroup.procs")), Is.EqualTo(Pid));
        Assert.That(File.ReadAllText(Path.Combine(scope, "cgroup.subtree_control")), Is.EqualTo(PlainFile.AfterWrites("", "+memory", "+pids")));
        Assert.That(_warnings, Is.Empty);
    }

    [Test]
    public void TheSecondSandboxOfTheProcessReusesTheScope()
    {
        var systemd = Systemd();
        using (CgroupManager.Create(new ResourceLimits { MemoryBytes = 100L << 20 }, LimitsPolicy.Required, _host.Host with { UserManager = systemd }, _warnings.Add))
        {
        }
        // The kernel now shows us in the leaf we moved to.
        _host.SetOwn(Scope + "/" + CgroupManager.SupervisorLeaf);
        File.WriteAllText(Path.Combine(_host.Dir(Scope), "cgroup.procs"), "");
        File.WriteAllText(Path.Combine(Directory.CreateDirectory(Path.Combine(_host.Dir(Scope), CgroupHelpers.NextName(V2Host.Pid))).FullName, "memory.max"), "");

        using SandboxCgroup? second = CgroupManager.Create(new ResourceLimits { MemoryBytes = 100L << 20 }, LimitsPolicy.Required, _host.Host with { UserManager = systemd }, _warnings.Add);

        Assert.That(second!.Paths[0], Does.StartWith(_host.Dir(Scope) + "/sandbox-"));
        Assert.That(systemd.Calls, Has.Count.EqualTo(1));
    }

    [Test]
    public void NoUserManager_Required_SaysWhatWasTriedAndHowToFix()
    {
        var systemd = FakeUserManager.Unreachable(s_nothingThere);

        var e = Assert.Throws<SandboxException>(() =>
            CgroupManager.Create(new ResourceLimits { MemoryBytes = 100L << 20 }, LimitsPolicy.Required, _host.Host with { UserManager = systemd }, _warnings.Add));

        Assert.That(e!.Code, Is.EqualTo(SandboxErrorCode.LimitsUnavailable));
        Assert.That(e.Message, Does.StartWith(
            $"resource limits cannot be enforced here: {NotDelegated}, and no systemd user manager gave a delegated scope " +
            "(the user bus /run/user/1000/bus: no such socket; the manager's private socket /run/user/1000/systemd/private: no such socket). Fix: "));
        Assert.That(e.Message, Does.Contain("sudo loginctl enable-linger $USER")
            .And.Contain("`systemd-run --user --scope -p Delegate=yes -- sandbox run ...`")
            .And.Contain("--limits=best-effort"));
        Assert.That(systemd.Calls, Has.Count.EqualTo(1));
    }

    [Test]
    public void NoUserManager_BestEffort_WarnsAndRunsWithoutLimits()
    {
        var systemd = FakeUserManager.Unreachable(s_nothingThere);

        SandboxCgroup? cgroup = CgroupManager.Create(new ResourceLimits { PidsLimit = 20 }, LimitsPolicy.BestEffort, _host.Host with { UserManager = systemd }, _warnings.Add);

        Assert.That(cgroup, Is.Null);
        Assert.That(_warnings, Has.Count.EqualTo(1));
        Assert.That(_warnings[0], Does.StartWith($"warning: resource limits cannot be enforced here: {NotDelegated}, and no systemd user manager gave a delegated scope ("));
        Assert.That(_warnings[0], Does.EndWith("; running WITHOUT limits (--limits=best-effort)"));
    }

    [Test]
    public void UsageOnly_AsksForAScope_AndWithoutOneFallsBackSilently()
    {
        // --stats needs a cgroup for peak memory: worth a scope, not worth a warning.
        var systemd = FakeUserManager.Unreachable(s_nothingThere);

        SandboxCgroup? cgroup = CgroupManager.Create(ResourceLimits.None, LimitsPolicy.Required, _host.Host with { UserManager = systemd }, _warnings.Add);

        Assert.That(cgroup, Is.Null);
        Assert.That(_warnings, Is.Empty);
        Assert.That(systemd.Calls, Has.Count.EqualTo(1));
    }

    [Test]
    public void TheScopeStartedButThisProcessIsNotInIt()
    {
        var systemd = Systemd(moveTheProcess: false);
        TimeSpan saved = CgroupManager.ScopeAppearTimeout;
        CgroupManager.ScopeAppearTimeout = TimeSpan.FromMilliseconds(50);
        try
        {
            var e = Assert.Throws<SandboxException>(() =>
                CgroupManager.Create(new ResourceLimits { MemoryBytes = 100L << 20 }, LimitsPolicy.Required, _host.Host with { UserManager = systemd }, _warnings.Add));

            Assert.That(e!.Message, Does.StartWith(
                $"resource limits cannot be enforced here: {NotDelegated}; the systemd user manager (via the user bus /run/user/1000/bus) started {ScopeName}, but this process is not in it (its cgroup is {Session}). Fix: "));
        }
        finally
        {
            CgroupManager.ScopeAppearTimeout = saved;
        }
    }

    [Test]
    public void TheScopeLacksAController_TheScopeIsNamedInTheError()
    {
        var systemd = Systemd(controllers: "memory pids");

        var e = Assert.Throws<SandboxException>(() =>
            CgroupManager.Create(new ResourceLimits { Cpus = 1 }, LimitsPolicy.Required, _host.Host with { UserManager = systemd }, _warnings.Add));

        Assert.That(e!.Message, Does.StartWith(
            $"resource limits cannot be enforced here: not delegated here, but the systemd user manager (via the user bus /run/user/1000/bus) delegated a transient scope: the delegated cgroup {_host.Dir(Scope)} lacks the cpu controller(s) (it has: memory pids). Fix: "));
    }

    [Test]
    public void ADelegatedCgroupHoldingOtherProcesses_SystemdIsNotAsked()
    {
        // The job's administrator put it there (a CI service with Delegate=yes): not ours to move it out.
        _host.Delegate(_session);
        var systemd = Systemd();

        var e = Assert.Throws<SandboxException>(() =>
            CgroupManager.Create(new ResourceLimits { MemoryBytes = 100L << 20 }, LimitsPolicy.Required, _host.Host with { UserManager = systemd }, _warnings.Add));

        Assert.That(e!.Message, Does.Contain("holds other processes"));
        Assert.That(systemd.Calls, Is.Empty);
    }

    [Test]
    public void ProbeOrDelegate_SaysWhereTheCgroupCameFrom()
    {
        var systemd = Systemd();

        CgroupProbe probe = CgroupManager.ProbeOrDelegate(_host.Host with { UserManager = systemd }, ["memory", "pids"]);

        Assert.That(probe.Usable, Is.True);
        Assert.That(probe.SystemdScope, Is.EqualTo(ScopeName));
        Assert.That(probe.V2Parent, Is.EqualTo(_host.Dir(Scope)));
        Assert.That(probe.V2SupervisorLeaf, Is.EqualTo(Path.Combine(_host.Dir(Scope), CgroupManager.SupervisorLeaf)), "the scope holds this process: it steps into a leaf first");
        Assert.That(probe.Detail, Is.EqualTo(
            $"not delegated here, but the systemd user manager (via the user bus /run/user/1000/bus) delegated a transient scope: delegated cgroup {_host.Dir(Scope)} (controllers: cpu memory pids)"));
    }

    [Test]
    public void ProbeAlone_NeverAsksSystemd()
    {
        var systemd = Systemd();

        CgroupProbe probe = CgroupManager.Probe(_host.Host with { UserManager = systemd }, ["memory"]);

        Assert.That(probe.Usable, Is.False);
        Assert.That(probe.NotDelegated, Is.True);
        Assert.That(systemd.Calls, Is.Empty);
    }

    [Test]
    public void CgroupV1_SystemdIsNotAsked()
    {
        using var v1 = new V1Host();
        var systemd = FakeUserManager.Unreachable(s_nothingThere);

        CgroupProbe probe = CgroupManager.ProbeOrDelegate(v1.Host with { UserManager = systemd }, ["memory"]);

        Assert.That(probe.Usable, Is.False);
        Assert.That(systemd.Calls, Is.Empty);
    }
}
