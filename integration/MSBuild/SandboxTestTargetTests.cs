using System.IO.Compression;
using System.Reflection.PortableExecutable;
using System.Runtime.InteropServices;
using System.Text.RegularExpressions;

namespace Sandbox.IntegrationTests.MSBuild;

/// <summary>
/// The Sandbox.MSBuild package as a user gets it: packed (ci/pack-msbuild), referenced from NUnit
/// projects in a temporary directory through a local feed, and run with <c>dotnet build -t:SandboxTest</c>:
/// the build log, the exit code, the network inside, and Ctrl+C.
/// </summary>
[TestFixture]
[Parallelizable(ParallelScope.None)]
[System.Runtime.Versioning.SupportedOSPlatform("linux")]
public sealed class SandboxTestTargetTests
{
    private MSBuildPackage? _package;
    private TempDir? _dir;
    private string _workspace = "";

    private const string TestSdkVersion = "18.0.1";
    private const string NUnitVersion = "4.4.0";
    private const string AdapterVersion = "5.2.0";

    [OneTimeSetUp]
    public void PackAndWriteWorkspace()
    {
        Require.Unprivileged();
        _package = new MSBuildPackage();
        _dir = new TempDir();
        _workspace = Path.Combine(_dir.Path, "work");
        Directory.CreateDirectory(_workspace);
        // The local feed, then the default source of this machine (`dotnet nuget list source`: nuget.org).
        File.WriteAllText(Path.Combine(_workspace, "nuget.config"), $"""
            <?xml version="1.0" encoding="utf-8"?>
            <configuration>
              <packageSources>
                <clear />
                <add key="sandbox-local" value="{_package.Feed}" />
                <add key="nuget.org" value="https://api.nuget.org/v3/index.json" />
              </packageSources>
            </configuration>
            """);
    }

    [OneTimeTearDown]
    public void CleanUp()
    {
        _dir?.Dispose();
        _package?.Dispose();
    }

    private string Project(string name, string tests)
    {
        string dir = Path.Combine(_workspace, name);
        Directory.CreateDirectory(dir);
        File.WriteAllText(Path.Combine(dir, name + ".csproj"), $"""
            <Project Sdk="Microsoft.NET.Sdk">
              <PropertyGroup>
                <TargetFramework>net10.0</TargetFramework>
                <ImplicitUsings>enable</ImplicitUsings>
                <Nullable>enable</Nullable>
                <IsPackable>false</IsPackable>
              </PropertyGroup>
              <ItemGroup>
                <PackageReference Include="Microsoft.NET.Test.Sdk" Version="{TestSdkVersion}" />
                <PackageReference Include="NUnit" Version="{NUnitVersion}" />
                <PackageReference Include="NUnit3TestAdapter" Version="{AdapterVersion}" />
                <PackageReference Include="Sandbox.MSBuild" Version="{_package!.Version}" />
              </ItemGroup>
              <ItemGroup>
                <Using Include="NUnit.Framework" />
              </ItemGroup>
            </Project>
            """);
        File.WriteAllText(Path.Combine(dir, "Tests.cs"), tests);
        return Path.Combine(dir, name + ".csproj");
    }

    private DotnetRun.Running StartSandboxTest(string project) =>
        DotnetRun.Start("dotnet",
        [
            "build", project, "-t:SandboxTest", "-nologo", "-tl:off", "-v:n", "-nodeReuse:false",
            $"-p:SandboxWorkspace={_workspace}", "-p:SandboxTimeout=3m",
        ], _workspace);

    // Passes only where there is no network: no interface but loopback, and no route out.
    private const string NoNetworkTest = """
            [Test]
            public void NoNetwork()
            {
                var up = System.Net.NetworkInformation.NetworkInterface.GetAllNetworkInterfaces()
                    .Where(i => i.NetworkInterfaceType != System.Net.NetworkInformation.NetworkInterfaceType.Loopback)
                    .Select(i => i.Name).ToList();
                Assert.That(up, Is.Empty, "network interfaces besides loopback");
                using var client = new System.Net.Sockets.TcpClient();
                Assert.That(() => client.Connect("1.1.1.1", 53), Throws.InstanceOf<System.Net.Sockets.SocketException>());
            }
        """;

    [Test]
    public void A_failing_test_fails_the_build_with_an_error_at_its_file_and_line()
    {
        string source = $$"""
            namespace Mixed;

            public class Tests
            {
            {{NoNetworkTest}}

                [Test]
                public void Fails()
                {
                    Assert.That(1 + 1, Is.EqualTo(3), "arithmetic");
                }
            }
            """;
        int failingLine = source.Split('\n').ToList().FindIndex(l => l.Contains("Is.EqualTo(3)")) + 1;
        string project = Project("Mixed", source);

        using DotnetRun.Running build = StartSandboxTest(project);
        DotnetRun.Result r = build.Finish(TimeSpan.FromMinutes(3));

        Assert.That(r.ExitCode, Is.Not.EqualTo(0), r.ToString());
        string testsFile = Regex.Escape(Path.Combine(_workspace, "Mixed", "Tests.cs"));
        Assert.That(r.Output, Does.Match($@"{testsFile}\({failingLine}\): error TESTERROR: Fails failed: arithmetic"), r.ToString());
        Assert.That(r.Output, Does.Contain("sandbox test: 1 passed, 1 failed, 0 skipped"), r.ToString());
        Assert.That(r.Output, Does.Not.Contain("NoNetwork failed"), "the network was on inside:\n" + r);
        Assert.That(Regex.Matches(r.Output, "error TESTERROR").Count, Is.EqualTo(2), "the error, and MSBuild's repetition of it in the closing summary");
        Assert.That(r.Output, Does.Match(@"Failed!\s+-\s+Failed:\s+1, Passed:\s+1"));
    }

    [Test]
    public void Passing_tests_build_succeeds()
    {
        string project = Project("Passing", $$"""
            namespace Passing;

            public class Tests
            {
            {{NoNetworkTest}}

                [Test]
                public void Adds() => Assert.That(1 + 1, Is.EqualTo(2));
            }
            """);

        using DotnetRun.Running build = StartSandboxTest(project);
        DotnetRun.Result r = build.Finish(TimeSpan.FromMinutes(3));

        Assert.That(r.ExitCode, Is.EqualTo(0), r.ToString());
        Assert.That(r.Output, Does.Contain("sandbox test: 2 passed, 0 failed, 0 skipped"), r.ToString());
        // The task started the package's NativeAOT CLI itself, not `dotnet sandbox.dll` (the task logs
        // the command line at normal importance); ci/pack-msbuild builds it on x86-64.
        if (RuntimeInformation.OSArchitecture == Architecture.X64)
            Assert.That(r.Output, Does.Match(@"sandbox: \S+/tools/sandbox/sandbox test "), r.ToString());
        Assert.That(r.Output, Does.Contain("0 Error(s)"), r.ToString());
    }

    [Test]
    public void Ctrl_C_ends_the_build_and_the_sandbox()
    {
        // The project's directory name is the marker: it is in the command line of the build, the CLI,
        // dotnet test inside and its test host.
        string marker = $"Sleeps{Guid.NewGuid():N}";
        string project = Project(marker, """
            namespace Sleeps;

            public class Tests
            {
                [Test]
                public void Sleeps()
                {
                    File.WriteAllText(Path.Combine(TestContext.CurrentContext.TestDirectory, "started"), "");
                    Thread.Sleep(60_000);
                }
            }
            """);
        string started = Path.Combine(_workspace, marker, "bin", "Debug", "net10.0", "started");

        using DotnetRun.Running build = StartSandboxTest(project);
        bool sleeping = HostProcesses.WaitUntil(() => File.Exists(started) || build.Process.HasExited, TimeSpan.FromMinutes(2));
        Assert.That(sleeping && File.Exists(started), Is.True, $"the test did not start:\n{build.Output}");
        Assert.That(HostProcesses.WithMarker(marker), Has.Count.GreaterThanOrEqualTo(3), "the build, the CLI, dotnet test and its host");

        var clock = System.Diagnostics.Stopwatch.StartNew();
        HostProcesses.Signal(build.Process.Id, "INT"); // as Ctrl+C does (a terminal sends it to the whole group)
        Assert.That(build.WaitForExit(TimeSpan.FromSeconds(15)), Is.True, $"the build still runs 15 s after SIGINT:\n{build.Output}");
        TestContext.Out.WriteLine($"the build ended {clock.ElapsedMilliseconds} ms after SIGINT, exit {build.Process.ExitCode}");

        Assert.That(build.Process.ExitCode, Is.Not.EqualTo(0));
        Assert.That(build.Output, Does.Contain("sandbox: cancelled"), build.Output);
        bool gone = HostProcesses.WaitUntil(() => HostProcesses.WithMarker(marker).Count == 0, TimeSpan.FromSeconds(5));
        Assert.That(gone, Is.True, "still running: " + string.Join("; ", HostProcesses.WithMarker(marker).Select(Describe)));
    }

    [Test]
    public void The_sample_runs_to_the_same_counts_through_the_target_and_the_CLI()
    {
        // examples/HelloSandbox as a user would take the package: a PackageReference in every project
        // (Directory.Build.targets), `dotnet build HelloSandbox.sln -t:SandboxTest` (the library is skipped).
        string sample = Path.Combine(_dir!.Path, "HelloSandbox");
        Repository.CopyTree(Path.Combine(Repository.Root(), "examples", "HelloSandbox"), sample);
        File.Copy(Path.Combine(_workspace, "nuget.config"), Path.Combine(sample, "nuget.config"));
        File.WriteAllText(Path.Combine(sample, "Directory.Build.targets"), $"""
            <Project>
              <ItemGroup>
                <PackageReference Include="Sandbox.MSBuild" Version="{_package!.Version}" />
              </ItemGroup>
            </Project>
            """);
        string solution = Path.Combine(sample, "HelloSandbox.sln");

        using DotnetRun.Running build = DotnetRun.Start("dotnet",
        [
            "build", solution, "-t:SandboxTest", "-nologo", "-tl:off", "-nodeReuse:false",
            $"-p:SandboxWorkspace={sample}", "-p:SandboxEnvironment=SANDBOX_DEMO_INSIDE=1", "-p:SandboxTimeout=3m",
        ], sample);
        DotnetRun.Result target = build.Finish(TimeSpan.FromMinutes(3));
        Assert.That(target.ExitCode, Is.EqualTo(0), target.ToString());
        Assert.That(target.Output, Does.Contain("SandboxTest: HelloSandbox is not a test project: skipped"), target.ToString());
        (int Passed, int Failed, int Skipped) viaTarget = Counts(target.Output, "sandbox test: ");

        CliResult cli = SandboxCli.Run(["test", solution, "--workspace", sample, "-e", "SANDBOX_DEMO_INSIDE=1", "--timeout", "3m"], limit: TimeSpan.FromMinutes(3));
        Assert.That(cli.ExitCode, Is.EqualTo(0), cli.ToString());
        (int Passed, int Failed, int Skipped) viaCli = Counts(cli.Stderr, "sandbox: test: ");

        TestContext.Out.WriteLine($"target: {viaTarget}, CLI: {viaCli}");
        Assert.That(viaTarget, Is.EqualTo(viaCli));
        Assert.That(viaTarget.Passed, Is.GreaterThan(0));
        Assert.That((viaTarget.Failed, viaTarget.Skipped), Is.EqualTo((0, 0)), "the sandbox checks ignore themselves outside a sandbox: none may be skipped here");
    }

    [Test]
    public void The_package_ships_its_CLI_precompiled()
    {
        // The task starts the package's CLI for every SandboxTest. ci/pack-msbuild puts the NativeAOT
        // build there on x86-64 (tools/sandbox/sandbox: a warm run in about 3 ms), and publishes the
        // framework-dependent one (`dotnet sandbox.dll`, for SandboxCliPath) ReadyToRun, which takes a
        // warm run from about 82 to 47 ms. An assembly with ReadyToRun code has a managed native header
        // (ECMA-335 II.25.3.3.1, ManagedNativeHeader; IL-only assemblies leave it empty).
        if (RuntimeInformation.OSArchitecture is not (Architecture.X64 or Architecture.Arm64))
            Assert.Ignore($"ci/pack-msbuild precompiles only for x64 and arm64, not {RuntimeInformation.OSArchitecture}");
        string nupkg = Path.Combine(_package!.Feed, $"Sandbox.MSBuild.{_package.Version}.nupkg");
        using ZipArchive package = ZipFile.OpenRead(nupkg);
        if (RuntimeInformation.OSArchitecture == Architecture.X64)
        {
            // Alone in a directory, an apphost would not start (it runs sandbox.dll beside it); the
            // NativeAOT build does.
            ZipArchiveEntry cli = package.GetEntry("tools/sandbox/sandbox") ?? throw new AssertionException($"{nupkg} has no tools/sandbox/sandbox");
            using var alone = new TempDir();
            string path = Path.Combine(alone.Path, "sandbox");
            cli.ExtractToFile(path);
            File.SetUnixFileMode(path, UnixFileMode.UserRead | UnixFileMode.UserExecute);
            DotnetRun.Result version = DotnetRun.Run(path, ["--version"], alone.Path, TimeSpan.FromSeconds(30));
            Assert.That(version.ExitCode, Is.EqualTo(0), version.ToString());
            Assert.That(version.Output, Does.Match(@"^\d+\.\d+\.\d+"), version.ToString());
        }
        foreach (string name in new[] { "tools/sandbox/sandbox.dll", "tools/sandbox/Sandbox.Core.dll" })
        {
            ZipArchiveEntry entry = package.GetEntry(name) ?? throw new AssertionException($"{nupkg} has no {name}");
            using var image = new MemoryStream();
            using (Stream stream = entry.Open())
                stream.CopyTo(image);
            image.Position = 0;
            using var reader = new PEReader(image);
            Assert.That(reader.PEHeaders.CorHeader?.ManagedNativeHeaderDirectory.Size ?? 0, Is.GreaterThan(0), $"{name} in the package has no ReadyToRun code");
        }
    }

    private static (int Passed, int Failed, int Skipped) Counts(string output, string prefix)
    {
        Match m = Regex.Match(output, Regex.Escape(prefix) + @"(\d+) passed, (\d+) failed, (\d+) skipped");
        Assert.That(m.Success, Is.True, $"no summary line ({prefix}...) in:\n{output}");
        return (int.Parse(m.Groups[1].Value), int.Parse(m.Groups[2].Value), int.Parse(m.Groups[3].Value));
    }

    private static string Describe(int pid)
    {
        try
        {
            return $"{pid}: {File.ReadAllText($"/proc/{pid}/cmdline").Replace('\0', ' ')}";
        }
        catch (IOException)
        {
            return pid.ToString();
        }
    }
}
