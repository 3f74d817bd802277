namespace Sandbox;

public enum OutputStream
{
    Stdout = 1,
    Stderr = 2,
}

/// <summary>How a payload ended: an exit code, or the signal that killed it.</summary>
public readonly record struct ExitStatus(int? Code, int? Signal)
{
    public static ExitStatus Exited(int code) => new(code, null);
    public static ExitStatus Killed(int signal) => new(null, signal);

    /// <summary>Decodes a wait(2) status.</summary>
    public static ExitStatus FromWaitStatus(int status) =>
        (status & 0x7f) == 0 ? Exited((status >> 8) & 0xff) : Killed(status & 0x7f);

    /// <summary>The shell's convention: the code, or 128+N for signal N.</summary>
    public int ShellExitCode => Code ?? ExitCodes.SignalBase + Signal!.Value;

    public override string ToString() => Code is int c ? $"exit code {c}" : $"signal {Signal} ({SignalNames.Name(Signal!.Value)})";
}

public static class SignalNames
{
    private static readonly string[] s_names =
    {
        "0", "SIGHUP", "SIGINT", "SIGQUIT", "SIGILL", "SIGTRAP", "SIGABRT", "SIGBUS", "SIGFPE", "SIGKILL", "SIGUSR1",
        "SIGSEGV", "SIGUSR2", "SIGPIPE", "SIGALRM", "SIGTERM", "SIGSTKFLT", "SIGCHLD", "SIGCONT", "SIGSTOP", "SIGTSTP",
        "SIGTTIN", "SIGTTOU", "SIGURG", "SIGXCPU", "SIGXFSZ", "SIGVTALRM", "SIGPROF", "SIGWINCH", "SIGIO", "SIGPWR", "SIGSYS",
    };

    public static string Name(int signal) => signal > 0 && signal < s_names.Length ? s_names[signal] : $"SIGRT{signal}";
}

public enum TerminationReason
{
    /// <summary>The payload exited or was killed by a signal of its own doing or ours forwarded.</summary>
    Exited,
    TimedOut,
    Cancelled,
}

/// <summary>What happened in a run, in order: started, output chunks, exited (CliWrap's event stream).</summary>
public abstract record SandboxEvent;

/// <summary>The payload runs. <paramref name="ProcessId"/> is the sandbox's init (PID 1 inside) as the host sees it.</summary>
public sealed record StartedEvent(int ProcessId, DateTimeOffset StartTime) : SandboxEvent;

/// <summary>A chunk of raw bytes as the payload wrote it; order is kept within each stream.</summary>
public sealed record OutputEvent(OutputStream Stream, ReadOnlyMemory<byte> Data) : SandboxEvent;

public sealed record ExitedEvent(SandboxResult Result) : SandboxEvent;

public sealed record SandboxResult(
    ExitStatus Status,
    TerminationReason Reason,
    TimeSpan WallTime,
    TimeSpan UserCpuTime,
    TimeSpan SystemCpuTime,
    TimeSpan? Timeout = null,
    Cgroups.ResourceUsage? Usage = null,
    Cgroups.ResourceLimits? Limits = null)
{
    /// <summary>The kernel's OOM killer killed a process of the sandbox (memory.events oom_kill).</summary>
    public bool OutOfMemory => Usage is { OomKills: > 0 };

    /// <summary>
    /// The last terminating signal (SIGHUP, SIGINT, SIGQUIT, SIGTERM) sent to this process and forwarded
    /// to the payload during the run, if any: a payload that exits 0 on it (`dotnet test` does) was
    /// still stopped, which a caller running more than one sandbox must not take for success.
    /// </summary>
    public int? ForwardedTerminatingSignal { get; init; }

    /// <summary>Forks were refused because the pids limit was reached (pids.events max).</summary>
    public bool PidsLimitHit => Usage is { PidsLimitHits: > 0 };

    /// <summary>The exit code a CLI should return: the payload's (128+N for a signal), 124 on timeout.</summary>
    public int ExitCode => Reason == TerminationReason.TimedOut ? ExitCodes.Timeout : Status.ShellExitCode;

    public TimeSpan CpuTime => UserCpuTime + SystemCpuTime;

    /// <summary>A one-line explanation when the run did not end on its own, else null.</summary>
    public string? Message
    {
        get
        {
            var parts = new List<string>();
            if (Reason == TerminationReason.TimedOut)
                parts.Add($"timed out after {FormatDuration(Timeout ?? WallTime)}: the sandbox and every process in it were killed");
            else if (Reason == TerminationReason.Cancelled)
                parts.Add("cancelled: the sandbox and every process in it were killed");
            if (OutOfMemory)
            {
                string limit = Limits?.MemoryBytes is long m ? Cgroups.Sizes.Format(m) : "?";
                string peak = Usage?.PeakMemoryBytes is long p ? Cgroups.Sizes.Format(p) : "unknown";
                string who = Status.Signal == 9 || Status.Code == 137 ? "killed" : $"a process was killed ({Usage!.OomKills}x)";
                parts.Add($"{who}: out of memory, limit {limit}, peak {peak} (raise it with --memory)");
            }
            if (PidsLimitHit)
                parts.Add($"{Usage!.PidsLimitHits} fork(s) refused: the pids limit ({Limits?.PidsLimit}) was reached (raise it with --pids-limit)");
            return parts.Count == 0 ? null : string.Join("; ", parts);
        }
    }

    /// <summary>--stats: wall time, CPU time and peak memory.</summary>
    public string StatsLine()
    {
        TimeSpan cpu = Usage?.CpuTime ?? CpuTime;
        string peak = Usage?.PeakMemoryBytes is long p ? Cgroups.Sizes.Format(p) : "n/a (no cgroup)";
        return $"stats: wall {FormatDuration(WallTime)}, cpu {FormatDuration(cpu)}, peak memory {peak}, {Status}";
    }

    internal static string FormatDuration(TimeSpan t) =>
        t.TotalSeconds >= 1 ? $"{t.TotalSeconds:0.###}s" : $"{t.TotalMilliseconds:0}ms";
}
