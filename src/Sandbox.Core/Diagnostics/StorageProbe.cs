using System.Collections.Immutable;
using System.Globalization;
using System.Text;
using Sandbox.Identity;
using Sandbox.Linux;
using Sandbox.Rootfs;
using Sandbox.Runtime;

namespace Sandbox.Diagnostics;

/// <summary>
/// Whether kernel overlayfs and fuse-overlayfs really mount in a user namespace on this host: each
/// probe starts a throwaway sandbox (user, mount and PID namespaces, a single-id map) whose set-up
/// mounts one on a tmpfs and creates a directory in it, then runs /bin/true. Only that tells: a
/// distribution may have backported unprivileged overlay, a security module may refuse it, and
/// /dev/fuse may exist without being usable. `sandbox check` shows the same probes.
/// The answers are cached per boot (<see cref="StorageProbeCache"/>), so that warm runs pay nothing.
/// </summary>
public sealed class StorageProbe : IStorageDriverHost
{
    public const string DevFuse = "/dev/fuse";

    private readonly StorageProbeCache? _cache;
    private readonly bool _refresh;
    private readonly Dictionary<string, string?> _answers = new(StringComparer.Ordinal);

    /// <param name="cacheFile">Where answers are kept (null: not kept).</param>
    /// <param name="refresh">Probe even when the cache has an answer (sandbox check), and store the new one.</param>
    public StorageProbe(string? cacheFile, bool refresh = false)
    {
        _cache = cacheFile is null ? null : new StorageProbeCache(cacheFile, ReadBootId());
        _refresh = refresh;
        _kernelRelease = new Lazy<string?>(() => ReadLine("/proc/sys/kernel/osrelease"), LazyThreadSafetyMode.None);
    }

    // Read only when a message needs it (a probe's advice): not on a warm `run IMAGE`, whose probe
    // answers come from the cache.
    private readonly Lazy<string?> _kernelRelease;

    public string? KernelRelease => _kernelRelease.Value;

    public Version? KernelVersion => HostCheck.ParseKernelVersion(KernelRelease);

    /// <summary>The cache file for a store: under $XDG_RUNTIME_DIR (per boot, per user) when there is one of ours, else in the store.</summary>
    public static string CacheFileFor(string storeRoot)
    {
        string? runtime = Environment.GetEnvironmentVariable("XDG_RUNTIME_DIR");
        // Ours only: su and runuser may pass on root's /run/user/0.
        return runtime is { Length: > 0 } && runtime.StartsWith('/') && SafeLStat(runtime) is { Kind: FileKind.Directory } dir && dir.Uid == Syscalls.RealUserId
            ? Path.Combine(runtime, "sandbox", "storage-probe")
            : Path.Combine(storeRoot, "storage-probe");
    }

    public string? KernelOverlayProblem() => Cached("overlay", ProbeKernelOverlay);

    public string? FuseOverlayfsProblem(string program)
    {
        // The key changes when what decides the answer changes: another program, /dev/fuse's mode.
        FileStatus? dev = SafeLStat(DevFuse);
        string key = string.Create(CultureInfo.InvariantCulture,
            $"fuse {program} {SafeMTime(program)} {(dev is { } d ? Convert.ToString(d.Permissions, 8) + ":" + d.Uid.ToString(CultureInfo.InvariantCulture) : "none")}");
        return Cached(key, () => ProbeFuseOverlayfs(program));
    }

    public string? FindFuseOverlayfs() => FindProgram("fuse-overlayfs");

    /// <summary>PATH, then /usr/bin and /usr/local/bin (PATH may be minimal under CI runners).</summary>
    internal static string? FindProgram(string name) =>
        Runtime.ProgramSearch.Find(name, (Environment.GetEnvironmentVariable("PATH") ?? "") + ":/usr/local/bin:/usr/bin:/bin");

    private string? Cached(string key, Func<string?> probe)
    {
        // Once per instance even when refreshing (sandbox check asks about overlay twice).
        if (_answers.TryGetValue(key, out string? known))
            return known;
        if (!_refresh && _cache?.TryGet(key, out string? cached) == true)
            return _answers[key] = cached;
        string? answer = probe();
        if (IsLasting(answer))
            _cache?.Set(key, answer);
        return _answers[key] = answer;
    }

    /// <summary>
    /// Whether an answer says something about this boot's kernel and programs: a probe that worked,
    /// or one whose mount failed. A probe sandbox that could not be made at all (too many open files,
    /// no memory: "could not create the sandbox's init process (clone: …)", "pipe2: …") says nothing
    /// about overlayfs, and would otherwise send every later run of the boot to the slow copy driver.
    /// </summary>
    internal static bool IsLasting(string? answer) =>
        answer is null || !(answer.Contains(Errno.Name(Errno.EMFILE), StringComparison.Ordinal) || answer.Contains(Errno.Name(Errno.ENFILE), StringComparison.Ordinal)
            || answer.Contains(Errno.Name(Errno.ENOMEM), StringComparison.Ordinal) || answer.Contains(Errno.Name(Errno.EAGAIN), StringComparison.Ordinal));

    /// <summary>Kernel overlay, mounted as an image run mounts it: userxattr, two lower directories, an upper on tmpfs.</summary>
    public static string? ProbeKernelOverlay()
    {
        var steps = ScratchSteps();
        steps.Add(new MountStep("overlay", "/tmp/m", "overlay", MountFlags.None, "lowerdir=/tmp/l2:/tmp/l1,upperdir=/tmp/u,workdir=/tmp/w,userxattr"));
        steps.Add(new MakeDirectoryStep("/tmp/m/probe"));
        return Run(steps.ToImmutable());
    }

    /// <summary>fuse-overlayfs, started by the executor as an image run starts it; /dev/fuse is checked first for a precise answer.</summary>
    public static string? ProbeFuseOverlayfs(string program)
    {
        FileStatus? dev = SafeLStat(DevFuse);
        if (dev is null)
            return $"{DevFuse} is missing (sudo modprobe fuse)";
        if (!FileSystemCalls.CanReadWrite(DevFuse))
            return string.Create(CultureInfo.InvariantCulture, $"{DevFuse} is not readable and writable by you (mode {Convert.ToString(dev.Value.Permissions, 8).PadLeft(4, '0')}, owner uid {dev.Value.Uid})");
        var steps = ScratchSteps();
        steps.Add(RootfsPlanner.FuseOverlayfsStep(program, ["/tmp/l2", "/tmp/l1"], "/tmp/u", "/tmp/w", "/tmp/m"));
        steps.Add(new MakeDirectoryStep("/tmp/m/probe"));
        return Run(steps.ToImmutable());
    }

    private static ImmutableArray<SetupStep>.Builder ScratchSteps()
    {
        var steps = ImmutableArray.CreateBuilder<SetupStep>();
        steps.Add(new MountStep(null, "/", null, MountFlags.Recursive | MountFlags.Slave));
        steps.Add(new MountStep("tmpfs", "/tmp", "tmpfs", MountFlags.NoSuid | MountFlags.NoDev, "mode=0755"));
        foreach (string dir in new[] { "l1", "l2", "u", "w", "m" })
            steps.Add(new MakeDirectoryStep("/tmp/" + dir));
        return steps;
    }

    /// <summary>Runs the steps in a throwaway sandbox with a single-id map; null when they all worked, else the failure in a few words.</summary>
    private static string? Run(ImmutableArray<SetupStep> steps)
    {
        IdMapPlan maps;
        try
        {
            maps = IdMapResolver.Resolve(UserNamespaceMode.Single, IdentityEnvironment.Current());
        }
        catch (SandboxException e)
        {
            return e.Message;
        }
        return HelperSandbox.Run(maps, steps, HelperSandbox.TrueProgram, ["true"]) is string failure ? Reason(failure) : null;
    }

    /// <summary>"setting up the sandbox failed at step 9 (mount overlay on /tmp/m): X" becomes "mount overlay: X".</summary>
    private static string Reason(string message)
    {
        const string prefix = "setting up the sandbox failed at step ";
        if (!message.StartsWith(prefix, StringComparison.Ordinal))
            return message;
        int open = message.IndexOf('(', prefix.Length);
        int close = message.IndexOf("): ", prefix.Length, StringComparison.Ordinal);
        if (open < 0 || close < open)
            return message;
        string step = message[(open + 1)..close];
        int on = step.IndexOf(" on /tmp/", StringComparison.Ordinal);
        return (on > 0 ? step[..on] : step) + ": " + message[(close + 3)..];
    }

    private static string? ReadBootId() => ReadLine("/proc/sys/kernel/random/boot_id");

    // Every image run reads these two /proc values: one open and read each, not File's machinery.
    private static string? ReadLine(string path) => Linux.Syscalls.TryReadSmallFile(path)?.Trim();

    private static FileStatus? SafeLStat(string path)
    {
        try
        {
            return FileSystemCalls.TryLStat(path);
        }
        catch (LinuxException)
        {
            return null;
        }
    }

    private static long SafeMTime(string path)
    {
        try
        {
            return File.GetLastWriteTimeUtc(path).Ticks;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return 0;
        }
    }
}

/// <summary>
/// The storage probes' answers for one boot: a small text file, one "KEY\tok" or "KEY\tfail\tWHY"
/// line per probe after a "boot\tID" line (the kernel's random boot id, which changes at every boot:
/// a new kernel, a loaded module or a changed sysctl most often come with a reboot). Rewritten
/// whole through a rename; unreadable or stale means empty. Best effort: a cache that cannot be
/// written only costs a probe per run.
/// </summary>
public sealed class StorageProbeCache
{
    private readonly string _file;
    private readonly string _boot;

    public StorageProbeCache(string file, string? bootId)
    {
        _file = file;
        _boot = bootId ?? "unknown";
    }

    public bool TryGet(string key, out string? problem)
    {
        problem = null;
        Dictionary<string, string?> entries = Load();
        if (!entries.TryGetValue(Clean(key), out string? value))
            return false;
        problem = value;
        return true;
    }

    public void Set(string key, string? problem)
    {
        Dictionary<string, string?> entries = Load();
        entries[Clean(key)] = problem is null ? null : Clean(problem);
        var text = new StringBuilder().Append("boot\t").Append(_boot).Append('\n');
        foreach (var (k, v) in entries)
            text.Append(k).Append('\t').Append(v is null ? "ok" : "fail\t" + v).Append('\n');
        try
        {
            Directory.CreateDirectory(Path.GetDirectoryName(_file)!);
            string temp = $"{_file}.{Environment.ProcessId}.tmp";
            try
            {
                File.WriteAllText(temp, text.ToString());
                File.Move(temp, _file, overwrite: true);
            }
            catch
            {
                File.Delete(temp); // a full disk: no empty file left behind at each run
                throw;
            }
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
        }
    }

    private Dictionary<string, string?> Load()
    {
        var entries = new Dictionary<string, string?>(StringComparer.Ordinal);
        string[]? lines = Linux.FileSystemCalls.TryReadAllLines(_file);
        if (lines is null || lines.Length == 0 || lines[0] != "boot\t" + _boot)
            return entries;
        for (int i = 1; i < lines.Length; i++)
        {
            string[] parts = lines[i].Split('\t');
            if (parts.Length == 2 && parts[1] == "ok")
                entries[parts[0]] = null;
            else if (parts.Length == 3 && parts[1] == "fail")
                entries[parts[0]] = parts[2];
        }
        return entries;
    }

    private static string Clean(string text) => text.Replace('\t', ' ').Replace('\n', ' ').Replace('\r', ' ');
}
