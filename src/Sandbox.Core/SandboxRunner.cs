using System.Buffers;
using System.Diagnostics;
using System.IO.Pipelines;
using System.Threading.Channels;
using Microsoft.Win32.SafeHandles;
using Sandbox.Linux;
using Sandbox.Rootfs;
using Sandbox.Runtime;
using Sandbox.Identity;

namespace Sandbox;

/// <summary>Runs <see cref="SandboxSpec"/>s.</summary>
public static class SandboxRunner
{
    /// <summary>Starts the sandbox; its events arrive on <see cref="SandboxExecution.Events"/>.</summary>
    /// <exception cref="SandboxException">The spec is invalid or the host cannot create sandboxes.</exception>
    public static SandboxExecution Start(SandboxSpec spec, CancellationToken cancellationToken = default) =>
        SandboxExecution.Start(spec, HostContext.Current(), cancellationToken);

    /// <summary>Runs to the end, passing each event to <paramref name="onEvent"/>.</summary>
    /// <exception cref="SandboxException">The sandbox could not be set up or the command could not be started.</exception>
    public static async Task<SandboxResult> RunAsync(SandboxSpec spec, Action<SandboxEvent>? onEvent = null, CancellationToken cancellationToken = default)
    {
        using SandboxExecution execution = Start(spec, cancellationToken);
        SandboxResult? result = null;
        await foreach (SandboxEvent e in execution.Events.ConfigureAwait(false))
        {
            onEvent?.Invoke(e);
            if (e is ExitedEvent exited)
                result = exited.Result;
        }
        return result ?? throw new SandboxException(SandboxErrorCode.Internal, "the sandbox ended without a result");
    }
}

/// <summary>One running sandbox: an event stream, and signals and kill while it runs.</summary>
public sealed class SandboxExecution : IDisposable
{
    private const int ReadChunk = 128 * 1024;
    private const int EventChunk = 64 * 1024;

    private readonly SandboxProcess _process;
    private readonly SandboxSpec _spec;
    private readonly Channel<SandboxEvent> _events;
    private readonly CancellationTokenSource _timeout;
    private readonly CancellationTokenRegistration _cancelRegistration;
    private readonly CancellationTokenRegistration _timeoutRegistration;
    private readonly CancellationTokenSource _disposed = new();
    // Output events wait for the started event, so a consumer always sees it first.
    private readonly TaskCompletionSource _startedWritten = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private readonly Thread _supervisor;
    private int _reason = (int)TerminationReason.Exited;

    private readonly Cgroups.SandboxCgroup? _cgroup;

    /// <summary>The copy driver's per-run root, removed once PID 1 (and so every process that could use it) is gone.</summary>
    private readonly ImageRootPreparer? _root;

    private SandboxExecution(SandboxProcess process, Cgroups.SandboxCgroup? cgroup, SandboxSpec spec, SafeFileHandle stdout, SafeFileHandle stderr, CancellationToken cancellationToken,
        ImageRootPreparer? root)
    {
        _process = process;
        _root = root;
        _cgroup = cgroup;
        _spec = spec;
        // Bounded: a slow consumer slows the payload down (the pipe fills) instead of filling memory.
        _events = Channel.CreateBounded<SandboxEvent>(new BoundedChannelOptions(64) { SingleReader = true, FullMode = BoundedChannelFullMode.Wait });
        _timeout = new CancellationTokenSource();
        _cancelRegistration = cancellationToken.Register(() => Terminate(TerminationReason.Cancelled));
        _timeoutRegistration = _timeout.Token.Register(() => Terminate(TerminationReason.TimedOut));
        _supervisor = new Thread(() => Supervise(stdout, stderr)) { IsBackground = true, Name = $"sandbox {process.Pid}" };
        _supervisor.Start();
    }

    /// <summary>Started, output chunks, exited; throws <see cref="SandboxException"/> when the set-up or the exec failed.</summary>
    public IAsyncEnumerable<SandboxEvent> Events => _events.Reader.ReadAllAsync();

    /// <summary>PID 1's pid in the caller's PID namespace.</summary>
    public int ProcessId => _process.Pid;

    /// <summary>The root as it was set up: for an image, with its storage driver resolved (never Auto).</summary>
    public RootSpec Root => _spec.Root;

    /// <summary>Forwards a signal to the payload (through PID 1).</summary>
    public bool Signal(int signal) => _process.Signal(signal);

    /// <summary>Kills every process of the sandbox.</summary>
    public void Kill() => Terminate(TerminationReason.Cancelled);

    internal static SandboxExecution Start(SandboxSpec spec, HostContext host, CancellationToken cancellationToken, Action<string>? warn = null,
        IStorageDriverHost? storage = null)
    {
        warn ??= m => Console.Error.WriteLine($"sandbox: {m}");
        ImageRootPreparer? root = null;
        if (spec.Root is ImageRoot image)
        {
            // Auto becomes overlay, fuse-overlayfs or copy here (a probe, cached per boot), before planning.
            bool mayPtrace = (Security.Capabilities.Resolve(spec.CapAdd, spec.CapDrop) & (1UL << Security.Capabilities.Parse("SYS_PTRACE"))) != 0;
            root = ImageRootPreparer.Choose(image, storage ?? new Diagnostics.StorageProbe(Diagnostics.StorageProbe.CacheFileFor(ImageRootPreparer.StoreOf(image))), warn, mayPtrace);
            spec = spec with { Root = root.Root };
        }
        try
        {
            RuntimePlan plan = SandboxPlanner.Plan(spec, host);
            root?.Materialize(plan.IdMaps);
            return Start(spec, plan, root, cancellationToken, warn);
        }
        catch
        {
            root?.Dispose();
            throw;
        }
    }

    private static SandboxExecution Start(SandboxSpec spec, RuntimePlan plan, ImageRootPreparer? root, CancellationToken cancellationToken, Action<string> warn)
    {
        if (plan.IdMaps.Kind == IdMapKind.SingleId && (plan.Process.Uid is > 0 || plan.Process.Gid is > 0))
        {
            // Only 0 exists in a single-id map: running as root inside beats not running at all.
            warn($"warning: the payload should run as {plan.Process.Uid}:{plan.Process.Gid}, which a single-id map cannot provide; running as root inside (a subordinate range fixes this: --userns=subuid)");
            plan = plan with { Process = plan.Process with { Uid = null, Gid = null } };
        }
        SafeFileHandle? stdin = null, outRead = null, outWrite = null, errRead = null, errWrite = null;
        Cgroups.SandboxCgroup? cgroup = null;
        try
        {
            if (!spec.Limits.IsEmpty || spec.CollectUsage)
                cgroup = Cgroups.CgroupManager.Create(spec.Limits, spec.LimitsPolicy, Cgroups.CgroupHost.Current, warn);
            // With no standard input at all (fd 0 closed, as under some CI runners) there is nothing to forward.
            stdin = spec.ForwardStdin && Syscalls.IsOpen(0) ? new SafeFileHandle(0, ownsHandle: false) : Syscalls.OpenReadOnly("/dev/null");
            (outRead, outWrite) = Syscalls.CreatePipe();
            (errRead, errWrite) = Syscalls.CreatePipe();
            // 1 MiB pipes (fs.pipe-max-size allows that much unprivileged; fcntl(2) F_SETPIPE_SZ): fewer
            // wake-ups and syscalls per gigabyte than the default 64 KiB.
            Syscalls.TryGrowPipe(outWrite, 1 << 20);
            Syscalls.TryGrowPipe(errWrite, 1 << 20);
            // PID 1 joins the cgroup before it is released: nothing of the payload ever runs unlimited.
            SandboxProcess process = Launcher.Start(plan, new StdioPlan(stdin, outWrite, errWrite), cgroup is null ? null : cgroup.AddProcess);
            var execution = new SandboxExecution(process, cgroup, spec, outRead, errRead, cancellationToken, root);
            if (spec.Timeout is TimeSpan timeout)
                execution._timeout.CancelAfter(timeout);
            return execution;
        }
        catch (LinuxException e)
        {
            outRead?.Dispose();
            errRead?.Dispose();
            cgroup?.Dispose();
            throw new SandboxException(SandboxErrorCode.SpawnFailed, $"could not start the sandbox: {e.Message}", e);
        }
        catch
        {
            outRead?.Dispose();
            errRead?.Dispose();
            cgroup?.Dispose();
            throw;
        }
        finally
        {
            // The child has its copies; ours would keep the pipes from ever reaching EOF.
            stdin?.Dispose();
            outWrite?.Dispose();
            errWrite?.Dispose();
        }
    }

    private void Terminate(TerminationReason reason)
    {
        Interlocked.CompareExchange(ref _reason, (int)reason, (int)TerminationReason.Exited);
        _cgroup?.Kill();
        _process.Kill();
    }

    // Runs on a dedicated thread: blocking reads of the report pipe; the output pumps get their own.
    private void Supervise(SafeFileHandle stdout, SafeFileHandle stderr)
    {
        Task pumps = Task.CompletedTask;
        try
        {
            InitReport? report = null;
            Task outPump = Pump(stdout, OutputStream.Stdout);
            Task errPump = Pump(stderr, OutputStream.Stderr);
            pumps = Task.WhenAll(outPump, errPump);
            report = _process.ReadReports(onStarted: _ =>
            {
                Write(new StartedEvent(_process.Pid, DateTimeOffset.UtcNow));
                _startedWritten.TrySetResult();
            });
            _startedWritten.TrySetResult();
            var (status, user, system) = _process.WaitForExit();
            pumps.GetAwaiter().GetResult();
            TimeSpan wall = Stopwatch.GetElapsedTime(_process.StartTimestamp);

            var reason = (TerminationReason)Volatile.Read(ref _reason);
            if (report.Failure is SandboxException failure && reason == TerminationReason.Exited)
            {
                _events.Writer.TryComplete(failure);
                return;
            }
            ExitStatus exit = report.PayloadWaitStatus is int ws ? ExitStatus.FromWaitStatus(ws) : ExitStatus.FromWaitStatus(status);
            if (reason != TerminationReason.Exited && report.PayloadWaitStatus is int)
            {
                // The payload finished on its own before our kill landed.
                reason = TerminationReason.Exited;
            }
            Cgroups.ResourceUsage? usage = _cgroup?.ReadUsage();
            Write(new ExitedEvent(new SandboxResult(exit, reason, wall, user, system, _spec.Timeout, usage, _spec.Limits)));
            _events.Writer.TryComplete();
        }
        catch (Exception e)
        {
            _process.Kill();
            _startedWritten.TrySetResult();
            _events.Writer.TryComplete(e is SandboxException ? e : new SandboxException(SandboxErrorCode.Internal, $"supervising the sandbox failed: {e.Message}", e));
        }
        finally
        {
            stdout.Dispose();
            stderr.Dispose();
            _cgroup?.Dispose();
            _root?.Dispose();
            _timeoutRegistration.Dispose();
            _cancelRegistration.Dispose();
        }
    }

    private void Write(SandboxEvent e)
    {
        // Blocking is fine here (dedicated threads); the bound is the back-pressure.
        if (!_events.Writer.TryWrite(e))
            _events.Writer.WriteAsync(e, _disposed.Token).AsTask().GetAwaiter().GetResult();
    }

    /// <summary>
    /// One output stream: a dedicated thread read(2)s the pipe into a System.IO.Pipelines pipe; the
    /// reader side turns what arrives into output events, as large as the payload's writes allow.
    /// </summary>
    private Task Pump(SafeFileHandle handle, OutputStream stream)
    {
        var pipe = new Pipe(new PipeOptions(pauseWriterThreshold: 4 * ReadChunk, resumeWriterThreshold: 2 * ReadChunk, minimumSegmentSize: ReadChunk, useSynchronizationContext: false));
        var reader = new Thread(() =>
        {
            Exception? error = null;
            try
            {
                while (true)
                {
                    Memory<byte> memory = pipe.Writer.GetMemory(ReadChunk);
                    int n = Syscalls.Read(handle, memory.Span);
                    if (n == 0)
                        break;
                    pipe.Writer.Advance(n);
                    FlushResult flush = pipe.Writer.FlushAsync().AsTask().GetAwaiter().GetResult();
                    if (flush.IsCompleted)
                        break;
                }
            }
            catch (Exception e)
            {
                error = e;
            }
            pipe.Writer.Complete(error);
        }) { IsBackground = true, Name = $"sandbox {_process.Pid} {stream}" };
        reader.Start();

        return Task.Run(async () =>
        {
            await _startedWritten.Task.ConfigureAwait(false);
            while (true)
            {
                ReadResult result = await pipe.Reader.ReadAsync().ConfigureAwait(false);
                ReadOnlySequence<byte> buffer = result.Buffer;
                // Events of at most 64 KiB: below the large object heap's 85,000 bytes, so a stream of
                // output makes only short-lived gen0 garbage, never gen2 collections.
                while (!buffer.IsEmpty)
                {
                    ReadOnlySequence<byte> slice = buffer.Slice(0, Math.Min(buffer.Length, EventChunk));
                    var output = new OutputEvent(stream, slice.ToArray());
                    if (!_events.Writer.TryWrite(output))
                        await _events.Writer.WriteAsync(output, _disposed.Token).ConfigureAwait(false);
                    buffer = buffer.Slice(slice.End);
                }
                buffer = result.Buffer;
                pipe.Reader.AdvanceTo(buffer.End);
                if (result.IsCompleted)
                    break;
            }
            await pipe.Reader.CompleteAsync().ConfigureAwait(false);
        });
    }

    /// <summary>Kills the sandbox if it still runs, waits for its processes to be reaped and frees what it held.</summary>
    public void Dispose()
    {
        if (_disposed.IsCancellationRequested)
            return;
        _process.Kill();
        _disposed.Cancel();
        _supervisor.Join();
        _process.Dispose();
        _timeout.Dispose();
    }
}
