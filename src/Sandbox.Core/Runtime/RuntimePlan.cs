using System.Collections.Immutable;

namespace Sandbox.Runtime;

/// <summary>
/// Everything needed to start one sandbox, as data: the meaning of an OCI runtime spec (process,
/// namespaces, id maps, and the ordered set-up steps that build the root). The manager builds it
/// without privileges; <see cref="Launcher"/> hands it to the native executor, which runs the steps
/// in order in the child (bubblewrap's plan-then-execute).
/// </summary>
public sealed record RuntimePlan(
    ProcessPlan Process,
    NamespaceSet Namespaces,
    IdMapPlan IdMaps,
    ImmutableArray<SetupStep> Steps);

public sealed record ProcessPlan(
    string File,
    ImmutableArray<string> Arguments,
    ImmutableArray<string> Environment,
    string? SearchPath,
    string? WorkingDirectory,
    bool NoNewPrivileges = true,
    bool NewSession = true)
{
    /// <summary>The payload's uid and gid inside the sandbox; null keeps 0 (root in its user namespace).</summary>
    public int? Uid { get; init; }

    public int? Gid { get; init; }

    /// <summary>The capability bounding set of the payload (bit N = capability N); null leaves it as it is.</summary>
    public ulong? CapabilityBoundingSet { get; init; }

    /// <summary>
    /// The highest capability number to drop from the bounding set. The executor stops at the first
    /// number the kernel does not know (PR_CAPBSET_DROP fails with EINVAL), so the default, 63,
    /// covers any kernel without reading /proc/sys/kernel/cap_last_cap (20 µs of a start).
    /// </summary>
    public int LastCapability { get; init; } = 63;

    /// <summary>A seccomp BPF program (struct sock_filter, 8 bytes each, packed little-endian); empty for none.</summary>
    public ImmutableArray<ulong> SeccompProgram { get; init; } = ImmutableArray<ulong>.Empty;
}

[Flags]
public enum NamespaceSet
{
    None = 0,
    User = 1,
    Mount = 2,
    Pid = 4,
    Network = 8,
    Uts = 16,
    Ipc = 32,
    Cgroup = 64,
    All = User | Mount | Pid | Network | Uts | Ipc | Cgroup,
}

public enum IdMapKind
{
    /// <summary>0 inside maps to the caller; setgroups denied. Needs nothing installed.</summary>
    SingleId,
    /// <summary>0 → caller, 1..N → an /etc/subuid and /etc/subgid range, through newuidmap/newgidmap.</summary>
    SubordinateRange,
}

public sealed record IdRange(long Start, long Count);

public sealed record IdMapPlan(
    IdMapKind Kind,
    uint HostUid,
    uint HostGid,
    IdRange? SubordinateUids = null,
    IdRange? SubordinateGids = null,
    string? NewUidMapPath = null,
    string? NewGidMapPath = null);

/// <summary>mount(2) flags, with the kernel's values.</summary>
[Flags]
public enum MountFlags : ulong
{
    None = 0,
    ReadOnly = 1,
    NoSuid = 2,
    NoDev = 4,
    NoExec = 8,
    Bind = 4096,
    Recursive = 16384,
    Private = 1 << 18,
    Slave = 1 << 19,
}

/// <summary>mount_setattr(2) attributes, with the kernel's values.</summary>
[Flags]
public enum MountAttributes : ulong
{
    None = 0,
    ReadOnly = 1,
    NoSuid = 2,
    NoDev = 4,
    NoExec = 8,
}

/// <summary>One set-up operation run inside the new namespaces before exec.</summary>
public abstract record SetupStep
{
    /// <summary>When the path does not exist (ENOENT), skip the step instead of failing.</summary>
    public bool Optional { get; init; }

    /// <summary>
    /// Done already in a holder's prepared mount namespace (sandbox_init.c,
    /// prepare_mount_namespace, which does these same steps): skipped when PID 1 joins one.
    /// </summary>
    public bool PreparedBySpare { get; init; }

    /// <summary>
    /// One of the steps that mount an image's overlay as the root: done already when the holder's
    /// prepared mount namespace came with this plan's overlay mounted (sandbox_init.c,
    /// mount_overlay, which replays them).
    /// </summary>
    public bool OverlayPreparedBySpare { get; init; }

    /// <summary>
    /// When set, the target is resolved inside this directory as if it were / (openat2's
    /// RESOLVE_IN_ROOT): no symlink under the new root can send the step outside it.
    /// </summary>
    public string? ResolveIn { get; init; }

    public abstract string Describe();

    /// <summary>
    /// The step, for a report of its failure; <paramref name="reportValue"/> is the native report's
    /// value, which a step may use to say which part of it failed.
    /// </summary>
    public virtual string DescribeFailure(int reportValue) => Describe();

    /// <summary>The path the step acts on, when it acts on one (what <see cref="ResolveIn"/> confines).</summary>
    public virtual string? TargetPath => null;
}

public sealed record MountStep(string? Source, string Target, string? FileSystemType, MountFlags Flags, string? Data = null) : SetupStep
{
    public override string? TargetPath => Target;

    /// <summary>
    /// For an image's overlay: which directories its lower layers are (inode and change time of
    /// each). Not mount data: it tells a holder's spare whose overlay has the same data but layers
    /// removed and stored again since (image rm, prune, import) from one that has this plan's layers.
    /// </summary>
    public string? LowerIdentities { get; init; }

    public override string Describe() => (Flags & MountFlags.Bind) != 0
        ? $"bind-mount {Source} on {Target}"
        : Source is null ? $"change propagation of {Target}" : $"mount {FileSystemType ?? Source} on {Target}";
}

public sealed record SetMountAttributesStep(string Target, MountAttributes Set, MountAttributes Clear, bool Recursive) : SetupStep
{
    public override string? TargetPath => Target;

    public override string Describe() => $"set mount attributes ({Set}) on {Target}{(Recursive ? " and below" : "")}";
}

public sealed record MakeDirectoryStep(string Target, int Mode = 0b111_101_101) : SetupStep
{
    public override string? TargetPath => Target;

    public override string Describe() => $"create directory {Target}";
}

public sealed record SymlinkStep(string LinkTarget, string Path) : SetupStep
{
    public override string? TargetPath => Path;

    public override string Describe() => $"create symlink {Path} -> {LinkTarget}";
}

public sealed record CreateFileStep(string Target, int Mode = 0b110_100_100) : SetupStep
{
    public override string? TargetPath => Target;

    public override string Describe() => $"create file {Target}";
}

/// <summary>
/// Hides <paramref name="Target"/> as runc's maskedPaths does: a read-only empty tmpfs over it when it
/// is a directory, <paramref name="NullDevice"/> bound over it otherwise. Which one is decided when
/// the step runs, on what the target is then (so planning stats nothing); with
/// <see cref="SetupStep.Optional"/>, a target that does not exist is skipped.
/// </summary>
public sealed record MaskStep(string Target, string NullDevice) : SetupStep
{
    public override string? TargetPath => Target;

    public override string Describe() => $"mask {Target}";
}

/// <summary>pivot_root into <paramref name="NewRoot"/>; the old root stays at <paramref name="PutOld"/> (relative) or is detached when null.</summary>
public sealed record PivotRootStep(string NewRoot, string? PutOld) : SetupStep
{
    public override string Describe() => $"pivot_root into {NewRoot}";
}

/// <summary>
/// The sandbox's /dev, built at /dev on the scratch root (the host's tree at /oldroot) by the native
/// code that also builds it in a holder's prepared mount namespace (sandbox_kernel.h,
/// sbx_build_dev): a tmpfs with the host's null, zero, full, random, urandom and tty bound in, the
/// links fd, stdin, stdout, stderr, core and ptmx, a private devpts and a tmpfs at shm.
/// </summary>
public sealed record BuildDevStep : SetupStep
{
    /// <summary>What the native code was making when it failed: the report's value (sandbox_kernel.h, enum sbx_dev_part).</summary>
    public enum Part
    {
        Tmpfs = 1,
        Entries = 2,
        HostDevices = 3,
        Devpts = 4,
        Shm = 5,
    }

    public override string? TargetPath => "/dev";

    public override string Describe() => "build /dev on the scratch root";

    /// <summary>The step and the part of /dev it failed at, e.g. "build /dev on the scratch root: its private devpts at /dev/pts".</summary>
    public override string DescribeFailure(int reportValue) => (Part)reportValue switch
    {
        Part.Tmpfs => "its tmpfs",
        Part.Entries => "its device files, links and directories",
        Part.HostDevices => "the binds of the host's /dev/null, zero, full, random, urandom and tty",
        Part.Devpts => "its private devpts at /dev/pts",
        Part.Shm => "its tmpfs at /dev/shm",
        _ => null,
    } is string part ? $"{Describe()}: {part}" : Describe();
}

/// <summary>Detaches the mount on <paramref name="Target"/> and every mount below it (umount2(2), MNT_DETACH).</summary>
public sealed record UnmountStep(string Target) : SetupStep
{
    public override string? TargetPath => Target;

    public override string Describe() => $"unmount {Target}";
}

public sealed record SetHostnameStep(string Hostname) : SetupStep
{
    public override string Describe() => $"set hostname {Hostname}";
}

public sealed record LoopbackUpStep : SetupStep
{
    public override string Describe() => "bring up the loopback interface";
}

public sealed record ClearGroupsStep : SetupStep
{
    public override string Describe() => "drop supplementary groups";
}

/// <summary>A new cgroup namespace rooted at the cgroup PID 1 is in by then (cgroup_namespaces(7)).</summary>
public sealed record UnshareCgroupNamespaceStep : SetupStep
{
    public override string Describe() => "create the cgroup namespace";
}

public sealed record ChangeDirectoryStep(string Target) : SetupStep
{
    public override string Describe() => $"change directory to {Target}";
}

/// <summary>
/// Runs a host program inside the new namespaces, at this point of the set-up, and waits for it:
/// the step fails unless it exits 0. Its stdin and stdout are /dev/null (which must exist at that
/// point), its stderr is captured for the error message, and its environment is exactly
/// <paramref name="Environment"/>. A daemon it leaves behind lives in the sandbox's PID namespace
/// and dies with it (fuse-overlayfs, which daemonizes once its mount is in place).
/// </summary>
public sealed record RunProgramStep(string Program, ImmutableArray<string> Arguments, ImmutableArray<string> Environment) : SetupStep
{
    public override string Describe() => $"run {System.IO.Path.GetFileName(Program)}";
}
