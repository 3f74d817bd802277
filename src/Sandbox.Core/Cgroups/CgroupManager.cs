using System.Globalization;

namespace Sandbox.Cgroups;

/// <summary>Where sandboxes' cgroups can be made on this host, or why they cannot.</summary>
public sealed record CgroupProbe(
    string Version,
    bool Usable,
    string Detail,
    string? Fix,
    string? V2Parent = null,
    string? V2SupervisorLeaf = null,
    IReadOnlyDictionary<string, string>? V1Parents = null,
    IReadOnlyCollection<string>? Controllers = null)
{
    /// <summary>cgroup v1: for each controller in <see cref="V1Parents"/>, all the controllers of its hierarchy ("cpu,cpuacct").</summary>
    public IReadOnlyDictionary<string, string>? V1Hierarchies { get; init; }

    /// <summary>
    /// v2, and no cgroup on the way up from this process's is delegated to the user: a systemd user
    /// manager may still give one (a transient scope with Delegate=yes).
    /// </summary>
    public bool NotDelegated { get; init; }

    /// <summary>The transient scope a systemd user manager started for this process, when that is where the cgroup came from.</summary>
    public string? SystemdScope { get; init; }
}

/// <summary>
/// Finds a delegated cgroup and creates one cgroup per sandbox under it (DESIGN.md, "Cgroups").
/// cgroup v2 first; a v1 hierarchy with directories an administrator pre-created and chowned is the fallback.
/// </summary>
public static class CgroupManager
{
    public const string SupervisorLeaf = "sandbox.supervisor";
    private const string NotDelegatedFix =
        "run the job in a delegated cgroup: under systemd, `systemd-run --user --scope -p Delegate=yes -- sandbox run ...`; on a CI runner, give the runner's service Delegate=yes; or pass --limits=best-effort to run without limits";
    private const string NoUserManagerFix =
        "have your systemd user manager running, which gives sandbox a delegated scope: it runs while you are logged in through PAM (pam_systemd), and without a login session after `sudo loginctl enable-linger $USER`; it is reached at $XDG_RUNTIME_DIR/bus (package dbus-user-session) or at its private socket $XDG_RUNTIME_DIR/systemd/private. " +
        "Or run the job in a delegated cgroup: `systemd-run --user --scope -p Delegate=yes -- sandbox run ...`; on a CI runner, give the runner's service Delegate=yes; or pass --limits=best-effort to run without limits";

    /// <summary>How long systemd gets to start the scope (it takes milliseconds; a hung bus must not hang the run).</summary>
    internal static TimeSpan SystemdTimeout { get; set; } = TimeSpan.FromSeconds(10);

    /// <summary>How long /proc/self/cgroup gets to show the scope after systemd's job has finished.</summary>
    internal static TimeSpan ScopeAppearTimeout { get; set; } = TimeSpan.FromSeconds(2);

    private static readonly string[] s_v2Controllers = { "memory", "pids", "cpu", "io" };
    private static readonly string[] s_v1Controllers = { "memory", "pids", "cpu", "cpuacct", "blkio" };

    /// <summary>
    /// The cgroup for one sandbox, with <paramref name="limits"/> written; null when no limits were
    /// asked for and none can be made (usage is then read from rusage instead).
    /// </summary>
    public static SandboxCgroup? Create(ResourceLimits limits, LimitsPolicy policy, CgroupHost host, Action<string> warn)
    {
        limits.Validate();
        CgroupProbe probe = ProbeOrDelegate(host, limits.RequiredControllers());
        if (!probe.Usable)
        {
            if (limits.IsEmpty)
                return null;
            string message = $"resource limits cannot be enforced here: {probe.Detail}";
            if (policy == LimitsPolicy.Required)
                throw new SandboxException(SandboxErrorCode.LimitsUnavailable, $"{message}. Fix: {probe.Fix}");
            warn($"warning: {message}; running WITHOUT limits (--limits=best-effort)");
            return null;
        }

        if (probe.V2Parent is string parent)
        {
            if (probe.V2SupervisorLeaf is string leaf)
            {
                // No internal processes (cgroup-v2.rst): a cgroup that enables controllers for its
                // children may hold no processes itself, so the supervisor moves to a leaf first.
                try
                {
                    Directory.CreateDirectory(leaf);
                    Linux.Syscalls.WriteFileOnce(Path.Combine(leaf, "cgroup.procs"), host.Pid.ToString(CultureInfo.InvariantCulture));
                }
                catch (Exception e) when (e is Linux.LinuxException or IOException or UnauthorizedAccessException)
                {
                    throw new SandboxException(SandboxErrorCode.CgroupFailed, $"cgroup: cannot move this process into {leaf}: {e.Message}", e);
                }
            }
            EnableControllers(parent, limits);
            return CgroupV2.Create(parent, host.Pid, limits, host.ProcessExists);
        }
        return CgroupV1.Create(probe.V1Parents!, probe.V1Hierarchies!, host.Pid, limits, host.ProcessExists);
    }

    /// <summary>
    /// <see cref="Probe"/>, and when no cgroup is delegated (cgroup v2) but <paramref name="host"/> has a
    /// systemd user manager: asks it for a transient scope with Delegate=yes holding this process (what
    /// podman and crun do in a plain login session), then probes again from inside that scope, which is
    /// a delegated root holding only this process. Callers that need no cgroup never get here, so runs
    /// without limits or usage reports pay nothing for D-Bus.
    /// </summary>
    public static CgroupProbe ProbeOrDelegate(CgroupHost host, IEnumerable<string>? required = null)
    {
        var needed = (required ?? Enumerable.Empty<string>()).ToList();
        CgroupProbe probe = Probe(host, needed);
        if (probe.Usable || !probe.NotDelegated || host.UserManager is not ISystemdUserManager manager)
            return probe;

        SystemdScope scope;
        try
        {
            scope = manager.StartDelegatedScope(host.Pid, SystemdTimeout);
        }
        catch (SystemdUnavailableException e)
        {
            return probe with { Detail = $"{probe.Detail}, and {e.Message}", Fix = NoUserManagerFix };
        }
        // The job has finished, so systemd has moved us; the wait covers a manager that answers first.
        string? own = null;
        var deadline = DateTime.UtcNow + ScopeAppearTimeout;
        while ((own = OwnV2Path(host)) is null || Path.GetFileName(own.TrimEnd('/')) != scope.UnitName)
        {
            if (DateTime.UtcNow > deadline)
            {
                return probe with
                {
                    Detail = $"{probe.Detail}; the systemd user manager (via {scope.Via}) started {scope.UnitName}, but this process is not in it (its cgroup is {own ?? "unknown"})",
                    Fix = NoUserManagerFix,
                };
            }
            Thread.Sleep(10);
        }
        CgroupProbe inScope = Probe(host, needed);
        return inScope with
        {
            Detail = $"not delegated here, but the systemd user manager (via {scope.Via}) delegated a transient scope: {inScope.Detail}",
            SystemdScope = scope.UnitName,
        };
    }

    /// <summary>
    /// Places a process of ours that outlives this CLI (the user-namespace holder, which idles for
    /// minutes); false when no place is right and it should not be started at all.
    /// <list type="bullet">
    /// <item>A cgroup that is not ours to manage (a login session's scope, a CI job's, cgroup v1)
    /// keeps it, as it keeps the CLI.</item>
    /// <item>A delegated cgroup is where sandboxes' cgroups go: a process in it would keep the next
    /// run from enabling controllers there (no internal processes, cgroup-v2.rst) and from seeing a
    /// cgroup that holds only the CLI. It goes to the supervisor leaf, as the CLI does.</item>
    /// <item>A transient scope that the systemd user manager made for a CLI would outlive its run by
    /// the holder's idle time: false.</item>
    /// </list>
    /// </summary>
    public static bool PlaceLongLivedProcess(int pid, CgroupHost host)
    {
        if (!File.Exists(Path.Combine(host.CgroupRoot, "cgroup.controllers")) || OwnV2Path(host) is not string own)
            return true;
        string dir = host.CgroupRoot.TrimEnd('/') + own.TrimEnd('/');
        if (Path.GetFileName(dir) == SupervisorLeaf)
            dir = Path.GetDirectoryName(dir)!;
        if (!host.Writable(Path.Combine(dir, "cgroup.procs")))
            return true;
        if (SystemdUserManager.IsSandboxScopeName(Path.GetFileName(dir)))
            return false;
        string leaf = Path.Combine(dir, SupervisorLeaf);
        try
        {
            Directory.CreateDirectory(leaf);
            Linux.Syscalls.WriteFileOnce(Path.Combine(leaf, "cgroup.procs"), pid.ToString(CultureInfo.InvariantCulture));
            return true;
        }
        catch (Exception e) when (e is Linux.LinuxException or IOException or UnauthorizedAccessException)
        {
            return false;
        }
    }

    /// <summary>What can be done on this host, for `sandbox check` and for <see cref="Create"/>.</summary>
    public static CgroupProbe Probe(CgroupHost host, IEnumerable<string>? required = null)
    {
        var needed = (required ?? Enumerable.Empty<string>()).ToHashSet();
        if (File.Exists(Path.Combine(host.CgroupRoot, "cgroup.controllers")))
            return ProbeV2(host, needed);
        return ProbeV1(host, needed);
    }

    private static CgroupProbe ProbeV2(CgroupHost host, HashSet<string> needed)
    {
        string? own = OwnV2Path(host);
        if (own is null)
            return new CgroupProbe("v2", false, "this process has no cgroup v2 path in " + host.ProcSelfCgroup, NotDelegatedFix);
        string root = host.CgroupRoot.TrimEnd('/');
        string candidate = root + own.TrimEnd('/');
        // Already moved into our leaf by an earlier sandbox of this process: its parent is the one.
        if (Path.GetFileName(candidate) == SupervisorLeaf)
            candidate = Path.GetDirectoryName(candidate)!;
        string ownDir = candidate;
        string reason = $"{ownDir} is not delegated to this user (cgroup.procs and cgroup.subtree_control are not writable)";
        while (candidate.Length > root.Length)
        {
            if (!(host.Writable(candidate) && host.Writable(Path.Combine(candidate, "cgroup.procs")) && host.Writable(Path.Combine(candidate, "cgroup.subtree_control"))))
                break;
            var procs = ReadLines(Path.Combine(candidate, "cgroup.procs")).Where(l => l.Length > 0).ToList();
            bool onlyUs = procs.Count == 1 && procs[0] == host.Pid.ToString(CultureInfo.InvariantCulture);
            if (procs.Count == 0 || onlyUs)
            {
                var available = ReadWords(Path.Combine(candidate, "cgroup.controllers"));
                var missing = needed.Where(c => !available.Contains(c)).ToList();
                if (missing.Count > 0)
                {
                    return new CgroupProbe("v2", false,
                        $"the delegated cgroup {candidate} lacks the {string.Join(", ", missing)} controller(s) (it has: {string.Join(" ", available)})",
                        $"enable them in the parent's cgroup.subtree_control (systemd: Delegate={string.Join(" ", s_v2Controllers)})");
                }
                return new CgroupProbe("v2", true,
                    $"delegated cgroup {candidate} (controllers: {string.Join(" ", available)})", null,
                    V2Parent: candidate,
                    V2SupervisorLeaf: onlyUs ? Path.Combine(candidate, SupervisorLeaf) : null,
                    Controllers: available);
            }
            reason = $"the delegated cgroup {candidate} holds other processes ({string.Join(" ", procs.Take(5))}), so it cannot enable controllers (no internal processes rule); start the job in a leaf cgroup below it";
            candidate = Path.GetDirectoryName(candidate)!;
        }
        // Nothing writable on the way up (a login session's scope, a system service without
        // Delegate=): the case a systemd user manager can help with. A delegated cgroup that only
        // holds other processes is not: the job is where its administrator put it.
        return new CgroupProbe("v2", false, reason, NotDelegatedFix) { NotDelegated = candidate == ownDir };
    }

    /// <summary>This process's cgroup v2 path ("0::PATH" in /proc/self/cgroup, cgroups(7)), or null.</summary>
    private static string? OwnV2Path(CgroupHost host) =>
        ReadLines(host.ProcSelfCgroup).FirstOrDefault(l => l.StartsWith("0::", StringComparison.Ordinal))?[3..];

    private static CgroupProbe ProbeV1(CgroupHost host, HashSet<string> needed)
    {
        // mountinfo(5): field 4 is the root of the mount, field 5 the mount point; after " - " come
        // the file system type and source, then the super options, which name the controllers.
        var hierarchies = new List<(string MountPoint, string Root, HashSet<string> Controllers)>();
        bool hasV2 = false;
        foreach (string line in ReadLines(host.MountInfo))
        {
            int dash = line.IndexOf(" - ", StringComparison.Ordinal);
            if (dash < 0)
                continue;
            string[] left = line[..dash].Split(' ');
            string[] right = line[(dash + 3)..].Split(' ');
            if (right.Length < 3 || left.Length < 5)
                continue;
            if (right[0] == "cgroup2")
                hasV2 = true;
            if (right[0] != "cgroup")
                continue;
            hierarchies.Add((Unescape(left[4]), Unescape(left[3]), right[2].Split(',').ToHashSet()));
        }
        if (hierarchies.Count == 0)
        {
            return new CgroupProbe(hasV2 ? "v2" : "none", false,
                hasV2 ? "cgroup2 is mounted but not at " + host.CgroupRoot : "no cgroup file system is mounted",
                "mount cgroup2 at /sys/fs/cgroup (systemd does this)");
        }

        // /proc/self/cgroup on v1: "ID:controller,controller:/path" (cgroups(7)).
        var ownPaths = new Dictionary<string, string>();
        foreach (string line in ReadLines(host.ProcSelfCgroup))
        {
            string[] parts = line.Split(':', 3);
            if (parts.Length != 3 || parts[1].Length == 0)
                continue;
            foreach (string c in parts[1].Split(','))
                ownPaths[c] = parts[2];
        }

        var parents = new Dictionary<string, string>();
        var hierarchyOf = new Dictionary<string, string>();
        var notWritable = new List<string>();
        foreach (string controller in s_v1Controllers)
        {
            var h = hierarchies.FirstOrDefault(x => x.Controllers.Contains(controller));
            if (h.MountPoint is null || !ownPaths.TryGetValue(controller, out string? own))
                continue;
            bool underRoot = h.Root == "/" || own == h.Root || own.StartsWith(h.Root.TrimEnd('/') + "/", StringComparison.Ordinal);
            string relative = underRoot && h.Root != "/" ? own[h.Root.Length..] : own;
            string dir = h.MountPoint.TrimEnd('/') + "/" + relative.Trim('/');
            dir = dir.TrimEnd('/');
            if (host.Writable(dir))
            {
                parents[controller] = dir;
                hierarchyOf[controller] = string.Join(',', h.Controllers.Where(IsV1Controller).Order(StringComparer.Ordinal));
            }
            else
                notWritable.Add(dir);
        }
        var v1Needed = needed.Select(c => c == "io" ? "blkio" : c).ToList();
        var unmounted = v1Needed.Where(c => !hierarchies.Any(h => h.Controllers.Contains(c))).ToList();
        if (unmounted.Count > 0)
        {
            return new CgroupProbe("v1", false, $"cgroup v1: no {string.Join(", ", unmounted)} hierarchy is mounted",
                $"mount it (mount -t cgroup -o {unmounted[0]} cgroup /sys/fs/cgroup/{unmounted[0]}), or use a cgroup v2 host");
        }
        var missing = v1Needed.Where(c => !parents.ContainsKey(c)).ToList();
        if (parents.Count == 0 || missing.Count > 0)
        {
            string what = missing.Count > 0 ? string.Join(", ", missing) : "any controller";
            var shown = missing.Count > 0 ? notWritable.Where(d => missing.Any(m => d.Contains(m, StringComparison.Ordinal))).ToList() : notWritable;
            return new CgroupProbe("v1", false,
                $"cgroup v1: no writable cgroup directory for {what} ({string.Join(", ", (shown.Count > 0 ? shown : notWritable).Take(4))} not writable by this user)",
                "ask an administrator to create a cgroup directory per controller for this user and chown it (e.g. mkdir /sys/fs/cgroup/memory/ci && chown -R USER /sys/fs/cgroup/memory/ci), then start jobs in it; or use a cgroup v2 host");
        }
        return new CgroupProbe("v1", true, $"cgroup v1 directories {string.Join(", ", parents.Select(p => $"{p.Key}={p.Value}"))}", null,
            V1Parents: parents, Controllers: parents.Keys.ToList()) { V1Hierarchies = hierarchyOf };
    }

    // The controllers among a v1 hierarchy's super options, which also hold flags (rw, xattr,
    // noprefix, clone_children) and name=...: a mount that reuses the hierarchy names exactly its
    // controllers (kernel/cgroup/cgroup-v1.c, cgroup1_root_to_use; other flags are ignored).
    private static readonly HashSet<string> s_knownV1Controllers = new(StringComparer.Ordinal)
    {
        "blkio", "cpu", "cpuacct", "cpuset", "devices", "freezer", "hugetlb", "memory", "misc", "net_cls", "net_prio", "perf_event", "pids", "rdma",
    };

    private static bool IsV1Controller(string option) => s_knownV1Controllers.Contains(option);

    private static void EnableControllers(string parent, ResourceLimits limits)
    {
        var available = ReadWords(Path.Combine(parent, "cgroup.controllers"));
        var enabled = ReadWords(Path.Combine(parent, "cgroup.subtree_control"));
        var required = limits.RequiredControllers().ToHashSet();
        // memory and pids are also enabled when not limited, for the usage report (memory.peak,
        // memory.events, pids.events); cpu.stat's usage_usec exists without the cpu controller.
        foreach (string c in s_v2Controllers.Where(c => available.Contains(c) && !enabled.Contains(c) && (required.Contains(c) || c is "memory" or "pids")))
        {
            try
            {
                Linux.Syscalls.WriteFileOnce(Path.Combine(parent, "cgroup.subtree_control"), "+" + c);
            }
            catch (Linux.LinuxException e) when (!required.Contains(c))
            {
                _ = e; // only for the report: not fatal
            }
            catch (Linux.LinuxException e)
            {
                throw new SandboxException(SandboxErrorCode.CgroupFailed, $"cgroup: cannot enable the {c} controller in {parent}: {e.Message}", e);
            }
        }
    }

    private static IEnumerable<string> ReadLines(string file)
    {
        try
        {
            return File.ReadAllLines(file);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return [];
        }
    }

    private static HashSet<string> ReadWords(string file) =>
        ReadLines(file).SelectMany(l => l.Split(' ', StringSplitOptions.RemoveEmptyEntries)).ToHashSet();

    // mountinfo escapes space, tab, newline and backslash as octal (\040; proc(5), show_mountinfo).
    // By hand: a Regex here pulled the whole regex interpreter into the NativeAOT binary.
    internal static string Unescape(string s)
    {
        if (!s.Contains('\\'))
            return s;
        var text = new System.Text.StringBuilder(s.Length);
        for (int i = 0; i < s.Length; i++)
        {
            if (s[i] == '\\' && IsOctal(s, i + 1))
            {
                text.Append((char)(((s[i + 1] - '0') << 6) | ((s[i + 2] - '0') << 3) | (s[i + 3] - '0')));
                i += 3;
            }
            else
            {
                text.Append(s[i]);
            }
        }
        return text.ToString();
    }

    private static bool IsOctal(string s, int at) =>
        at + 2 < s.Length && s[at] is >= '0' and <= '7' && s[at + 1] is >= '0' and <= '7' && s[at + 2] is >= '0' and <= '7';
}
