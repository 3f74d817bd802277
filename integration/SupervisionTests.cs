using System.Diagnostics;
using System.Text;

namespace Sandbox.IntegrationTests;

/// <summary>
/// The supervisor loop (output, timeout, reaping) runs on the thread that reads
/// <see cref="SandboxExecution.ReadEvents"/>, as the CLI does, or on a thread of its own for
/// <see cref="SandboxExecution.Events"/>; and <see cref="SandboxExecution.Dispose"/> must end a
/// sandbox however far its events were read.
/// </summary>
[TestFixture]
public sealed class SupervisionTests
{
    [OneTimeSetUp]
    public void Unprivileged() => Require.Unprivileged();

    private static SandboxSpec Sleeper(string marker, TimeSpan? timeout = null) =>
        new(["/bin/sh", "-c", $"sleep 30 # {marker}"]) { Timeout = timeout, UserNamespace = UserNamespaceMode.Single };

    private static bool Gone(string marker) =>
        HostProcesses.WaitUntil(() => HostProcesses.WithMarker(marker, "/bin/sh").Count == 0, TimeSpan.FromSeconds(5));

    [Test]
    public void ReadEventsGivesStartedOutputAndExitedInOrderOnTheReadingThread()
    {
        var spec = new SandboxSpec(["/bin/sh", "-c", "echo one; echo two >&2; sleep 0.5; exit 3"]) { UserNamespace = UserNamespaceMode.Single };
        using SandboxExecution execution = SandboxRunner.Start(spec);
        var kinds = new List<string>();
        var stdout = new StringBuilder();
        var stderr = new StringBuilder();
        int? exitCode = null;
        var supervisorThreads = new List<string>();
        foreach (SandboxEvent e in execution.ReadEvents())
        {
            kinds.Add(e.GetType().Name);
            if (e is StartedEvent)
                supervisorThreads = SupervisorThreads(execution.ProcessId);
            if (e is OutputEvent o)
                (o.Stream == OutputStream.Stdout ? stdout : stderr).Append(Encoding.UTF8.GetString(o.Data.Span));
            if (e is ExitedEvent exited)
                exitCode = exited.Result.ExitCode;
        }
        Assert.Multiple(() =>
        {
            Assert.That(kinds[0], Is.EqualTo(nameof(StartedEvent)));
            Assert.That(kinds[^1], Is.EqualTo(nameof(ExitedEvent)));
            Assert.That(stdout.ToString(), Is.EqualTo("one\n"));
            Assert.That(stderr.ToString(), Is.EqualTo("two\n"));
            Assert.That(exitCode, Is.EqualTo(3));
            Assert.That(supervisorThreads, Is.Empty, "no supervisor thread is created for a blocking reader");
        });
    }

    // The supervisor thread is named "sandbox PID" (SandboxExecution.Events).
    private static List<string> SupervisorThreads(int pid) =>
        Directory.EnumerateDirectories("/proc/self/task")
            .Select(task => File.ReadAllText(Path.Combine(task, "comm")).Trim())
            .Where(comm => comm == $"sandbox {pid}")
            .ToList();

    [Test]
    public void ReadEventsEnforcesTheTimeout()
    {
        string marker = "sbx-timeout-" + Guid.NewGuid().ToString("N")[..8];
        using SandboxExecution execution = SandboxRunner.Start(Sleeper(marker, TimeSpan.FromSeconds(1)));
        var clock = Stopwatch.StartNew();
        SandboxResult? result = execution.ReadEvents().OfType<ExitedEvent>().Single().Result;
        Assert.That(result.Reason, Is.EqualTo(TerminationReason.TimedOut));
        Assert.That(clock.Elapsed, Is.LessThan(TimeSpan.FromSeconds(10)));
        Assert.That(Gone(marker), "the sandbox's processes are gone");
    }

    [Test]
    public void DisposeEndsASandboxWhoseEventsWereNeverRead()
    {
        string marker = "sbx-unread-" + Guid.NewGuid().ToString("N")[..8];
        SandboxExecution execution = SandboxRunner.Start(Sleeper(marker));
        Assert.That(HostProcesses.WaitUntil(() => HostProcesses.WithMarker(marker, "/bin/sh").Count == 1, TimeSpan.FromSeconds(5)), "the payload runs");
        var clock = Stopwatch.StartNew();
        execution.Dispose();
        Assert.That(clock.Elapsed, Is.LessThan(TimeSpan.FromSeconds(5)), "Dispose returned");
        Assert.That(Gone(marker), "the sandbox's processes are gone");
    }

    [Test]
    public void DisposeEndsASandboxWhoseReaderStoppedEarly()
    {
        string marker = "sbx-early-" + Guid.NewGuid().ToString("N")[..8];
        SandboxExecution execution = SandboxRunner.Start(Sleeper(marker));
        SandboxEvent first = execution.ReadEvents().First();
        Assert.That(first, Is.InstanceOf<StartedEvent>());
        execution.Dispose();
        Assert.That(Gone(marker), "the sandbox's processes are gone");
    }

    [Test]
    public async Task EventsStillRunTheSupervisorOnAThreadOfItsOwn()
    {
        var spec = new SandboxSpec(["/bin/sh", "-c", "echo async; sleep 0.5"]) { UserNamespace = UserNamespaceMode.Single };
        using SandboxExecution execution = SandboxRunner.Start(spec);
        var text = new StringBuilder();
        SandboxResult? result = null;
        var threadsAtStart = new List<string>();
        await foreach (SandboxEvent e in execution.Events)
        {
            if (e is StartedEvent)
                threadsAtStart = SupervisorThreads(execution.ProcessId);
            if (e is OutputEvent o)
                text.Append(Encoding.UTF8.GetString(o.Data.Span));
            if (e is ExitedEvent exited)
                result = exited.Result;
        }
        Assert.That(text.ToString(), Is.EqualTo("async\n"));
        Assert.That(threadsAtStart, Has.Count.EqualTo(1), "the supervisor thread, found by its name as the blocking reader's test looks for it");
        Assert.That(result?.ExitCode, Is.EqualTo(0));
    }
}
