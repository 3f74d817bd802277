using Sandbox.Cgroups;

namespace Sandbox.Tests.Cgroups;

/// <summary>Where the user-namespace holder, which outlives the CLI that starts it, may live.</summary>
public class PlaceLongLivedProcessTests : V2HostTests
{
    private const int Holder = 777;
    [Test]
    public void ACgroupThatIsNotOursKeepsIt()
    {
        string session = _host.AddCgroup("/user.slice/session-3.scope", procs: $"{V2Host.Pid}\n");
        _host.SetOwn("/user.slice/session-3.scope");

        Assert.That(CgroupManager.PlaceLongLivedProcess(Holder, _host.Host), Is.True);
        Assert.That(File.ReadAllText(Path.Combine(session, "cgroup.procs")), Is.EqualTo($"{V2Host.Pid}\n"), "nothing written");
        Assert.That(Directory.Exists(Path.Combine(session, CgroupManager.SupervisorLeaf)), Is.False);
    }

    [Test]
    public void InADelegatedCgroupItGoesToTheSupervisorLeaf()
    {
        string job = _host.AddCgroup("/user.slice/job", procs: $"{V2Host.Pid}\n");
        string leaf = _host.AddCgroup("/user.slice/job/" + CgroupManager.SupervisorLeaf, procs: "");
        _host.Delegate(job);

        Assert.That(CgroupManager.PlaceLongLivedProcess(Holder, _host.Host), Is.True);
        Assert.That(File.ReadAllText(Path.Combine(leaf, "cgroup.procs")), Is.EqualTo($"{Holder}"));
    }

    [Test]
    public void FromTheSupervisorLeafItGoesToThatLeaf()
    {
        string job = _host.AddCgroup("/user.slice/job", procs: "");
        string leaf = _host.AddCgroup("/user.slice/job/" + CgroupManager.SupervisorLeaf, procs: $"{V2Host.Pid}\n");
        _host.Delegate(job);
        _host.SetOwn("/user.slice/job/" + CgroupManager.SupervisorLeaf);

        Assert.That(CgroupManager.PlaceLongLivedProcess(Holder, _host.Host), Is.True);
        Assert.That(File.ReadAllText(Path.Combine(leaf, "cgroup.procs")), Is.EqualTo(PlainFile.AfterWrites($"{V2Host.Pid}\n", $"{Holder}")));
    }

    [Test]
    public void ATransientScopeMadeForACliIsNoPlace()
    {
        string scope = _host.AddCgroup("/user.slice/user@1000.service/app.slice/sandbox-41-0a1b2c3d.scope", procs: "");
        _host.AddCgroup("/user.slice/user@1000.service/app.slice/sandbox-41-0a1b2c3d.scope/" + CgroupManager.SupervisorLeaf, procs: $"{V2Host.Pid}\n");
        _host.Delegate(scope);
        _host.SetOwn("/user.slice/user@1000.service/app.slice/sandbox-41-0a1b2c3d.scope/" + CgroupManager.SupervisorLeaf);

        Assert.That(CgroupManager.PlaceLongLivedProcess(Holder, _host.Host), Is.False, "the scope would outlive its run");
    }

    [Test]
    public void CgroupV1KeepsIt()
    {
        using var v1 = new V1Host();
        Assert.That(CgroupManager.PlaceLongLivedProcess(Holder, v1.Host), Is.True);
    }
}
