using System.Diagnostics;
using System.Text.RegularExpressions;

namespace Sandbox.IntegrationTests;

/// <summary>
/// `sandbox test` on the sample solution (examples/HelloSandbox) against `dotnet test` on the host:
/// the same tests run; inside, the sandbox checks run too (network off, host /tmp invisible,
/// workspace writable, the rest read-only, secrets out), which the host run skips.
/// </summary>
[TestFixture]
[Parallelizable(ParallelScope.None)]
public sealed class SandboxTestCommandTests
{
    [OneTimeSetUp]
    public void Unprivileged() => Require.Unprivileged();

    /// <summary>
    /// A fresh $HOME is a new machine to NuGet: without its migration marker the SDK's first NuGet
    /// call starts `sh -c umask` and seven `ls -ld` before it builds. A stand-in `dotnet` (first on
    /// PATH, in the workspace, which the sandbox binds) reports what the restore's and the test's
    /// sandboxes give it; the caller's $HOME, which the sandbox covers with a tmpfs, stays empty.
    /// </summary>
    [Test]
    public void RestoreAndTestFindNuGetsMigrationMarkerInTheirFreshHome()
    {
        using var work = new TempDir();
        string workspace = Directory.CreateDirectory(Path.Combine(work.Path, "ws")).FullName;
        string tools = Directory.CreateDirectory(Path.Combine(workspace, "tools")).FullName;
        string home = Directory.CreateDirectory(Path.Combine(work.Path, "home")).FullName;
        string sln = Path.Combine(workspace, "App.sln");
        File.WriteAllText(sln, "");
        string fake = Path.Combine(tools, "dotnet");
        File.WriteAllText(fake, """
            #!/bin/sh
            m="$HOME/.local/share/NuGet/Migrations/1"
            if [ -f "$m" ] && [ ! -s "$m" ]; then echo "$1: marker in $HOME"; else echo "$1: no marker"; fi
            """);
        if (OperatingSystem.IsLinux())
            File.SetUnixFileMode(fake, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute | UnixFileMode.GroupRead | UnixFileMode.OtherRead);

        var env = new Dictionary<string, string>
        {
            ["PATH"] = tools + ":" + Environment.GetEnvironmentVariable("PATH"),
            ["HOME"] = home,
            ["NUGET_PACKAGES"] = Path.Combine(work.Path, "packages"),
            // The restore's own packages folder is the store's (by default under $HOME/.local/share).
            ["SANDBOX_ROOT"] = Path.Combine(work.Path, "store"),
        };
        CliResult r = SandboxCli.Run(["test", sln, "--workspace", workspace], env: env);
        Assert.That(r.ExitCode, Is.EqualTo(0), r.ToString());
        Assert.That(r.StdoutText, Does.Contain($"restore: marker in {home}\n").And.Contain($"test: marker in {home}\n"), r.ToString());
        Assert.That(Directory.EnumerateFileSystemEntries(home), Is.Empty, "the caller's $HOME got nothing");
        Assert.That(Directory.Exists(Path.Combine(work.Path, "store", "nuget-packages")), Is.True, "the restore's packages folder");
    }

    /// <summary>
    /// `dotnet test` exits 0 on SIGTERM with only some tests run; `sandbox test` sent SIGTERM then says
    /// 143, as `sandbox run` does, not 0. A stand-in `dotnet` that exits 0 on SIGTERM plays it.
    /// </summary>
    [Test]
    public void ATestRunStoppedBySigtermIsNotASuccess()
    {
        using var work = new TempDir();
        string workspace = Directory.CreateDirectory(Path.Combine(work.Path, "ws")).FullName;
        string tools = Directory.CreateDirectory(Path.Combine(workspace, "tools")).FullName;
        string sln = Path.Combine(workspace, "App.sln");
        File.WriteAllText(sln, "");
        string fake = Path.Combine(tools, "dotnet");
        File.WriteAllText(fake, "#!/bin/sh\nif [ \"$1\" = test ]; then trap 'exit 0' TERM; echo started; sleep 30 & wait; fi\n");
        if (OperatingSystem.IsLinux())
            File.SetUnixFileMode(fake, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute | UnixFileMode.GroupRead | UnixFileMode.OtherRead);
        CliResult r = SandboxCli.Shell(
            $"PATH='{tools}':$PATH SANDBOX_ROOT='{Path.Combine(work.Path, "store")}' NUGET_PACKAGES='{Path.Combine(work.Path, "packages")}' " +
            $"'{SandboxCli.Binary}' test '{sln}' --workspace '{workspace}' --no-restore > '{work.Path}/out' 2>&1 & p=$!; " +
            $"for i in $(seq 100); do grep -q started '{work.Path}/out' && break; sleep 0.1; done; kill -TERM $p; wait $p; echo \"exit=$?\"", TimeSpan.FromSeconds(60));
        Assert.That(r.StdoutText, Is.EqualTo("exit=143\n"), r + "\n" + File.ReadAllText(Path.Combine(work.Path, "out")));
    }

    [Test]
    public void TheSampleRunsTheSameTestsInsideAsOnTheHostWithTheSandboxChecksPassing()
    {
        using var work = new TempDir();
        string sample = Path.Combine(work.Path, "HelloSandbox");
        Repository.CopyTree(Path.Combine(Repository.Root(), "examples", "HelloSandbox"), sample);
        string sln = Path.Combine(sample, "HelloSandbox.sln");

        var env = new Dictionary<string, string> { ["SANDBOX_DEMO_SECRET"] = "host-only-secret", ["DOTNET_NOLOGO"] = "1" };
        CliResult inside = SandboxCli.Run(["test", sln, "--workspace", sample, "-e", "SANDBOX_DEMO_INSIDE=1", "--timeout", "10m"],
            env: env, limit: TimeSpan.FromMinutes(10));
        Assert.That(inside.ExitCode, Is.EqualTo(0), inside.ToString());
        Match summary = Regex.Match(inside.Stderr, @"sandbox: test: (\d+) passed, (\d+) failed, (\d+) skipped");
        Assert.That(summary.Success, Is.True, inside.Stderr);
        int passedInside = int.Parse(summary.Groups[1].Value);
        Assert.That((summary.Groups[2].Value, summary.Groups[3].Value), Is.EqualTo(("0", "0")), "every sandbox check ran and passed inside");
        // --timeout bounds restore and test together: the test gets what the restore left of it.
        Match left = Regex.Match(inside.Stderr, @"writable, ([0-9.]+)s of --timeout left\)");
        Assert.That(left.Success, Is.True, inside.Stderr);
        Assert.That(double.Parse(left.Groups[1].Value, System.Globalization.CultureInfo.InvariantCulture), Is.GreaterThan(0).And.LessThan(600));

        var psi = new ProcessStartInfo("dotnet", ["test", sln, "--no-restore"]) { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (var (k, v) in env)
            psi.Environment[k] = v;
        using var host = Process.Start(psi)!;
        string hostOut = host.StandardOutput.ReadToEnd() + host.StandardError.ReadToEnd();
        host.WaitForExit();
        Assert.That(host.ExitCode, Is.EqualTo(0), hostOut);
        Match vstest = Regex.Match(hostOut, @"Failed:\s+(\d+), Passed:\s+(\d+), Skipped:\s+(\d+), Total:\s+(\d+)");
        Assert.That(vstest.Success, Is.True, hostOut);
        int total = int.Parse(vstest.Groups[4].Value);
        Assert.That(passedInside, Is.EqualTo(total), "the same tests run inside as on the host");
        Assert.That(int.Parse(vstest.Groups[3].Value), Is.GreaterThan(0), "on the host, the sandbox checks are skipped");
        TestContext.Out.WriteLine($"host: {vstest.Value}; sandbox: {summary.Value}");
    }
}
