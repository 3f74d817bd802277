using System.Diagnostics;

namespace Sandbox.IntegrationTests;

/// <summary>
/// DESIGN.md, "Process creation": a child that runs managed code between clone and exec can hang on
/// a GC suspension it inherited (11 hangs in 6,500 creations were seen). The native executor must
/// not: many creations from this (multi-threaded, allocating) process, each bounded in time.
/// </summary>
[TestFixture]
[Parallelizable(ParallelScope.None)]
public sealed class StressTests
{
    [OneTimeSetUp]
    public void Unprivileged() => Require.Unprivileged();

    [Test]
    public async Task TwoThousandSandboxesWhileAnotherThreadAllocatesAndCollects()
    {
        const int Creations = 2000;
        TimeSpan bound = TimeSpan.FromSeconds(10);
        using var stop = new CancellationTokenSource();
        long collections = 0;
        var allocator = new Thread(() =>
        {
            var keep = new List<byte[]>();
            while (!stop.IsCancellationRequested)
            {
                for (int i = 0; i < 200; i++)
                    keep.Add(new byte[(i % 16 + 1) * 1024]);
                if (keep.Count > 20_000)
                    keep.Clear();
                GC.Collect(0);
                if (Interlocked.Increment(ref collections) % 50 == 0)
                    GC.Collect(2, GCCollectionMode.Forced, blocking: true, compacting: true);
            }
        }) { IsBackground = true };
        allocator.Start();

        var spec = new SandboxSpec(["/bin/true"]) { Timeout = bound, UserNamespace = UserNamespaceMode.Single };
        var slowest = TimeSpan.Zero;
        var hangs = new List<int>();
        var failures = new List<string>();
        var total = Stopwatch.StartNew();
        try
        {
            for (int i = 0; i < Creations; i++)
            {
                var sw = Stopwatch.StartNew();
                Task<SandboxResult> run = SandboxRunner.RunAsync(spec);
                if (await Task.WhenAny(run, Task.Delay(bound + TimeSpan.FromSeconds(5))) != run)
                {
                    hangs.Add(i);
                    break; // a hung creation would block the rest; one is a failure already
                }
                SandboxResult result = await run;
                if (result.Reason != TerminationReason.Exited || result.ExitCode != 0)
                    failures.Add($"#{i}: {result.Reason} {result.Status}");
                if (sw.Elapsed > slowest)
                    slowest = sw.Elapsed;
            }
        }
        finally
        {
            stop.Cancel();
            allocator.Join();
        }

        TestContext.Out.WriteLine($"{Creations} sandboxes in {total.Elapsed.TotalSeconds:0.0} s (mean {total.Elapsed.TotalMilliseconds / Creations:0.00} ms, slowest {slowest.TotalMilliseconds:0} ms) with {collections} collections alongside");
        Assert.That(hangs, Is.Empty, "creations that did not finish in time (hangs)");
        Assert.That(failures, Is.Empty);
        Assert.That(collections, Is.GreaterThan(100), "the allocating thread must really have run alongside");
    }

    [Test]
    public async Task ConcurrentSandboxesAllSucceed()
    {
        var spec = new SandboxSpec(["/bin/sh", "-c", "echo $$; sleep 0.2"]) { Timeout = TimeSpan.FromSeconds(30) };
        var runs = Enumerable.Range(0, 32).Select(_ => Task.Run(async () =>
        {
            var output = new System.Text.StringBuilder();
            SandboxResult r = await SandboxRunner.RunAsync(spec, e =>
            {
                if (e is OutputEvent o)
                    output.Append(System.Text.Encoding.UTF8.GetString(o.Data.Span));
            });
            return (r, output.ToString());
        })).ToList();
        var results = await Task.WhenAll(runs);
        Assert.That(results.Select(x => x.r.ExitCode), Is.All.EqualTo(0));
        // Each payload is the first child of its own PID 1.
        Assert.That(results.Select(x => x.Item2.Trim()), Is.All.EqualTo("2"));
    }
}
