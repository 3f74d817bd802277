using System.Collections.Immutable;
using Sandbox.Cli.CommandLine;
using Sandbox.Cli;
using Sandbox.Tests.TestSupport;

namespace Sandbox.Tests.Cli;

public class RunCommandBuildSpecTests
{
    /// <summary>As Program.Main does: split, parse our own tokens, build the spec.</summary>
    private static SandboxSpec Build(params string[] args)
    {
        var run = new RunCommand();
        var (own, command) = run.Split(args);
        ParseResult parse = run.Parse(own);
        Assert.That(parse.Errors, Is.Empty, string.Join("; ", parse.Errors));
        return run.BuildSpec(parse, command);
    }

    [TestCase("0")]
    [TestCase("-1")]
    public void APidsLimitOfZeroOrMinusOneIsNoLimitAsDockersIs(string value)
    {
        Assert.That(Build("--pids-limit", value, "true").Limits.PidsLimit, Is.Null);
        Assert.That(Build("--pids-limit", "20", "true").Limits.PidsLimit, Is.EqualTo(20));
    }

    [TestCase("0")]
    [TestCase("0s")]
    public void ATimeoutOfZeroIsNoTimeoutAsGnuTimeoutsIs(string value)
    {
        Assert.That(Build("--timeout", value, "true").Timeout, Is.Null);
        Assert.That(Build("--timeout", "5s", "true").Timeout, Is.EqualTo(TimeSpan.FromSeconds(5)));
    }

    [Test]
    public void CpusOfZeroIsNoLimitAsDockersIs()
    {
        Assert.That(Build("--cpus", "0", "true").Limits.Cpus, Is.Null);
        Assert.That(Build("--cpus", "0", "true").Limits.IsEmpty, Is.True);
    }

    [Test]
    public void AHostnameLongerThanHostNameMaxIsACommandLineError()
    {
        Assert.That(Build("--hostname", new string('h', 64), "true").Hostname, Has.Length.EqualTo(64));
        var e = Assert.Throws<SandboxException>(() => Build("--hostname", new string('h', 65), "true"));
        Assert.That(e!.Message, Does.StartWith($"--hostname {new string('h', 65)}: a host name is 1 to 64 bytes (HOST_NAME_MAX)"));
    }

    [Test]
    public void AnUnknownFlagOfSandboxTestSaysWhereDotnetTestsOptionsGo()
    {
        var e = Assert.Throws<SandboxException>(() => new TestCommand().Split(["--filter", "X"], out _));
        Assert.That(e!.Message, Does.StartWith("unknown flag: --filter (dotnet test's own options go after --: sandbox test [PROJECT] -- --filter)"));
    }

    [Test]
    public void DockersShortFormsAreRead()
    {
        // pflag: -it is -i -t; -eNAME=VALUE, -w/dir and -m=1g carry their values.
        SandboxSpec spec = Build("-it", "-eA=1", "-w/src", "-m=1g", "--rm", "true");
        Assert.That(spec.ForwardStdin, Is.True);
        Assert.That(spec.Environment, Does.Contain(new KeyValuePair<string, string>("A", "1")));
        Assert.That(spec.WorkingDirectory, Is.EqualTo("/src"));
        Assert.That(spec.Limits.MemoryBytes, Is.EqualTo(1L << 30));
        Assert.That(spec.Command, Is.EqualTo(new[] { "true" }));
        var e = Assert.Throws<SandboxException>(() => new RunCommand().Split(["-iz", "true"]));
        Assert.That(e!.Message, Does.StartWith("unknown flag: -iz"));
    }

    [Test]
    public void AnEnvFileIsReadAsDockerReadsItAndDashEWins()
    {
        using var dir = new TempDirectory();
        string file = Path.Combine(dir.Path, "ci.env");
        File.WriteAllText(file, "# comment\n\nA=from-file\nB=x=y\n  C=indented\nSANDBOX_TEST_FROM_HOST\nQUOTED=\"kept\"\n");
        Environment.SetEnvironmentVariable("SANDBOX_TEST_FROM_HOST", "host-value");
        try
        {
            SandboxSpec spec = Build("--env-file", file, "-e", "A=from-e", "true");
            // Later settings of a name win (SandboxPlanner.BuildEnvironment): the last of each.
            var env = spec.Environment.GroupBy(p => p.Key).ToDictionary(g => g.Key, g => g.Last().Value);
            Assert.That(env["A"], Is.EqualTo("from-e"));
            Assert.That(env["B"], Is.EqualTo("x=y"));
            Assert.That(env["C"], Is.EqualTo("indented"));
            Assert.That(env["SANDBOX_TEST_FROM_HOST"], Is.EqualTo("host-value"));
            Assert.That(env["QUOTED"], Is.EqualTo("\"kept\""), "docker keeps quotes");
            Assert.That(env.Keys, Does.Not.Contain("# comment"));
        }
        finally
        {
            Environment.SetEnvironmentVariable("SANDBOX_TEST_FROM_HOST", null);
        }
        var missing = Assert.Throws<SandboxException>(() => Build("--env-file", Path.Combine(dir.Path, "none.env"), "true"));
        Assert.That(missing!.Message, Does.StartWith($"--env-file {Path.Combine(dir.Path, "none.env")}: "));
    }

    [Test]
    public void Defaults()
    {
        var spec = Build("ls", "-l");
        Assert.That(spec.Command, Is.EqualTo(new[] { "ls", "-l" }));
        Assert.That(spec.Root, Is.EqualTo(RootSpec.Host));
        Assert.That(spec.Network, Is.EqualTo(NetworkMode.None));
        Assert.That(spec.UserNamespace, Is.EqualTo(UserNamespaceMode.Auto));
        Assert.That(spec.Hostname, Is.EqualTo("sandbox"));
        Assert.That(spec.Timeout, Is.Null);
        Assert.That(spec.WorkingDirectory, Is.Null);
        Assert.That(spec.Binds, Is.Empty);
        Assert.That(spec.TmpfsMounts, Is.Empty);
        Assert.That(spec.Environment, Is.Empty);
    }

    [Test]
    public void EnvNameValue()
    {
        var spec = Build("-e", "A=1", "--env", "B=x=y", "-e", "C=", "true");
        Assert.That(spec.Environment, Is.EqualTo(new[]
        {
            new KeyValuePair<string, string>("A", "1"),
            new KeyValuePair<string, string>("B", "x=y"),
            new KeyValuePair<string, string>("C", ""),
        }));
    }

    [Test]
    public void EnvName_PassesTheHostValueOnlyWhenSet()
    {
        const string set = "SANDBOX_TEST_PASSTHROUGH";
        const string unset = "SANDBOX_TEST_UNSET_VARIABLE";
        Environment.SetEnvironmentVariable(set, "from-host");
        Environment.SetEnvironmentVariable(unset, null);
        try
        {
            var spec = Build("-e", set, "-e", unset, "true");
            Assert.That(spec.Environment, Is.EqualTo(new[] { new KeyValuePair<string, string>(set, "from-host") }));
        }
        finally
        {
            Environment.SetEnvironmentVariable(set, null);
        }
    }

    [Test]
    public void EnvWithoutName_Throws()
    {
        var e = Assert.Throws<SandboxException>(() => Build("-e", "=value", "true"));
        Assert.That(e!.Code, Is.EqualTo(SandboxErrorCode.InvalidSpec));
        Assert.That(e.Message, Does.Contain("missing the variable's name"));
    }

    [Test]
    public void NetworkHost()
    {
        Assert.That(Build("--network", "host", "true").Network, Is.EqualTo(NetworkMode.Host));
        Assert.That(Build("--network=none", "true").Network, Is.EqualTo(NetworkMode.None));
    }

    [Test]
    public void NetworkInvalid_ThrowsInvalidSpec()
    {
        var e = Assert.Throws<SandboxException>(() => Build("--network", "bridge", "true"));
        Assert.That(e!.Code, Is.EqualTo(SandboxErrorCode.InvalidSpec));
        Assert.That(e.Message, Is.EqualTo("--network bridge: expected none or host"));
    }

    [TestCase("single", UserNamespaceMode.Single)]
    [TestCase("subuid", UserNamespaceMode.Subuid)]
    [TestCase("auto", UserNamespaceMode.Auto)]
    public void Userns(string value, UserNamespaceMode mode)
    {
        Assert.That(Build("--userns", value, "true").UserNamespace, Is.EqualTo(mode));
    }

    [Test]
    public void UsernsInvalid_ThrowsInvalidSpec()
    {
        var e = Assert.Throws<SandboxException>(() => Build("--userns", "keep-id", "true"));
        Assert.That(e!.Code, Is.EqualTo(SandboxErrorCode.InvalidSpec));
        Assert.That(e.Message, Does.Contain("expected auto, single or subuid"));
    }

    [Test]
    public void Timeout()
    {
        Assert.That(Build("--timeout", "1.5s", "true").Timeout, Is.EqualTo(TimeSpan.FromSeconds(1.5)));
        Assert.That(Build("--timeout=2m", "true").Timeout, Is.EqualTo(TimeSpan.FromMinutes(2)));
    }

    [Test]
    public void TimeoutInvalid_ThrowsInvalidSpec()
    {
        var e = Assert.Throws<SandboxException>(() => Build("--timeout", "soon", "true"));
        Assert.That(e!.Code, Is.EqualTo(SandboxErrorCode.InvalidSpec));
        Assert.That(e.Message, Does.StartWith("--timeout soon:"));
    }

    [Test]
    public void VolumesTmpfsWorkdirHostnameInteractive()
    {
        var spec = Build(
            "-v", "/src:/work:ro",
            "--volume", "/cache:/root/.nuget",
            "--tmpfs", "/scratch",
            "--tmpfs", "/var/tmp",
            "-w", "/work",
            "--hostname", "ci",
            "-i",
            "dotnet", "test");
        Assert.That(spec.Binds, Is.EqualTo(new[] { new BindMount("/src", "/work", true), new BindMount("/cache", "/root/.nuget") }));
        Assert.That(spec.TmpfsMounts, Is.EqualTo(new[] { "/scratch", "/var/tmp" }));
        Assert.That(spec.WorkingDirectory, Is.EqualTo("/work"));
        Assert.That(spec.Hostname, Is.EqualTo("ci"));
        Assert.That(spec.ForwardStdin, Is.True);
        Assert.That(spec.Command, Is.EqualTo(new[] { "dotnet", "test" }));
    }

    [Test]
    public void InvalidVolume_ThrowsInvalidSpec()
    {
        var e = Assert.Throws<SandboxException>(() => Build("-v", "/src:work", "true"));
        Assert.That(e!.Code, Is.EqualTo(SandboxErrorCode.InvalidSpec));
    }

    [Test]
    public void DirectoryRoot_AfterAVolume()
    {
        using var dir = new TempDirectory();
        var spec = Build("-v", "/a:/b", dir.Path, "/bin/sh");
        Assert.That(spec.Root, Is.EqualTo(RootSpec.Directory(dir.Path)));
        Assert.That(spec.Binds, Is.EqualTo(new[] { new BindMount("/a", "/b") }));
        Assert.That(spec.Command, Is.EqualTo(new[] { "/bin/sh" }));
    }

    [Test]
    public void HostRoot_Explicit()
    {
        var spec = Build("host", "--", "id");
        Assert.That(spec.Root, Is.EqualTo(RootSpec.Host));
        Assert.That(spec.Command, Is.EqualTo(new[] { "id" }));
    }

    [Test]
    public void EventsFormat()
    {
        var run = new RunCommand();
        Assert.That(run.EventsFormat(run.Parse([])), Is.EqualTo("console"));
        Assert.That(run.EventsFormat(run.Parse(["--events", "json"])), Is.EqualTo("json"));
        var e = Assert.Throws<SandboxException>(() => run.EventsFormat(run.Parse(["--events", "xml"])));
        Assert.That(e!.Code, Is.EqualTo(SandboxErrorCode.InvalidSpec));
    }

    [Test]
    public void BuiltSpec_PlansWithTheSameCommand()
    {
        using var host = new FakeHost();
        var plan = SandboxPlanner.Plan(Build("--network", "host", "-e", "CI=1", "--", "dotnet", "test"), host.Context);
        Assert.That(plan.Process.Arguments, Is.EqualTo(ImmutableArray.Create("dotnet", "test")));
        Assert.That(plan.Process.Environment, Does.Contain("CI=1"));
        Assert.That(plan.Namespaces.HasFlag(Sandbox.Runtime.NamespaceSet.Network), Is.False);
    }
}
