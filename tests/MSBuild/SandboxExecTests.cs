using System.Diagnostics;
using System.Runtime.Versioning;
using System.Text;
using Microsoft.Build.Framework;
using TaskItem = Microsoft.Build.Utilities.TaskItem;
using Sandbox.MSBuild;
using Sandbox.Tests.TestSupport;

namespace Sandbox.Tests.MSBuild;

[SupportedOSPlatform("linux")]
public class SandboxExecTests
{
    [Test]
    public void Command_line_has_only_the_options_that_are_set()
    {
        var task = new SandboxExec
        {
            Command = "test",
            Arguments = [new TaskItem("/src/T/T.csproj")],
            PayloadArguments = "--configuration Release --filter \"Category!=Slow\"",
        };
        Assert.That(task.CommandLine(), Is.EqualTo(new[]
        {
            "test", "--events", "json", "/src/T/T.csproj", "--", "--configuration", "Release", "--filter", "Category!=Slow",
        }));
    }

    [Test]
    public void Limits_network_image_workspace_environment_and_options_become_flags()
    {
        var task = new SandboxExec
        {
            Command = "test",
            Arguments = [new TaskItem("/src/T/T.csproj")],
            Timeout = "10m",
            Memory = "2g",
            Cpus = "1.5",
            PidsLimit = "256",
            Network = "none",
            Image = "mcr.microsoft.com/dotnet/sdk:10.0",
            Workspace = "/src",
            SandboxEnvironment = ["CI=1", "TOKEN"],
            Options = "-v /data:/data:ro --limits best-effort",
        };
        Assert.That(task.CommandLine(), Is.EqualTo(new[]
        {
            "test", "--events", "json",
            "--timeout", "10m", "--memory", "2g", "--cpus", "1.5", "--pids-limit", "256", "--network", "none",
            "--image", "mcr.microsoft.com/dotnet/sdk:10.0", "--workspace", "/src", "--env", "CI=1", "--env", "TOKEN",
            "-v", "/data:/data:ro", "--limits", "best-effort",
            "/src/T/T.csproj",
        }));
    }

    [Test]
    public void Run_has_no_workspace_and_takes_the_command_after_the_separator()
    {
        var task = new SandboxExec { Command = "run", Workspace = "/src", PayloadArguments = "make check" };
        Assert.That(task.CommandLine(), Is.EqualTo(new[] { "run", "--events", "json", "--", "make", "check" }));
    }

    [Test]
    public void A_dll_runs_with_dotnet_and_environment_variables_reach_the_CLI()
    {
        using var dir = new TempDirectory();
        string dll = dir.CreateFile("tools/sandbox/sandbox.dll");
        var task = new SandboxExec
        {
            Command = "run",
            CliPath = dll,
            PayloadArguments = "true",
            EnvironmentVariables = ["NUGET_PACKAGES=/cache/packages", "EMPTY="],
            WorkingDirectory = dir.Path,
        };
        ProcessStartInfo psi = task.BuildStartInfo();
        Assert.That(Path.GetFileName(psi.FileName), Is.EqualTo("dotnet"));
        Assert.That(psi.ArgumentList.ToList(), Is.EqualTo(new[] { dll, "run", "--events", "json", "--", "true" }));
        Assert.That(psi.Environment["NUGET_PACKAGES"], Is.EqualTo("/cache/packages"));
        Assert.That(psi.Environment["EMPTY"], Is.EqualTo(""));
        Assert.That(psi.WorkingDirectory, Is.EqualTo(dir.Path));
        Assert.That(psi.RedirectStandardInput && psi.RedirectStandardOutput && psi.RedirectStandardError);
    }

    [Test]
    public void The_default_CLI_is_the_one_in_the_package()
    {
        // tasks/net10.0/Sandbox.MSBuild.dll -> tools/sandbox/sandbox.dll
        string expected = Path.GetFullPath(Path.Combine(Path.GetDirectoryName(typeof(SandboxExec).Assembly.Location)!, "../../tools/sandbox/sandbox.dll"));
        Assert.That(SandboxExec.DefaultCliPath(), Is.EqualTo(expected));
    }

    [Test]
    public void The_packages_NativeAOT_CLI_comes_before_its_framework_dependent_one()
    {
        using var dir = new TempDirectory();
        string tasks = Path.Combine(dir.Path, "tasks", "net10.0");
        Directory.CreateDirectory(tasks);
        string dll = dir.CreateFile("tools/sandbox/sandbox.dll");
        Assert.That(SandboxExec.PackagedCliPath(tasks), Is.EqualTo(dll), "a package without the NativeAOT build");
        string nativeAot = dir.CreateFile("tools/sandbox/sandbox");
        Assert.That(SandboxExec.PackagedCliPath(tasks), Is.EqualTo(nativeAot));
        var task = new SandboxExec { BuildEngine = new FakeBuildEngine(), Command = "test", CliPath = nativeAot };
        Assert.That(task.BuildStartInfo().FileName, Is.EqualTo(nativeAot), "an executable runs without the dotnet host");
    }

    [Test]
    public void A_missing_CLI_is_SBX100()
    {
        var engine = new FakeBuildEngine();
        var task = new SandboxExec { BuildEngine = engine, Command = "test", CliPath = "/nonexistent/sandbox.dll" };
        Assert.That(task.Execute(), Is.False);
        Assert.That(engine.Errors.Single().Code, Is.EqualTo(EventTranslator.CliNotStartedCode));
        Assert.That(engine.Errors.Single().Message, Does.Contain("/nonexistent/sandbox.dll"));
    }

    [Test]
    public void An_executable_CLI_that_cannot_run_is_SBX100_and_names_the_dll_to_use_instead()
    {
        using var dir = new TempDirectory();
        string notExecutable = dir.CreateFile("tools/sandbox/sandbox"); // mode 0644: execve(2) fails with EACCES
        var engine = new FakeBuildEngine();
        var task = new SandboxExec { BuildEngine = engine, Command = "test", CliPath = notExecutable };
        Assert.That(task.Execute(), Is.False);
        Assert.That(engine.Errors.Single().Code, Is.EqualTo(EventTranslator.CliNotStartedCode));
        Assert.That(engine.Errors.Single().Message, Does.Contain(notExecutable).And.Contain("set SandboxCliPath to its sandbox.dll"));
    }

    [Test]
    public void An_unknown_command_is_refused()
    {
        var engine = new FakeBuildEngine();
        var task = new SandboxExec { BuildEngine = engine, Command = "check" };
        Assert.That(task.Execute(), Is.False);
        Assert.That(engine.Errors.Single().Message, Does.Contain("test or run"));
    }

    [Test]
    public async Task Lines_are_delivered_as_they_arrive_however_the_reads_cut_them()
    {
        byte[] data = Encoding.UTF8.GetBytes("{\"a\":1}\n\n{\"b\":\"" + new string('x', 200_000) + "\"}\r\nlast");
        var lines = new List<string>();
        await SandboxExec.PumpLinesAsync(new TrickleStream(data, 7), line => lines.Add(Encoding.UTF8.GetString(line)));
        Assert.That(lines, Has.Count.EqualTo(4));
        Assert.That(lines[0], Is.EqualTo("{\"a\":1}"));
        Assert.That(lines[1], Is.EqualTo(""));
        Assert.That(lines[2], Has.Length.EqualTo(200_000 + 8 + 1));
        Assert.That(lines[3], Is.EqualTo("last"));
    }

    /// <summary>A fake CLI: a shell script that prints events (no sandbox, no privileges).</summary>
    private static string FakeCli(TempDirectory dir, string body)
    {
        string path = dir.CreateFile("fake-sandbox", "#!/bin/sh\n" + body + "\n");
        File.SetUnixFileMode(path, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
        return path;
    }

    [Test]
    public void Execute_runs_the_CLI_and_logs_its_events()
    {
        using var dir = new TempDirectory();
        string cli = FakeCli(dir, """
            printf '{"event":"note","message":"args: %s"}\n' "$*"
            printf '{"event":"output","stream":"stdout","text":"/src/T.cs(3,4): error CS0103: nope\\n"}\n'
            printf '{"event":"exited","exitCode":1,"code":1,"reason":"exited","wallMs":1,"userCpuMs":0,"systemCpuMs":0}\n'
            printf '{"event":"summary","seen":true,"passed":2,"failed":1,"skipped":3,"durationMs":5,"message":"2 passed, 1 failed, 3 skipped in 0.0s"}\n'
            exit 1
            """);
        var engine = new FakeBuildEngine();
        var task = new SandboxExec
        {
            BuildEngine = engine,
            Command = "test",
            CliPath = cli,
            Arguments = [new TaskItem("/src/T.csproj")],
            Timeout = "1m",
        };
        Assert.That(task.Execute(), Is.False, engine.ToString());
        Assert.That(task.ExitCode, Is.EqualTo(1));
        Assert.That((task.TestsPassed, task.TestsFailed, task.TestsSkipped), Is.EqualTo((2, 1, 3)));
        Assert.That(engine.MessagesOf(MessageImportance.Normal), Does.Contain("sandbox: args: test --events json --timeout 1m /src/T.csproj"));
        Assert.That(engine.Errors.Select(e => e.Code), Is.EqualTo(new[] { "CS0103" }));
    }

    [Test]
    public void Execute_succeeds_when_the_CLI_does()
    {
        using var dir = new TempDirectory();
        string cli = FakeCli(dir, """
            printf '{"event":"exited","exitCode":0,"code":0,"reason":"exited","wallMs":1,"userCpuMs":0,"systemCpuMs":0}\n'
            """);
        var engine = new FakeBuildEngine();
        var task = new SandboxExec { BuildEngine = engine, Command = "run", CliPath = cli, PayloadArguments = "true" };
        Assert.That(task.Execute(), Is.True, engine.ToString());
        Assert.That(task.ExitCode, Is.EqualTo(0));
        Assert.That(task.TestsPassed, Is.EqualTo(-1));
    }

    [Test]
    public void Cancel_sends_SIGTERM_first()
    {
        using var dir = new TempDirectory();
        string cli = FakeCli(dir, """
            trap 'printf "{\"event\":\"note\",\"message\":\"got TERM\"}\n"; exit 143' TERM
            printf '{"event":"started","pid":1,"time":"now"}\n'
            while :; do sleep 0.05; done
            """);
        var (task, engine, elapsed, result) = RunAndCancel(cli, gracePeriod: 10_000);
        Assert.That(result, Is.False);
        Assert.That(elapsed, Is.LessThan(TimeSpan.FromSeconds(5)));
        Assert.That(engine.MessagesOf(MessageImportance.Normal), Does.Contain("sandbox: got TERM"));
        Assert.That(engine.Errors, Is.Empty, engine.ToString());
        Assert.That(task.ExitCode, Is.EqualTo(143));
    }

    [Test]
    public void Cancel_kills_after_the_grace_period()
    {
        using var dir = new TempDirectory();
        string cli = FakeCli(dir, """
            trap '' TERM
            printf '{"event":"started","pid":1,"time":"now"}\n'
            while :; do sleep 0.05; done
            """);
        var (task, engine, elapsed, result) = RunAndCancel(cli, gracePeriod: 300);
        Assert.That(result, Is.False);
        Assert.That(elapsed, Is.LessThan(TimeSpan.FromSeconds(5)));
        Assert.That(task.ExitCode, Is.EqualTo(137), "SIGKILL");
    }

    private static (SandboxExec Task, FakeBuildEngine Engine, TimeSpan Elapsed, bool Result) RunAndCancel(string cli, int gracePeriod)
    {
        var engine = new FakeBuildEngine();
        var task = new SandboxExec { BuildEngine = engine, Command = "run", CliPath = cli, PayloadArguments = "sleep 60", CancelGracePeriod = gracePeriod };
        bool result = true;
        var thread = new Thread(() => result = task.Execute());
        thread.Start();
        var wait = Stopwatch.StartNew();
        while (!engine.Snapshot().Any(l => l.Contains("started", StringComparison.Ordinal)) && wait.Elapsed < TimeSpan.FromSeconds(10))
            Thread.Sleep(10);
        Assert.That(engine.Snapshot().Any(l => l.Contains("started", StringComparison.Ordinal)), engine.ToString());
        var sw = Stopwatch.StartNew();
        task.Cancel();
        Assert.That(thread.Join(TimeSpan.FromSeconds(15)), Is.True, "Execute returned");
        return (task, engine, sw.Elapsed, result);
    }

    /// <summary>Returns at most <c>chunk</c> bytes per read, as a pipe might.</summary>
    private sealed class TrickleStream(byte[] data, int chunk) : Stream
    {
        private int _position;

        public override int Read(byte[] buffer, int offset, int count)
        {
            int n = Math.Min(Math.Min(count, chunk), data.Length - _position);
            Array.Copy(data, _position, buffer, offset, n);
            _position += n;
            return n;
        }

        public override bool CanRead => true;
        public override bool CanSeek => false;
        public override bool CanWrite => false;
        public override long Length => throw new NotSupportedException();
        public override long Position { get => throw new NotSupportedException(); set => throw new NotSupportedException(); }
        public override void Flush() { }
        public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();
        public override void SetLength(long value) => throw new NotSupportedException();
        public override void Write(byte[] buffer, int offset, int count) => throw new NotSupportedException();
    }
}
