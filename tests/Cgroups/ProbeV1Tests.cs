using Sandbox.Cgroups;

namespace Sandbox.Tests.Cgroups;

public class ProbeV1Tests
{
    private const string ChownFix =
        "ask an administrator to create a cgroup directory per controller for this user and chown it (e.g. mkdir /sys/fs/cgroup/memory/ci && chown -R USER /sys/fs/cgroup/memory/ci), then start jobs in it; or use a cgroup v2 host";

    [Test]
    public void WritableDirectories_AreTheParents()
    {
        using var host = new V1Host();
        host.MakeAllWritable();

        CgroupProbe probe = CgroupManager.Probe(host.Host, ["memory", "pids", "cpu"]);

        Assert.That(probe.Version, Is.EqualTo("v1"));
        Assert.That(probe.Usable, Is.True);
        Assert.That(probe.V2Parent, Is.Null);
        Assert.That(probe.V2SupervisorLeaf, Is.Null);
        Assert.That(probe.V1Parents, Is.EqualTo(new Dictionary<string, string>
        {
            ["memory"] = Path.Combine(host.Root, "memory", "ci"),
            ["pids"] = Path.Combine(host.Root, "pids", "ci"),
            ["cpu"] = Path.Combine(host.Root, "cpu,cpuacct", "ci"),
            ["cpuacct"] = Path.Combine(host.Root, "cpu,cpuacct", "ci"),
        }));
        Assert.That(probe.Controllers, Is.EqualTo(new[] { "memory", "pids", "cpu", "cpuacct" }));
        // What a mount inside the sandbox names to reuse each hierarchy: its controllers, not its flags (rw).
        Assert.That(probe.V1Hierarchies, Is.EqualTo(new Dictionary<string, string>
        {
            ["memory"] = "memory",
            ["pids"] = "pids",
            ["cpu"] = "cpu,cpuacct",
            ["cpuacct"] = "cpu,cpuacct",
        }));
        Assert.That(probe.Detail, Is.EqualTo(
            $"cgroup v1 directories memory={host.MemoryCi}, pids={host.PidsCi}, cpu={host.CpuCi}, cpuacct={host.CpuCi}"));
        Assert.That(probe.Fix, Is.Null);
    }

    [Test]
    public void Blkio_IsTheV1NameOfIo()
    {
        using var host = new V1Host(withBlkio: true);
        host.MakeAllWritable();

        CgroupProbe probe = CgroupManager.Probe(host.Host, ["io"]);

        Assert.That(probe.Usable, Is.True);
        Assert.That(probe.V1Parents!["blkio"], Is.EqualTo(host.BlkioCi));
        Assert.That(probe.V1Parents.Keys, Is.EquivalentTo(new[] { "memory", "pids", "cpu", "cpuacct", "blkio" }));
    }

    [Test]
    public void IoRequired_NoBlkioHierarchy_IsNotUsable()
    {
        using var host = new V1Host(withBlkio: false);
        host.MakeAllWritable();

        CgroupProbe probe = CgroupManager.Probe(host.Host, ["io"]);

        Assert.That(probe.Usable, Is.False);
        Assert.That(probe.Detail, Is.EqualTo("cgroup v1: no blkio hierarchy is mounted"));
        Assert.That(probe.Fix, Does.Contain("mount -t cgroup -o blkio").And.Not.Contain("chown"));
    }

    [Test]
    public void UnwritableMemory_WhenMemoryIsRequired_SaysChown()
    {
        using var host = new V1Host();
        host.MakeWritable(host.PidsCi, host.CpuCi);

        CgroupProbe probe = CgroupManager.Probe(host.Host, ["memory", "pids"]);

        Assert.That(probe.Version, Is.EqualTo("v1"));
        Assert.That(probe.Usable, Is.False);
        Assert.That(probe.V1Parents, Is.Null);
        Assert.That(probe.Detail, Is.EqualTo($"cgroup v1: no writable cgroup directory for memory ({host.MemoryCi} not writable by this user)"));
        Assert.That(probe.Fix, Is.EqualTo(ChownFix));
        Assert.That(probe.Fix, Does.Contain("chown"));
    }

    [Test]
    public void UnwritableMemory_WhenOnlyPidsIsRequired_IsUsableWithoutMemory()
    {
        using var host = new V1Host();
        host.MakeWritable(host.PidsCi);

        CgroupProbe probe = CgroupManager.Probe(host.Host, ["pids"]);

        Assert.That(probe.Usable, Is.True);
        Assert.That(probe.V1Parents, Is.EqualTo(new Dictionary<string, string> { ["pids"] = host.PidsCi }));
    }

    [Test]
    public void NothingWritable_NothingRequired_IsNotUsable()
    {
        using var host = new V1Host();

        CgroupProbe probe = CgroupManager.Probe(host.Host);

        Assert.That(probe.Usable, Is.False);
        Assert.That(probe.Detail, Is.EqualTo(
            $"cgroup v1: no writable cgroup directory for any controller ({host.MemoryCi}, {host.PidsCi}, {host.CpuCi}, {host.CpuCi} not writable by this user)"));
        Assert.That(probe.Fix, Is.EqualTo(ChownFix));
    }

    [Test]
    public void EscapedMountPoint_IsUnescaped()
    {
        // mountinfo(5) writes a space as \040.
        using var host = new V1Host(memoryMountName: "memory cg");
        host.MakeAllWritable();

        CgroupProbe probe = CgroupManager.Probe(host.Host, ["memory"]);

        Assert.That(probe.Usable, Is.True);
        Assert.That(probe.V1Parents!["memory"], Is.EqualTo(Path.Combine(host.Root, "memory cg", "ci")));
    }

    [Test]
    public void MountOfASubtree_OwnPathIsMadeRelativeToTheMountRoot()
    {
        // A container that sees only /ci of the memory hierarchy, mounted at MemoryMount.
        using var host = new V1Host();
        string job = Directory.CreateDirectory(Path.Combine(host.MemoryMount, "job")).FullName;
        host.WriteMountInfo($"30 25 0:27 /ci {host.MemoryMount} rw,nosuid,nodev,noexec,relatime - cgroup cgroup rw,memory");
        host.WriteProcSelfCgroup("5:memory:/ci/job");
        host.MakeWritable(job);

        CgroupProbe probe = CgroupManager.Probe(host.Host, ["memory"]);

        Assert.That(probe.Usable, Is.True);
        Assert.That(probe.V1Parents, Is.EqualTo(new Dictionary<string, string> { ["memory"] = job }));
    }

    [Test]
    public void OwnPathIsTheHierarchyRoot_IsTheMountPoint()
    {
        using var host = new V1Host();
        host.WriteProcSelfCgroup("4:pids:/");
        host.MakeWritable(host.PidsMount);

        CgroupProbe probe = CgroupManager.Probe(host.Host, ["pids"]);

        Assert.That(probe.Usable, Is.True);
        Assert.That(probe.V1Parents, Is.EqualTo(new Dictionary<string, string> { ["pids"] = host.PidsMount }));
    }

    [Test]
    public void OnlyCgroup2MountedElsewhere()
    {
        using var host = new V1Host();
        host.WriteMountInfo(
            $"25 22 0:22 / {host.Root} ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755",
            $"26 25 0:23 / {host.Root}/unified rw,nosuid,nodev,noexec,relatime shared:10 - cgroup2 cgroup2 rw,nsdelegate");

        CgroupProbe probe = CgroupManager.Probe(host.Host);

        Assert.That(probe.Version, Is.EqualTo("v2"));
        Assert.That(probe.Usable, Is.False);
        Assert.That(probe.Detail, Is.EqualTo("cgroup2 is mounted but not at " + host.Root));
        Assert.That(probe.Fix, Is.EqualTo("mount cgroup2 at /sys/fs/cgroup (systemd does this)"));
    }

    [Test]
    public void NoCgroupMountedAtAll()
    {
        using var host = new V1Host();
        host.WriteMountInfo("22 1 0:21 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw", "garbage line", "");

        CgroupProbe probe = CgroupManager.Probe(host.Host);

        Assert.That(probe.Version, Is.EqualTo("none"));
        Assert.That(probe.Usable, Is.False);
        Assert.That(probe.Detail, Is.EqualTo("no cgroup file system is mounted"));
    }

    [Test]
    public void MissingProcFiles_AreNoCgroup()
    {
        using var host = new V1Host();
        var missing = host.Host with { MountInfo = host.MountInfo + ".absent", ProcSelfCgroup = host.ProcSelfCgroup + ".absent" };

        CgroupProbe probe = CgroupManager.Probe(missing);

        Assert.That(probe.Version, Is.EqualTo("none"));
        Assert.That(probe.Usable, Is.False);
    }
}
