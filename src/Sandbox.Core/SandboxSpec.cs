using System.Collections.Immutable;

namespace Sandbox;

/// <summary>What the sandbox's root filesystem is.</summary>
public abstract record RootSpec
{
    /// <summary>The host's / read-only, with fresh /proc, /dev, /tmp and $HOME.</summary>
    public static RootSpec Host { get; } = new HostRoot();

    public static RootSpec Directory(string path) => new DirectoryRoot(path);
}

public sealed record HostRoot : RootSpec;

/// <summary>A directory holding a root filesystem, mounted read-only.</summary>
public sealed record DirectoryRoot(string Path) : RootSpec;

/// <summary>
/// An image from the store: its layers as overlayfs lower directories, with a fresh upper directory
/// that vanishes with the sandbox (docker run's writable container layer), read-only on request.
/// </summary>
/// <param name="KeepDirectory">When set, the writable layer lives in KeepDirectory/upper on the host
/// (with KeepDirectory/work beside it; with the copy driver the whole root is KeepDirectory/root)
/// and outlives the sandbox (--keep); otherwise on a tmpfs that vanishes with it.</param>
/// <param name="Driver">How the layers become the root; <see cref="StorageDriver.Auto"/> is resolved
/// when the sandbox starts (a real probe of this host, cached per boot).</param>
public sealed record ImageRoot(Images.ImageRecord Image, bool ReadOnly = false, string? KeepDirectory = null, StorageDriver Driver = StorageDriver.Auto) : RootSpec
{
    /// <summary>The fuse-overlayfs program on the host (set when the driver is resolved to <see cref="StorageDriver.FuseOverlayfs"/>).</summary>
    public string? FuseOverlayfsProgram { get; init; }

    /// <summary>The host directory the layers were copied into (set when the driver is <see cref="StorageDriver.Copy"/>).</summary>
    public string? CopiedRoot { get; init; }

    /// <summary>Where a kept run's changes are, on the host: the upper directory, or the whole copied root.</summary>
    public string? KeptChanges => KeepDirectory is null ? null
        : System.IO.Path.Combine(KeepDirectory, Driver == StorageDriver.Copy ? "root" : "upper");
}

/// <summary>How an image's layers become a sandbox's root (podman's --storage-driver).</summary>
public enum StorageDriver
{
    /// <summary>Kernel overlay when it works in a user namespace here, else fuse-overlayfs, else copy (with a warning).</summary>
    Auto,
    /// <summary>Kernel overlayfs mounted inside the user namespace (Linux 5.11+): no copy, no daemon.</summary>
    Overlay,
    /// <summary>fuse-overlayfs started inside the sandbox's namespaces (needs the program and a usable /dev/fuse).</summary>
    FuseOverlayfs,
    /// <summary>The layers copied into a per-run directory (whiteouts and opaque directories applied): slow, works anywhere.</summary>
    Copy,
}

public static class StorageDriverNames
{
    public static string Name(this StorageDriver driver) => driver switch
    {
        StorageDriver.Overlay => "overlay",
        StorageDriver.FuseOverlayfs => "fuse-overlayfs",
        StorageDriver.Copy => "copy",
        _ => "auto",
    };

    /// <summary>podman's names: overlay, fuse-overlayfs (also vfs's role: copy), auto.</summary>
    public static StorageDriver Parse(string value) => value.Trim().ToLowerInvariant() switch
    {
        "auto" or "" => StorageDriver.Auto,
        "overlay" or "overlayfs" => StorageDriver.Overlay,
        "fuse-overlayfs" or "fuse" => StorageDriver.FuseOverlayfs,
        "copy" => StorageDriver.Copy,
        _ => throw new SandboxException(SandboxErrorCode.InvalidSpec, $"unknown storage driver '{value}': use overlay, fuse-overlayfs, copy or auto"),
    };
}

public sealed record BindMount(string HostPath, string SandboxPath, bool ReadOnly = false)
{
    /// <summary>Parses docker's <c>-v HOST:CONTAINER[:ro|rw]</c>.</summary>
    public static BindMount Parse(string value)
    {
        string[] parts = value.Split(':');
        bool readOnly = false;
        if (parts.Length == 3)
        {
            readOnly = parts[2] switch
            {
                "ro" => true,
                "rw" => false,
                _ => throw new SandboxException(SandboxErrorCode.InvalidSpec, $"bind mount '{value}': the mode must be ro or rw, not '{parts[2]}'"),
            };
        }
        else if (parts.Length != 2)
        {
            throw new SandboxException(SandboxErrorCode.InvalidSpec, $"bind mount '{value}': expected HOST:CONTAINER[:ro]");
        }
        if (parts[0].Length == 0 || parts[1].Length == 0)
            throw new SandboxException(SandboxErrorCode.InvalidSpec, $"bind mount '{value}': expected HOST:CONTAINER[:ro]");
        if (!parts[1].StartsWith('/'))
            throw new SandboxException(SandboxErrorCode.InvalidSpec, $"bind mount '{value}': the path in the sandbox must be absolute");
        return new BindMount(parts[0], parts[1], readOnly);
    }
}

/// <summary>Which seccomp filter the payload runs under.</summary>
public sealed record SeccompPolicy(string Kind, string? ProfilePath = null)
{
    public static SeccompPolicy Default { get; } = new("default");
    public static SeccompPolicy Unconfined { get; } = new("unconfined");
    public static SeccompPolicy FromFile(string path) => new("file", path);
}

public enum NetworkMode
{
    /// <summary>A new network namespace with only loopback, up (VSTest talks to its test host over loopback).</summary>
    None,
    /// <summary>The host's network namespace.</summary>
    Host,
}

public enum UserNamespaceMode
{
    /// <summary>A subordinate range when /etc/subuid gives one and newuidmap is installed, else single.</summary>
    Auto,
    Single,
    Subuid,
}

/// <summary>
/// An immutable description of one sandboxed command (CliWrap's immutable command): change it with
/// <c>with</c> expressions, run it with <see cref="SandboxRunner"/>.
/// </summary>
public sealed record SandboxSpec
{
    public SandboxSpec(IEnumerable<string> command)
    {
        Command = command.ToImmutableArray();
    }

    public ImmutableArray<string> Command { get; init; }

    public RootSpec Root { get; init; } = RootSpec.Host;

    /// <summary>Variables set inside, in addition to PATH, HOME and TERM. Nothing else of the host's environment gets in.</summary>
    public ImmutableArray<KeyValuePair<string, string>> Environment { get; init; } = ImmutableArray<KeyValuePair<string, string>>.Empty;

    public string? WorkingDirectory { get; init; }

    /// <summary>docker's -u USER[:GROUP] (names or ids); null: the image's User, else root.</summary>
    public string? User { get; init; }

    public ImmutableArray<BindMount> Binds { get; init; } = ImmutableArray<BindMount>.Empty;

    public ImmutableArray<string> TmpfsMounts { get; init; } = ImmutableArray<string>.Empty;

    /// <summary>
    /// Empty files created in the sandbox's fresh $HOME before the command runs, as paths relative to
    /// it (their directories too); an existing file is left as it is. Only for the host's root and a
    /// directory root, whose $HOME is a tmpfs of the run: nothing reaches the host. They are made
    /// right after that tmpfs is mounted, so a bind mounted below $HOME covers them, never receives
    /// them. For markers of work done once per machine, which a fresh $HOME would otherwise redo at
    /// every run (<c>sandbox test</c>: NuGet's migration marker).
    /// </summary>
    public ImmutableArray<string> HomeFiles { get; init; } = ImmutableArray<string>.Empty;

    /// <summary>The hostname inside; empty means the default, as docker treats <c>--hostname ""</c>.</summary>
    public string Hostname { get; init; } = DefaultHostname;

    public const string DefaultHostname = "sandbox";

    public NetworkMode Network { get; init; } = NetworkMode.None;

    public UserNamespaceMode UserNamespace { get; init; } = UserNamespaceMode.Auto;

    public TimeSpan? Timeout { get; init; }

    /// <summary>Memory, pids, CPU and IO limits, enforced through a delegated cgroup.</summary>
    public Cgroups.ResourceLimits Limits { get; init; } = Cgroups.ResourceLimits.None;

    public Cgroups.LimitsPolicy LimitsPolicy { get; init; } = Cgroups.LimitsPolicy.Required;

    /// <summary>
    /// Measure peak memory and CPU in a cgroup of its own even without limits (--stats, JSON events).
    /// Off, a run without limits skips the cgroup probe and set-up: less work on every start.
    /// </summary>
    public bool CollectUsage { get; init; }

    /// <summary>Capabilities added to docker's default set (names as in capabilities(7), or ALL).</summary>
    public ImmutableArray<string> CapAdd { get; init; } = ImmutableArray<string>.Empty;

    /// <summary>Capabilities removed from docker's default set (or ALL).</summary>
    public ImmutableArray<string> CapDrop { get; init; } = ImmutableArray<string>.Empty;

    /// <summary>The seccomp filter: the default profile, none (unconfined), or a profile file in Docker's JSON format.</summary>
    public SeccompPolicy Seccomp { get; init; } = SeccompPolicy.Default;

    /// <summary>Give the payload the caller's stdin (otherwise /dev/null).</summary>
    public bool ForwardStdin { get; init; }

    public SandboxSpec WithEnvironment(string name, string value) =>
        this with { Environment = Environment.Add(new KeyValuePair<string, string>(name, value)) };

    public SandboxSpec WithBind(BindMount bind) => this with { Binds = Binds.Add(bind) };
}
