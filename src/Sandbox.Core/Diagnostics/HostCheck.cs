using Sandbox.Cgroups;
using System.Globalization;
using System.Text;
using Sandbox.Identity;
using Sandbox.Linux;
using Sandbox.Runtime;

namespace Sandbox.Diagnostics;

public enum CheckStatus { Ok, Warning, Missing }

/// <summary>One line of <c>sandbox check</c>: what was found and, when not <see cref="CheckStatus.Ok"/>, the command that fixes it.</summary>
public sealed record CheckItem(string Name, CheckStatus Status, string Detail, string? Fix);

/// <summary>
/// The host diagnostics behind <c>sandbox check</c>: what this host lets a rootless sandbox do
/// (DESIGN.md, "Identity", "Rootfs and storage", "Cgroups"), read from <see cref="HostFacts"/> only,
/// plus two optional probes from a caller that can really spawn a sandbox.
/// </summary>
public static class HostCheck
{
    public const string UserNamespaces = "user namespaces";
    public const string IdMapping = "id mapping";
    public const string Overlay = "overlayfs in a user namespace";
    public const string Storage = "image storage driver";
    public const string Cgroups = "cgroups";
    public const string Executor = "native executor";

    /// <summary>
    /// Runs every check, in a fixed order. A probe returns null on success or the error text; without
    /// one, the item is judged from the host's static facts alone.
    /// </summary>
    /// <param name="chooseStorage">When given, what --storage-driver auto picks here (an item of its own, after the overlay one).</param>
    public static IReadOnlyList<CheckItem> Run(HostFacts facts, Func<string?>? probeUserNamespace = null, Func<string?>? probeOverlay = null,
        Func<Rootfs.StorageDriverChoice>? chooseStorage = null)
    {
        ArgumentNullException.ThrowIfNull(facts);
        var items = new List<CheckItem>
        {
            CheckUserNamespaces(facts, probeUserNamespace),
            CheckIdMapping(facts),
            CheckOverlay(facts, probeOverlay),
        };
        if (chooseStorage is not null)
            items.Add(CheckStorage(chooseStorage));
        items.Add(CheckCgroups(facts));
        items.Add(CheckExecutor(facts));
        return items;
    }

    // ---- storage driver ----

    private static CheckItem CheckStorage(Func<Rootfs.StorageDriverChoice> choose)
    {
        Rootfs.StorageDriverChoice choice;
        try
        {
            choice = choose();
        }
        catch (Exception e) when (e is not OutOfMemoryException)
        {
            return new(Storage, CheckStatus.Warning, $"could not be decided: {OneLine(e.Message)}", null);
        }
        string picks = $"--storage-driver auto picks {choice.Driver.Name()}";
        return choice.Warning is null
            ? new(Storage, CheckStatus.Ok, $"{picks}: image layers are mounted, not copied", null)
            : new(Storage, CheckStatus.Warning, picks, OneLine(choice.Warning));
    }

    /// <summary>True when the two things no sandbox can do without are there; the rest only degrade it.</summary>
    public static bool CanRunSandboxes(IReadOnlyList<CheckItem> items) =>
        items.Any(i => i.Name == UserNamespaces && i.Status == CheckStatus.Ok) &&
        items.Any(i => i.Name == Executor && i.Status == CheckStatus.Ok);

    public static string Render(IReadOnlyList<CheckItem> items)
    {
        var text = new StringBuilder();
        foreach (CheckItem item in items)
        {
            string tag = item.Status switch { CheckStatus.Ok => "[ ok ]", CheckStatus.Warning => "[warn]", _ => "[FAIL]" };
            text.Append(tag).Append(' ').Append(item.Name).Append(": ").Append(item.Detail).Append('\n');
            if (item.Fix is not null)
                text.Append("       fix: ").Append(item.Fix).Append('\n');
        }
        int ok = items.Count(i => i.Status == CheckStatus.Ok);
        int warnings = items.Count(i => i.Status == CheckStatus.Warning);
        int missing = items.Count(i => i.Status == CheckStatus.Missing);
        text.Append(CultureInfo.InvariantCulture, $"{ok} ok, {warnings} warning(s), {missing} missing: ");
        text.Append(CanRunSandboxes(items)
            ? warnings + missing == 0 ? "sandboxes can run" : "sandboxes can run, with the limitations above"
            : "sandboxes cannot run until the [FAIL] items are fixed");
        return text.Append('\n').ToString();
    }

    // ---- user namespaces ----

    /// <summary>The sysctls that switch unprivileged user namespaces off; each file exists only on the kernels that have it.</summary>
    private static readonly (string File, string Name, string Blocking, string Allowing)[] s_userNamespaceSwitches =
    [
        // Debian's kernel patch "add sysctl to disallow unprivileged CLONE_NEWUSER by default".
        ("kernel/unprivileged_userns_clone", "kernel.unprivileged_userns_clone", "0", "1"),
        // Ubuntu 23.10+ (AppArmor): an unconfined process still gets a user namespace, but without
        // capabilities in it, so it cannot mount anything.
        ("kernel/apparmor_restrict_unprivileged_userns", "kernel.apparmor_restrict_unprivileged_userns", "1", "0"),
        // namespaces(7), "The /proc/sys/user directory": the per-user limit; 0 forbids creating any.
        ("user/max_user_namespaces", "user.max_user_namespaces", "0", "15000"),
    ];

    private static CheckItem CheckUserNamespaces(HostFacts facts, Func<string?>? probe)
    {
        var blocking = s_userNamespaceSwitches
            .Where(s => ReadText(Path.Combine(facts.ProcSys, s.File))?.Trim() == s.Blocking)
            .ToList();
        string findings = string.Join(", ", blocking.Select(s => $"{s.Name} = {s.Blocking}"));
        // One sysctl(8) invocation sets several variables.
        string? sysctlFix = blocking.Count == 0 ? null : "sudo sysctl -w " + string.Join(" ", blocking.Select(s => $"{s.Name}={s.Allowing}"));

        if (probe is not null)
        {
            string? error = RunProbe(probe);
            if (error is null)
                return new(UserNamespaces, CheckStatus.Ok,
                    blocking.Count == 0 ? "created one" : $"created one, although {findings}", null);
            return new(UserNamespaces, CheckStatus.Missing,
                $"creating one failed: {error}" + (blocking.Count == 0 ? "" : $" ({findings})"),
                sysctlFix ?? "if this runs inside a container, start it with --security-opt seccomp=unconfined (docker's default seccomp profile refuses CLONE_NEWUSER); otherwise look for a security module's denial: sudo dmesg | grep -i denied");
        }
        if (blocking.Count > 0)
            return new(UserNamespaces, CheckStatus.Missing, $"disabled: {findings} (not probed)", sysctlFix);
        string? max = ReadText(Path.Combine(facts.ProcSys, "user/max_user_namespaces"))?.Trim();
        return new(UserNamespaces, CheckStatus.Ok,
            "not disabled by any sysctl" + (max is null ? "" : $" (user.max_user_namespaces = {max})") + "; not probed", null);
    }

    // ---- id mapping ----

    private static CheckItem CheckIdMapping(HostFacts facts)
    {
        string? newuidmap = FindOnPath("newuidmap", facts.SearchPath);
        string? newgidmap = FindOnPath("newgidmap", facts.SearchPath);
        // The same parser IdMapResolver uses, so the mode reported is the mode --userns=auto picks.
        IdRange? uids = IdMapResolver.FindRange(facts.SubUidFile, facts.UserName, facts.Uid);
        IdRange? gids = IdMapResolver.FindRange(facts.SubGidFile, facts.UserName, facts.Uid);

        var problems = new List<string>();
        var fixes = new List<string>();
        if (newuidmap is null || newgidmap is null)
        {
            string absent = string.Join(" and ", new[] { ("newuidmap", newuidmap), ("newgidmap", newgidmap) }.Where(h => h.Item2 is null).Select(h => h.Item1));
            problems.Add($"{absent} not found on PATH");
            fixes.Add("sudo apt-get install uidmap");
        }
        else
        {
            // newuidmap(1) writes a map for ids the caller does not own, which needs CAP_SETUID in the
            // parent namespace: distributions ship it setuid root (or with file capabilities, which
            // the mode bits do not show, hence only "may").
            string[] notSetuid = new[] { newuidmap, newgidmap }.Where(p => !IsSetuid(p)).ToArray();
            if (notSetuid.Length > 0)
            {
                problems.Add($"{string.Join(" and ", notSetuid)} not setuid: may lack privileges (file capabilities show in getcap)");
                fixes.Add($"sudo chmod u+s {string.Join(" ", notSetuid)}");
            }
        }
        var usermodFlags = new List<string>();
        if (uids is null)
        {
            problems.Add($"no range for {facts.UserName} in {facts.SubUidFile}");
            usermodFlags.Add("--add-subuids 100000-165535");
        }
        if (gids is null)
        {
            problems.Add($"no range for {facts.UserName} in {facts.SubGidFile}");
            usermodFlags.Add("--add-subgids 100000-165535");
        }
        if (usermodFlags.Count > 0)
            fixes.Add($"sudo usermod {string.Join(" ", usermodFlags)} {facts.UserName}");

        // IdMapResolver picks the range whenever both helpers exist and both files give one.
        bool autoPicksRange = newuidmap is not null && newgidmap is not null && uids is not null && gids is not null;
        string ranges = autoPicksRange
            ? $"subordinate uids {Describe(uids!)} and gids {Describe(gids!)} via {newuidmap}, {HolderUse(facts, problems, fixes)}"
            : "no subordinate range";
        string detail = $"single-UID always; {ranges}"
            + (problems.Count == 0 ? "" : $" ({string.Join("; ", problems)})")
            + $"; --userns=auto picks {(autoPicksRange ? "subuid" : "single")}"
            + (autoPicksRange ? " (image file owners kept)" : " (image file owners flattened to you)");
        return new(IdMapping, problems.Count == 0 ? CheckStatus.Ok : CheckStatus.Warning, detail,
            fixes.Count == 0 ? null : string.Join("; ", fixes));

        static string Describe(IdRange r) => $"{r.Start}-{r.Start + r.Count - 1}";
    }

    // How often newuidmap runs with a range: once for the user-namespace holder, or for every sandbox.
    private static string HolderUse(HostFacts facts, List<string> problems, List<string> fixes)
    {
        try
        {
            int idle = UserNamespaceHolder.IdleSeconds(facts.GetEnvironmentVariable);
            return idle > 0
                ? $"run once for a user-namespace holder that sandboxes nest theirs in (it exits after {idle} s idle)"
                : $"run for every sandbox ({UserNamespaceHolder.IdleVariable}=0: no holder)";
        }
        catch (SandboxException e)
        {
            // Every run with a range stops at this error (exit 125) until the variable is fixed.
            problems.Add(e.Message);
            fixes.Add($"unset {UserNamespaceHolder.IdleVariable} or give it a number of seconds");
            return "but no sandbox with the range starts";
        }
    }

    private static string? FindOnPath(string name, string? searchPath)
    {
        foreach (string dir in (searchPath ?? "").Split(':', StringSplitOptions.RemoveEmptyEntries))
        {
            string candidate = Path.Combine(dir, name);
            if (File.Exists(candidate))
                return candidate;
        }
        return null;
    }

    private static bool IsSetuid(string path)
    {
        try
        {
            // The guard only satisfies the platform analyzer (CA1416): this library is Linux-only.
            return !OperatingSystem.IsWindows() && File.GetUnixFileMode(path).HasFlag(UnixFileMode.SetUser);
        }
        catch (IOException)
        {
            return false;
        }
        catch (UnauthorizedAccessException)
        {
            return false;
        }
    }

    // ---- overlayfs ----

    private const string OldKernelFix = "upgrade the kernel to 5.11 or later; fuse-overlayfs is the fallback (sudo apt-get install fuse-overlayfs)";

    /// <summary>
    /// Overlayfs may be mounted inside a user namespace since Linux 5.11 (commit "ovl: unprivileged
    /// mounts"; Documentation/filesystems/overlayfs.rst). Some distributions patched it in earlier,
    /// which only the probe can tell.
    /// </summary>
    private static readonly Version s_overlayInUserNamespace = new(5, 11);

    private static CheckItem CheckOverlay(HostFacts facts, Func<string?>? probe)
    {
        string? release = ReadText(Path.Combine(facts.ProcSys, "kernel/osrelease"))?.Trim();
        Version? version = ParseKernelVersion(release);
        bool tooOld = version is not null && version < s_overlayInUserNamespace;
        // filesystems(5): one type per line, "nodev" first when it needs no block device. A type
        // built as a module appears only once the module is loaded.
        bool? listed = ReadText(facts.ProcFilesystems) is string filesystems
            ? filesystems.Split('\n').Any(line => line.Split((char[]?)null, StringSplitOptions.RemoveEmptyEntries).LastOrDefault() == "overlay")
            : null;

        string kernel = release is null ? "kernel version unknown"
            : version is null ? $"kernel version unknown (\"{release}\")"
            : tooOld ? $"kernel {release} (older than 5.11)"
            : $"kernel {release}";
        string filesystem = listed switch
        {
            true => "overlay in /proc/filesystems",
            false => "overlay not in /proc/filesystems (maybe a module not loaded yet)",
            null => "/proc/filesystems unreadable",
        };
        string staticFacts = $"{kernel}, {filesystem}";
        string? staticFix = tooOld ? OldKernelFix : listed == false ? "sudo modprobe overlay" : null;

        if (probe is not null)
        {
            string? error = RunProbe(probe);
            return error is null
                ? new(Overlay, CheckStatus.Ok, $"mounted one ({staticFacts})", null)
                : new(Overlay, CheckStatus.Missing, $"mounting one failed: {error} ({staticFacts})",
                    staticFix ?? "fuse-overlayfs is the fallback (sudo apt-get install fuse-overlayfs)");
        }
        if (tooOld)
            return new(Overlay, CheckStatus.Missing, $"{staticFacts}; not probed", OldKernelFix);
        if (version is null)
            return new(Overlay, CheckStatus.Warning, $"{staticFacts}; not probed", "check that uname -r is 5.11 or later; " + OldKernelFix);
        if (listed != true)
            return new(Overlay, CheckStatus.Warning, $"{staticFacts}; not probed", "sudo modprobe overlay");
        return new(Overlay, CheckStatus.Ok, $"{staticFacts}; not probed", null);
    }

    /// <summary>The leading MAJOR.MINOR[.PATCH] of a kernel release (uname -r), ignoring any suffix: "6.18.44-fc-v595" is 6.18.44.</summary>
    internal static Version? ParseKernelVersion(string? release)
    {
        if (release is null)
            return null;
        ReadOnlySpan<char> rest = release.AsSpan().Trim();
        if (!TakeNumber(ref rest, out int major) || !rest.StartsWith('.'))
            return null;
        rest = rest[1..];
        if (!TakeNumber(ref rest, out int minor))
            return null;
        int patch = 0;
        if (rest.StartsWith('.'))
        {
            ReadOnlySpan<char> afterDot = rest[1..];
            if (TakeNumber(ref afterDot, out int p))
                patch = p;
        }
        return new Version(major, minor, patch);
    }

    /// <summary>The leading ASCII digits of <paramref name="text"/>, at most six (more are left), taken off it.</summary>
    private static bool TakeNumber(ref ReadOnlySpan<char> text, out int value)
    {
        int digits = text.IndexOfAnyExceptInRange('0', '9');
        digits = Math.Min(digits < 0 ? text.Length : digits, 6);
        value = 0;
        if (digits == 0)
            return false;
        value = int.Parse(text[..digits], NumberStyles.None, CultureInfo.InvariantCulture);
        text = text[digits..];
        return true;
    }

    // ---- cgroups ----

    private static readonly string[] s_limitControllers = ["memory", "pids", "cpu"];

    /// <summary>
    /// The probe the runtime itself uses to place sandboxes (<see cref="CgroupManager.ProbeOrDelegate"/>),
    /// so that `sandbox check` and `sandbox run --memory` can never disagree about this host. Like a
    /// run, it really asks the systemd user manager for a delegated scope when no cgroup is delegated
    /// (this process then lives in that scope until it exits, when systemd removes the scope).
    /// </summary>
    private static CheckItem CheckCgroups(HostFacts facts)
    {
        var host = new CgroupHost(facts.SelfCgroup, facts.MountInfo, facts.CgroupRoot, facts.IsWritable) { UserManager = facts.SystemdUserManager };
        CgroupProbe probe = CgroupManager.ProbeOrDelegate(host, s_limitControllers);
        return probe.Usable
            ? new(Cgroups, CheckStatus.Ok, $"{probe.Version}, {probe.Detail}: memory, pids and cpu limits can be enforced", null)
            : new(Cgroups, CheckStatus.Warning, $"{probe.Version}, {probe.Detail}; limits need --limits=best-effort here", probe.Fix);
    }

    // ---- native executor ----

    private static CheckItem CheckExecutor(HostFacts facts)
    {
        string? error = facts.NativeExecutorLoadError();
        return error is null
            ? new(Executor, CheckStatus.Ok, $"{NativeExecutor.LibraryName} loaded", null)
            : new(Executor, CheckStatus.Missing, OneLine(error),
                $"rebuild so that {NativeExecutor.LibraryName} is compiled and copied next to the program: dotnet build (needs a C compiler: sudo apt-get install gcc)");
    }

    // ---- helpers ----

    private static string? RunProbe(Func<string?> probe)
    {
        try
        {
            return probe() is string error ? OneLine(error) : null;
        }
        catch (Exception e) when (e is not OutOfMemoryException)
        {
            // A probe that throws has failed just the same; the check must still report everything else.
            return OneLine(e.Message);
        }
    }

    private static string OneLine(string text) => string.Join(" ", text.Split(['\r', '\n'], StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries));

    private static string? ReadText(string path)
    {
        try
        {
            return File.ReadAllText(path);
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
}
