namespace Sandbox;

/// <summary>
/// Stable error codes (SBX###): front ends show them, scripts and the MSBuild task match on them.
/// SBX100-102, SBX124, SBX137 and SBX138 are the MSBuild task's own (src/Sandbox.MSBuild/README.md):
/// never use them here.
/// </summary>
public enum SandboxErrorCode
{
    InvalidSpec = 1,
    UserNamespacesUnavailable = 2,
    IdMappingFailed = 3,
    SetupFailed = 4,
    CommandNotFound = 5,
    CommandNotExecutable = 6,
    WorkingDirectoryUnavailable = 7,
    NativeExecutorUnavailable = 8,
    SpawnFailed = 9,
    CgroupFailed = 10,
    LimitsUnavailable = 11,
    /// <summary>The payload's output could not be written where the caller sent it (a full disk, a quota, an I/O error): it is incomplete.</summary>
    OutputLost = 12,
    // Images and the layer store: 20-39.
    /// <summary>The file is not a docker archive, OCI archive or OCI layout, or its JSON or tar structure is broken.</summary>
    ImageFormatInvalid = 20,
    /// <summary>A blob's or layer's sha256 differs from the digest that names it; nothing was stored.</summary>
    DigestMismatch = 21,
    /// <summary>A layer entry tries to leave the layer directory (absolute or ../ path, link outside, ...).</summary>
    HostileArchiveEntry = 22,
    /// <summary>No image in the store has that name or digest.</summary>
    ImageNotFound = 23,
    /// <summary>A blob's size differs from the size its descriptor states; nothing was stored.</summary>
    BlobSizeMismatch = 24,
    /// <summary>An entry, a layer or an image is larger than the import limits.</summary>
    ImageTooLarge = 25,
    /// <summary>The image offers no manifest for the requested (or the host's) platform.</summary>
    PlatformNotFound = 26,
    /// <summary>A name or digest prefix matches more than one image.</summary>
    ImageAmbiguous = 27,
    /// <summary>An image name (--name) is not a valid reference.</summary>
    ImageNameInvalid = 28,
    /// <summary>This kernel or file system refuses overlay whiteouts (0:0 character devices) to an unprivileged user.</summary>
    WhiteoutUnsupported = 29,
    /// <summary>The store could not be read or written (permissions, disk full, damaged records).</summary>
    StoreFailed = 30,
    /// <summary>A layer entry's owner is outside the ids the caller's subordinate range maps (podman: "potentially insufficient UIDs or GIDs"); nothing was stored.</summary>
    OwnerOutsideIdMap = 31,
    /// <summary>An image's layers keep their owners for another subordinate range than this run's (/etc/subuid changed): re-import it.</summary>
    LayerIdMapMismatch = 32,
    /// <summary>The store directory belongs to another user or others may write to it: they could replace its layers and records.</summary>
    StoreNotPrivate = 33,
    /// <summary>The image archive or layout given could not be read by the caller (its permissions, or a directory above it).</summary>
    ImageUnreadable = 34,
    Internal = 99,
}

public static class SandboxErrorCodes
{
    public static string Format(this SandboxErrorCode code) => $"SBX{(int)code:000}";

    /// <summary>The process exit code for a failure, following docker and podman: 125 the sandbox could not be set up, 126 not executable, 127 not found.</summary>
    public static int ExitCode(this SandboxErrorCode code) => code switch
    {
        SandboxErrorCode.CommandNotFound => ExitCodes.CommandNotFound,
        SandboxErrorCode.CommandNotExecutable => ExitCodes.CommandNotExecutable,
        _ => ExitCodes.SandboxFailed,
    };
}

public static class ExitCodes
{
    public const int Timeout = 124;
    public const int SandboxFailed = 125;
    public const int CommandNotExecutable = 126;
    public const int CommandNotFound = 127;
    public const int SignalBase = 128;
}

/// <summary>The sandbox could not run the command: the message names the cause and, where it lies in the host, the fix.</summary>
public sealed class SandboxException : Exception
{
    public SandboxException(SandboxErrorCode code, string message, Exception? inner = null)
        : base(message, inner)
    {
        Code = code;
    }

    public SandboxErrorCode Code { get; }

    public int ExitCode => Code.ExitCode();
}
