using Sandbox.Tests.TestSupport;

namespace Sandbox.Tests.Planning;

public class PlanValidationTests
{
    private FakeHost _host = null!;

    [SetUp]
    public void SetUp() => _host = new FakeHost();

    [TearDown]
    public void TearDown() => _host.Dispose();

    private SandboxException Fails(SandboxSpec spec)
    {
        var e = Assert.Throws<SandboxException>(() => SandboxPlanner.Plan(spec, _host.Context));
        Assert.That(e!.Code, Is.EqualTo(SandboxErrorCode.InvalidSpec));
        Assert.That(e.ExitCode, Is.EqualTo(125));
        return e;
    }

    [Test]
    public void EmptyCommand_Throws()
    {
        var e = Fails(new SandboxSpec([]));
        Assert.That(e.Message, Does.Contain("no command given").And.Contain("sandbox run -- dotnet test"));
    }

    [Test]
    public void EmptyProgramName_Throws()
    {
        var e = Fails(new SandboxSpec(["", "arg"]));
        Assert.That(e.Message, Does.Contain("no command given"));
    }

    [Test]
    public void DefaultCommand_Throws()
    {
        var e = Fails(new SandboxSpec(["x"]) { Command = default });
        Assert.That(e.Message, Does.Contain("no command given"));
    }

    [Test]
    public void RelativeWorkingDirectory_Throws()
    {
        var e = Fails(new SandboxSpec(["true"]) { WorkingDirectory = "src" });
        Assert.That(e.Message, Does.Contain("working directory must be an absolute path").And.Contain("src"));
    }

    [TestCase("/")]
    [TestCase("//")]
    [TestCase("/tmp/..")]
    public void BindOnTheRoot_Throws(string target)
    {
        var e = Fails(new SandboxSpec(["true"]) { Binds = [new BindMount("/srv", target)] });
        Assert.That(e.Message, Does.Contain($"-v /srv:{target}").And.Contain("cannot replace the sandbox's root").And.Contain("sandbox run DIR"));
    }

    [Test]
    public void TmpfsOnTheRoot_Throws()
    {
        var e = Fails(new SandboxSpec(["true"]) { TmpfsMounts = ["/:size=1m"] });
        Assert.That(e.Message, Does.Contain("--tmpfs /:size=1m").And.Contain("cannot replace the sandbox's root"));
    }

    [Test]
    public void TwoMountsOnOnePath_Throw_WhateverTheirKinds()
    {
        var twoBinds = Fails(new SandboxSpec(["true"]) { Binds = [new BindMount("/srv/a", "/data"), new BindMount("/srv/b", "/data/")] });
        Assert.That(twoBinds.Message, Does.Contain("-v /srv/b:/data/: /data is already the target of -v /srv/a:/data"));
        var bindAndTmpfs = Fails(new SandboxSpec(["true"]) { Binds = [new BindMount("/srv/a", "/cache")], TmpfsMounts = ["/./cache"] });
        Assert.That(bindAndTmpfs.Message, Does.Contain("--tmpfs /./cache: /cache is already the target of -v /srv/a:/cache"));
    }

    [Test]
    public void NestedMounts_AreNotDuplicates()
    {
        Assert.DoesNotThrow(() => SandboxPlanner.Plan(
            new SandboxSpec(["true"]) { Binds = [new BindMount("/srv", "/data")], TmpfsMounts = ["/data/cache"] }, _host.Context));
    }

    [TestCase("mode=999")]
    [TestCase("mode=17777")]
    [TestCase("mode=")]
    [TestCase("mode=rwx")]
    public void TmpfsModeThatIsNotOctal_IsNamedAsSuch(string option)
    {
        var e = Fails(new SandboxSpec(["true"]) { TmpfsMounts = [$"/t:{option}"] });
        Assert.That(e.Message, Does.Contain($"'{option}' is not a file mode").And.Contain("e.g. mode=1777"));
        Assert.That(e.Message, Does.Not.Contain("unknown option"));
    }

    [Test]
    public void RelativeTmpfs_Throws()
    {
        var e = Fails(new SandboxSpec(["true"]) { TmpfsMounts = ["/ok", "cache"] });
        Assert.That(e.Message, Does.Contain("--tmpfs needs an absolute path: cache"));
    }

    [TestCase("/etc/passwd")]
    [TestCase("../escape")]
    [TestCase(".local/../../escape")]
    [TestCase("./marker")]
    [TestCase("dir//marker")]
    [TestCase("dir/")]
    [TestCase("")]
    [TestCase("a\0b")]
    public void HomeFileOutsideHome_Throws(string file)
    {
        var e = Fails(new SandboxSpec(["true"]) { HomeFiles = [file] });
        Assert.That(e.Message, Does.Contain("is not a file name below $HOME"));
    }

    [Test]
    public void ValidSpec_DoesNotThrow()
    {
        Assert.That(() => SandboxPlanner.Plan(new SandboxSpec(["true"]) { WorkingDirectory = "/", TmpfsMounts = ["/cache"] }, _host.Context), Throws.Nothing);
    }
}
