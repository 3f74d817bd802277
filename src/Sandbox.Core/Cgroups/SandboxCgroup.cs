using System.Globalization;
using Sandbox.Linux;

namespace Sandbox.Cgroups;

/// <summary>Where the cgroup facts are read from: the real host by default, fixture trees in tests.</summary>
public sealed record CgroupHost(
    string ProcSelfCgroup = "/proc/self/cgroup",
    string MountInfo = "/proc/self/mountinfo",
    string CgroupRoot = "/sys/fs/cgroup",
    Func<string, bool>? IsWritable = null,
    int? ProcessId = null)
{
    /// <summary>The real host, with the current user's systemd user manager (reached only when a cgroup is needed and none is delegated).</summary>
    public static CgroupHost Current { get; } = new() { UserManager = SystemdUserManager.ForCurrentUser() };

    /// <summary>Who can give a delegated scope when no cgroup is delegated; null: nobody is asked.</summary>
    public ISystemdUserManager? UserManager { get; init; }

    public bool Writable(string path) => IsWritable?.Invoke(path) ?? Syscalls.CanWrite(path);

    /// <summary>Whether a process exists (tests give their own); by default kill(2) with signal 0.</summary>
    public Func<int, bool> ProcessExists { get; init; } = Syscalls.ProcessExists;

    public int Pid => ProcessId ?? Environment.ProcessId;
}

/// <summary>
/// One sandbox's cgroup (or, on v1, one directory per controller): limits written before PID 1 is
/// released, usage read at the end, removed afterwards.
/// </summary>
public abstract class SandboxCgroup : IDisposable
{
    private static int s_counter;

    protected static string NewName(int pid) =>
        $"sandbox-{pid}-{Interlocked.Increment(ref s_counter)}";

    /// <summary>How old an abandoned cgroup must be before it is removed (<see cref="RemoveAbandoned"/>).</summary>
    internal static TimeSpan AbandonedAge { get; set; } = TimeSpan.FromSeconds(10);

    /// <summary>
    /// Removes the empty sandbox cgroups in <paramref name="parent"/> whose CLI is gone: one killed with
    /// SIGKILL (or by the OOM killer) never ran its Dispose, and its sandbox died with it
    /// (die-with-parent) but left the directory. Only a name this code gives ("sandbox-PID-N") whose
    /// PID does not exist here, and only once it is <see cref="AbandonedAge"/> old: a CLI in another
    /// PID namespace that shares the delegated cgroup has a PID that means nothing here, and its
    /// cgroup is empty only between its mkdir and moving its PID 1 in. rmdir(2) refuses a cgroup that
    /// still holds a process (EBUSY), so nothing running is ever touched.
    /// </summary>
    protected static void RemoveAbandoned(string parent, Func<int, bool> processExists)
    {
        string[] dirs;
        try
        {
            dirs = Directory.GetDirectories(parent, "sandbox-*");
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return;
        }
        DateTime now = DateTime.UtcNow;
        foreach (string dir in dirs)
        {
            if (OwnerOf(Path.GetFileName(dir)) is not int owner || processExists(owner))
                continue;
            try
            {
                if (now - Directory.GetLastWriteTimeUtc(dir) < AbandonedAge)
                    continue;
                Directory.Delete(dir);
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                // Still populated (EBUSY), or removed by another run meanwhile.
            }
        }
    }

    /// <summary>The CLI's PID in a name <see cref="NewName"/> gave, else null.</summary>
    internal static int? OwnerOf(string name)
    {
        string[] parts = name.Split('-');
        return parts.Length == 3 && parts[0] == "sandbox"
            && int.TryParse(parts[1], NumberStyles.None, CultureInfo.InvariantCulture, out int pid)
            && int.TryParse(parts[2], NumberStyles.None, CultureInfo.InvariantCulture, out _)
            ? pid : null;
    }

    /// <summary>The cgroup directories, for messages and tests.</summary>
    public abstract IReadOnlyList<string> Paths { get; }

    public abstract string Version { get; }

    /// <summary>What the payload is shown of this cgroup at /sys/fs/cgroup.</summary>
    public abstract CgroupView View { get; }

    public ResourceLimits Limits { get; protected init; } = ResourceLimits.None;

    /// <summary>Moves a process (PID 1 of the sandbox, before it is released) into the cgroup.</summary>
    public abstract void AddProcess(int pid);

    /// <summary>Kills every process in the cgroup (cgroup.kill on v2).</summary>
    public abstract void Kill();

    public abstract ResourceUsage ReadUsage();

    public abstract void Dispose();

    /// <summary>
    /// pids.max for a limit of <paramref name="pidsLimit"/>: one more, for sandbox-init. docker runs the
    /// payload itself as PID 1, so its --pids-limit N gives the payload's tree N tasks; here PID 1 is
    /// sandbox-init (single-threaded, in the cgroup before the payload exists), and without the one
    /// more the payload got N-1, and nothing at all under --pids-limit 1.
    /// </summary>
    protected static string PidsMax(long pidsLimit) => (pidsLimit + 1).ToString(CultureInfo.InvariantCulture);

    protected static void Write(string file, string value)
    {
        try
        {
            Syscalls.WriteFileOnce(file, value);
        }
        catch (LinuxException e)
        {
            throw new SandboxException(SandboxErrorCode.CgroupFailed, $"cgroup: writing '{value.Trim()}' to {file} failed: {e.Message}", e);
        }
    }

    protected static string? ReadOrNull(string file)
    {
        try
        {
            return File.ReadAllText(file);
        }
        catch (IOException)
        {
            return null;
        }
        catch (UnauthorizedAccessException)
        {
            return null;
        }
    }

    /// <summary>A "key value" line of a flat-keyed file (memory.events, pids.events, cpu.stat; cgroup-v2.rst "Conventions").</summary>
    public static long? FlatKey(string? content, string key)
    {
        if (content is null)
            return null;
        foreach (string line in content.Split('\n'))
        {
            string[] parts = line.Split(' ', StringSplitOptions.RemoveEmptyEntries);
            if (parts.Length == 2 && parts[0] == key && long.TryParse(parts[1], NumberStyles.Integer, CultureInfo.InvariantCulture, out long v))
                return v;
        }
        return null;
    }

    public static long? SingleValue(string? content) =>
        content is not null && long.TryParse(content.Trim(), NumberStyles.Integer, CultureInfo.InvariantCulture, out long v) ? v : null;

    /// <summary>rmdir, retried briefly: a cgroup stays busy until its last task is fully released.</summary>
    protected static void RemoveDirectory(string path)
    {
        for (int attempt = 0; attempt < 50; attempt++)
        {
            try
            {
                Directory.Delete(path);
                return;
            }
            catch (DirectoryNotFoundException)
            {
                return;
            }
            catch (IOException)
            {
                Thread.Sleep(10);
            }
        }
    }

    protected static (int Major, int Minor) DeviceNumbers(string device)
    {
        try
        {
            return Syscalls.DeviceNumbers(device);
        }
        catch (LinuxException e)
        {
            throw new SandboxException(SandboxErrorCode.InvalidSpec, $"device {device}: {e.Message}");
        }
    }
}

/// <summary>cgroup v2 (cgroup-v2.rst): one directory with every controller.</summary>
public sealed class CgroupV2 : SandboxCgroup
{
    private readonly string _path;

    private CgroupV2(string path, ResourceLimits limits)
    {
        _path = path;
        Limits = limits;
    }

    public override IReadOnlyList<string> Paths => [_path];

    public override string Version => "v2";

    public override CgroupView View => CgroupView.V2;

    internal static CgroupV2 Create(string parent, int pid, ResourceLimits limits, Func<int, bool> processExists)
    {
        RemoveAbandoned(parent, processExists);
        string path = Path.Combine(parent, NewName(pid));
        try
        {
            Directory.CreateDirectory(path);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new SandboxException(SandboxErrorCode.CgroupFailed, $"cgroup: cannot create {path}: {e.Message}", e);
        }
        var cgroup = new CgroupV2(path, limits);
        try
        {
            cgroup.WriteLimits();
        }
        catch
        {
            cgroup.Dispose();
            throw;
        }
        return cgroup;
    }

    private void WriteLimits()
    {
        ResourceLimits l = Limits;
        if (l.MemoryBytes is long memory)
        {
            Write(Path.Combine(_path, "memory.max"), memory.ToString(CultureInfo.InvariantCulture));
            // docker: --memory-swap is memory + swap; unset means as much swap as memory; -1 unlimited.
            string swap = l.MemoryAndSwapBytes switch
            {
                -1 => "max",
                long total => (total - memory).ToString(CultureInfo.InvariantCulture),
                null => memory.ToString(CultureInfo.InvariantCulture),
            };
            if (File.Exists(Path.Combine(_path, "memory.swap.max")))
                Write(Path.Combine(_path, "memory.swap.max"), swap);
        }
        if (l.PidsLimit is long pids)
            Write(Path.Combine(_path, "pids.max"), PidsMax(pids));
        if (l.Cpus is double cpus)
        {
            const int Period = 100_000;
            long quota = Math.Max(1000, (long)Math.Round(cpus * Period));
            Write(Path.Combine(_path, "cpu.max"), $"{quota} {Period}");
        }
        foreach (var (device, rates) in l.DeviceReadBps.Select(r => (r.DevicePath, $"rbps={r.BytesPerSecond}"))
                     .Concat(l.DeviceWriteBps.Select(r => (r.DevicePath, $"wbps={r.BytesPerSecond}"))))
        {
            var (major, minor) = DeviceNumbers(device);
            Write(Path.Combine(_path, "io.max"), $"{major}:{minor} {rates}");
        }
    }

    public override void AddProcess(int pid) =>
        Write(Path.Combine(_path, "cgroup.procs"), pid.ToString(CultureInfo.InvariantCulture));

    public override void Kill()
    {
        // cgroup.kill (Linux 5.14) kills the whole subtree at once, forks in flight included.
        string file = Path.Combine(_path, "cgroup.kill");
        if (File.Exists(file))
        {
            try
            {
                Syscalls.WriteFileOnce(file, "1");
            }
            catch (LinuxException)
            {
            }
        }
    }

    public override ResourceUsage ReadUsage()
    {
        string? events = ReadOrNull(Path.Combine(_path, "memory.events"));
        long? peak = SingleValue(ReadOrNull(Path.Combine(_path, "memory.peak")));
        long? usageUsec = FlatKey(ReadOrNull(Path.Combine(_path, "cpu.stat")), "usage_usec");
        return new ResourceUsage(
            peak,
            (int)(FlatKey(events, "oom_kill") ?? 0),
            FlatKey(ReadOrNull(Path.Combine(_path, "pids.events")), "max") ?? 0,
            usageUsec is long u ? TimeSpan.FromMicroseconds(u) : null,
            Version);
    }

    public override void Dispose()
    {
        Kill();
        RemoveDirectory(_path);
    }
}

/// <summary>cgroup v1: a directory per controller hierarchy, pre-created and chowned by an administrator.</summary>
public sealed class CgroupV1 : SandboxCgroup
{
    // controller -> this sandbox's directory in that controller's hierarchy
    private readonly Dictionary<string, string> _dirs;
    // controller -> all the controllers of its hierarchy ("cpu,cpuacct")
    private readonly IReadOnlyDictionary<string, string> _hierarchies;

    private CgroupV1(Dictionary<string, string> dirs, IReadOnlyDictionary<string, string> hierarchies, ResourceLimits limits)
    {
        _dirs = dirs;
        _hierarchies = hierarchies;
        Limits = limits;
    }

    public override CgroupView View => CgroupView.V1(_dirs.Keys.Select(c => _hierarchies.TryGetValue(c, out string? h) && h.Length > 0 ? h : c));

    public override IReadOnlyList<string> Paths => _dirs.Values.Distinct().ToList();

    public override string Version => "v1";

    internal static CgroupV1 Create(IReadOnlyDictionary<string, string> parents, IReadOnlyDictionary<string, string> hierarchies, int pid, ResourceLimits limits,
        Func<int, bool> processExists)
    {
        foreach (string parent in parents.Values.Distinct())
            RemoveAbandoned(parent, processExists);
        string name = NewName(pid);
        var dirs = new Dictionary<string, string>();
        var cgroup = new CgroupV1(dirs, hierarchies, limits);
        try
        {
            foreach (var (controller, parent) in parents)
            {
                string dir = Path.Combine(parent, name);
                if (!dirs.ContainsValue(dir))
                    Directory.CreateDirectory(dir);
                dirs[controller] = dir;
            }
            cgroup.WriteLimits();
            return cgroup;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            cgroup.Dispose();
            throw new SandboxException(SandboxErrorCode.CgroupFailed, $"cgroup v1: cannot create the sandbox's directories: {e.Message}", e);
        }
        catch
        {
            cgroup.Dispose();
            throw;
        }
    }

    private void WriteLimits()
    {
        ResourceLimits l = Limits;
        if (l.MemoryBytes is long memory && _dirs.TryGetValue("memory", out string? mem))
        {
            Write(Path.Combine(mem, "memory.limit_in_bytes"), memory.ToString(CultureInfo.InvariantCulture));
            // memory.memsw.* exists only with swap accounting (swapaccount=1).
            string memsw = Path.Combine(mem, "memory.memsw.limit_in_bytes");
            if (File.Exists(memsw))
            {
                long total = l.MemoryAndSwapBytes switch { -1 => -1, long t => t, null => 2 * memory };
                Write(memsw, total.ToString(CultureInfo.InvariantCulture));
            }
        }
        if (l.PidsLimit is long pids && _dirs.TryGetValue("pids", out string? p))
            Write(Path.Combine(p, "pids.max"), PidsMax(pids));
        if (l.Cpus is double cpus && _dirs.TryGetValue("cpu", out string? cpu))
        {
            const int Period = 100_000;
            Write(Path.Combine(cpu, "cpu.cfs_period_us"), Period.ToString(CultureInfo.InvariantCulture));
            Write(Path.Combine(cpu, "cpu.cfs_quota_us"), Math.Max(1000, (long)Math.Round(cpus * Period)).ToString(CultureInfo.InvariantCulture));
        }
        if (_dirs.TryGetValue("blkio", out string? blkio))
        {
            foreach (DeviceRate r in l.DeviceReadBps)
            {
                var (major, minor) = DeviceNumbers(r.DevicePath);
                Write(Path.Combine(blkio, "blkio.throttle.read_bps_device"), $"{major}:{minor} {r.BytesPerSecond}");
            }
            foreach (DeviceRate r in l.DeviceWriteBps)
            {
                var (major, minor) = DeviceNumbers(r.DevicePath);
                Write(Path.Combine(blkio, "blkio.throttle.write_bps_device"), $"{major}:{minor} {r.BytesPerSecond}");
            }
        }
    }

    public override void AddProcess(int pid)
    {
        foreach (string dir in Paths)
            Write(Path.Combine(dir, "cgroup.procs"), pid.ToString(CultureInfo.InvariantCulture));
    }

    public override void Kill()
    {
        // v1 has no cgroup.kill; the sandbox's PID namespace dies with its PID 1 anyway.
        foreach (string dir in Paths)
        {
            string? procs = ReadOrNull(Path.Combine(dir, "cgroup.procs"));
            foreach (string line in (procs ?? "").Split('\n', StringSplitOptions.RemoveEmptyEntries))
            {
                if (int.TryParse(line, out int pid))
                    Syscalls.KillProcess(pid, 9);
            }
        }
    }

    public override ResourceUsage ReadUsage()
    {
        long? peak = null;
        int oomKills = 0;
        if (_dirs.TryGetValue("memory", out string? mem))
        {
            peak = SingleValue(ReadOrNull(Path.Combine(mem, "memory.max_usage_in_bytes")));
            // oom_kill in memory.oom_control: Linux 4.13.
            oomKills = (int)(FlatKey(ReadOrNull(Path.Combine(mem, "memory.oom_control")), "oom_kill") ?? 0);
        }
        long pidsHits = _dirs.TryGetValue("pids", out string? p) ? FlatKey(ReadOrNull(Path.Combine(p, "pids.events")), "max") ?? 0 : 0;
        TimeSpan? cpu = null;
        if (_dirs.TryGetValue("cpuacct", out string? acct) && SingleValue(ReadOrNull(Path.Combine(acct, "cpuacct.usage"))) is long ns)
            cpu = TimeSpan.FromTicks(ns / 100);
        return new ResourceUsage(peak, oomKills, pidsHits, cpu, Version);
    }

    public override void Dispose()
    {
        Kill();
        foreach (string dir in Paths)
            RemoveDirectory(dir);
    }
}
