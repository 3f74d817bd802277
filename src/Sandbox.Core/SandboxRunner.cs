using System.Diagnostics;
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

    /// <summary>
    /// Starts the sandbox with the payload's output going straight to <paramref name="output"/>'s
    /// descriptors (spliced, never through our memory) instead of arriving as output events.
    /// </summary>
    public static SandboxExecution Start(SandboxSpec spec, DirectOutput output, CancellationToken cancellationToken = default) =>
        SandboxExecution.Start(spec, HostContext.Current(), cancellationToken, output: output);

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

/// <summary>
/// Where the payload's stdout and stderr go when not as <see cref="OutputEvent"/>s: a descriptor each
/// (null: that stream still arrives as events). The payload never gets these descriptors: to a
/// terminal or a file it writes into a pipe of ours whose bytes are spliced over (a terminal given to
/// the sandbox could be driven from inside, TIOCSTI, CVE-2017-5226); to a pipe it writes through an
/// open file description of its own of that pipe; to the null device, into a /dev/null of its own.
/// </summary>
public sealed record DirectOutput(SafeFileHandle? Stdout, SafeFileHandle? Stderr)
{
    /// <summary>This process's own stdout and stderr (borrowed, not closed); null when the caller did not give both (<see cref="StandardDescriptors"/>).</summary>
    public static DirectOutput? StandardStreams() => StandardDescriptors.IsCallers(1) && StandardDescriptors.IsCallers(2)
        ? new DirectOutput(new SafeFileHandle(1, ownsHandle: false), new SafeFileHandle(2, ownsHandle: false))
        : null;
}

/// <summary>One running sandbox: an event stream, and signals and kill while it runs.</summary>
public sealed class SandboxExecution : IDisposable
{
    private const int ReadChunk = 256 * 1024;
    private const int EventChunk = 64 * 1024;
    private const int SpliceChunk = 1 << 20;
    private const int PipeSize = 1 << 20;

    private readonly SandboxProcess _process;
    private readonly SandboxSpec _spec;
    private readonly CancellationTokenRegistration _cancelRegistration;
    private readonly CancellationTokenSource _disposed = new();
    private readonly EventQueue _events;
    private readonly OutputPump _stdout, _stderr;

    // How the supervisor loop runs: not yet; on a thread of its own (for Events); or on the thread
    // that reads ReadEvents(), which the CLI uses: a warm start then creates no thread for it and
    // hands no event between threads (thread creation alone was ~0.15 ms of it in perf).
    private const int NotSupervised = 0, SupervisedByThread = 1, SupervisedByReader = 2;
    private int _supervision;
    private Thread? _supervisor;
    private int _supervisionEnded;
    // The supervisor loop's own state: it runs once, on one thread at a time.
    private bool _reportsOpen = true, _started;
    private long _deadline;
    // WhenRunningFor's action and when it is due (long.MaxValue: none, or done).
    private Action? _chore;
    private long _choreDue = long.MaxValue;
    private int _reason = (int)TerminationReason.Exited;

    // ForwardSignals: the signals, and the pipe their numbers arrive in (-1: none forwarded).
    private int[]? _forwardedSignals;
    private int _signalFd = -1;
    private int _forwardedTerminatingSignal;

    private readonly Cgroups.SandboxCgroup? _cgroup;

    /// <summary>The copy driver's per-run root, removed once PID 1 (and so every process that could use it) is gone.</summary>
    private readonly ImageRootPreparer? _root;

    /// <summary>stdin's relay from a regular file, which puts the file's offset right at the end (<see cref="FileInputRelay"/>).</summary>
    private readonly FileInputRelay? _stdinRelay;

    private SandboxExecution(SandboxProcess process, Cgroups.SandboxCgroup? cgroup, SandboxSpec spec, OutputPump stdout, OutputPump stderr, CancellationToken cancellationToken,
        ImageRootPreparer? root, FileInputRelay? stdinRelay)
    {
        _process = process;
        _stdinRelay = stdinRelay;
        _root = root;
        _cgroup = cgroup;
        _events = new EventQueue(64, _disposed.Token);
        _spec = spec;
        // The timeout is the supervisor's poll(2) timeout: no timer thread.
        _deadline = spec.Timeout is TimeSpan t ? process.StartTimestamp + (long)(t.TotalSeconds * Stopwatch.Frequency) : long.MaxValue;
        _cancelRegistration = cancellationToken.Register(() => Terminate(TerminationReason.Cancelled));
        (_stdout, _stderr) = (stdout, stderr);
    }

    /// <summary>
    /// Runs <paramref name="action"/> once, on the thread that supervises the sandbox, when the sandbox
    /// has run for <paramref name="delay"/>; not at all if it ends sooner. Like the timeout, it needs no
    /// timer thread: its time is the supervisor's poll(2) timeout. Set it before the events are read.
    /// </summary>
    public void WhenRunningFor(TimeSpan delay, Action action)
    {
        if (Volatile.Read(ref _supervision) != NotSupervised)
            throw new InvalidOperationException("WhenRunningFor is set before the events are read");
        _chore = action;
        _choreDue = _process.StartTimestamp + (long)(delay.TotalSeconds * Stopwatch.Frequency);
    }

    /// <summary>
    /// Started, output chunks, exited; throws <see cref="SandboxException"/> when the set-up or the exec failed.
    /// The supervisor (output, timeout, reaping) starts on a thread of its own at the first use of this,
    /// unless <see cref="ReadEvents"/> came first (it then runs on that reader's thread).
    /// </summary>
    public IAsyncEnumerable<SandboxEvent> Events
    {
        get
        {
            if (Interlocked.CompareExchange(ref _supervision, SupervisedByThread, NotSupervised) == NotSupervised)
            {
                _supervisor = new Thread(() => RunToEnd()) { IsBackground = true, Name = $"sandbox {_process.Pid}" };
                _supervisor.Start();
            }
            return _events.ReadAllAsync();
        }
    }

    /// <summary>
    /// The same events as <see cref="Events"/>, read blocking on the caller's thread, which also runs the
    /// supervisor between events when this is the first read (no thread is created).
    /// </summary>
    public IEnumerable<SandboxEvent> ReadEvents()
    {
        if (Interlocked.CompareExchange(ref _supervision, SupervisedByReader, NotSupervised) != NotSupervised)
            return _events.ReadAll();
        // The writer is the reader now: it must never wait for room.
        _events.RemoveBound();
        return SuperviseWhileReading();
    }

    private IEnumerable<SandboxEvent> SuperviseWhileReading()
    {
        foreach (bool _ in SuperviseSteps())
        {
            while (_events.TryTake(out SandboxEvent? e))
                yield return e;
        }
        // The exit event, or the failure, of the last round.
        foreach (SandboxEvent e in _events.ReadAll())
            yield return e;
    }

    private void RunToEnd()
    {
        foreach (bool _ in SuperviseSteps())
        {
        }
    }

    /// <summary>PID 1's pid in the caller's PID namespace.</summary>
    public int ProcessId => _process.Pid;

    /// <summary>The root as it was set up: for an image, with its storage driver resolved (never Auto).</summary>
    public RootSpec Root => _spec.Root;

    /// <summary>Forwards a signal to the payload (through PID 1).</summary>
    public bool Signal(int signal) => _process.Signal(signal);

    /// <summary>
    /// From now until the run ends, <paramref name="signals"/> sent to this process go to the payload
    /// (through PID 1) instead of taking their action (docker's --sig-proxy). A handler of the native
    /// executor writes each into a pipe that the supervisor's poll(2) loop reads, so this starts no
    /// thread (sandbox_exec.c, sbx_signals_forward); their former actions come back when the
    /// supervision ends. For one run at a time in a process (the CLI's).
    /// </summary>
    public void ForwardSignals(params ReadOnlySpan<int> signals)
    {
        if (_forwardedSignals is not null)
            throw new InvalidOperationException("signals are forwarded already");
        int fd = NativeExecutor.ForwardSignals(signals);
        if (fd < 0)
            throw new SandboxException(SandboxErrorCode.Internal, $"could not forward signals to the sandbox: {Errno.Describe(-fd)}");
        _forwardedSignals = signals.ToArray();
        Volatile.Write(ref _signalFd, fd);
    }

    /// <summary>Kills every process of the sandbox.</summary>
    public void Kill() => Terminate(TerminationReason.Cancelled);

    internal static SandboxExecution Start(SandboxSpec spec, HostContext host, CancellationToken cancellationToken, Action<string>? warn = null,
        DirectOutput? output = null, IStorageDriverHost? storage = null)
    {
        warn ??= m => StandardDescriptors.TellError($"sandbox: {m}");
        ImageRootPreparer? root = null;
        if (spec.Root is ImageRoot image)
        {
            // Auto becomes overlay, fuse-overlayfs or copy here (a probe, cached per boot), before planning.
            bool mayPtrace = (Security.Capabilities.Resolve(spec.CapAdd, spec.CapDrop) & (1UL << Security.Capabilities.Parse("SYS_PTRACE"))) != 0;
            root = ImageRootPreparer.Choose(image, storage ?? new Diagnostics.StorageProbe(Diagnostics.StorageProbe.CacheFileFor(ImageRootPreparer.StoreOf(image))), warn, mayPtrace);
            spec = spec with { Root = root.Root };
        }
        // The holder is asked for its namespace as soon as the id maps are known: it answers while
        // the rest is planned (HolderRequest), and Launcher takes the answer.
        HolderRequest? holderRequest = null;
        Cgroups.SandboxCgroup? cgroup = null;
        try
        {
            // Before planning: the plan shows the payload its cgroup (RootfsPlanner, AddCgroupView).
            if (!spec.Limits.IsEmpty || spec.CollectUsage)
                cgroup = Cgroups.CgroupManager.Create(spec.Limits, spec.LimitsPolicy, Cgroups.CgroupHost.Current, warn);
            RuntimePlan plan = SandboxPlanner.Plan(spec, host, idMaps => holderRequest = UserNamespaceHolder.Request(idMaps), cgroup?.View);
            if (root is not null && SandboxPlanner.CheckImageOwners(root.Root.Image, plan.IdMaps) is string ownersWarning)
                warn(ownersWarning);
            root?.Materialize(plan.IdMaps, host.Identity);
            return Start(spec, plan, root, cgroup, output, cancellationToken, warn, holderRequest);
        }
        catch
        {
            root?.Dispose();
            cgroup?.Dispose();
            throw;
        }
        finally
        {
            holderRequest?.Dispose();
        }
    }

    /// <param name="cgroup">The sandbox's cgroup, if it has one; the caller disposes it when this throws.</param>
    private static SandboxExecution Start(SandboxSpec spec, RuntimePlan plan, ImageRootPreparer? root, Cgroups.SandboxCgroup? cgroup, DirectOutput? output,
        CancellationToken cancellationToken, Action<string> warn, HolderRequest? holderRequest = null)
    {
        if (plan.IdMaps.Kind == IdMapKind.SingleId && (plan.Process.Uid is > 0 || plan.Process.Gid is > 0))
        {
            // Only 0 exists in a single-id map: running as root inside beats not running at all.
            warn($"warning: the payload should run as {plan.Process.Uid}:{plan.Process.Gid}, which a single-id map cannot provide; running as root inside (a subordinate range fixes this: --userns=subuid)");
            plan = plan with { Process = plan.Process with { Uid = null, Gid = null } };
        }
        SafeFileHandle? stdin = null, outRead = null, outWrite = null, errRead = null, errWrite = null;
        FileInputRelay? fileRelay = null;
        try
        {
            // With no standard input from the caller (fd 0 closed, as under some CI runners) there is
            // nothing to forward, and what holds the number now is ours (StandardDescriptors).
            stdin = spec.ForwardStdin && StandardDescriptors.IsCallers(0) ? InputChannel(new SafeFileHandle(0, ownsHandle: false), out fileRelay) : Syscalls.OpenReadOnly("/dev/null");
            (outRead, outWrite) = OutputChannel(output?.Stdout);
            if (outRead is not null && output is { Stdout: { } callersOut, Stderr: { } callersErr } && Syscalls.IsSameOpenFile(callersOut, callersErr))
            {
                // One file or terminal for both (`> log 2>&1`): one pipe for both, so that the lines
                // keep the order the payload wrote them in. Two pipes relayed one after the other put
                // all of stdout first, every error away from its context.
                (errRead, errWrite) = (null, Syscalls.Duplicate(outWrite));
            }
            else
            {
                (errRead, errWrite) = OutputChannel(output?.Stderr);
            }
            // PID 1 joins the cgroup before it is released: nothing of the payload ever runs unlimited.
            SandboxProcess process = Launcher.Start(plan, new StdioPlan(stdin, outWrite, errWrite), cgroup is null ? null : cgroup.AddProcess, holderRequest);
            var execution = new SandboxExecution(process, cgroup, spec,
                new OutputPump(outRead, OutputStream.Stdout, output?.Stdout), new OutputPump(errRead, OutputStream.Stderr, output?.Stderr), cancellationToken, root, fileRelay);
            return execution;
        }
        catch (LinuxException e)
        {
            outRead?.Dispose();
            errRead?.Dispose();
            fileRelay?.Finish();
            throw new SandboxException(SandboxErrorCode.SpawnFailed, $"could not start the sandbox: {e.Message}", e);
        }
        catch
        {
            outRead?.Dispose();
            errRead?.Dispose();
            fileRelay?.Finish();
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

    /// <summary>
    /// Where the payload writes one stream. By default a pipe of ours, whose bytes the supervisor
    /// moves to the caller's descriptor: a terminal or a file is never handed to the sandbox (a
    /// terminal could be driven from inside with TIOCSTI, CVE-2017-5226; through a file descriptor,
    /// root inside could chown or chmod the host file). Two targets need no relay:
    /// <list type="bullet">
    /// <item>the null device: the payload gets a /dev/null of its own;</item>
    /// <item>a pipe (<c>sandbox run ... | cat</c>): the payload gets its own open file description
    /// of that pipe (reopened through /proc/self/fd), so that a flag it sets (O_NONBLOCK) stays its
    /// own, as a pipe's reader or writer in a shell pipeline would have it. Like any holder of a pipe,
    /// it could reopen it for reading as well, and so read what others write into that pipe while it
    /// runs: in `sandbox run ... | reader` that is nobody else. A relay is a third
    /// process in the pipeline: on 2 CPUs it halved the throughput of `head -c 1G /dev/zero | cat`
    /// (splice(2) between two pipes contends on both pipes' locks and allocates a page per 4 KiB).</item>
    /// </list>
    /// </summary>
    private static (SafeFileHandle? Read, SafeFileHandle Write) OutputChannel(SafeFileHandle? target)
    {
        switch (target is null ? DescriptorKind.Other : Syscalls.KindOfDescriptor(target))
        {
            case DescriptorKind.NullDevice:
                return (null, Syscalls.OpenWriteOnly("/dev/null"));
            case DescriptorKind.Pipe when Syscalls.TryReopenPipeForWriting(target!) is SafeFileHandle own:
                return (null, own);
        }
        var (read, write) = Syscalls.CreatePipe();
        // 1 MiB pipes (fs.pipe-max-size allows that much unprivileged; fcntl(2) F_SETPIPE_SZ): fewer
        // wake-ups and syscalls per gigabyte than the default 64 KiB.
        Syscalls.TryGrowPipe(write, PipeSize);
        return (read, write);
    }

    /// <summary>
    /// What the payload reads as stdin. An anonymous pipe (<c>producer | sandbox run ...</c>) is handed
    /// over as it is, the null device as a /dev/null of its own; anything else (a file, a terminal with
    /// -i, a socket, a named FIFO) is fed into a pipe of ours by <see cref="InputRelay"/>: handed over,
    /// its descriptor would let root inside, which has the owner's id, rewrite the host file through
    /// /proc/self/fd/0 or chmod and chown it or the caller's terminal (docker and podman's conmon
    /// relay stdin too).
    /// </summary>
    private static SafeFileHandle InputChannel(SafeFileHandle callers, out FileInputRelay? fileRelay)
    {
        fileRelay = null;
        switch (Syscalls.KindOfDescriptor(callers))
        {
            case DescriptorKind.Pipe:
                return callers;
            case DescriptorKind.NullDevice:
                return Syscalls.OpenReadOnly("/dev/null");
            case DescriptorKind.RegularFile when FileInputRelay.TryStart((int)callers.DangerousGetHandle()) is var (read, relay):
                fileRelay = relay;
                return read;
            default:
                return InputRelay.Start((int)callers.DangerousGetHandle());
        }
    }

    private void Terminate(TerminationReason reason)
    {
        Interlocked.CompareExchange(ref _reason, (int)reason, (int)TerminationReason.Exited);
        _cgroup?.Kill();
        _process.Kill();
    }

    /// <summary>
    /// The supervisor: one poll(2) loop over the report pipe and both output pipes, with the timeout as
    /// poll's timeout. No thread or task per stream and no timer; each wake-up moves all a pipe holds
    /// (up to 1 MiB by splice(2), 256 KiB by read). One round per element, so that the loop can run
    /// on its own thread (<see cref="RunToEnd"/>) or between the reads of a blocking reader.
    /// </summary>
    private IEnumerable<bool> SuperviseSteps()
    {
        try
        {
            while (Step())
                yield return true;
        }
        finally
        {
            EndSupervision();
        }
    }

    /// <summary>One round; at the end, the exit event (or the failure). False once the stream is complete.</summary>
    private bool Step()
    {
        try
        {
            if (_reportsOpen || _stdout.Open || _stderr.Open)
            {
                PollOnce();
                return true;
            }
            Finish();
        }
        catch (Exception e)
        {
            _process.Kill();
            _events.Complete(e is SandboxException ? e : new SandboxException(SandboxErrorCode.Internal, $"supervising the sandbox failed: {e.Message}", e));
        }
        return false;
    }

    private void PollOnce()
    {
        // Output waits for the started event, so a consumer always sees that first; PID 1 reports
        // it right after the payload's exec, so at most a pipeful of output waits.
        bool takeOutput = _started || !_reportsOpen;
        Span<PollEntry> entries = stackalloc PollEntry[4];
        int count = 0;
        int signalFd = Volatile.Read(ref _signalFd);
        if (signalFd >= 0)
            entries[count++] = new PollEntry(signalFd, PollEntry.In);
        if (_reportsOpen)
            entries[count++] = new PollEntry(_process.ReportsFd, PollEntry.In);
        if (takeOutput && _stdout.Open)
            entries[count++] = new PollEntry(_stdout.Fd, PollEntry.In);
        if (takeOutput && _stderr.Open)
            entries[count++] = new PollEntry(_stderr.Fd, PollEntry.In);
        if (_choreDue != long.MaxValue && Stopwatch.GetTimestamp() >= _choreDue)
        {
            _choreDue = long.MaxValue;
            _chore!();
        }
        if (StreamCalls.Poll(entries[..count], PollTimeout()) == 0)
        {
            if (Stopwatch.GetTimestamp() >= _deadline)
            {
                _deadline = long.MaxValue;
                Terminate(TerminationReason.TimedOut);
            }
            return;
        }
        foreach (PollEntry entry in entries[..count])
        {
            if (!entry.Ready)
                continue;
            if (entry.Fd == signalFd)
            {
                ForwardPendingSignals(signalFd);
            }
            else if (entry.Fd == _process.ReportsFd)
            {
                _reportsOpen = _process.PumpReports(_ =>
                {
                    Write(new StartedEvent(_process.Pid, DateTimeOffset.UtcNow));
                    _started = true;
                }) && !(MayEndBeforePidOne && _process.Report.PayloadWaitStatus is not null);
            }
            else
            {
                (entry.Fd == _stdout.Fd ? _stdout : _stderr).Transfer(this);
            }
        }
    }

    private void ForwardPendingSignals(int fd)
    {
        Span<byte> numbers = stackalloc byte[64];
        int n;
        while ((n = Syscalls.TryRead(fd, numbers)) > 0)
        {
            foreach (byte signal in numbers[..n])
            {
                Signal(signal);
                if (signal is 1 or 2 or 3 or 15)
                    Volatile.Write(ref _forwardedTerminatingSignal, signal);
            }
        }
    }

    /// <summary>
    /// Whether the run may end at PID 1's exit report, without waiting for PID 1 to exit. The report
    /// comes once every process of the sandbox is killed and reaped (sandbox_init.c, finish), so what
    /// is left is the kernel's teardown of the namespaces (0.3 ms or more: unmounting waits for an
    /// RCU grace period), which nothing here needs to see finished, except:
    /// <list type="bullet">
    /// <item>a cgroup, which can be removed only once PID 1 has left it;</item>
    /// <item>a per-run copy of an image's layers (the copy driver), removed after the run;</item>
    /// <item>mounts of the caller's own (-v, or the host's tree in host mode): until the sandbox's
    /// mount namespace is gone they are still in use, and a caller that unmounts one right after
    /// the run would get EBUSY.</item>
    /// </list>
    /// PID 1 is then reaped at <see cref="Dispose"/>, or by init when the caller exits without it.
    /// </summary>
    private bool MayEndBeforePidOne =>
        _cgroup is null && _root?.RemovesCopy != true && _spec.Root is not HostRoot && _spec.Binds.IsEmpty;

    private void Finish()
    {
        var (status, user, system) = MayEndBeforePidOne && _process.Report is { PayloadWaitStatus: int reported, CpuTimes: var (u, s) }
            ? (reported, u, s)
            : _process.WaitForExit();
        TimeSpan wall = Stopwatch.GetElapsedTime(_process.StartTimestamp);
        // Before the exit is reported: the caller may read on from the file the moment it is.
        _stdinRelay?.Finish();
        InitReport report = _process.Report;
        var reason = (TerminationReason)Volatile.Read(ref _reason);
        if (report.Failure is SandboxException failure && reason == TerminationReason.Exited)
        {
            _events.Complete(failure);
            return;
        }
        foreach (OutputPump pump in (ReadOnlySpan<OutputPump>)[_stdout, _stderr])
        {
            if (pump.WriteError != 0)
            {
                string name = pump.Stream == OutputStream.Stdout ? "stdout" : "stderr";
                _events.Complete(new SandboxException(SandboxErrorCode.OutputLost,
                    $"writing the command's {name} failed: {Linux.Errno.Describe(pump.WriteError)}; its output there is incomplete (the command exited with {ExitStatus.FromWaitStatus(report.PayloadWaitStatus ?? status)}). Free space there, or send the output elsewhere"));
                return;
            }
        }
        ExitStatus exit = report.PayloadWaitStatus is int ws ? ExitStatus.FromWaitStatus(ws) : ExitStatus.FromWaitStatus(status);
        if (reason != TerminationReason.Exited && report.PayloadWaitStatus is int)
        {
            // The payload finished on its own before our kill landed.
            reason = TerminationReason.Exited;
        }
        Cgroups.ResourceUsage? usage = _cgroup?.ReadUsage();
        Write(new ExitedEvent(new SandboxResult(exit, reason, wall, user, system, _spec.Timeout, usage, _spec.Limits)
        {
            ForwardedTerminatingSignal = Volatile.Read(ref _forwardedTerminatingSignal) is int forwarded and > 0 ? forwarded : null,
        }));
        _events.Complete();
    }

    /// <summary>Frees what the supervision held, once, however it ended (the end of the loop, an abandoned reader, <see cref="Dispose"/>).</summary>
    private void EndSupervision()
    {
        if (Interlocked.Exchange(ref _supervisionEnded, 1) != 0)
            return;
        if (_forwardedSignals is int[] signals)
        {
            Volatile.Write(ref _signalFd, -1);
            NativeExecutor.RestoreSignals(signals);
        }
        _stdout.Dispose();
        _stderr.Dispose();
        _stdinRelay?.Finish();
        _cgroup?.Dispose();
        _root?.Dispose();
        _cancelRegistration.Dispose();
    }

    private int PollTimeout()
    {
        long due = Math.Min(_deadline, _choreDue);
        if (due == long.MaxValue)
            return -1;
        long left = due - Stopwatch.GetTimestamp();
        // Round up: waking a little late is fine, spinning on a 0 ms timeout is not.
        return left <= 0 ? 0 : (int)Math.Min(int.MaxValue, (left * 1000 + Stopwatch.Frequency - 1) / Stopwatch.Frequency);
    }

    private void Write(SandboxEvent e) => _events.Write(e);

    /// <summary>One output pipe: its chunks become output events, or are spliced to a descriptor of the caller's.</summary>
    /// <param name="pipe">Null when the payload writes to a /dev/null of its own or straight into the caller's pipe (<see cref="OutputChannel"/>): nothing to move.</param>
    private sealed class OutputPump(SafeFileHandle? pipe, OutputStream stream, SafeFileHandle? target) : IDisposable
    {
        private byte[]? _buffer;
        private bool _spliceRefused;

        public bool Open { get; private set; } = pipe is not null;

        /// <summary>
        /// The errno of a failed write to the target other than EPIPE (ENOSPC, EDQUOT, EFBIG, EIO):
        /// the output is incomplete through no doing of the payload's or its reader's; 0 when none.
        /// </summary>
        public int WriteError { get; private set; }

        public OutputStream Stream => stream;

        public int Fd => pipe is null ? -1 : (int)pipe.DangerousGetHandle();

        /// <summary>Moves what the pipe holds (poll(2) said it is readable); closes it at its end.</summary>
        public void Transfer(SandboxExecution owner)
        {
            if (target is null)
                ToEvents(owner);
            else
                ToTarget((int)target.DangerousGetHandle());
        }

        private void ToEvents(SandboxExecution owner)
        {
            _buffer ??= new byte[ReadChunk];
            int n = Syscalls.Read(pipe!, _buffer);
            if (n == 0)
            {
                Close();
                return;
            }
            // Events of at most 64 KiB: below the large object heap's 85,000 bytes, so a stream of
            // output makes only short-lived gen0 garbage, never gen2 collections.
            for (int offset = 0; offset < n; offset += EventChunk)
            {
                byte[] chunk = _buffer.AsSpan(offset, Math.Min(EventChunk, n - offset)).ToArray();
                if (!owner._events.Write(new OutputEvent(stream, chunk)))
                {
                    Close();
                    return;
                }
            }
        }

        private void ToTarget(int fd)
        {
            // Drain what the pipe holds (and what arrives meanwhile) before polling again, up to a
            // budget: an endless writer must not keep the loop from the reports, the other stream and
            // the timeout.
            for (int budget = 16; !_spliceRefused && budget > 0; budget--)
            {
                long moved = StreamCalls.Splice(Fd, fd, SpliceChunk);
                if (moved > 0)
                    continue;
                if (moved == 0)
                {
                    Close();
                    return;
                }
                if (moved == -Errno.EAGAIN)
                {
                    // Either our pipe is empty (back to poll) or a pipe target is full (wait for it).
                    if (StreamCalls.Available(Fd) == 0)
                        return;
                    StreamCalls.WaitWritable(fd);
                    continue;
                }
                if (moved == -Errno.EINVAL)
                {
                    // Not every target takes a splice (a file opened O_APPEND, some terminals): copy instead.
                    _spliceRefused = true;
                    break;
                }
                // EPIPE: nobody reads our end any more. Closing the pipe hands that on to the payload
                // (EPIPE or SIGPIPE on its next write), as in a shell pipeline. Any other error (a full
                // disk, a quota, an I/O error) is ours to report: the payload's own write would have
                // failed with it, bwrap's too.
                Failed((int)-moved);
                return;
            }
            if (!_spliceRefused)
                return;
            // Copying, drained the same way: a read for each wake-up would add a poll(2) per chunk.
            _buffer ??= new byte[ReadChunk];
            for (int budget = 16; budget > 0; budget--)
            {
                int n = Syscalls.Read(pipe!, _buffer);
                int written = n == 0 ? 0 : StreamCalls.WriteAll(fd, _buffer.AsSpan(0, n));
                if (n == 0 || written < 0)
                {
                    Failed(-written);
                    return;
                }
                if (StreamCalls.Available(Fd) == 0)
                    return;
            }
        }

        private void Close()
        {
            Open = false;
            pipe?.Dispose();
        }

        private void Failed(int errno)
        {
            if (errno != 0 && errno != Errno.EPIPE && WriteError == 0)
                WriteError = errno;
            Close();
        }

        public void Dispose() => pipe?.Dispose();
    }

    /// <summary>
    /// For a caller that exits right after the run (the CLI): once the exit event has come, lets
    /// <see cref="Dispose"/> leave PID 1, which has reported the payload's exit and has nothing of the
    /// sandbox left to wait for, to finish exiting on its own; the caller's exit hands it to init,
    /// which reaps it. A caller that goes on running would collect one zombie per run this way.
    /// False (and Dispose waits, as without this) when the run cannot end before PID 1.
    /// </summary>
    public bool LeavePidOneToInit() => MayEndBeforePidOne && _process.LeaveUnreaped();

    /// <summary>Kills the sandbox if it still runs, waits for its processes to be reaped and frees what it held.</summary>
    public void Dispose()
    {
        if (_disposed.IsCancellationRequested)
            return;
        _process.Kill();
        _disposed.Cancel();
        // Never read: supervise to the end here (PID 1 is killed, so that is at once; the abandoned
        // queue drops the events).
        if (Interlocked.CompareExchange(ref _supervision, SupervisedByReader, NotSupervised) == NotSupervised)
            RunToEnd();
        _supervisor?.Join();
        // A reader that stopped early has ended the loop by disposing its enumerator; one that never
        // started reading has not.
        EndSupervision();
        _process.Dispose();
    }
}

/// <summary>
/// stdin from a regular file (`sandbox run … &lt; file`, a `while read …; do sandbox run …; done &lt; list`
/// loop), relayed as <see cref="InputRelay"/> relays, but read with pread(2): the file's offset, which
/// the caller's shell shares, stays where it was while the run lasts, and at the end it is moved past
/// what the payload read, and no further, as if the payload had read the file itself (bwrap hands it
/// over; docker without -i never reads it). The relay was reading the caller's offset ahead into the
/// pipe, so a command that read nothing still used the file up: such a loop stopped after its first
/// line. The relay keeps at most a pipe's worth ahead; what the payload read is what went into the
/// pipe less what is still in it (FIONREAD on a read end kept for that).
/// </summary>
internal sealed class FileInputRelay
{
    private readonly int _source;
    private readonly long _start;
    private readonly SafeFileHandle _write;
    private readonly SafeFileHandle _unread;
    private readonly (SafeFileHandle Read, SafeFileHandle Write) _stop;
    private readonly Thread _thread;
    private long _written;
    private int _finished;

    private FileInputRelay(int source, long start, SafeFileHandle write, SafeFileHandle unread)
    {
        _source = source;
        _start = start;
        _write = write;
        _unread = unread;
        _stop = Syscalls.CreatePipe();
        _thread = new Thread(Pump) { IsBackground = true, Name = "sandbox stdin file relay" };
    }

    /// <summary>The pipe's read end for the payload, and the relay; null when the file's offset cannot be read (the caller relays it as a stream).</summary>
    public static (SafeFileHandle Read, FileInputRelay Relay)? TryStart(int source)
    {
        long start = Syscalls.Seek(source, 0, fromCurrent: true);
        if (start < 0)
            return null;
        var (read, write) = Syscalls.CreatePipe();
        Syscalls.SetNonBlocking(write);
        var relay = new FileInputRelay(source, start, write, Syscalls.Duplicate(read));
        relay._thread.Start();
        return (read, relay);
    }

    private void Pump()
    {
        byte[] buffer = new byte[64 * 1024];
        int target = (int)_write.DangerousGetHandle();
        int stop = (int)_stop.Read.DangerousGetHandle();
        Span<PollEntry> entries = stackalloc PollEntry[2];
        int pending = 0, at = 0;
        try
        {
            while (true)
            {
                if (pending == 0)
                {
                    int n = Syscalls.ReadAt(_source, buffer, _start + Volatile.Read(ref _written));
                    if (n <= 0)
                        return; // the file's end (or an error): the payload reads EOF
                    (pending, at) = (n, 0);
                }
                int taken = Syscalls.WriteSome(target, buffer.AsSpan(at, pending));
                if (taken > 0)
                {
                    Interlocked.Add(ref _written, taken);
                    (pending, at) = (pending - taken, at + taken);
                    continue;
                }
                if (taken != -Errno.EAGAIN)
                    return;
                entries[0] = new PollEntry(target, PollEntry.Out);
                entries[1] = new PollEntry(stop, PollEntry.In);
                StreamCalls.Poll(entries, -1);
                if (entries[1].ReturnedEvents != 0)
                    return;
            }
        }
        catch (LinuxException)
        {
            // poll(2) failed: the payload reads EOF, the run goes on.
        }
        finally
        {
            _write.Dispose();
        }
    }

    /// <summary>At the run's end: stops the relay and moves the caller's offset past what the payload read.</summary>
    public void Finish()
    {
        if (Interlocked.Exchange(ref _finished, 1) != 0)
            return;
        Syscalls.WriteByte(_stop.Write, 0);
        _thread.Join();
        long consumed = Volatile.Read(ref _written) - StreamCalls.Available((int)_unread.DangerousGetHandle());
        Syscalls.Seek(_source, _start + Math.Max(0, consumed));
        _unread.Dispose();
        _stop.Read.Dispose();
        _stop.Write.Dispose();
    }
}

/// <summary>
/// Copies the caller's stdin into a pipe whose read end the payload gets (<see cref="SandboxExecution"/>'s
/// InputChannel says why), on a thread of its own: a terminal blocks a read until a line is typed,
/// which the supervisor's loop must never wait for. It ends at the input's end (the payload then
/// reads EOF) or when the payload's end of the pipe is closed (poll(2) reports POLLERR on the write
/// end, pipe(7)), whichever comes first.
/// </summary>
internal static class InputRelay
{
    public static SafeFileHandle Start(int source)
    {
        var (read, write) = Syscalls.CreatePipe();
        new Thread(() => Pump(source, write)) { IsBackground = true, Name = "sandbox stdin relay" }.Start();
        return read;
    }

    private static void Pump(int source, SafeFileHandle write)
    {
        try
        {
            Copy(source, write);
        }
        catch (LinuxException)
        {
            // poll(2) itself failed (ENOMEM): the payload reads EOF, the run goes on. A background
            // thread's exception would end the whole process.
        }
        finally
        {
            write.Dispose();
        }
    }

    private static void Copy(int source, SafeFileHandle write)
    {
        byte[] buffer = new byte[64 * 1024];
        int target = (int)write.DangerousGetHandle();
        Span<PollEntry> entries = stackalloc PollEntry[2];
        while (true)
        {
            entries[0] = new PollEntry(source, PollEntry.In);
            entries[1] = new PollEntry(target, 0);
            StreamCalls.Poll(entries, -1);
            if ((entries[1].ReturnedEvents & (PollEntry.Error | PollEntry.HangUp | PollEntry.Invalid)) != 0)
                return;
            if (!entries[0].Ready)
                continue;
            int n = Syscalls.TryRead(source, buffer);
            if (n == -Errno.EAGAIN)
                continue; // a terminal or socket the caller made non-blocking
            if (n <= 0 || StreamCalls.WriteAll(target, buffer.AsSpan(0, n)) < 0)
                return;
        }
    }
}
