namespace Sandbox.Rootfs;

/// <summary>What choosing a storage driver needs to know about this host; <c>Diagnostics.StorageProbe</c> asks the real one.</summary>
public interface IStorageDriverHost
{
    /// <summary>Null when kernel overlayfs can be mounted in a user namespace here; otherwise why not, in a few words.</summary>
    string? KernelOverlayProblem();

    /// <summary>The fuse-overlayfs program, or null when none is installed.</summary>
    string? FindFuseOverlayfs();

    /// <summary>Null when <paramref name="program"/> can mount in a user namespace here; otherwise why not, in a few words.</summary>
    string? FuseOverlayfsProblem(string program);

    /// <summary>uname -r, for the advice; null when unknown.</summary>
    string? KernelRelease { get; }

    /// <summary>The kernel's MAJOR.MINOR.PATCH, parsed from <see cref="KernelRelease"/>; null when unknown.</summary>
    Version? KernelVersion { get; }
}

/// <param name="Driver">Overlay, FuseOverlayfs or Copy: never Auto.</param>
/// <param name="FuseOverlayfsProgram">The program, when the driver is FuseOverlayfs.</param>
/// <param name="Warning">One line for the user when the choice is slower than kernel overlay, or null.</param>
public sealed record StorageDriverChoice(StorageDriver Driver, string? FuseOverlayfsProgram, string? Warning);

/// <summary>
/// Resolves <c>--storage-driver</c> (DESIGN.md, "Rootfs and storage": "Fallbacks when kernel overlay
/// is unavailable: fuse-overlayfs, then a copy"). Auto asks the host in that order and names, in its
/// warning, why kernel overlay is out and how to get it. An explicit choice is taken as given: its
/// own failure (a refused mount, fuse-overlayfs's message) is clearer than a fallback would be.
/// </summary>
public static class StorageDriverSelector
{
    public const string InstallFuseOverlayfs = "sudo apt-get install fuse-overlayfs";

    /// <summary>
    /// Why fuse-overlayfs is refused to a payload that holds CAP_SYS_PTRACE. Its daemon runs in the
    /// sandbox's PID namespace as root of the user namespace, with every capability and open
    /// directories on the host (the store's layers); a payload without CAP_SYS_PTRACE cannot ptrace
    /// it or open its /proc/PID/fd, because its capabilities are not a subset of the daemon's
    /// (ptrace(2), "Ptrace access mode checking", step 3; security/commoncap.c cap_ptrace_access_check),
    /// but one with it could walk from those directories to the host's whole file system.
    /// </summary>
    public const string PtraceReason =
        "a payload with CAP_SYS_PTRACE (--privileged, --cap-add SYS_PTRACE) could ptrace the fuse-overlayfs daemon, which runs in its PID namespace with directories of the host open";

    /// <param name="payloadMayPtrace">The payload's capabilities include CAP_SYS_PTRACE: fuse-overlayfs is then not used (<see cref="PtraceReason"/>).</param>
    /// <param name="layerCount">The image's layers: more than <see cref="RootfsPlanner.MaxOverlayLayers"/> do not fit one kernel overlay mount, and Auto passes it by.</param>
    public static StorageDriverChoice Choose(StorageDriver requested, IStorageDriverHost host, bool payloadMayPtrace = false, int layerCount = 0)
    {
        ArgumentNullException.ThrowIfNull(host);
        switch (requested)
        {
            case StorageDriver.Overlay:
                return new(StorageDriver.Overlay, null, null);
            case StorageDriver.FuseOverlayfs:
                if (payloadMayPtrace)
                    throw new SandboxException(SandboxErrorCode.InvalidSpec,
                        $"--storage-driver fuse-overlayfs cannot be used here: {PtraceReason}; use --storage-driver overlay or copy, or drop the capability");
                string program = host.FindFuseOverlayfs() ?? throw new SandboxException(SandboxErrorCode.InvalidSpec,
                    $"--storage-driver fuse-overlayfs: fuse-overlayfs is not installed ({InstallFuseOverlayfs})");
                return new(StorageDriver.FuseOverlayfs, program, null);
            case StorageDriver.Copy:
                return new(StorageDriver.Copy, null,
                    "the copy storage driver copies the image's layers for every run, which is slow (overlay and fuse-overlayfs mount them instead)");
        }

        string why, kernelAdvice;
        if (layerCount > RootfsPlanner.MaxOverlayLayers)
        {
            why = $"the image has {layerCount} layers, more than one kernel overlay mount's options hold (about {RootfsPlanner.MaxOverlayLayers})";
            kernelAdvice = "an image of fewer layers (docker build --squash, or a multi-stage build)";
        }
        else
        {
            string? overlayProblem = host.KernelOverlayProblem();
            if (overlayProblem is null)
                return new(StorageDriver.Overlay, null, null);
            why = $"kernel overlayfs cannot be mounted in a user namespace here ({overlayProblem})";
            // Unprivileged overlay mounts came with Linux 5.11 (commit "ovl: unprivileged mounts").
            kernelAdvice = "Linux 5.11 or later" + (host.KernelVersion is Version v && v < new Version(5, 11) ? $" (this is {host.KernelRelease})" : "");
        }

        string? fuse = host.FindFuseOverlayfs();
        if (fuse is not null && payloadMayPtrace)
            return new(StorageDriver.Copy, null,
                $"{why}, and fuse-overlayfs is not used because {PtraceReason}; copying the image's layers for this run instead, which is slow. Fix: {kernelAdvice} for kernel overlay, or drop the capability.");
        string? fuseProblem = fuse is null ? null : host.FuseOverlayfsProblem(fuse);
        if (fuse is not null && fuseProblem is null)
            return new(StorageDriver.FuseOverlayfs, fuse, $"{why}; using fuse-overlayfs, which is slower. For kernel overlay: {kernelAdvice}.");

        string fuseState = fuse is null ? "fuse-overlayfs is not installed" : $"fuse-overlayfs cannot mount here ({fuseProblem})";
        string fuseAdvice = fuse is null ? InstallFuseOverlayfs
            : fuseProblem!.Contains("/dev/fuse", StringComparison.Ordinal) ? "sudo chmod 0666 /dev/fuse (the mode udev gives it) for fuse-overlayfs"
            : "see `sandbox check` for fuse-overlayfs";
        return new(StorageDriver.Copy, null,
            $"{why}, and {fuseState}; copying the image's layers for this run instead, which is slow. Fix: {kernelAdvice} for kernel overlay, or {fuseAdvice}.");
    }
}
