using System.Diagnostics;
using System.Text;

namespace Sandbox.IntegrationTests;

/// <summary>
/// Whether this run must prove everything for real. In CI (SANDBOX_MUST_WORK=1) a missing capability
/// fails the test; elsewhere the test is skipped with the reason.
/// </summary>
internal static class Require
{
    public static bool MustWork => Environment.GetEnvironmentVariable("SANDBOX_MUST_WORK") == "1";

    public static void That(bool condition, string reason)
    {
        if (condition)
            return;
        if (MustWork)
            Assert.Fail($"required in CI (SANDBOX_MUST_WORK=1): {reason}");
        Assert.Ignore(reason);
    }

    /// <summary>The integration suite is about rootless sandboxes: root would hide what an unprivileged user cannot do.</summary>
    public static void Unprivileged() =>
        That(Environment.GetEnvironmentVariable("USER") != "root" && Linux.Syscalls.RealUserId != 0,
            "integration tests run real sandboxes as an unprivileged user; run ci/test (as root it switches to the sandbox-ci user)");

    public static void Command(string path) => That(File.Exists(path), $"{path} is missing (ci/setup-host installs it)");

    /// <summary>This user's subordinate id range, one that newuidmap and newgidmap accept.</summary>
    public static Runtime.IdMapPlan SubordinateRange()
    {
        string? why = Identity.IdMapResolver.TryResolveSubordinate(Identity.IdentityEnvironment.Current(), out Runtime.IdMapPlan? plan);
        That(plan is not null, $"no subordinate id range for this user: {why} (ci/setup-host adds one)");
        return plan!;
    }
}

internal sealed record CliResult(int ExitCode, byte[] Stdout, string Stderr, TimeSpan Elapsed)
{
    public string StdoutText => Encoding.UTF8.GetString(Stdout);

    public override string ToString() => $"exit {ExitCode} after {Elapsed.TotalMilliseconds:0} ms\nstdout: {StdoutText}\nstderr: {Stderr}";
}

/// <summary>Runs the real CLI binary, as a user would.</summary>
/// <summary>The images ci/make-test-images builds with real tools (umoci, skopeo, GNU tar), in $SANDBOX_TEST_IMAGES.</summary>
internal static class TestImages
{
    /// <summary>The path of one image; skips (a failure under SANDBOX_MUST_WORK=1) when the images are not there.</summary>
    public static string Path(string name)
    {
        string? dir = Environment.GetEnvironmentVariable("SANDBOX_TEST_IMAGES");
        Require.That(!string.IsNullOrEmpty(dir), "SANDBOX_TEST_IMAGES is not set (ci/test runs ci/make-test-images and sets it)");
        string path = System.IO.Path.Combine(dir!, name);
        Require.That(System.IO.Path.Exists(path), $"{path} is missing: run ci/make-test-images {dir}");
        return path;
    }
}

internal static class SandboxCli
{
    public static string Binary => Path.Combine(AppContext.BaseDirectory, "sandbox");

    public static ProcessStartInfo StartInfo(IEnumerable<string> args, IDictionary<string, string>? env = null) =>
        StartInfo(Binary, args, env);

    /// <summary>A start of another build of the CLI (<paramref name="binary"/>: the NativeAOT one).</summary>
    public static ProcessStartInfo StartInfo(string binary, IEnumerable<string> args, IDictionary<string, string>? env = null)
    {
        var psi = new ProcessStartInfo(binary)
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            RedirectStandardInput = true,
            UseShellExecute = false,
        };
        foreach (string a in args)
            psi.ArgumentList.Add(a);
        if (env is not null)
        {
            foreach (var (k, v) in env)
                psi.Environment[k] = v;
        }
        return psi;
    }

    public static CliResult Run(params string[] args) => Run(args, stdin: null);

    public static CliResult Run(IEnumerable<string> args, byte[]? stdin = null, IDictionary<string, string>? env = null, TimeSpan? limit = null) =>
        Run(StartInfo(args, env), $"sandbox {string.Join(' ', args)}", stdin, limit);

    /// <summary>Runs another build of the CLI (<paramref name="binary"/>) to its end.</summary>
    public static CliResult RunBinary(string binary, params string[] args) =>
        Run(StartInfo(binary, args), $"{binary} {string.Join(' ', args)}", stdin: null, limit: null);

    /// <summary>A shell command line that runs the CLI (<see cref="Binary"/>), for redirections and pipelines the test needs around it.</summary>
    public static CliResult Shell(string script, TimeSpan? limit = null)
    {
        var psi = new ProcessStartInfo("/bin/sh")
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            RedirectStandardInput = true,
            UseShellExecute = false,
        };
        psi.ArgumentList.Add("-c");
        psi.ArgumentList.Add(script);
        psi.Environment["HOME"] = Environment.GetEnvironmentVariable("HOME") ?? "/tmp";
        return Run(psi, script, stdin: null, limit);
    }

    private static CliResult Run(ProcessStartInfo psi, string what, byte[]? stdin, TimeSpan? limit)
    {
        var sw = Stopwatch.StartNew();
        using var process = Process.Start(psi)!;
        var stdoutTask = Task.Run(() =>
        {
            using var ms = new MemoryStream();
            process.StandardOutput.BaseStream.CopyTo(ms);
            return ms.ToArray();
        });
        var stderrTask = process.StandardError.ReadToEndAsync();
        if (stdin is not null)
            process.StandardInput.BaseStream.Write(stdin);
        process.StandardInput.Close();
        if (!process.WaitForExit(limit ?? TimeSpan.FromSeconds(60)))
        {
            process.Kill(entireProcessTree: true);
            Assert.Fail($"{what} did not finish within {limit ?? TimeSpan.FromSeconds(60)}");
        }
        process.WaitForExit();
        return new CliResult(process.ExitCode, stdoutTask.Result, stderrTask.Result, sw.Elapsed);
    }

    /// <summary>Runs a shell line in a host-mode sandbox.</summary>
    public static CliResult Sh(string script, params string[] options) =>
        Run(["run", .. options, "--", "/bin/sh", "-c", script]);
}

internal static class HostProcesses
{
    /// <summary>
    /// Host pids whose command line contains <paramref name="marker"/> (and, when given, starts with
    /// <paramref name="commandPrefix"/>: the CLI's own command line holds the marker too). With
    /// <paramref name="exceptExitHelpers"/>, not the CLI's "sandbox-exit" child, which shares the
    /// CLI's command line, lives from the sandbox's start, and unmaps the CLI's memory just after the
    /// CLI has exited (ProcessTeardown): it is no process of the sandbox.
    /// </summary>
    public static List<int> WithMarker(string marker, string? commandPrefix = null, bool exceptExitHelpers = false)
    {
        var found = new List<int>();
        foreach (string dir in Directory.EnumerateDirectories("/proc"))
        {
            if (!int.TryParse(Path.GetFileName(dir), out int pid) || pid == Environment.ProcessId)
                continue;
            try
            {
                string cmdline = File.ReadAllText(Path.Combine(dir, "cmdline")).Replace('\0', ' ');
                if (cmdline.Contains(marker) && (commandPrefix is null || cmdline.StartsWith(commandPrefix, StringComparison.Ordinal)) &&
                    !(exceptExitHelpers && File.ReadAllText(Path.Combine(dir, "comm")).TrimEnd('\n') == "sandbox-exit"))
                    found.Add(pid);
            }
            catch (IOException)
            {
            }
            catch (UnauthorizedAccessException)
            {
            }
        }
        return found;
    }

    public static bool WaitUntil(Func<bool> condition, TimeSpan limit)
    {
        var sw = Stopwatch.StartNew();
        while (sw.Elapsed < limit)
        {
            if (condition())
                return true;
            Thread.Sleep(20);
        }
        return condition();
    }

    public static void Signal(int pid, string signal)
    {
        using var kill = Process.Start("kill", new[] { "-" + signal, pid.ToString() })!;
        kill.WaitForExit();
    }
}

internal sealed class TempDir : IDisposable
{
    public TempDir()
    {
        Path = Directory.CreateTempSubdirectory("sandbox-it-").FullName;
    }

    public string Path { get; }

    public void Dispose()
    {
        // The store's own remover: an image store here may hold layers owned by subordinate ids.
        try
        {
            Storage.TreeRemover.Remove(Path);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or SandboxException)
        {
            TestContext.Progress.WriteLine($"could not remove {Path}: {e.Message}");
        }
    }
}

/// <summary>The source tree these tests were built from.</summary>
internal static class Repository
{
    /// <summary>$SANDBOX_REPO_ROOT, else the directory of Sandbox.sln above the tests' own directory.</summary>
    public static string Root()
    {
        if (Environment.GetEnvironmentVariable("SANDBOX_REPO_ROOT") is { Length: > 0 } configured)
            return configured;
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            if (File.Exists(Path.Combine(dir.FullName, "Sandbox.sln")))
                return dir.FullName;
        }
        throw new InvalidOperationException($"no Sandbox.sln above {AppContext.BaseDirectory}");
    }

    /// <summary>Whether a build can write into these projects (src/PROJECT/obj): ci/test runs from the CI user's copy; a root-owned checkout run by hand cannot.</summary>
    public static bool IsWritable(string root, params string[] projects)
    {
        foreach (string project in projects)
        {
            string probe = Path.Combine(root, "src", project, $".write-probe-{Guid.NewGuid():N}");
            try
            {
                File.WriteAllText(probe, "");
                File.Delete(probe);
            }
            catch (Exception e) when (e is UnauthorizedAccessException or IOException)
            {
                return false;
            }
        }
        return true;
    }

    /// <summary>Copies a directory tree without build output (bin, obj, TestResults) and .git.</summary>
    public static void CopyTree(string from, string to)
    {
        Directory.CreateDirectory(to);
        foreach (string file in Directory.EnumerateFiles(from))
            File.Copy(file, Path.Combine(to, Path.GetFileName(file)));
        foreach (string dir in Directory.EnumerateDirectories(from))
        {
            if (Path.GetFileName(dir) is not ("bin" or "obj" or "TestResults" or ".git"))
                CopyTree(dir, Path.Combine(to, Path.GetFileName(dir)));
        }
    }
}
