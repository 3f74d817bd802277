using System.Diagnostics;
using System.Runtime.InteropServices;
using Microsoft.Win32.SafeHandles;
using Sandbox.Linux;

namespace Sandbox.Runtime;

/// <summary>What PID 1 reported over the report pipe, once it closed.</summary>
/// <param name="PayloadWaitStatus">The payload's wait status: reported once every process of the sandbox is gone.</param>
/// <param name="CpuTimes">With <paramref name="PayloadWaitStatus"/>: the CPU times of every process PID 1 reaped.</param>
internal sealed record InitReport(
    int? PayloadPid,
    int? PayloadWaitStatus,
    SandboxException? Failure,
    (TimeSpan User, TimeSpan System)? CpuTimes = null);

/// <summary>
/// A running sandbox's PID 1, seen from the parent: its pidfd (no pid-reuse races), the report pipe,
/// and the life pipe whose write end we hold (when this process dies, PID 1 sees EOF and exits, and
/// the kernel kills the whole PID namespace: die-with-parent).
/// </summary>
internal sealed class SandboxProcess : IDisposable
{
    private readonly NativeArena _arena;
    private readonly SafeFileHandle _reports;
    private readonly SafeFileHandle _life;
    private readonly RuntimePlan _plan;
    private readonly IReadOnlyDictionary<int, IntPtr> _stepOutputs;
    private int _pidfd;
    private int _reaped;
    private (int Status, TimeSpan User, TimeSpan System)? _exit;

    internal SandboxProcess(int pid, int pidfd, NativeArena arena, SafeFileHandle reports, SafeFileHandle life, RuntimePlan plan, long startTimestamp,
        IReadOnlyDictionary<int, IntPtr>? stepOutputs = null)
    {
        _stepOutputs = stepOutputs ?? new Dictionary<int, IntPtr>();
        Pid = pid;
        _pidfd = pidfd;
        _arena = arena;
        _reports = reports;
        _life = life;
        _plan = plan;
        StartTimestamp = startTimestamp;
    }

    /// <summary>PID 1's pid in the caller's PID namespace.</summary>
    public int Pid { get; }

    public long StartTimestamp { get; }

    /// <summary>Sends a signal to PID 1: SIGKILL ends the whole sandbox; others are forwarded to the payload.</summary>
    public bool Signal(int signal)
    {
        int fd = Volatile.Read(ref _pidfd);
        return fd >= 0 && Volatile.Read(ref _reaped) == 0 && NativeExecutor.Kill(fd, signal) == 0;
    }

    public void Kill() => Signal(9);

    // Reports arrive as fixed-size records (sandbox_protocol.h); a read may end inside one.
    private readonly byte[] _reportBytes = new byte[Marshal.SizeOf<NativeReport>()];
    private int _reportFill;
    private int? _payloadPid, _payloadWaitStatus;
    private (TimeSpan User, TimeSpan System)? _cpuTimes;
    private SandboxException? _failure;
    private bool _leaveUnreaped;

    /// <summary>The report pipe's descriptor, for poll(2).</summary>
    public int ReportsFd => (int)_reports.DangerousGetHandle();

    /// <summary>What PID 1 has reported so far (all of it once <see cref="PumpReports"/> returned false).</summary>
    public InitReport Report => new(_payloadPid, _payloadWaitStatus, _failure, _cpuTimes);

    /// <summary>Reads PID 1's reports until the pipe closes (PID 1 exited). Blocking.</summary>
    public InitReport ReadReports(Action<int>? onStarted = null)
    {
        while (PumpReports(onStarted))
        {
        }
        return Report;
    }

    /// <summary>
    /// One read(2) of the report pipe (blocking unless poll(2) said it is ready), decoding every
    /// complete record; false once the pipe is at its end (PID 1 exited).
    /// </summary>
    public bool PumpReports(Action<int>? onStarted = null)
    {
        int n = Syscalls.Read(_reports, _reportBytes.AsSpan(_reportFill));
        if (n == 0)
            return false;
        _reportFill += n;
        if (_reportFill < _reportBytes.Length)
            return true;
        _reportFill = 0;
        NativeReport report = MemoryMarshal.Read<NativeReport>(_reportBytes);
        switch ((NativeReportKind)report.Kind)
        {
            case NativeReportKind.Started:
                _payloadPid = report.Value;
                onStarted?.Invoke(report.Value);
                break;
            case NativeReportKind.Exited:
                _payloadWaitStatus = report.Value;
                _cpuTimes = (TimeSpan.FromMicroseconds(report.UserMicroseconds), TimeSpan.FromMicroseconds(report.SystemMicroseconds));
                break;
            case NativeReportKind.SetupFailed:
                _failure = SetupFailure(report.Step, report.Error, report.Value);
                break;
            case NativeReportKind.ExecFailed:
                _failure = ExecFailure(report.Step, report.Error);
                break;
        }
        return true;
    }

    /// <summary>
    /// The failure PID 1 reported before it was released (it creates the network namespace then),
    /// if it has exited already: what to say instead of "could not write the id maps" or "exited
    /// before it was released". Never blocks.
    /// </summary>
    public SandboxException? FailureBeforeRelease()
    {
        Span<PollEntry> entry = [new PollEntry(ReportsFd, PollEntry.In)];
        while (_failure is null && StreamCalls.Poll(entry, 0) > 0 && PumpReports())
        {
        }
        return _failure;
    }

    /// <summary>Reaps PID 1 (blocking) and returns its wait status and CPU times, which include every process it reaped.</summary>
    public (int Status, TimeSpan User, TimeSpan System) WaitForExit()
    {
        if (_exit is { } done)
            return done;
        int rc = NativeExecutor.Wait(_pidfd, out int status, out long user, out long system);
        if (rc < 0)
            throw new LinuxException("waitid", null, -rc);
        Volatile.Write(ref _reaped, 1);
        _exit = (status, TimeSpan.FromMicroseconds(user), TimeSpan.FromMicroseconds(system));
        return _exit.Value;
    }

    private SandboxException SetupFailure(int stepIndex, int errno, int value)
    {
        if (errno == 0 && stepIndex >= 0 && stepIndex < _plan.Steps.Length && _plan.Steps[stepIndex] is RunProgramStep program)
            return ProgramFailure(stepIndex, program, ExitStatus.FromWaitStatus(value));
        if (stepIndex == _plan.Steps.Length + 1)
            return new SandboxException(SandboxErrorCode.SpawnFailed, $"could not start sandbox-init ({NativeExecutor.InitPath}) as the sandbox's PID 1: {Errno.Describe(errno)}");
        if (stepIndex == _plan.Steps.Length + 2)
        {
            return new SandboxException(SandboxErrorCode.SpawnFailed,
                $"could not create the sandbox's network namespace (unshare: {Errno.Describe(errno)}). " +
                (errno == Errno.ENOSPC ? "The limit is the sysctl user.max_net_namespaces; raise it with: sudo sysctl -w user.max_net_namespaces=15000. " : "") +
                "Or run with --network host (no network isolation).");
        }
        if (stepIndex == _plan.Steps.Length + 3)
            return new SandboxException(SandboxErrorCode.SpawnFailed, $"could not give the sandbox its file descriptors (fcntl F_DUPFD: {Errno.Describe(errno)})");
        if (stepIndex < 0 || stepIndex >= _plan.Steps.Length)
            return new SandboxException(SandboxErrorCode.SpawnFailed, $"could not start the command inside the sandbox: {Errno.Describe(errno)}");
        SetupStep step = _plan.Steps[stepIndex];
        return new SandboxException(SandboxErrorCode.SetupFailed, SetupFailureMessage(stepIndex, step, errno, value));
    }

    /// <param name="value">The report's value (<see cref="SetupStep.DescribeFailure"/>): for a <see cref="BuildDevStep"/>, the part of /dev it failed at.</param>
    internal static string SetupFailureMessage(int stepIndex, SetupStep step, int errno, int value) =>
        $"setting up the sandbox failed at step {stepIndex + 1} ({step.DescribeFailure(value)}): " +
        $"{Errno.Describe(errno)}{SetupHint(step, errno, value)}";

    /// <summary>A set-up program (fuse-overlayfs) that ran and failed: its status and what it said on stderr.</summary>
    private unsafe SandboxException ProgramFailure(int stepIndex, RunProgramStep program, ExitStatus status)
    {
        string said = "";
        if (_stepOutputs.TryGetValue(stepIndex, out IntPtr output))
        {
            // Written by PID 1 before its report (it shares our memory); NUL-terminated within the buffer.
            var bytes = new ReadOnlySpan<byte>((void*)output, Launcher.ProgramOutputSize);
            int end = bytes.IndexOf((byte)0);
            said = System.Text.Encoding.UTF8.GetString(end < 0 ? bytes : bytes[..end]).Trim();
        }
        string outcome = status.Signal is int signal ? $"was killed by signal {signal}" : $"exited with status {status.Code}";
        return new SandboxException(SandboxErrorCode.SetupFailed,
            $"setting up the sandbox failed at step {stepIndex + 1} ({program.Describe()}): {program.Program} {outcome}" +
            (said.Length == 0 ? "" : $": {string.Join(" ", said.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))}"));
    }

    private static string SetupHint(SetupStep step, int errno, int value) => (step, errno) switch
    {
        (MountStep { FileSystemType: "proc" }, Errno.EPERM) =>
            ". The kernel refuses a new /proc when the host's /proc is partly hidden by over-mounts (as in some containers); run on a host or a container started with an unmasked /proc",
        (MountStep m, Errno.ENOENT) when (m.Flags & MountFlags.Bind) != 0 =>
            ". The mount point must exist in the root; in host mode a bind target must be an existing path, or lie under /tmp or $HOME",
        (BuildDevStep, Errno.ENOENT) when value == (int)BuildDevStep.Part.HostDevices =>
            ". One of them is missing on this host: in a container, start it with the usual /dev (docker and podman give every container these six)",
        (MakeDirectoryStep or CreateFileStep, Errno.EROFS) =>
            ". The root is read-only here: choose a target that exists, or one under /tmp or $HOME",
        (MakeDirectoryStep or CreateFileStep, Errno.EACCES) =>
            ". A directory root must either contain every mount point (/proc, /dev, /tmp, targets of -v and --tmpfs) or be writable by you so they can be created",
        _ => "",
    };

    private SandboxException ExecFailure(int stage, int errno)
    {
        string file = _plan.Process.File;
        if (stage == 1)
            return new SandboxException(SandboxErrorCode.WorkingDirectoryUnavailable,
                $"cannot change to the working directory {_plan.Process.WorkingDirectory}: {Errno.Describe(errno)}" + (errno == Errno.ENOENT
                    ? " (a missing one is made only where the sandbox can write: under /tmp, $HOME or a --tmpfs, or in an image's root; elsewhere choose an existing directory)"
                    : ""));
        if (stage == 3)
            return new SandboxException(SandboxErrorCode.SetupFailed, $"could not bound the payload's capabilities: {Errno.Describe(errno)}");
        if (stage == 5)
            return new SandboxException(SandboxErrorCode.SetupFailed, $"could not switch to the user {_plan.Process.Uid}:{_plan.Process.Gid}: {Errno.Describe(errno)} (a uid other than 0 needs a subordinate id range: --userns=subuid)");
        if (stage == 4)
            return new SandboxException(SandboxErrorCode.SetupFailed, $"could not install the seccomp filter: {Errno.Describe(errno)}");
        if (stage == 6)
            return new SandboxException(SandboxErrorCode.SetupFailed,
                $"the command could not wait for the sandbox's init under its seccomp filter: {Errno.Describe(errno)} (a profile must allow read)");
        return errno switch
        {
            Errno.ENOENT or Errno.ENOTDIR => new SandboxException(SandboxErrorCode.CommandNotFound,
                file.Contains('/')
                    ? $"{file}: no such file in the sandbox (or its interpreter is missing)"
                    : $"{file}: command not found in the sandbox's PATH ({_plan.Process.SearchPath})"),
            // execve(2) says EACCES for a directory as for a file without x permission or on a noexec mount.
            Errno.EACCES => new SandboxException(SandboxErrorCode.CommandNotExecutable,
                $"{file}: cannot execute: {Errno.Describe(errno)}: it is a directory, lacks execute permission, or lies on a noexec mount"),
            _ => new SandboxException(SandboxErrorCode.CommandNotExecutable, $"{file}: cannot execute: {Errno.Describe(errno)}"),
        };
    }

    /// <summary>
    /// Lets <see cref="Dispose"/> leave PID 1 to exit on its own, unreaped, once it has reported the
    /// payload's exit (by then every other process of the sandbox is gone and PID 1 runs sandbox-init
    /// in an address space of its own): for a caller about to exit itself, whose parent's init then
    /// reaps PID 1. False when PID 1 has not reported that.
    /// </summary>
    public bool LeaveUnreaped()
    {
        _leaveUnreaped = _payloadWaitStatus is not null;
        return _leaveUnreaped;
    }

    public void Dispose()
    {
        _reports.Dispose();
        _life.Dispose();
        int fd = Interlocked.Exchange(ref _pidfd, -1);
        if (fd >= 0)
        {
            // The arena may be freed only once PID 1 (which shares our memory until it execs
            // sandbox-init) is gone, or has exec'd: a reported exit comes from sandbox-init.
            if (Volatile.Read(ref _reaped) == 0 && !_leaveUnreaped)
            {
                NativeExecutor.Kill(fd, 9);
                NativeExecutor.Wait(fd, out _, out _, out _);
            }
            Tmds.Linux.LibC.close(fd);
            _arena.Dispose();
        }
    }
}
