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

    /// <summary>
    /// WhenRunningFor's action (the CLI starts its deferred finalizer thread with it) runs once, on
    /// the reading thread, after its delay; a sandbox that ends sooner never runs it.
    /// </summary>
    [Test]
    public void WhenRunningForRunsItsActionOnceOnTheReadingThreadAfterItsDelay()
    {
        var spec = new SandboxSpec(["/bin/sh", "-c", "sleep 1"]) { UserNamespace = UserNamespaceMode.Single };
        using SandboxExecution execution = SandboxRunner.Start(spec);
        var ran = new List<(int Thread, TimeSpan At)>();
        var clock = Stopwatch.StartNew();
        execution.WhenRunningFor(TimeSpan.FromMilliseconds(300), () => ran.Add((Environment.CurrentManagedThreadId, clock.Elapsed)));
        SandboxResult result = execution.ReadEvents().OfType<ExitedEvent>().Single().Result;
        Assert.That(result.ExitCode, Is.Zero);
        Assert.That(ran, Has.Count.EqualTo(1), "the action ran once");
        Assert.That(ran[0].Thread, Is.EqualTo(Environment.CurrentManagedThreadId));
        Assert.That(ran[0].At, Is.GreaterThanOrEqualTo(TimeSpan.FromMilliseconds(250)).And.LessThan(clock.Elapsed));
        Assert.Throws<InvalidOperationException>(() => execution.WhenRunningFor(TimeSpan.Zero, () => { }), "too late once the events are read");
    }

    [Test]
    public void WhenRunningForDoesNothingForASandboxThatEndsSooner()
    {
        using SandboxExecution execution = SandboxRunner.Start(new SandboxSpec(["/bin/true"]) { UserNamespace = UserNamespaceMode.Single });
        int ran = 0;
        execution.WhenRunningFor(TimeSpan.FromSeconds(20), () => ran++);
        Assert.That(execution.ReadEvents().OfType<ExitedEvent>().Single().Result.ExitCode, Is.Zero);
        Assert.That(ran, Is.Zero);
    }

    /// <summary>The action runs when it is due even while the sandbox streams output.</summary>
    [Test]
    public void WhenRunningForRunsItsActionWhileOutputKeepsComing()
    {
        // 1 GiB of zeros written a MiB at a time, read in 64 KiB output events (about half a second):
        // the action falls due in the middle.
        var spec = new SandboxSpec(["/bin/sh", "-c", "dd if=/dev/zero bs=1M count=1024 status=none"]) { UserNamespace = UserNamespaceMode.Single };
        using SandboxExecution execution = SandboxRunner.Start(spec);
        int ran = 0, outputAfter = 0;
        execution.WhenRunningFor(TimeSpan.FromMilliseconds(150), () => ran++);
        foreach (SandboxEvent e in execution.ReadEvents())
        {
            if (e is OutputEvent && ran > 0)
                outputAfter++;
        }
        Assert.That(ran, Is.EqualTo(1));
        Assert.That(outputAfter, Is.GreaterThan(0), "the action ran while the output still came");
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
