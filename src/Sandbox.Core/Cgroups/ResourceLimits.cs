using System.Collections.Immutable;
using System.Globalization;

namespace Sandbox.Cgroups;

/// <summary>A device and a rate in bytes per second (docker's --device-read-bps /dev/sda:1mb).</summary>
public sealed record DeviceRate(string DevicePath, long BytesPerSecond)
{
    public static DeviceRate Parse(string value, string option)
    {
        int colon = value.LastIndexOf(':');
        if (colon <= 0 || colon == value.Length - 1)
            throw new SandboxException(SandboxErrorCode.InvalidSpec, $"{option} {value}: expected DEVICE:RATE, e.g. /dev/sda:10mb");
        return new DeviceRate(value[..colon], Sizes.Parse(value[(colon + 1)..], option));
    }
}

/// <summary>What the sandbox may use. Null means no limit.</summary>
public sealed record ResourceLimits
{
    public long? MemoryBytes { get; init; }

    /// <summary>docker's --memory-swap: memory plus swap; -1 is unlimited swap. Unset with a memory limit: as much swap as memory (docker's default).</summary>
    public long? MemoryAndSwapBytes { get; init; }

    public long? PidsLimit { get; init; }

    /// <summary>The kernel's PID_MAX_LIMIT on 64-bit (include/linux/threads.h, 4 Mi), less one for sandbox-init.</summary>
    public const long MaxPidsLimit = (4L << 20) - 1;

    /// <summary>CPUs worth of time per period (cpu.max quota/period), e.g. 1.5.</summary>
    public double? Cpus { get; init; }

    public ImmutableArray<DeviceRate> DeviceReadBps { get; init; } = ImmutableArray<DeviceRate>.Empty;

    public ImmutableArray<DeviceRate> DeviceWriteBps { get; init; } = ImmutableArray<DeviceRate>.Empty;

    public static ResourceLimits None { get; } = new();

    public bool IsEmpty => MemoryBytes is null && MemoryAndSwapBytes is null && PidsLimit is null && Cpus is null && DeviceReadBps.IsEmpty && DeviceWriteBps.IsEmpty;

    /// <summary>The controllers these limits need (cgroup v2 names).</summary>
    public IEnumerable<string> RequiredControllers()
    {
        if (MemoryBytes is not null || MemoryAndSwapBytes is not null)
            yield return "memory";
        if (PidsLimit is not null)
            yield return "pids";
        if (Cpus is not null)
            yield return "cpu";
        if (!DeviceReadBps.IsEmpty || !DeviceWriteBps.IsEmpty)
            yield return "io";
    }

    /// <summary>The smallest --memory accepted: 6 MiB, as docker's ("Minimum memory limit allowed is 6MB").</summary>
    public const long MinimumMemoryBytes = 6L << 20;

    public void Validate()
    {
        if (MemoryBytes is <= 0)
            throw new SandboxException(SandboxErrorCode.InvalidSpec, "--memory must be positive");
        // The sandbox's init is cloned from the CLI and shares its memory until it execs (CLONE_VM):
        // below a few MB the kernel OOM-kills the CLI itself, before any message. docker's minimum.
        if (MemoryBytes < MinimumMemoryBytes)
            throw new SandboxException(SandboxErrorCode.InvalidSpec, $"--memory must be at least 6m (got {Sizes.Format(MemoryBytes.Value)}), as docker's");
        if (MemoryAndSwapBytes is long total && total != -1)
        {
            if (MemoryBytes is null)
                throw new SandboxException(SandboxErrorCode.InvalidSpec, "--memory-swap needs --memory (it is the total of memory and swap)");
            if (total < MemoryBytes)
                throw new SandboxException(SandboxErrorCode.InvalidSpec, "--memory-swap is memory plus swap: it cannot be less than --memory");
        }
        if (PidsLimit is <= 0)
            throw new SandboxException(SandboxErrorCode.InvalidSpec, "--pids-limit must be positive");
        // pids.max takes at most PID_MAX_LIMIT (kernel/cgroup/pids.c, pids_max_write), and it is
        // written as the limit plus one, for the sandbox's PID 1 (SandboxCgroup.PidsMax).
        if (PidsLimit is > MaxPidsLimit)
            throw new SandboxException(SandboxErrorCode.InvalidSpec, $"--pids-limit can be at most {MaxPidsLimit} (the kernel's PID_MAX_LIMIT, less one for the sandbox's PID 1); 0 or -1 means no limit");
        if (Cpus is double c && (c <= 0 || double.IsNaN(c) || c > 4096))
            throw new SandboxException(SandboxErrorCode.InvalidSpec, "--cpus must be a positive number of CPUs, e.g. 0.5 or 2");
        // docker: "Range of CPUs is from 0.01 to N.00, as there are only N CPUs available".
        if (Cpus is double cpus && (cpus < 0.01 || cpus > Environment.ProcessorCount))
            throw new SandboxException(SandboxErrorCode.InvalidSpec,
                string.Create(System.Globalization.CultureInfo.InvariantCulture, $"--cpus {cpus}: the range is from 0.01 to {Environment.ProcessorCount}, the CPUs this host has"));
    }
}

/// <summary>What to do when limits were asked for and this host cannot enforce them.</summary>
public enum LimitsPolicy
{
    /// <summary>Refuse to run (exit 125) and say how to fix the host.</summary>
    Required,
    /// <summary>Run without them, with a warning.</summary>
    BestEffort,
}

/// <summary>docker's byte sizes: 512m, 1g, 100k, 1024b, 1.5g; the unit is a power of 1024.</summary>
public static class Sizes
{
    public static long Parse(string text, string option)
    {
        string t = text.Trim().ToLowerInvariant();
        if (t.EndsWith('b') && t.Length > 1 && t[^2] is 'k' or 'm' or 'g' or 't')
            t = t[..^1]; // "512mb" -> "512m"
        long multiplier = 1;
        if (t.Length > 0 && char.IsLetter(t[^1]))
        {
            multiplier = t[^1] switch
            {
                'b' => 1L,
                'k' => 1L << 10,
                'm' => 1L << 20,
                'g' => 1L << 30,
                't' => 1L << 40,
                _ => 0,
            };
            t = t[..^1];
        }
        var invalid = new SandboxException(SandboxErrorCode.InvalidSpec, $"{option} {text}: expected a size such as 512m, 1g or 100k");
        if (multiplier == 0 || t.Length == 0 || !char.IsAsciiDigit(t[0]) ||
            !double.TryParse(t, NumberStyles.AllowDecimalPoint, CultureInfo.InvariantCulture, out double value) || value <= 0)
            throw invalid;
        double bytes = Math.Round(value * multiplier);
        return bytes is >= 1 and < long.MaxValue ? (long)bytes : throw invalid;
    }

    public static string Format(long bytes) => bytes switch
    {
        >= 1L << 30 when bytes % (1L << 30) == 0 => $"{bytes >> 30} GiB",
        >= 1L << 30 => $"{bytes / (double)(1L << 30):0.0} GiB",
        >= 1L << 20 => $"{Math.Round(bytes / (double)(1L << 20))} MiB",
        >= 1L << 10 => $"{Math.Round(bytes / (double)(1L << 10))} KiB",
        _ => $"{bytes} B",
    };
}

/// <summary>What the sandbox used, read from its cgroup at the end.</summary>
public sealed record ResourceUsage(
    long? PeakMemoryBytes,
    int OomKills,
    long PidsLimitHits,
    TimeSpan? CpuTime,
    string CgroupVersion);
