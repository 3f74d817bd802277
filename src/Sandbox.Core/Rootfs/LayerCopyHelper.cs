using System.Collections.Immutable;
using Sandbox.Identity;
using Sandbox.Images;
using Sandbox.Runtime;

namespace Sandbox.Rootfs;

/// <summary>
/// The copy storage driver for layers that keep their image's owners (<see cref="LayerOwnershipKind.Mapped"/>):
/// they hold files and 0700 directories of subordinate ids (host uid 100999 for the image's 1000),
/// which the caller can neither read nor chmod. Root of a user namespace with the layers' map can
/// (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, CAP_CHOWN, CAP_FOWNER over every mapped id: capabilities(7),
/// user_namespaces(7)), and its copies get the image's owners, as `podman unshare` would.
/// <para>How it gets there: this program runs itself again (<see cref="HelperCommands"/>), as the
/// program of a <see cref="HelperSandbox"/> with that map, and the same <see cref="LayerCopier"/>
/// copies there. Chosen over a copy in the native executor's namespace child (like
/// <c>sbx_file_spawn</c>'s lchown pass): whiteouts, opaque directories, merges, hard links and
/// xattrs are a few hundred lines that would have to be written again in C, allocation-free and
/// safe against hostile trees, for a fallback driver. Re-executing keeps DESIGN.md's "no managed
/// code between clone and exec" (the copier is exec'd; its runtime starts fresh, single-threaded
/// in the namespace) and keeps one implementation of the overlay rules. Its cost is one program
/// start (~10 ms NativeAOT, ~70 ms JIT) per copy, small beside the copy itself; flattened layers
/// (every file the caller's) are still copied in this process, at no extra cost.</para>
/// </summary>
internal static class LayerCopyHelper
{
    /// <summary>
    /// The map to copy <paramref name="image"/>'s layers in: null when none keeps owners (an
    /// in-process copy will do); the run's own map when it is the layers' (a <c>--userns subuid</c>
    /// run: <see cref="SandboxPlanner.CheckImageOwners"/> checked that); otherwise the caller's
    /// subordinate range, when it is still the one the layers were written for: a <c>--userns
    /// single</c> run then still gets its copy (its files show as nobody inside, as under overlay).
    /// </summary>
    public static IdMapPlan? MapFor(ImageRecord image, IdMapPlan runMaps, IdentityEnvironment identity)
    {
        List<IdMapping> maps = image.Layers.Select(l => l.Ownership.Map).OfType<IdMapping>().Distinct().ToList();
        if (maps.Count == 0)
            return null;
        string name = image.Name ?? image.Digest;
        if (maps.Count > 1)
        {
            throw new SandboxException(SandboxErrorCode.LayerIdMapMismatch,
                $"{name}: its layers keep their owners for different subordinate ranges ({string.Join("; ", maps.Select(m => m.Describe()))}), which no one user namespace maps: import the image again (sandbox image import FILE)");
        }
        IdMapping wanted = maps[0];
        if (IdMapping.Of(runMaps) == wanted)
            return runMaps;
        string? why = IdMapResolver.TryResolveSubordinate(identity, out IdMapPlan? mine);
        if (mine is not null && IdMapping.Of(mine) == wanted)
            return mine;
        string now = mine is null ? $"there is none now: {why}" : $"yours is now {IdMapping.Of(mine)!.Describe()}";
        throw new SandboxException(SandboxErrorCode.LayerIdMapMismatch,
            $"the copy storage driver cannot read {name}'s layers: they keep their owners for the subordinate range {wanted.Describe()}, " +
            $"and only root of a user namespace with that range may read them, but {now}. Use --storage-driver overlay or fuse-overlayfs, " +
            "or import the image again (sandbox image import FILE)");
    }

    /// <summary>Copies the layers into <paramref name="target"/> (which must not exist) as root of a user namespace with <paramref name="maps"/>.</summary>
    public static void Copy(IReadOnlyList<string> layersLowestFirst, string target, IdMapPlan maps)
    {
        if (HelperCommands.Self() is not (string program, ImmutableArray<string> prefix, ImmutableArray<string> environment))
        {
            throw new SandboxException(SandboxErrorCode.SetupFailed,
                "the copy storage driver copies layers that keep their image's owners by running the sandbox program again in a user namespace, " +
                $"and this process ({Environment.ProcessPath}) is not the sandbox program: use --storage-driver overlay or fuse-overlayfs here, or run through the sandbox CLI");
        }
        ImmutableArray<string> arguments = [Path.GetFileName(program), .. prefix, HelperCommands.CopyLayers, target, .. layersLowestFirst];
        if (HelperSandbox.Run(maps, [], program, arguments, environment, captureOutput: true) is string failure)
            throw new SandboxException(SandboxErrorCode.SetupFailed, $"copying the image's layers into {target} in a user namespace with your subordinate range failed: {failure}");
    }
}
