namespace Sandbox.IntegrationTests;

/// <summary>
/// How a run ends. PID 1 (sandbox-init) reports the payload's exit only once it has killed and
/// reaped every other process of the sandbox; a run that needs nothing of the teardown (a directory
/// or image root, no cgroup, no -v) ends at that report, and the CLI exits without waiting for the
/// kernel to tear the sandbox's namespaces down.
/// </summary>
[TestFixture]
public sealed class EndOfRunTests
{
    private TempDir? _root;

    [OneTimeSetUp]
    public void BusyboxRoot()
    {
        Require.Unprivileged();
        Require.Command("/bin/busybox");
        _root = new TempDir();
        string bin = Path.Combine(_root.Path, "bin");
        Directory.CreateDirectory(bin);
        File.Copy("/bin/busybox", Path.Combine(bin, "busybox"));
        foreach (string applet in new[] { "sh", "sleep", "setsid", "echo", "true", "cat" })
            File.CreateSymbolicLink(Path.Combine(bin, applet), "busybox");
    }

    [OneTimeTearDown]
    public void RemoveRoot() => _root?.Dispose();

    private string Root => _root!.Path;

    [Test]
    public void BackgroundProcessesDoNotOutliveTheRun()
    {
        string marker = "76543" + Random.Shared.Next(1000, 9999);
        // A daemonised sleep and a plain background one, both outliving the payload's shell.
        CliResult r = SandboxCli.Run("run", Root, "/bin/sh", "-c", $"setsid sleep {marker} & sleep {marker}.5 & echo started");
        // Looked at once, at once: the run may end only when nothing of the sandbox runs any more.
        List<int> left = HostProcesses.WithMarker(marker, exceptExitHelpers: true);
        Assert.That(r.ExitCode, Is.EqualTo(0), r.ToString());
        Assert.That(r.StdoutText.Trim(), Is.EqualTo("started"));
        Assert.That(left, Is.Empty, "processes of the sandbox were still there when the CLI returned");
    }

    [Test]
    public void OutputOfProcessesKilledAtTheEndIsCompleteAndTheStatusIsThePayloads()
    {
        // A background writer holds stdout open past the payload's exit: the run must not wait for
        // it (it is killed), and what it wrote before is all there.
        CliResult r = SandboxCli.Run("run", Root, "/bin/sh", "-c", "(echo from-background; sleep 30) & sleep 0.2; echo from-payload; exit 7");
        Assert.That(r.ExitCode, Is.EqualTo(7), r.ToString());
        Assert.That(r.StdoutText.Split('\n', StringSplitOptions.RemoveEmptyEntries), Is.EquivalentTo(new[] { "from-background", "from-payload" }));
        Assert.That(r.Elapsed, Is.LessThan(TimeSpan.FromSeconds(10)), "the run waited for the background sleep");
    }

    [Test]
    public void TheExitReportComesAfterEveryProcessIsReapedAndCountsTheirCpuTime()
    {
        // No cgroup and no -v: the run ends at PID 1's report, and its CPU times are the report's.
        // A background busy loop outlives the payload; PID 1 must kill and reap it before it reports,
        // or its CPU time (about 0.5 s) is not yet counted (getrusage(2), RUSAGE_CHILDREN).
        var spec = new SandboxSpec(["/bin/sh", "-c", "(while :; do :; done) & sleep 0.5; exit 0"])
        {
            Root = RootSpec.Directory(Root),
            UserNamespace = UserNamespaceMode.Single,
        };
        SandboxResult result = SandboxRunner.RunAsync(spec).GetAwaiter().GetResult();
        TimeSpan cpu = result.UserCpuTime + result.SystemCpuTime;
        Assert.That(result.ExitCode, Is.EqualTo(0));
        Assert.That(cpu, Is.GreaterThan(TimeSpan.FromMilliseconds(250)), "the background loop's CPU time was not in the report");
        Assert.That(cpu, Is.LessThanOrEqualTo(result.WallTime * 2 + TimeSpan.FromMilliseconds(20)), "more CPU than two CPUs give in that time");
    }

    [Test]
    public void ALibraryCallerIsLeftNoZombies()
    {
        // Only the CLI, which exits right after, leaves PID 1 to init; Dispose reaps it otherwise.
        for (int i = 0; i < 5; i++)
        {
            var spec = new SandboxSpec(["/bin/true"]) { Root = RootSpec.Directory(Root), UserNamespace = UserNamespaceMode.Single };
            using SandboxExecution execution = SandboxRunner.Start(spec);
            Assert.That(execution.ReadEvents().OfType<ExitedEvent>().Single().Result.ExitCode, Is.EqualTo(0));
        }
        Assert.That(ZombieChildren(), Is.Empty, "PID 1 of a finished sandbox was left unreaped");
    }

    [Test]
    public void RunsWithAndWithoutBindMountsEndWithThePayloadsStatus()
    {
        // With -v the run waits for PID 1 to be gone (its mount namespace holds the caller's mount
        // until then); without, it ends at PID 1's report. Either way: the payload's status, and
        // what it wrote.
        using var data = new TempDir();
        CliResult plain = SandboxCli.Run("run", Root, "/bin/sh", "-c", "exit 4");
        CliResult bound = SandboxCli.Run("run", "-v", $"{data.Path}:/data", Root, "/bin/sh", "-c", "echo x > /data/f; exit 5");
        Assert.That(plain.ExitCode, Is.EqualTo(4), plain.ToString());
        Assert.That(bound.ExitCode, Is.EqualTo(5), bound.ToString());
        Assert.That(File.ReadAllText(Path.Combine(data.Path, "f")), Is.EqualTo("x\n"));
    }

    // Children of this process (of any of its threads) that are zombies: /proc/PID/task/TID/children (proc(5)).
    private static List<string> ZombieChildren()
    {
        var zombies = new List<string>();
        foreach (string task in Directory.EnumerateDirectories($"/proc/{Environment.ProcessId}/task"))
        {
            foreach (string child in File.ReadAllText(Path.Combine(task, "children")).Split(' ', StringSplitOptions.RemoveEmptyEntries))
            {
                string stat;
                try
                {
                    stat = File.ReadAllText($"/proc/{child}/stat");
                }
                catch (IOException)
                {
                    continue; // gone meanwhile
                }
                // Field 3, after the parenthesised command name, is the state.
                if (stat[(stat.LastIndexOf(')') + 2)..].StartsWith('Z'))
                    zombies.Add(child);
            }
        }
        return zombies;
    }
}
