using Sandbox.Tests.TestSupport;

namespace Sandbox.Tests.Planning;

public class EnvironmentTests
{
    private FakeHost _host = null!;

    [SetUp]
    public void SetUp() => _host = new FakeHost();

    [TearDown]
    public void TearDown() => _host.Dispose();

    [Test]
    public void HostMode_OnlyPathHomeAndTerm()
    {
        var env = SandboxPlanner.BuildEnvironment(new SandboxSpec(["true"]), _host.Context, out string searchPath);
        Assert.That(env, Is.EqualTo(new[]
        {
            "PATH=" + FakeHost.HostPath,
            "HOME=" + _host.Home,
            "TERM=" + FakeHost.Term,
        }));
        Assert.That(searchPath, Is.EqualTo(FakeHost.HostPath));
    }

    [Test]
    public void NoTerm_NoTermVariable()
    {
        var env = SandboxPlanner.BuildEnvironment(new SandboxSpec(["true"]), _host.Context with { Term = null }, out _);
        Assert.That(env, Is.EqualTo(new[] { "PATH=" + FakeHost.HostPath, "HOME=" + _host.Home }));
    }

    [Test]
    public void HostModeWithoutPath_UsesTheDefaultPath()
    {
        var env = SandboxPlanner.BuildEnvironment(new SandboxSpec(["true"]), _host.Context with { Path = "" }, out string searchPath);
        Assert.That(env[0], Is.EqualTo("PATH=" + Sandbox.Rootfs.RootfsPlanner.DefaultPath));
        Assert.That(searchPath, Is.EqualTo(Sandbox.Rootfs.RootfsPlanner.DefaultPath));
    }

    [Test]
    public void SpecVariables_AreAddedInOrder()
    {
        var spec = new SandboxSpec(["true"]).WithEnvironment("CI", "true").WithEnvironment("EMPTY", "").WithEnvironment("EQ", "a=b");
        var env = SandboxPlanner.BuildEnvironment(spec, _host.Context, out _);
        Assert.That(env, Is.EqualTo(new[]
        {
            "PATH=" + FakeHost.HostPath,
            "HOME=" + _host.Home,
            "TERM=" + FakeHost.Term,
            "CI=true",
            "EMPTY=",
            "EQ=a=b",
        }));
    }

    [Test]
    public void CallerEnvironment_DoesNotLeakIn()
    {
        const string name = "SANDBOX_TEST_SECRET";
        Environment.SetEnvironmentVariable(name, "hunter2");
        try
        {
            var plan = SandboxPlanner.Plan(new SandboxSpec(["env"]), _host.Context);
            Assert.That(plan.Process.Environment.Length, Is.EqualTo(3));
            Assert.That(plan.Process.Environment, Has.None.StartsWith(name));
            Assert.That(plan.Process.Environment, Has.None.Contains("hunter2"));
        }
        finally
        {
            Environment.SetEnvironmentVariable(name, null);
        }
    }

    [Test]
    public void SpecPath_OverridesPathAndTheSearchPath()
    {
        var spec = new SandboxSpec(["true"]).WithEnvironment("PATH", "/custom/bin");
        var env = SandboxPlanner.BuildEnvironment(spec, _host.Context, out string searchPath);
        Assert.That(env.Count(v => v.StartsWith("PATH=")), Is.EqualTo(1));
        Assert.That(env, Does.Contain("PATH=/custom/bin"));
        Assert.That(searchPath, Is.EqualTo("/custom/bin"));
    }

    [Test]
    public void SpecHome_OverridesHome()
    {
        var spec = new SandboxSpec(["true"]).WithEnvironment("HOME", "/home/other");
        var env = SandboxPlanner.BuildEnvironment(spec, _host.Context, out _);
        Assert.That(env.Where(v => v.StartsWith("HOME=")), Is.EqualTo(new[] { "HOME=/home/other" }));
    }

    [Test]
    public void RepeatedSpecVariable_LastWins()
    {
        var spec = new SandboxSpec(["true"]).WithEnvironment("X", "1").WithEnvironment("X", "2");
        var env = SandboxPlanner.BuildEnvironment(spec, _host.Context, out _);
        Assert.That(env.Where(v => v.StartsWith("X=")), Is.EqualTo(new[] { "X=2" }));
    }

    [TestCase("")]
    [TestCase("A=B")]
    [TestCase("=")]
    public void InvalidName_Throws(string name)
    {
        var spec = new SandboxSpec(["true"]).WithEnvironment(name, "v");
        var e = Assert.Throws<SandboxException>(() => SandboxPlanner.BuildEnvironment(spec, _host.Context, out _));
        Assert.That(e!.Code, Is.EqualTo(SandboxErrorCode.InvalidSpec));
        Assert.That(e.Message, Does.Contain("invalid environment variable name"));
    }

    [Test]
    public void InvalidName_AlsoFailsThePlan()
    {
        var spec = new SandboxSpec(["true"]).WithEnvironment("BAD=NAME", "v");
        var e = Assert.Throws<SandboxException>(() => SandboxPlanner.Plan(spec, _host.Context));
        Assert.That(e!.Code, Is.EqualTo(SandboxErrorCode.InvalidSpec));
    }
}
