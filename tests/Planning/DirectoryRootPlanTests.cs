using Sandbox.Rootfs;
using Sandbox.Runtime;
using Sandbox.Tests.TestSupport;

namespace Sandbox.Tests.Planning;

public class DirectoryRootPlanTests
{
    private FakeHost _host = null!;
    private string _rootfs = null!;

    private static readonly SetMountAttributesStep s_readOnlyRoot =
        new("/newroot", MountAttributes.ReadOnly | MountAttributes.NoSuid, MountAttributes.None, Recursive: true);

    [SetUp]
    public void SetUp()
    {
        _host = new FakeHost();
        _rootfs = _host.Dir.CreateDirectory("rootfs");
        _host.Dir.CreateDirectory("rootfs", "bin");
    }

    [TearDown]
    public void TearDown() => _host.Dispose();

    private RuntimePlan Plan(Func<SandboxSpec, SandboxSpec>? change = null)
    {
        var spec = new SandboxSpec(["/bin/sh", "-c", "echo hi"]) { Root = RootSpec.Directory(_rootfs) };
        return SandboxPlanner.Plan(change is null ? spec : change(spec), _host.Context);
    }

    [Test]
    public void RootDirectory_IsBoundFromTheOldRoot()
    {
        var steps = Plan().Steps.Unconfined();
        int pivot = steps.IndexOf(new PivotRootStep("/tmp", "oldroot") { PreparedBySpare = true });
        Assert.That(pivot, Is.GreaterThan(0));
        Assert.That(steps[pivot + 1], Is.EqualTo(new MountStep("/oldroot" + _rootfs, "/newroot", null, MountFlags.Bind | MountFlags.Recursive)));
        Assert.That(steps.OfType<MountStep>().Count(m => m.Target == "/newroot"), Is.EqualTo(1));
    }

    [Test]
    public void MountPoints_AreCreatedBeforeTheRootBecomesReadOnly()
    {
        var steps = Plan().Steps.Unconfined();
        int readOnly = steps.IndexOf(s_readOnlyRoot);
        int rootBind = steps.IndexOf(new MountStep("/oldroot" + _rootfs, "/newroot", null, MountFlags.Bind | MountFlags.Recursive));
        Assert.That(readOnly, Is.GreaterThan(rootBind));

        var between = steps.Skip(rootBind + 1).Take(readOnly - rootBind - 1).ToList();
        Assert.That(between, Is.EqualTo(new SetupStep[]
        {
            new MakeDirectoryStep("/newroot/proc"),
            new MakeDirectoryStep("/newroot/dev"),
            new MakeDirectoryStep("/newroot/tmp"),
            new MakeDirectoryStep("/newroot/root"),
        }));
    }

    [Test]
    public void BindAndTmpfsMountPoints_AreCreatedBeforeTheRootBecomesReadOnly()
    {
        string source = _host.Dir.CreateDirectory("src");
        string file = _host.Dir.CreateFile("settings.ini");
        var steps = Plan(s => s with
        {
            Binds = [new BindMount(source, "/work/src"), new BindMount(file, "/etc/app/settings.ini", ReadOnly: true)],
            TmpfsMounts = ["/var/cache"],
        }).Steps.Unconfined();
        int readOnly = steps.IndexOf(s_readOnlyRoot);

        foreach (SetupStep mountPoint in new SetupStep[]
        {
            new MakeDirectoryStep("/newroot/var"),
            new MakeDirectoryStep("/newroot/var/cache"),
            new MakeDirectoryStep("/newroot/work"),
            new MakeDirectoryStep("/newroot/work/src"),
            new MakeDirectoryStep("/newroot/etc"),
            new MakeDirectoryStep("/newroot/etc/app"),
            new CreateFileStep("/newroot/etc/app/settings.ini"),
        })
        {
            int i = steps.IndexOf(mountPoint);
            Assert.That(i, Is.InRange(0, readOnly - 1), mountPoint.ToString());
            Assert.That(steps.Skip(readOnly).Contains(mountPoint), Is.False, $"{mountPoint} repeated after the root is read-only");
        }

        int srcBind = steps.IndexOf(new MountStep("/oldroot" + source, "/newroot/work/src", null, MountFlags.Bind | MountFlags.Recursive));
        int fileBind = steps.IndexOf(new MountStep("/oldroot" + file, "/newroot/etc/app/settings.ini", null, MountFlags.Bind | MountFlags.Recursive));
        Assert.That(srcBind, Is.GreaterThan(readOnly));
        Assert.That(fileBind, Is.GreaterThan(readOnly));
        Assert.That(steps[fileBind + 1], Is.EqualTo(new SetMountAttributesStep("/newroot/etc/app/settings.ini", MountAttributes.ReadOnly, MountAttributes.None, true)));
        Assert.That(steps, Does.Contain(new MountStep("tmpfs", "/newroot/var/cache", "tmpfs", MountFlags.NoSuid | MountFlags.NoDev, "mode=1777")));
    }

    [Test]
    public void MissingRootDirectory_ThrowsInvalidSpec()
    {
        string missing = _host.Dir.Combine("no-rootfs");
        var e = Assert.Throws<SandboxException>(() => SandboxPlanner.Plan(new SandboxSpec(["true"]) { Root = RootSpec.Directory(missing) }, _host.Context));
        Assert.That(e!.Code, Is.EqualTo(SandboxErrorCode.InvalidSpec));
        Assert.That(e.Message, Does.Contain(missing));
    }

    [Test]
    public void RootThatIsAFile_ThrowsInvalidSpec()
    {
        string file = _host.Dir.CreateFile("rootfs.tar");
        var e = Assert.Throws<SandboxException>(() => SandboxPlanner.Plan(new SandboxSpec(["true"]) { Root = RootSpec.Directory(file) }, _host.Context));
        Assert.That(e!.Code, Is.EqualTo(SandboxErrorCode.InvalidSpec));
        Assert.That(e.Message, Does.Contain("not a directory"));
    }

    [Test]
    public void RootThroughSymlink_IsResolved()
    {
        string link = _host.Dir.Combine("rootfs-link");
        Directory.CreateSymbolicLink(link, _rootfs);
        var steps = SandboxPlanner.Plan(new SandboxSpec(["true"]) { Root = RootSpec.Directory(link) }, _host.Context).Steps.Unconfined();
        Assert.That(steps.OfType<MountStep>().Single(m => m.Target == "/newroot"), Is.EqualTo(new MountStep("/oldroot" + _rootfs, "/newroot", null, MountFlags.Bind | MountFlags.Recursive)));
    }

    [Test]
    public void Environment_UsesTheDefaultPathAndRootHome()
    {
        var plan = Plan();
        Assert.That(plan.Process.Environment, Is.EqualTo(new[]
        {
            "PATH=" + RootfsPlanner.DefaultPath,
            "HOME=/root",
            "TERM=" + FakeHost.Term,
        }));
        Assert.That(plan.Process.SearchPath, Is.EqualTo(RootfsPlanner.DefaultPath));
    }

    [Test]
    public void Home_IsATmpfsOnRoot()
    {
        var steps = Plan().Steps.Unconfined();
        Assert.That(steps, Does.Contain(new MountStep("tmpfs", "/newroot/root", "tmpfs", MountFlags.NoSuid | MountFlags.NoDev, "mode=0755")));
        Assert.That(steps.OfType<MountStep>().Select(m => m.Target), Does.Not.Contain("/newroot" + _host.Home));
    }

    [Test]
    public void LastStep_IsStillThePivotIntoNewRoot()
    {
        Assert.That(Plan().Steps[^1], Is.EqualTo(new PivotRootStep("/newroot", null)));
    }
}
