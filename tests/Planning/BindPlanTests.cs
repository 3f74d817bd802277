using Sandbox.Runtime;
using Sandbox.Tests.TestSupport;

namespace Sandbox.Tests.Planning;

public class BindPlanTests
{
    private FakeHost _host = null!;

    [SetUp]
    public void SetUp() => _host = new FakeHost();

    [TearDown]
    public void TearDown() => _host.Dispose();

    private static readonly SetMountAttributesStep s_readOnlyRoot =
        new("/newroot", MountAttributes.ReadOnly | MountAttributes.NoSuid, MountAttributes.None, Recursive: true);

    private SandboxSpec SpecWith(params BindMount[] binds) => new SandboxSpec(["true"]) { Binds = [.. binds] };

    [Test]
    public void DirectoryBind_CreatesTargetAncestryAfterTmpAndBindsFromOldRoot()
    {
        string source = _host.Dir.CreateDirectory("workspace");
        var steps = SandboxPlanner.Plan(SpecWith(new BindMount(source, "/tmp/ws/src")), _host.Context).Steps.Unconfined();

        int tmp = steps.IndexOf(new MountStep("tmpfs", "/newroot/tmp", "tmpfs", MountFlags.NoSuid | MountFlags.NoDev, "mode=1777"));
        int bind = steps.IndexOf(new MountStep("/oldroot" + source, "/newroot/tmp/ws/src", null, MountFlags.Bind | MountFlags.Recursive));

        Assert.That(tmp, Is.GreaterThanOrEqualTo(0));
        Assert.That(bind, Is.GreaterThan(tmp + 3));
        Assert.That(steps.Skip(bind - 3).Take(3), Is.EqualTo(new[]
        {
            new MakeDirectoryStep("/newroot/tmp"),
            new MakeDirectoryStep("/newroot/tmp/ws"),
            new MakeDirectoryStep("/newroot/tmp/ws/src"),
        }));
        Assert.That(steps.OfType<SetMountAttributesStep>().Where(a => a.Target == "/newroot/tmp/ws/src"), Is.Empty, "read-write by default");
    }

    [Test]
    public void ReadOnlyBind_IsFollowedByReadOnlyAttribute()
    {
        string source = _host.Dir.CreateDirectory("workspace");
        var steps = SandboxPlanner.Plan(SpecWith(new BindMount(source, "/tmp/ws", ReadOnly: true)), _host.Context).Steps.Unconfined();

        int bind = steps.IndexOf(new MountStep("/oldroot" + source, "/newroot/tmp/ws", null, MountFlags.Bind | MountFlags.Recursive));
        Assert.That(bind, Is.GreaterThan(0));
        Assert.That(steps[bind + 1], Is.EqualTo(new SetMountAttributesStep("/newroot/tmp/ws", MountAttributes.ReadOnly, MountAttributes.None, Recursive: true)));
    }

    [Test]
    public void ParsedBindModes_ControlTheReadOnlyStep()
    {
        string source = _host.Dir.CreateDirectory("workspace");
        var ro = SandboxPlanner.Plan(SpecWith(BindMount.Parse($"{source}:/tmp/ro:ro")), _host.Context).Steps.Unconfined();
        var rw = SandboxPlanner.Plan(SpecWith(BindMount.Parse($"{source}:/tmp/rw:rw")), _host.Context).Steps.Unconfined();

        Assert.That(ro.OfType<SetMountAttributesStep>().Count(a => a.Target == "/newroot/tmp/ro" && a.Set == MountAttributes.ReadOnly), Is.EqualTo(1));
        Assert.That(rw.OfType<SetMountAttributesStep>().Count(a => a.Target == "/newroot/tmp/rw"), Is.EqualTo(0));
    }

    [Test]
    public void Binds_ComeAfterTheReadOnlyRootAndBeforeTheFinalPivot()
    {
        string source = _host.Dir.CreateDirectory("workspace");
        var steps = SandboxPlanner.Plan(SpecWith(new BindMount(source, "/tmp/ws")), _host.Context).Steps.Unconfined();
        int bind = steps.IndexOf(new MountStep("/oldroot" + source, "/newroot/tmp/ws", null, MountFlags.Bind | MountFlags.Recursive));
        Assert.That(bind, Is.GreaterThan(steps.IndexOf(s_readOnlyRoot)));
        Assert.That(bind, Is.LessThan(steps.Length - 1));
    }

    [Test]
    public void FileBind_CreatesAFileMountPoint()
    {
        string source = _host.Dir.CreateFile("config.json", "{}");
        var steps = SandboxPlanner.Plan(SpecWith(new BindMount(source, "/tmp/etc/config.json", ReadOnly: true)), _host.Context).Steps.Unconfined();

        int create = steps.IndexOf(new CreateFileStep("/newroot/tmp/etc/config.json"));
        Assert.That(create, Is.GreaterThan(0));
        Assert.That(steps[create - 1], Is.EqualTo(new MakeDirectoryStep("/newroot/tmp/etc")));
        Assert.That(steps[create + 1], Is.EqualTo(new MountStep("/oldroot" + source, "/newroot/tmp/etc/config.json", null, MountFlags.Bind | MountFlags.Recursive)));
        Assert.That(steps, Does.Not.Contain(new MakeDirectoryStep("/newroot/tmp/etc/config.json")));
    }

    [Test]
    public void MissingSource_ThrowsInvalidSpec()
    {
        string missing = _host.Dir.Combine("does-not-exist");
        var e = Assert.Throws<SandboxException>(() => SandboxPlanner.Plan(SpecWith(new BindMount(missing, "/tmp/x")), _host.Context));
        Assert.That(e!.Code, Is.EqualTo(SandboxErrorCode.InvalidSpec));
        Assert.That(e.Message, Does.Contain(missing).And.Contain("does not exist"));
        Assert.That(e.ExitCode, Is.EqualTo(125));
    }

    [Test]
    public void SourceThroughSymlink_IsResolvedToTheRealPath()
    {
        string real = _host.Dir.CreateDirectory("real", "data");
        string link = _host.Dir.Combine("link");
        Directory.CreateSymbolicLink(link, "real");
        var steps = SandboxPlanner.Plan(SpecWith(new BindMount(link + "/data", "/tmp/data")), _host.Context).Steps.Unconfined();

        Assert.That(steps, Does.Contain(new MountStep("/oldroot" + real, "/newroot/tmp/data", null, MountFlags.Bind | MountFlags.Recursive)));
        Assert.That(steps.OfType<MountStep>().Select(m => m.Source), Does.Not.Contain("/oldroot" + link + "/data"));
    }

    [Test]
    public void SourceAsAbsoluteSymlink_IsResolved()
    {
        string real = _host.Dir.CreateDirectory("real");
        string link = _host.Dir.Combine("abs-link");
        Directory.CreateSymbolicLink(link, real);
        var steps = SandboxPlanner.Plan(SpecWith(new BindMount(link, "/tmp/data")), _host.Context).Steps.Unconfined();

        Assert.That(steps, Does.Contain(new MountStep("/oldroot" + real, "/newroot/tmp/data", null, MountFlags.Bind | MountFlags.Recursive)));
    }

    [Test]
    public void TargetUnderTheFreshHome_IsNotResolvedThroughTheHostsSymlinks()
    {
        // On the host, $HOME/.nuget points elsewhere; inside, $HOME is an empty tmpfs, so the bind
        // must land on $HOME/.nuget/packages as written (a planted symlink must not redirect it).
        string elsewhere = _host.Dir.CreateDirectory("elsewhere");
        Directory.CreateSymbolicLink(Path.Combine(_host.Home, ".nuget"), elsewhere);
        string source = _host.Dir.CreateDirectory("packages");
        string target = _host.Home + "/.nuget/packages";
        var steps = SandboxPlanner.Plan(SpecWith(new BindMount(source, target)), _host.Context).Steps.Unconfined();

        Assert.That(steps, Does.Contain(new MountStep("/oldroot" + source, "/newroot" + target, null, MountFlags.Bind | MountFlags.Recursive)));
        Assert.That(steps.OfType<MakeDirectoryStep>().Select(d => d.Target), Has.None.Contains(elsewhere));
    }

    [Test]
    public void RelativeSource_IsMadeAbsoluteFromTheCurrentDirectory()
    {
        string source = _host.Dir.CreateDirectory("rel");
        string saved = Environment.CurrentDirectory;
        try
        {
            Environment.CurrentDirectory = _host.Dir.Path;
            var steps = SandboxPlanner.Plan(SpecWith(new BindMount("rel", "/tmp/rel")), _host.Context).Steps.Unconfined();
            Assert.That(steps, Does.Contain(new MountStep("/oldroot" + source, "/newroot/tmp/rel", null, MountFlags.Bind | MountFlags.Recursive)));
        }
        finally
        {
            Environment.CurrentDirectory = saved;
        }
    }

    [Test]
    public void Target_IsNormalized()
    {
        string source = _host.Dir.CreateDirectory("workspace");
        var steps = SandboxPlanner.Plan(SpecWith(new BindMount(source, "/tmp//a/./b/../c")), _host.Context).Steps.Unconfined();
        Assert.That(steps, Does.Contain(new MountStep("/oldroot" + source, "/newroot/tmp/a/c", null, MountFlags.Bind | MountFlags.Recursive)));
    }
}
