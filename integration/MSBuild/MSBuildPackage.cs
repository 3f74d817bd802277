using System.Diagnostics;
using System.Text;

namespace Sandbox.IntegrationTests.MSBuild;

/// <summary>
/// The Sandbox.MSBuild package, packed for this test run by ci/pack-msbuild into a temporary feed,
/// with a version of its own (0.1.0-it.…): NuGet never replaces a version it has in the global packages
/// folder, so a fixed 0.1.0 would test whatever was packed first. The version is removed from the
/// global packages folder afterwards.
/// <para>
/// When the repository is writable (ci/test runs from the CI user's copy) the script runs in place,
/// on top of the Release build ci/test has just made; otherwise (a root-owned checkout, run by hand as
/// an unprivileged user) the sources it needs are copied into the temporary directory first.
/// </para>
/// </summary>
internal sealed class MSBuildPackage : IDisposable
{
    private readonly TempDir _dir = new();

    public MSBuildPackage()
    {
        Version = $"0.1.0-it.g{Guid.NewGuid():N}"[..24];
        Feed = Path.Combine(_dir.Path, "feed");
        Directory.CreateDirectory(Feed);
        string root = Repository.Root();
        string source = Repository.IsWritable(root, "Sandbox.Core", "Sandbox.Cli", "Sandbox.MSBuild") ? root : CopySources(root, Path.Combine(_dir.Path, "src"));
        DotnetRun.Result r = DotnetRun.Run("bash", [Path.Combine(source, "ci", "pack-msbuild"), Feed, $"-p:Version={Version}"], source, TimeSpan.FromMinutes(4));
        Assert.That(r.ExitCode, Is.EqualTo(0), $"ci/pack-msbuild failed:\n{r}");
        Assert.That(File.Exists(Path.Combine(Feed, $"Sandbox.MSBuild.{Version}.nupkg")), Is.True, r.ToString());
    }

    public string Version { get; }

    /// <summary>The directory holding the .nupkg (a local NuGet feed).</summary>
    public string Feed { get; }

    /// <summary>What ci/pack-msbuild needs, without bin/ and obj/.</summary>
    private static string CopySources(string root, string target)
    {
        foreach (string file in new[] { "Directory.Build.props", "global.json", "ci/pack-msbuild" })
        {
            string from = Path.Combine(root, file);
            if (!File.Exists(from))
                continue;
            string to = Path.Combine(target, file);
            Directory.CreateDirectory(Path.GetDirectoryName(to)!);
            File.Copy(from, to);
        }
        foreach (string project in new[] { "Sandbox.Core", "Sandbox.Cli", "Sandbox.MSBuild" })
            Repository.CopyTree(Path.Combine(root, "src", project), Path.Combine(target, "src", project));
        return target;
    }

    public void Dispose()
    {
        // The global packages folder: NUGET_PACKAGES, else ~/.nuget/packages.
        string packages = Environment.GetEnvironmentVariable("NUGET_PACKAGES") is { Length: > 0 } p
            ? p
            : Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".nuget", "packages");
        string cached = Path.Combine(packages, "sandbox.msbuild", Version.ToLowerInvariant());
        try
        {
            if (Directory.Exists(cached))
                Directory.Delete(cached, recursive: true);
            string parent = Path.GetDirectoryName(cached)!;
            if (Directory.Exists(parent) && !Directory.EnumerateFileSystemEntries(parent).Any())
                Directory.Delete(parent);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
        }
        _dir.Dispose();
    }
}

/// <summary>Runs dotnet (or a script running it) as a user would, output captured; no MSBuild node or compiler server left behind.</summary>
internal static class DotnetRun
{
    internal sealed record Result(int ExitCode, string Output, TimeSpan Elapsed)
    {
        public override string ToString() => $"exit {ExitCode} after {Elapsed.TotalSeconds:0.0}s\n{Output}";
    }

    internal sealed class Running(Process process, StringBuilder output, Stopwatch clock) : IDisposable
    {
        public Process Process { get; } = process;

        public string Output
        {
            get
            {
                lock (output)
                    return output.ToString();
            }
        }

        public bool WaitForExit(TimeSpan limit)
        {
            if (!Process.WaitForExit(limit))
                return false;
            Process.WaitForExit(); // the output, to its end
            return true;
        }

        public Result Finish(TimeSpan limit)
        {
            if (!WaitForExit(limit))
            {
                Process.Kill(entireProcessTree: true);
                Process.WaitForExit();
                Assert.Fail($"{Process.StartInfo.FileName} {string.Join(' ', Process.StartInfo.ArgumentList)} did not finish within {limit}:\n{Output}");
            }
            return new Result(Process.ExitCode, Output, clock.Elapsed);
        }

        public void Dispose()
        {
            try
            {
                if (!Process.HasExited)
                    Process.Kill(entireProcessTree: true);
            }
            catch (InvalidOperationException)
            {
            }
            Process.Dispose();
        }
    }

    public static Result Run(string file, IEnumerable<string> args, string workingDirectory, TimeSpan limit)
    {
        using Running running = Start(file, args, workingDirectory);
        return running.Finish(limit);
    }

    public static Running Start(string file, IEnumerable<string> args, string workingDirectory)
    {
        var psi = new ProcessStartInfo(file)
        {
            WorkingDirectory = workingDirectory,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            RedirectStandardInput = true,
            UseShellExecute = false,
        };
        foreach (string a in args)
            psi.ArgumentList.Add(a);
        // `dotnet test` hands its MSBuild's locations down to the test host; a build of its own must find its own.
        foreach (string inherited in new[] { "MSBuildExtensionsPath", "MSBuildSDKsPath", "MSBUILD_EXE_PATH", "MSBuildLoadMicrosoftTargetsReadOnly" })
            psi.Environment.Remove(inherited);
        psi.Environment["DOTNET_CLI_TELEMETRY_OPTOUT"] = "1";
        psi.Environment["DOTNET_NOLOGO"] = "1";
        psi.Environment["DOTNET_SKIP_FIRST_TIME_EXPERIENCE"] = "1";
        psi.Environment["MSBUILDDISABLENODEREUSE"] = "1";
        psi.Environment["DOTNET_CLI_USE_MSBUILD_SERVER"] = "0";
        psi.Environment["UseSharedCompilation"] = "false";
        psi.Environment["TERM"] = "dumb";

        var output = new StringBuilder();
        var process = new Process { StartInfo = psi };
        void Append(object sender, DataReceivedEventArgs e)
        {
            if (e.Data is null)
                return;
            lock (output)
                output.Append(e.Data).Append('\n');
        }
        process.OutputDataReceived += Append;
        process.ErrorDataReceived += Append;
        var clock = Stopwatch.StartNew();
        process.Start();
        process.StandardInput.Close();
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
        return new Running(process, output, clock);
    }
}
