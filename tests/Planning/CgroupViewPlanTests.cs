using System.Collections.Immutable;
using Sandbox.Cgroups;
using Sandbox.Images;
using Sandbox.Runtime;
using Sandbox.Tests.TestSupport;

namespace Sandbox.Tests.Planning;

/// <summary>
/// The sandbox's own cgroup at /sys/fs/cgroup, read-only, mounted after the cgroup namespace was
/// made (so rooted at the sandbox's cgroup); nothing of it when the sandbox has no cgroup.
/// </summary>
public class CgroupViewPlanTests
{
    private const MountFlags CgroupFlags = MountFlags.ReadOnly | MountFlags.NoSuid | MountFlags.NoDev | MountFlags.NoExec;
    private FakeHost _host = null!;
    private ImageRecord _image = null!;

    [SetUp]
    public void SetUp()
    {
        _host = new FakeHost();
        _image = new ImageRecord
        {
            Digest = "sha256:" + new string('1', 64),
            ConfigDigest = "sha256:" + new string('2', 64),
            Layers = [new LayerInfo { DiffId = "sha256:a", Directory = _host.Dir.CreateDirectory("store", "l", "aaaa") }],
        };
    }

    [TearDown]
    public void TearDown() => _host.Dispose();

    private ImmutableArray<SetupStep> Plan(RootSpec? root, CgroupView? view) =>
        SandboxPlanner.Plan(new SandboxSpec(["/bin/true"]) { Root = root ?? RootSpec.Host }, _host.Context, cgroupView: view).Steps.Unconfined();

    private static bool IsCgroupMount(SetupStep s) => s is MountStep { FileSystemType: "cgroup" or "cgroup2" };

    [Test]
    public void WithoutACgroupNothingIsMountedAtSysFsCgroup()
    {
        foreach (RootSpec? root in new RootSpec?[] { null, new ImageRoot(_image) })
        {
            var steps = Plan(root, null);
            Assert.That(steps.Where(IsCgroupMount), Is.Empty);
            Assert.That(steps.OfType<MountStep>().Where(m => m.Target.StartsWith("/newroot/sys", StringComparison.Ordinal)), Is.Empty);
        }
    }

    [Test]
    public void HostModeOnCgroupV2MountsCgroup2ReadOnlyOverTheHostsAfterTheNamespaceIsMade()
    {
        var steps = Plan(null, CgroupView.V2);
        var mount = new MountStep("cgroup2", "/newroot/sys/fs/cgroup", "cgroup2", CgroupFlags);
        Assert.That(steps, Does.Contain(mount));
        Assert.That(steps.IndexOf(new UnshareCgroupNamespaceStep()), Is.LessThan(steps.IndexOf(mount)));
        // The host's sysfs is there already, but not the host's cgroup2 itself: the kernel refuses a
        // second mount of one superblock on its own mount point (EBUSY), so a read-only tmpfs goes between.
        var tmpfs = new MountStep("tmpfs", "/newroot/sys/fs/cgroup", "tmpfs", CgroupFlags, "mode=0755");
        Assert.That(steps.IndexOf(tmpfs), Is.GreaterThanOrEqualTo(0).And.LessThan(steps.IndexOf(mount)));
        Assert.That(steps.OfType<MountStep>().Where(m => m.FileSystemType == "tmpfs" && m.Target.StartsWith("/newroot/sys", StringComparison.Ordinal)).Count(), Is.EqualTo(1));
        Assert.That(steps.OfType<SetMountAttributesStep>().Where(m => m.Target.StartsWith("/newroot/sys", StringComparison.Ordinal)), Is.Empty);
        // Mounted before the pivot into the new root, and after the root was made read-only (which it must not undo).
        Assert.That(steps.IndexOf(mount), Is.LessThan(steps.IndexOf(new PivotRootStep("/newroot", null))));
        int readOnlyRoot = steps.ToList().FindIndex(s => s is SetMountAttributesStep { Target: "/newroot", Recursive: true });
        Assert.That(readOnlyRoot, Is.LessThan(steps.IndexOf(mount)));
    }

    [Test]
    public void AnImageRootGetsATmpfsAtSysThatHoldsTheCgroupMountAndIsThenReadOnly()
    {
        var steps = Plan(new ImageRoot(_image), CgroupView.V2);
        int tmpfs = steps.IndexOf(new MountStep("tmpfs", "/newroot/sys", "tmpfs", MountFlags.NoSuid | MountFlags.NoDev | MountFlags.NoExec, "mode=0755"));
        int fs = steps.IndexOf(new MakeDirectoryStep("/newroot/sys/fs"));
        int dir = steps.IndexOf(new MakeDirectoryStep("/newroot/sys/fs/cgroup"));
        int mount = steps.IndexOf(new MountStep("cgroup2", "/newroot/sys/fs/cgroup", "cgroup2", CgroupFlags));
        int readOnly = steps.IndexOf(new SetMountAttributesStep("/newroot/sys", MountAttributes.ReadOnly, MountAttributes.None, Recursive: false));
        Assert.That(new[] { tmpfs, fs, dir, mount, readOnly }, Is.All.GreaterThanOrEqualTo(0));
        Assert.That(new[] { tmpfs, fs, dir, mount, readOnly }, Is.Ordered.Ascending);
        // The mount point /sys itself is made in the image's root if it lacks one, before that is read-only.
        Assert.That(steps.IndexOf(new MakeDirectoryStep("/newroot/sys")), Is.GreaterThanOrEqualTo(0).And.LessThan(tmpfs));
    }

    [Test]
    public void CgroupV1MountsEachHierarchyWithExactlyItsControllersOnATmpfs()
    {
        var view = CgroupView.V1(["memory", "pids", "cpu,cpuacct", "cpu,cpuacct"]);
        Assert.That(view.V1Hierarchies, Is.EqualTo(new[] { "cpu,cpuacct", "memory", "pids" }));
        var steps = Plan(null, view);
        int tmpfs = steps.IndexOf(new MountStep("tmpfs", "/newroot/sys/fs/cgroup", "tmpfs", MountFlags.NoSuid | MountFlags.NoDev | MountFlags.NoExec, "mode=0755"));
        Assert.That(tmpfs, Is.GreaterThanOrEqualTo(0), "host mode on v1: a tmpfs over the host's /sys/fs/cgroup");
        foreach (string hierarchy in view.V1Hierarchies)
        {
            int dir = steps.IndexOf(new MakeDirectoryStep("/newroot/sys/fs/cgroup/" + hierarchy));
            int mount = steps.IndexOf(new MountStep("cgroup", "/newroot/sys/fs/cgroup/" + hierarchy, "cgroup", CgroupFlags, hierarchy));
            Assert.That(new[] { tmpfs, dir, mount }, Is.Ordered.Ascending.And.All.GreaterThanOrEqualTo(0), hierarchy);
        }
        Assert.That(steps.Where(IsCgroupMount).Count(), Is.EqualTo(3));
        Assert.That(steps.Last(s => s is SetMountAttributesStep { Target: "/newroot/sys/fs/cgroup" }),
            Is.EqualTo(new SetMountAttributesStep("/newroot/sys/fs/cgroup", MountAttributes.ReadOnly, MountAttributes.None, Recursive: false)));
    }
}
