using Sandbox.Cli.CommandLine;
using Sandbox.Cli;
using Sandbox.Tests.TestSupport;

namespace Sandbox.Tests.Cli;

/// <summary>What `sandbox test` runs (TestCommand.Plan, pure: no sandbox is started).</summary>
public class TestCommandPlanTests
{
    private TempDirectory _dir = null!;
    private string _solution = null!;
    private string _home = null!;

    [SetUp]
    public void SetUp()
    {
        _dir = new TempDirectory();
        _dir.CreateDirectory("repo", ".git");
        _solution = _dir.CreateFile("repo/App.sln");
        _home = _dir.CreateDirectory("home");
    }

    [TearDown]
    public void TearDown() => _dir.Dispose();

    private TestCommand.TestPlan Plan(params string[] args)
    {
        var test = new TestCommand();
        var (own, testArgs) = test.Split(args, out _);
        ParseResult parse = test.Parse(own);
        Assert.That(parse.Errors, Is.Empty, string.Join("; ", parse.Errors));
        return test.Plan(parse, testArgs, _dir.Combine("repo"), _home, nugetPackages: null, _dir.Combine("store", "nuget-packages"));
    }

    [Test]
    public void WithoutGitTheWorkspaceIsTheHighestDirectoryHoldingBuildInputsBelowHome()
    {
        // examples/HelloSandbox without .git: the solution and Directory.Build.props are above the test project.
        string home = _dir.CreateDirectory("nogit-home");
        string root = _dir.CreateDirectory("nogit-home", "src", "Hello");
        _dir.CreateFile("nogit-home/src/Hello/Directory.Build.props");
        _dir.CreateFile("nogit-home/src/Hello/Hello.sln");
        string project = _dir.CreateFile("nogit-home/src/Hello/Hello.Tests/Hello.Tests.csproj");
        _dir.CreateFile("nogit-home/global.json"); // $HOME itself is never the workspace
        Assert.That(TestCommand.FindWorkspace(project, home), Is.EqualTo(root));
        string lone = _dir.CreateFile("nogit-home/lone/Lone.csproj");
        Assert.That(TestCommand.FindWorkspace(lone, home), Is.EqualTo(Path.GetDirectoryName(lone)), "nothing above it: its own directory");
    }

    [Test]
    public void RestoreAndTestFindNuGetsMigrationDoneInTheirFreshHome()
    {
        var plan = Plan(_solution);
        Assert.That(plan.Restore, Is.Not.Null);
        Assert.That(plan.Restore!.HomeFiles, Is.EqualTo(new[] { ".local/share/NuGet/Migrations/1" }));
        Assert.That(plan.Test.HomeFiles, Is.EqualTo(new[] { ".local/share/NuGet/Migrations/1" }));
        Assert.That(plan.Test.Root, Is.EqualTo(RootSpec.Host));
    }

    [Test]
    public void TheSandboxGetsTheFirstRunVariablesAndTheWorkspace()
    {
        var plan = Plan(_solution, "--no-restore", "--", "-c", "Release");
        Assert.That(plan.Restore, Is.Null);
        Assert.That(plan.Workspace, Is.EqualTo(_dir.Combine("repo")));
        Assert.That(plan.Test.Command, Is.EqualTo(new[] { "dotnet", "test", _solution, "--no-restore", "-c", "Release" }));
        var env = plan.Test.Environment.ToDictionary(kv => kv.Key, kv => kv.Value);
        Assert.That(env["NUGET_PACKAGES"], Is.EqualTo(Path.Combine(_home, ".nuget", "packages")));
        Assert.That(env["MSBUILDDISABLENODEREUSE"], Is.EqualTo("1"));
        Assert.That(env["DOTNET_GENERATE_ASPNET_CERTIFICATE"], Is.EqualTo("false"));
        Assert.That(plan.Test.Binds.Select(b => b.HostPath), Does.Contain(_dir.Combine("repo")));
    }

    [Test]
    public void TheRestoreWritesPackagesIntoAFolderOfTheSandboxesNeverIntoYourCache()
    {
        // A restore runs the project's targets with the network on: given the user's cache
        // writable, they rewrote a package's build files that later host builds run.
        var plan = Plan(_solution);
        string cache = Path.Combine(_home, ".nuget", "packages"), own = _dir.Combine("store", "nuget-packages");
        foreach (SandboxSpec spec in new[] { plan.Restore!, plan.Test })
        {
            var env = spec.Environment.ToDictionary(kv => kv.Key, kv => kv.Value);
            Assert.That(env["NUGET_PACKAGES"], Is.EqualTo(own));
            Assert.That(env["NUGET_FALLBACK_PACKAGES"], Is.EqualTo(cache));
            Assert.That(spec.Binds.Where(b => b.HostPath == cache).Select(b => b.ReadOnly), Is.EqualTo(new[] { true }), "your cache: read-only, once");
        }
        Assert.That(plan.Restore!.Binds.Single(b => b.HostPath == own).ReadOnly, Is.False);
        Assert.That(plan.Test.Binds.Single(b => b.HostPath == own).ReadOnly, Is.True);
        Assert.That(plan.SandboxPackages, Is.EqualTo(own));
    }
}
