using System.Collections.Immutable;
using Sandbox.Cli.CommandLine;
using System.Diagnostics;

namespace Sandbox.Cli;

/// <summary>
/// <c>sandbox test [PATH] [OPTIONS] [-- DOTNET TEST ARGS]</c>: restore in a sandbox that has the
/// network, then build and test in one that has not; the workspace is bound read-write at its own
/// path, the NuGet package cache read-only, $HOME and /tmp are fresh.
/// </summary>
internal sealed class TestCommand : Command
{
    private readonly SandboxOptions _options = new();
    private readonly Argument<string?> _path = new("PATH")
    {
        Description = "A solution, project or directory (default: the current directory)",
        Arity = ArgumentArity.ZeroOrOne,
    };
    private readonly Option<string?> _workspace = new("--workspace")
    {
        Description = "The directory bound read-write (default: the git work tree holding PATH, else PATH's directory)",
        HelpName = "DIR",
    };
    private readonly Option<string?> _image = new("--image")
    {
        Description = "Run restore, build and test in this image (name, archive or OCI layout) instead of on the host's root: it must hold a .NET SDK",
        HelpName = "IMAGE",
    };
    private readonly Option<string?> _store = StoreOption.Create();
    private readonly Option<string?> _storageDriver = StorageDriverOption.Create();
    private readonly Option<bool> _noRestore = new("--no-restore")
    {
        Description = "Skip the restore step (packages must already be in the NuGet cache)",
    };
    private readonly Argument<string[]> _testArgs = new("DOTNET_TEST_ARGS")
    {
        Description = "Arguments for dotnet test, after -- (e.g. -- --filter Category=Fast --blame-hang-timeout 5m)",
        Arity = ArgumentArity.ZeroOrMore,
    };

    public TestCommand() : base("test", "Run `dotnet test` in a sandbox: network off, workspace writable, everything else read-only or fresh")
    {
        foreach (Option option in _options.All)
            Options.Add(option);
        Options.Add(_workspace);
        Options.Add(_noRestore);
        Options.Add(_image);
        Options.Add(_store);
        Options.Add(_storageDriver);
        Arguments.Add(_path);
        Arguments.Add(_testArgs);
    }

    public (List<string> OwnTokens, ImmutableArray<string> TestArgs) Split(IReadOnlyList<string> tokens, out bool helpRequested) =>
        SandboxOptions.Split(this, tokens, _ => true, maxPositionals: 1, out helpRequested);

    public bool Stats(ParseResult parse) => _options.Stats(parse);

    public string EventsFormat(ParseResult parse) => _options.EventsFormat(parse);

    public int Run(ParseResult parse, ImmutableArray<string> testArgs, IEventRenderer renderer)
    {
        var plan = Program.FromCommandLine("test", () => Plan(parse, testArgs, Environment.CurrentDirectory, Environment.GetEnvironmentVariable("HOME"), Environment.GetEnvironmentVariable("NUGET_PACKAGES"),
            Path.Combine(Storage.StoreLocation.Resolve(parse.GetValue(_store)), "nuget-packages")));
        var clock = Stopwatch.StartNew();
        if (plan.Restore is SandboxSpec restore)
        {
            Directory.CreateDirectory(plan.SandboxPackages);
            renderer.Note($"restoring {plan.Target} (network on)");
            var (restored, restoreResult) = Program.ExecuteForResult(restore, renderer);
            if (StoppedBySignal(restored, restoreResult) is int stopped)
            {
                renderer.Note($"stopped by signal {stopped - 128} during the restore: no tests run");
                return stopped;
            }
            if (restored != 0)
            {
                renderer.Note($"restore failed (exit {restored})");
                return restored;
            }
        }
        // --timeout bounds the whole command, as its help says, not each of its two sandboxes.
        SandboxSpec test = plan.Test;
        string left = "";
        if (test.Timeout is TimeSpan timeout && plan.Restore is not null)
        {
            TimeSpan remaining = timeout - clock.Elapsed;
            test = test with { Timeout = remaining > TimeSpan.FromMilliseconds(1) ? remaining : TimeSpan.FromMilliseconds(1) };
            left = string.Create(System.Globalization.CultureInfo.InvariantCulture, $", {remaining.TotalSeconds:0.#}s of --timeout left");
        }
        renderer.Note($"testing {plan.Target} (network {(test.Network == NetworkMode.None ? "off" : "host")}, workspace {plan.Workspace} writable{left})");
        var summary = new TestSummary();
        var (exitCode, result) = Program.ExecuteForResult(test, renderer, e =>
        {
            if (e is OutputEvent o)
                summary.Feed(o.Data.Span);
        });
        renderer.RenderSummary(summary, clock.Elapsed, result);
        // `dotnet test` exits 0 on SIGTERM, having run only some tests: that is no success.
        return !summary.Seen && StoppedBySignal(exitCode, result) is int stoppedAt ? stoppedAt : exitCode;
    }

    /// <summary>128 + the terminating signal forwarded during a run that then exited 0 anyway; null otherwise.</summary>
    private static int? StoppedBySignal(int exitCode, SandboxResult? result) =>
        exitCode == 0 && result?.ForwardedTerminatingSignal is int signal ? 128 + signal : null;

    /// <summary>NuGet's marker of its last one-time migration, below $HOME (XDG_DATA_HOME unset): ~/.local/share/NuGet/Migrations/1.</summary>
    internal const string NuGetMigrationMarker = ".local/share/NuGet/Migrations/1";

    /// <param name="SandboxPackages">The packages folder the restore writes (made before it runs).</param>
    internal sealed record TestPlan(string Target, string Workspace, SandboxSpec? Restore, SandboxSpec Test, string SandboxPackages);

    /// <summary>Pure: what to run for a `sandbox test` (tested without sandboxes).</summary>
    /// <param name="sandboxPackages">
    /// Where the restore puts packages your NuGet cache lacks: a folder of the sandboxes' own (the
    /// store's nuget-packages), never your cache. A restore runs the project's targets, the code the
    /// sandbox is there to contain, with the network on: given your cache writable, it rewrote a
    /// package's build files, which your later builds outside any sandbox would have run. Your cache
    /// is NuGet's fallback folder (NUGET_FALLBACK_PACKAGES), read-only: what it has is not fetched again.
    /// </param>
    internal TestPlan Plan(ParseResult parse, ImmutableArray<string> testArgs, string currentDirectory, string? home, string? nugetPackages, string sandboxPackages)
    {
        string target = Path.GetFullPath(parse.GetValue(_path) ?? ".", currentDirectory);
        if (!File.Exists(target) && !Directory.Exists(target))
            throw new SandboxException(SandboxErrorCode.InvalidSpec, $"{target}: no such solution, project or directory");
        string workspace = parse.GetValue(_workspace) is string w
            ? Path.GetFullPath(w, currentDirectory)
            : FindWorkspace(target, home);
        if (!target.StartsWith(workspace.TrimEnd('/') + "/", StringComparison.Ordinal) && target != workspace)
            throw new SandboxException(SandboxErrorCode.InvalidSpec, $"{target} is outside the workspace {workspace}");

        string packages = nugetPackages is { Length: > 0 } p ? p
            : home is { Length: > 0 } ? Path.Combine(home, ".nuget", "packages")
            : throw new SandboxException(SandboxErrorCode.InvalidSpec, "neither NUGET_PACKAGES nor HOME is set: cannot locate the NuGet package cache");
        Directory.CreateDirectory(packages);
        bool restores = !parse.GetValue(_noRestore);

        string workdir = currentDirectory.StartsWith(workspace.TrimEnd('/') + "/", StringComparison.Ordinal) || currentDirectory == workspace
            ? currentDirectory
            : workspace;
        RootSpec root = parse.GetValue(_image) is string image
            ? RunCommand.ResolveRoot(image, parse.GetValue(_store), readOnly: false, platform: null, _options.UserNamespace(parse), StorageDriverOption.Resolve(parse.GetValue(_storageDriver)))
            : RootSpec.Host;
        var common = new SandboxSpec(["dotnet"])
        {
            Root = root,
            WorkingDirectory = workdir,
            // Your NuGet cache, read-only to both sandboxes: with a restore, NuGet's fallback folder.
            Binds = [new BindMount(workspace, workspace), new BindMount(packages, packages, ReadOnly: true)],
            // The fresh $HOME is a new machine to NuGet, whose first command then runs its one-time
            // migration (NuGet.Common's MigrationRunner): `sh -c umask` and `ls -ld` on seven folders,
            // eight processes the SDK waits for before it builds, 19 to 24 ms per sandbox here (perf
            // sched tracepoints, 5 runs), paid by the restore's sandbox and the test's. Its marker says
            // there is nothing to migrate, which is true of an empty $HOME. An image keeps its home.
            HomeFiles = root is ImageRoot ? [] : [NuGetMigrationMarker],
        }
        .WithEnvironment("DOTNET_CLI_TELEMETRY_OPTOUT", "1")
        .WithEnvironment("DOTNET_NOLOGO", "1")
        .WithEnvironment("DOTNET_SKIP_FIRST_TIME_EXPERIENCE", "1")
        // The SDK checks workload manifests on first use in a fresh $HOME and warns; nothing to install here.
        .WithEnvironment("DOTNET_SKIP_WORKLOAD_INTEGRITY_CHECK", "1")
        // A fresh $HOME is a first run to the SDK: without these it would create and trust an ASP.NET
        // HTTPS development certificate (an RSA key generated on every run), set up the global tools
        // path and look for workload updates, each time (`find $HOME` after a run showed the sentinels).
        .WithEnvironment("DOTNET_GENERATE_ASPNET_CERTIFICATE", "false")
        .WithEnvironment("DOTNET_ADD_GLOBAL_TOOLS_TO_PATH", "false")
        .WithEnvironment("DOTNET_CLI_WORKLOAD_UPDATE_NOTIFY_DISABLE", "1")
        .WithEnvironment("NUGET_PACKAGES", restores ? sandboxPackages : packages)
        // Node reuse would leave MSBuild worker nodes behind, only to be killed with the sandbox.
        .WithEnvironment("MSBUILDDISABLENODEREUSE", "1");
        common = _options.Apply(parse, common);

        // The user's NuGet configuration (feeds, credentials for restore) is only needed to restore.
        string? nugetConfig = home is { Length: > 0 } && Directory.Exists(Path.Combine(home, ".nuget", "NuGet"))
            ? Path.Combine(home, ".nuget", "NuGet")
            : null;
        if (restores)
            common = common.WithEnvironment("NUGET_FALLBACK_PACKAGES", packages);
        SandboxSpec? restore = !restores ? null : common with
        {
            Command = ["dotnet", "restore", target],
            Network = NetworkMode.Host,
            Binds = nugetConfig is null
                ? common.Binds.Add(new BindMount(sandboxPackages, sandboxPackages))
                : common.Binds.Add(new BindMount(sandboxPackages, sandboxPackages)).Add(new BindMount(nugetConfig, nugetConfig, ReadOnly: true)),
        };
        SandboxSpec test = common with
        {
            CollectUsage = true, // the closing summary line gives the peak memory
            Command = ["dotnet", "test", target, "--no-restore", .. testArgs],
            Binds = restores ? common.Binds.Add(new BindMount(sandboxPackages, sandboxPackages, ReadOnly: true)) : common.Binds,
        };
        return new TestPlan(target, workspace, restore, test, sandboxPackages);
    }

    /// <summary>
    /// The git work tree holding <paramref name="target"/> (projects reference their siblings). Without
    /// one, the highest directory above it, below <paramref name="home"/>, that holds what a build reads
    /// from above a project (a solution, Directory.Build.props, Directory.Packages.props, global.json):
    /// with only the project's own directory, sibling projects and a parent's Directory.Build.props were
    /// missing inside, and the build failed with a misleading error (NETSDK1013, no TargetFramework).
    /// Else the target's directory.
    /// </summary>
    internal static string FindWorkspace(string target, string? home = null)
    {
        string start = Directory.Exists(target) ? target : Path.GetDirectoryName(target)!;
        for (var dir = new DirectoryInfo(start); dir is not null; dir = dir.Parent)
        {
            if (Directory.Exists(Path.Combine(dir.FullName, ".git")) || File.Exists(Path.Combine(dir.FullName, ".git")))
                return dir.FullName;
        }
        string highest = start;
        string? stop = home is { Length: > 1 } ? Path.TrimEndingDirectorySeparator(home) : null;
        for (var dir = new DirectoryInfo(start); dir?.Parent is not null && dir.FullName != stop; dir = dir.Parent)
        {
            if (HoldsBuildInputs(dir.FullName))
                highest = dir.FullName;
        }
        return highest;
    }

    private static bool HoldsBuildInputs(string dir)
    {
        try
        {
            return File.Exists(Path.Combine(dir, "Directory.Build.props")) || File.Exists(Path.Combine(dir, "Directory.Packages.props"))
                || File.Exists(Path.Combine(dir, "global.json")) || Directory.EnumerateFiles(dir, "*.sln").Any() || Directory.EnumerateFiles(dir, "*.slnx").Any();
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return false; // a directory we may not list is no workspace of ours
        }
    }
}
