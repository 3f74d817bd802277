using Sandbox.Linux;
using static Tmds.Linux.LibC;

namespace Sandbox.Diagnostics;

/// <summary>
/// Where <see cref="HostCheck"/> reads the host from. <see cref="Default"/> is the real host; tests point
/// every path into a fixture directory and replace the two delegates, so no check needs privileges.
/// </summary>
/// <param name="ProcSys">The sysctl tree (<c>/proc/sys</c>).</param>
/// <param name="ProcFilesystems">The filesystem types the kernel knows (<c>/proc/filesystems</c>).</param>
/// <param name="SubUidFile">subuid(5).</param>
/// <param name="SubGidFile">subgid(5).</param>
/// <param name="SelfCgroup">The caller's cgroup membership (<c>/proc/self/cgroup</c>, cgroups(7)).</param>
/// <param name="MountInfo">The caller's mounts (<c>/proc/self/mountinfo</c>, proc_pid_mountinfo(5)).</param>
/// <param name="CgroupRoot">Where the cgroup filesystems are mounted; stands for <c>/sys/fs/cgroup</c> in mount points.</param>
/// <param name="SearchPath">A PATH-style list searched for newuidmap and newgidmap.</param>
public sealed record HostFacts(
    string ProcSys,
    string ProcFilesystems,
    string SubUidFile,
    string SubGidFile,
    string SelfCgroup,
    string MountInfo,
    string CgroupRoot,
    string? SearchPath,
    uint Uid,
    uint Gid,
    string UserName)
{
    public const string SystemCgroupRoot = "/sys/fs/cgroup";

    /// <summary>Whether the current user may write the path; defaults to access(2) with W_OK.</summary>
    public Func<string, bool> IsWritable { get; init; } = AccessWritable;

    /// <summary>
    /// Who gives a delegated cgroup when none is (the systemd user manager in <see cref="Default"/>);
    /// null, the default for fixture hosts: nobody is asked.
    /// </summary>
    public Cgroups.ISystemdUserManager? SystemdUserManager { get; init; }

    /// <summary>The environment's variables (SANDBOX_USERNS_IDLE); defaults to this process's.</summary>
    public Func<string, string?> GetEnvironmentVariable { get; init; } = Environment.GetEnvironmentVariable;

    /// <summary>Why the native executor cannot be used, or null; defaults to the real loader's answer.</summary>
    public Func<string?> NativeExecutorLoadError { get; init; } = static () => NativeExecutor.LoadError;

    public static HostFacts Default => new(
        "/proc/sys",
        "/proc/filesystems",
        "/etc/subuid",
        "/etc/subgid",
        "/proc/self/cgroup",
        "/proc/self/mountinfo",
        SystemCgroupRoot,
        // IdMapResolver also tries /usr/bin after PATH: mirror it so that the reported mode is the one
        // --userns=auto really picks.
        (Environment.GetEnvironmentVariable("PATH") is { Length: > 0 } path ? path + ":" : "") + "/usr/bin",
        Syscalls.RealUserId,
        Syscalls.RealGroupId,
        Environment.UserName)
    {
        SystemdUserManager = Cgroups.SystemdUserManager.ForCurrentUser(),
    };

    /// <summary>
    /// access(2) checks the real uid and gid, i.e. the user who will create the sandbox, and also
    /// catches a read-only mount, which a look at the mode bits would miss.
    /// </summary>
    private static unsafe bool AccessWritable(string path)
    {
        byte[] bytes = Syscalls.NulTerminated(path);
        fixed (byte* p = bytes)
            return access(p, W_OK) == 0;
    }
}
