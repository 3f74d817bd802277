using Sandbox.Cgroups;

namespace Sandbox.Tests.Cgroups;

public class ProbeV2Tests : V2HostTests
{
    private const string NotDelegatedFix =
        "run the job in a delegated cgroup: under systemd, `systemd-run --user --scope -p Delegate=yes -- sandbox run ...`; on a CI runner, give the runner's service Delegate=yes; or pass --limits=best-effort to run without limits";

    [Test]
    public void DelegatedEmptyOwnCgroup_IsTheParent()
    {
        _host.AddCgroup("/user.slice", procs: "");
        string job = _host.AddCgroup("/user.slice/job", controllers: "cpu io memory pids", procs: "");
        _host.Delegate(job);

        CgroupProbe probe = CgroupManager.Probe(_host.Host, ["memory", "pids"]);

        Assert.That(probe.Version, Is.EqualTo("v2"));
        Assert.That(probe.Usable, Is.True);
        Assert.That(probe.V2Parent, Is.EqualTo(job));
        Assert.That(probe.V2SupervisorLeaf, Is.Null);
        Assert.That(probe.V1Parents, Is.Null);
        Assert.That(probe.Controllers, Is.EquivalentTo(new[] { "cpu", "io", "memory", "pids" }));
        Assert.That(probe.Detail, Is.EqualTo($"delegated cgroup {job} (controllers: cpu io memory pids)"));
        Assert.That(probe.Fix, Is.Null);
    }

    [Test]
    public void OnlyThisProcessInOwnCgroup_NeedsASupervisorLeaf()
    {
        string job = _host.AddCgroup("/user.slice/job", procs: $"{V2Host.Pid}\n");
        _host.Delegate(job);

        CgroupProbe probe = CgroupManager.Probe(_host.Host);

        Assert.That(probe.Usable, Is.True);
        Assert.That(probe.V2Parent, Is.EqualTo(job));
        Assert.That(probe.V2SupervisorLeaf, Is.EqualTo(Path.Combine(job, "sandbox.supervisor")));
        Assert.That(CgroupManager.SupervisorLeaf, Is.EqualTo("sandbox.supervisor"));
    }

    [Test]
    public void OtherProcessesInOwnCgroup_DelegatedEmptyParentIsUsed()
    {
        // CG2_LEAF: the job was started in a leaf that also holds other processes (the runner's
        // shell); its parent is delegated too and holds none, so the sandboxes go there.
        string slice = _host.AddCgroup("/user.slice", controllers: "cpu memory pids", procs: "");
        string job = _host.AddCgroup("/user.slice/job", procs: $"{V2Host.Pid}\n777\n");
        _host.Delegate(slice);
        _host.Delegate(job);

        CgroupProbe probe = CgroupManager.Probe(_host.Host, ["memory"]);

        Assert.That(probe.Usable, Is.True);
        Assert.That(probe.V2Parent, Is.EqualTo(slice));
        Assert.That(probe.V2SupervisorLeaf, Is.Null);
        Assert.That(probe.Detail, Is.EqualTo($"delegated cgroup {slice} (controllers: cpu memory pids)"));
    }

    [Test]
    public void OtherProcessesInOwnCgroup_ParentNotDelegated_SaysWhy()
    {
        _host.AddCgroup("/user.slice", procs: "");
        string job = _host.AddCgroup("/user.slice/job", procs: "777\n4242\n778\n779\n780\n781\n");
        _host.Delegate(job);

        CgroupProbe probe = CgroupManager.Probe(_host.Host, ["memory"]);

        Assert.That(probe.Usable, Is.False);
        Assert.That(probe.V2Parent, Is.Null);
        Assert.That(probe.Detail, Is.EqualTo(
            $"the delegated cgroup {job} holds other processes (777 4242 778 779 780), so it cannot enable controllers (no internal processes rule); start the job in a leaf cgroup below it"));
        Assert.That(probe.Fix, Is.EqualTo(NotDelegatedFix));
    }

    [Test]
    public void NotWritable_IsNotDelegated()
    {
        string job = _host.AddCgroup("/user.slice/job", procs: "");

        CgroupProbe probe = CgroupManager.Probe(_host.Host, ["memory"]);

        Assert.That(probe.Version, Is.EqualTo("v2"));
        Assert.That(probe.Usable, Is.False);
        Assert.That(probe.Detail, Is.EqualTo($"{job} is not delegated to this user (cgroup.procs and cgroup.subtree_control are not writable)"));
        Assert.That(probe.Detail, Does.Contain("not delegated"));
        Assert.That(probe.Fix, Does.Contain("systemd-run --user --scope -p Delegate=yes"));
        Assert.That(probe.V2Parent, Is.Null);
        Assert.That(_host.Asked, Is.EqualTo(new[] { job }), "the probe stops at the first unwritable directory");
    }

    [TestCase("dir")]
    [TestCase("cgroup.procs")]
    [TestCase("cgroup.subtree_control")]
    public void OnlyPartlyWritable_IsNotDelegated(string notWritable)
    {
        string job = _host.AddCgroup("/user.slice/job", procs: "");
        string left = notWritable == "dir" ? job : Path.Combine(job, notWritable);
        foreach (string p in new[] { job, Path.Combine(job, "cgroup.procs"), Path.Combine(job, "cgroup.subtree_control") })
        {
            if (p != left)
                _host.MakeWritable(p);
        }

        CgroupProbe probe = CgroupManager.Probe(_host.Host);

        Assert.That(probe.Usable, Is.False);
        Assert.That(probe.Detail, Does.StartWith($"{job} is not delegated to this user"));
    }

    [Test]
    public void RequiredControllerMissing_NamesIt()
    {
        string job = _host.AddCgroup("/user.slice/job", controllers: "cpu pids", procs: "");
        _host.Delegate(job);

        CgroupProbe probe = CgroupManager.Probe(_host.Host, ["memory", "pids", "io"]);

        Assert.That(probe.Usable, Is.False);
        Assert.That(probe.V2Parent, Is.Null);
        Assert.That(probe.Detail, Is.EqualTo($"the delegated cgroup {job} lacks the memory, io controller(s) (it has: cpu pids)"));
        Assert.That(probe.Fix, Is.EqualTo("enable them in the parent's cgroup.subtree_control (systemd: Delegate=memory pids cpu io)"));
    }

    [Test]
    public void ControllersNotRequired_AreNotChecked()
    {
        string job = _host.AddCgroup("/user.slice/job", controllers: "", procs: "");
        _host.Delegate(job);

        CgroupProbe probe = CgroupManager.Probe(_host.Host);

        Assert.That(probe.Usable, Is.True);
        Assert.That(probe.V2Parent, Is.EqualTo(job));
        Assert.That(probe.Controllers, Is.Empty);
    }

    [Test]
    public void TrailingSlashesInRootAndOwnPath_AreIgnored()
    {
        string job = _host.AddCgroup("/user.slice/job", procs: "");
        _host.Delegate(job);
        _host.SetOwn("/user.slice/job/");
        var host = _host.Host with { CgroupRoot = _host.Root + "/" };

        CgroupProbe probe = CgroupManager.Probe(host);

        Assert.That(probe.Usable, Is.True);
        Assert.That(probe.V2Parent, Is.EqualTo(job));
    }

    [Test]
    public void NoV2LineInProcSelfCgroup()
    {
        File.WriteAllText(_host.ProcSelfCgroup, "12:memory:/ci\n");

        CgroupProbe probe = CgroupManager.Probe(_host.Host);

        Assert.That(probe.Version, Is.EqualTo("v2"));
        Assert.That(probe.Usable, Is.False);
        Assert.That(probe.Detail, Is.EqualTo("this process has no cgroup v2 path in " + _host.ProcSelfCgroup));
        Assert.That(probe.Fix, Is.EqualTo(NotDelegatedFix));
    }

    [Test]
    public void OwnCgroupIsTheRoot_IsNeverUsed()
    {
        _host.SetOwn("/");
        _host.Delegate(_host.Root);

        CgroupProbe probe = CgroupManager.Probe(_host.Host);

        Assert.That(probe.Usable, Is.False);
        Assert.That(probe.Detail, Is.EqualTo($"{_host.Root} is not delegated to this user (cgroup.procs and cgroup.subtree_control are not writable)"));
        Assert.That(_host.Asked, Is.Empty);
    }

    [Test]
    public void ClimbingStopsAtTheRoot()
    {
        // Every level holds other processes and is "writable": the probe must not go above the root.
        _host.Delegate(_host.Root);
        string a = _host.AddCgroup("/a", procs: "5\n");
        string b = _host.AddCgroup("/a/b", procs: "6\n");
        _host.Delegate(a);
        _host.Delegate(b);
        _host.SetOwn("/a/b");

        CgroupProbe probe = CgroupManager.Probe(_host.Host);

        Assert.That(probe.Usable, Is.False);
        Assert.That(probe.Detail, Does.StartWith($"the delegated cgroup {a} holds other processes (5)"));
        Assert.That(_host.Asked, Does.Not.Contain(_host.Root));
    }
}
