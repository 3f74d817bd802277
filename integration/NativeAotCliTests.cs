using System.Diagnostics;
using System.Text.RegularExpressions;
using Sandbox.IntegrationTests.MSBuild;

namespace Sandbox.IntegrationTests;

/// <summary>
/// The NativeAOT CLI, as ci/publish-aot builds it (the build users install and ci/bench measures):
/// it runs sandboxes, with the native executor linked into the executable instead of loaded from
/// libsandbox_exec.so, and its start-up layout list (src/Sandbox.Cli/startup-methods.txt) still
/// names the methods of this build. The rest of the suite runs the JIT build.
/// </summary>
[TestFixture]
[Parallelizable(ParallelScope.None)]
public sealed class NativeAotCliTests
{
    private TempDir? _out;
    private string _publishOutput = "";

    private string Cli => Path.Combine(_out!.Path, "sandbox");

    [OneTimeSetUp]
    public void Publish()
    {
        Require.Unprivileged();
        string root = Repository.Root();
        Require.That(Repository.IsWritable(root, "Sandbox.Core", "Sandbox.Cli"),
            $"the NativeAOT build writes into {root}/src/*/obj: run from a writable checkout (ci/test runs from the CI user's copy)");
        _out = new TempDir();
        DotnetRun.Result r = DotnetRun.Run("bash", [Path.Combine(root, "ci", "publish-aot"), _out.Path], root, TimeSpan.FromMinutes(8));
        Assert.That(r.ExitCode, Is.EqualTo(0), $"ci/publish-aot failed:\n{r}");
        Assert.That(File.Exists(Cli), Is.True, r.ToString());
        _publishOutput = r.Output;
    }

    [OneTimeTearDown]
    public void RemoveBuild() => _out?.Dispose();

    [Test]
    public void RunsASandboxAndPassesOnItsOutputAndExitCode()
    {
        CliResult r = Run(["run", "--", "/bin/sh", "-c", "echo out; echo err >&2; exit 7"]);
        Assert.That(r.ExitCode, Is.EqualTo(7), r.ToString());
        Assert.That(r.StdoutText, Is.EqualTo("out\n"), r.ToString());
        Assert.That(r.Stderr, Is.EqualTo("err\n"), r.ToString());

        // An error path: its message comes through the same trimmed, reflection-free code.
        CliResult missing = Run(["run", "--", "/no/such/command"]);
        Assert.That(missing.ExitCode, Is.EqualTo(127), missing.ToString());
        Assert.That(missing.Stderr, Does.Contain("/no/such/command"), missing.ToString());
    }

    /// <summary>
    /// The NativeAOT CLI opens descriptors of its own earlier than the JIT one (Console's dups of
    /// stdout and stderr), and crashed with a closed stdout or stderr: the same checks as the JIT's.
    /// </summary>
    [Test]
    public void StandardDescriptorsTheCallerClosedBecomeTheNullDeviceNotDescriptorsOfTheCli() =>
        RuntimeTests.CheckClosedStandardDescriptors(Cli);

    /// <summary>
    /// The CLI hands the unmapping of its memory to a child that waits for its exit
    /// (ProcessTeardown.HandOff; ProcessTeardownTests inspects one): that child must end with it.
    /// It shares the CLI's memory, and with it the CLI's command line, so the marker finds it.
    /// </summary>
    /// <summary>The runtime option that makes a cut gzip file fail is in the NativeAOT executable too.</summary>
    [Test]
    public void RefusesAGzipTarballCutShort()
    {
        using var dir = new TempDir();
        string cut = Images.ImageIntegrationTests.CutGzipArchive(dir.Path);
        CliResult r = Run(["image", "import", cut, "--root", Path.Combine(dir.Path, "store")]);
        Assert.That(r.ExitCode, Is.EqualTo(125), r.ToString());
        Assert.That(r.Stderr, Does.Contain("the gzip data ends early"), r.ToString());
    }

    [Test]
    public void LeavesNoProcessBehindWhenItExits()
    {
        string marker = "teardown-" + Guid.NewGuid().ToString("N");
        for (int i = 0; i < 3; i++)
        {
            CliResult r = Run(["run", "--", "/bin/true", marker]);
            Assert.That(r.ExitCode, Is.EqualTo(0), r.ToString());
        }
        List<int> left = [];
        Assert.That(HostProcesses.WaitUntil(() => (left = HostProcesses.WithMarker(marker)).Count == 0, TimeSpan.FromSeconds(5)), Is.True,
            $"processes of the CLI outlived it: {string.Join(", ", left)}");
    }

    /// <summary>
    /// The teardown child is made as soon as the sandbox has started, while the CLI would only wait
    /// (Program.Dispatch): made at the end, its clone was on the way out of every run (72 µs,
    /// ci/PERFORMANCE.md). So it is there, the CLI's child, named, while the payload runs.
    /// </summary>
    [Test]
    public void MakesItsTeardownChildWhileTheSandboxRuns()
    {
        using var cli = Process.Start(SandboxCli.StartInfo(Cli, ["run", "--", "/bin/sh", "-c", "echo ready; exec sleep 30"]))!;
        try
        {
            Assert.That(cli.StandardOutput.ReadLine(), Is.EqualTo("ready"), "the sandbox did not start");
            // The payload may print before the CLI has got back from starting it: wait a little.
            List<string> children = [];
            HostProcesses.WaitUntil(() => (children = ChildrenOf(cli.Id)).Contains("sandbox-exit"), TimeSpan.FromSeconds(5));
            Assert.That(children, Does.Contain("sandbox-exit"), "the CLI's children: " + string.Join(", ", children));
        }
        finally
        {
            HostProcesses.Signal(cli.Id, "TERM");
            if (!cli.WaitForExit(TimeSpan.FromSeconds(20)))
                cli.Kill(entireProcessTree: true);
        }
        Assert.That(cli.ExitCode, Is.EqualTo(128 + 15), cli.StandardError.ReadToEnd());
    }

    // The names (comm) of the processes whose parent is pid.
    private static List<string> ChildrenOf(int pid)
    {
        var names = new List<string>();
        foreach (string dir in Directory.EnumerateDirectories("/proc"))
        {
            try
            {
                string status = File.ReadAllText(Path.Combine(dir, "status"));
                if (status.Contains($"\nPPid:\t{pid}\n"))
                    names.Add(status.Split('\n')[0]["Name:\t".Length..]);
            }
            catch (IOException)
            {
            }
        }
        return names;
    }

    /// <summary>
    /// Sandbox.Cli.csproj links the executor in and exports its entry points; NativeExecutor binds
    /// them from the executable. Were the export lost, it would quietly dlopen the library published
    /// beside it (as the JIT build does) and lose the start-up time: the running CLI's mappings show
    /// which one it did.
    /// </summary>
    [Test]
    public void BindsTheNativeExecutorLinkedIntoItsOwnExecutable()
    {
        Assert.That(File.Exists(Path.Combine(_out!.Path, "libsandbox_exec.so")), Is.True,
            "the library is published beside the CLI (this test would prove nothing without it)");
        using var cli = Process.Start(SandboxCli.StartInfo(Cli, ["run", "--", "/bin/sh", "-c", "echo ready; exec sleep 30"]))!;
        try
        {
            Assert.That(cli.StandardOutput.ReadLine(), Is.EqualTo("ready"), "the sandbox did not start");
            string maps = File.ReadAllText($"/proc/{cli.Id}/maps");
            Assert.That(maps, Does.Contain(Cli), "the CLI's own executable is mapped");
            Assert.That(maps, Does.Not.Contain("libsandbox_exec.so"), "the CLI loaded the executor library instead of using the one linked in");
        }
        finally
        {
            // SIGTERM goes on to the payload (docker's --sig-proxy): sleep dies of it, and so the run.
            HostProcesses.Signal(cli.Id, "TERM");
            if (!cli.WaitForExit(TimeSpan.FromSeconds(20)))
                cli.Kill(entireProcessTree: true);
        }
        Assert.That(cli.ExitCode, Is.EqualTo(128 + 15), cli.StandardError.ReadToEnd());
    }

    /// <summary>
    /// Before Main the NativeAOT runtime would parse /proc/self/mountinfo and /proc/self/cgroup twice,
    /// read cgroupfs and nine sysfs cache files (0.43 ms of every warm run), list the NUMA nodes and
    /// read the possible CPUs twice, and glibc would read /proc/self/maps for the main thread's
    /// stack. Sandbox.Cli.csproj links replacements in with ld's --wrap
    /// (Sandbox.Core/Native/runtime_host_probes.c). A wrap whose symbol a later runtime renamed would
    /// be dropped without a word, and the reads would be back: strace sees them.
    /// </summary>
    [Test]
    public void StartsWithoutProbingTheHostsCgroupsAndCaches()
    {
        string[] calls = Trace("openat,open,statfs", children: true, "--version");
        // The trace saw the start-up at all: the loader opens libc.
        Assert.That(calls, Has.Some.Contains("libc.so.6"), string.Join("\n", calls));
        string[] probes = ["/proc/self/mountinfo", "/proc/self/cgroup", "/sys/fs/cgroup", "/sys/devices/system/cpu/cpu0/cache/", "/proc/self/maps",
            "/sys/devices/system/node"];
        string[] found = calls.Where(call => probes.Any(call.Contains)).ToArray();
        Assert.That(found, Is.Empty, "the runtime probed the host before Main (runtime_host_probes.c's wraps no longer apply):\n" + string.Join("\n", found));
        // Read once, then kept (the runtime asks twice).
        Assert.That(calls.Count(call => call.Contains("/sys/devices/system/cpu/possible")), Is.EqualTo(1), string.Join("\n", calls));
    }

    /// <summary>
    /// The GC's address range is embedded in the executable (Sandbox.Cli.csproj, GCRegionRange):
    /// the runtime reserves 1 GiB for the heap, not twice the machine's memory, and its bookkeeping
    /// is sized by that. Without the setting this kind of runner (24 GB) saw a 50 GB reservation;
    /// were the option dropped or renamed by a later compiler, it would be back. The range must fit
    /// an address-space limit such as shared CI hosts set (`ulimit -v`): at 4 GiB, the CLI exited
    /// 255 without a word under a 4 GiB limit.
    /// </summary>
    [Test]
    public void ReservesAFixedGibibyteForItsHeapAndStartsUnderAnAddressSpaceLimit()
    {
        string[] calls = Trace("mmap", children: false, "--version");
        // mmap(NULL, 1073745920, PROT_NONE, MAP_PRIVATE|MAP_ANONYMOUS, -1, 0) = 0x7f...
        long[] reservations = calls.Select(call => Regex.Match(call, @"^mmap\(NULL, (\d+), PROT_NONE,"))
            .Where(m => m.Success).Select(m => long.Parse(m.Groups[1].Value, System.Globalization.CultureInfo.InvariantCulture)).ToArray();
        Assert.That(reservations, Is.Not.Empty, "no reservation seen:\n" + string.Join("\n", calls));
        const long OneGiB = 1L << 30;
        Assert.That(reservations.Max(), Is.InRange(OneGiB, OneGiB + (1 << 20)),
            "the GC's reservation is not the embedded 1 GiB range:\n" + string.Join("\n", calls));

        CliResult limited = SandboxCli.Shell($"ulimit -v 2000000 && '{Cli}' run -- /bin/echo under-limit");
        Assert.That(limited.ExitCode, Is.EqualTo(0), limited.ToString());
        Assert.That(limited.StdoutText, Is.EqualTo("under-limit\n"), limited.ToString());
    }

    /// <summary>
    /// Under an open-file limit too low for a sandbox (`ulimit -n 8`), the CLI says so and exits 125.
    /// Its messages go out with write(2) on descriptor 2 itself (DescriptorWriteStream): Console's
    /// stream needed a dup(2) and a terminfo file, and the NativeAOT CLI aborted (134) with .NET's
    /// stack trace where the message should have been.
    /// </summary>
    [TestCase(8)]
    [TestCase(5)]
    public void AnOpenFileLimitTooLowForASandboxIsNamedNotATrace(int limit)
    {
        CliResult r = SandboxCli.Shell($"ulimit -n {limit} && '{Cli}' run -- /bin/echo never");
        Assert.That(r.ExitCode, Is.EqualTo(125), r.ToString());
        Assert.That(r.Stderr, Does.Match(@"^sandbox: could not start the sandbox: [^\n]+: Too many open files: raise the limit with ulimit -n \(EMFILE\)\n$"), r.ToString());
        Assert.That(r.StdoutText, Is.Empty);
    }

    /// <summary>
    /// The CLI finds its own directory (where sandbox-init is) with one readlink of /proc/self/exe
    /// (ProgramDirectory), not through AppContext.BaseDirectory, whose realpath(3) of the link reads
    /// /proc, /proc/self, /proc/PID and every component of the executable's path again.
    /// </summary>
    [Test]
    public void FindsItsOwnDirectoryWithOneReadlink()
    {
        string[] ofProc = Trace("readlink,readlinkat", children: false, "run", "--", "/bin/true")
            .Where(call => call.Contains("\"/proc")).ToArray();
        // readlink("/proc/self/exe", ...) or readlinkat(AT_FDCWD, "/proc/self/exe", ...)
        Assert.That(ofProc, Has.Length.EqualTo(1).And.All.Contains("\"/proc/self/exe\""),
            "the CLI's readlinks of /proc:\n" + string.Join("\n", ofProc));
    }

    /// <summary>
    /// The runtime's finalizer thread is deferred (runtime_host_probes.c): a run that ends at once
    /// makes no thread at all, and a longer one has it once the sandbox has run for a second
    /// (Program.cs). Were the wrap lost, the thread would be made at every start again.
    /// </summary>
    [Test]
    public void MakesItsFinalizerThreadOnlyOnceTheSandboxHasRunASecond()
    {
        string[] clones = Trace("clone,clone3", children: true, "run", "--", "/bin/true");
        Assert.That(clones, Has.Some.Contains("clone"), "the trace saw the sandbox's clones");
        Assert.That(clones.Where(c => c.Contains("CLONE_THREAD")), Is.Empty, "a thread was made:\n" + string.Join("\n", clones));

        using var cli = Process.Start(SandboxCli.StartInfo(Cli, ["run", "--", "/bin/sh", "-c", "echo ready; exec sleep 30"]))!;
        try
        {
            Assert.That(cli.StandardOutput.ReadLine(), Is.EqualTo("ready"), "the sandbox did not start");
            Assert.That(HostProcesses.WaitUntil(() => ThreadNames(cli.Id).Contains(".NET Finalizer"), TimeSpan.FromSeconds(10)), Is.True,
                "the CLI's threads: " + string.Join(", ", ThreadNames(cli.Id)));
        }
        finally
        {
            HostProcesses.Signal(cli.Id, "TERM");
            if (!cli.WaitForExit(TimeSpan.FromSeconds(20)))
                cli.Kill(entireProcessTree: true);
        }
    }

    /// <summary>
    /// The system calls (strace's -e trace= list) the CLI makes when run with <paramref name="args"/>,
    /// as strace writes them; with <paramref name="children"/> those of its children too (-f).
    /// </summary>
    private string[] Trace(string syscalls, bool children, params string[] args)
    {
        Require.Command("/usr/bin/strace");
        using var trace = new TempDir();
        string log = Path.Combine(trace.Path, "calls");
        string[] follow = children ? ["-f"] : [];
        DotnetRun.Result r = DotnetRun.Run("/usr/bin/strace", [.. follow, "-e", "trace=" + syscalls, "-o", log, Cli, .. args],
            trace.Path, TimeSpan.FromMinutes(1));
        Assert.That(r.ExitCode, Is.EqualTo(0), r.ToString());
        return File.ReadAllLines(log);
    }

    private static List<string> ThreadNames(int pid)
    {
        try
        {
            return Directory.EnumerateDirectories($"/proc/{pid}/task").Select(t => File.ReadAllText(Path.Combine(t, "comm")).Trim()).ToList();
        }
        catch (IOException)
        {
            return [];
        }
    }

    /// <summary>
    /// ci/publish-aot counts how many methods of the start-up layout list this build has. Renamed
    /// methods lose their place in the layout, and the warm start its speed, silently: below 90% the
    /// list is stale and ci/startup-order must make it anew.
    /// </summary>
    [Test]
    public void StartupLayoutListNamesTheMethodsOfThisBuild()
    {
        Match m = Regex.Match(_publishOutput, @"start-up layout: (\d+) of the (\d+) methods");
        Assert.That(m.Success, Is.True, $"ci/publish-aot printed no start-up layout line:\n{_publishOutput}");
        int found = int.Parse(m.Groups[1].Value), listed = int.Parse(m.Groups[2].Value);
        Assert.That(listed, Is.GreaterThan(500), "src/Sandbox.Cli/startup-methods.txt lists too few methods to be a start path");
        Assert.That(found, Is.GreaterThanOrEqualTo(listed * 9 / 10),
            $"only {found} of the {listed} methods in src/Sandbox.Cli/startup-methods.txt are in this build: run ci/startup-order");
    }

    private CliResult Run(string[] args) => SandboxCli.RunBinary(Cli, args);
}
