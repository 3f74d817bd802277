using System.Collections.Immutable;
using Sandbox.Identity;

namespace Sandbox.Images;

/// <summary>
/// What <c>docker run IMAGE</c> takes from an image's config: the process's environment, command
/// (Entrypoint + Cmd, where a command given at run time replaces Cmd), working directory and user.
/// Null means the image does not set it (different from set to empty for Entrypoint and Cmd).
/// </summary>
public sealed record ImageConfig
{
    public static ImageConfig Empty { get; } = new();

    public ImmutableArray<string> Env { get; init; } = [];
    public ImmutableArray<string>? Entrypoint { get; init; }
    public ImmutableArray<string>? Cmd { get; init; }
    public string? WorkingDir { get; init; }
    /// <summary>As the image states it: <c>name</c>, <c>uid</c>, <c>name:group</c> or <c>uid:gid</c>; names are resolved through the image's /etc/passwd and /etc/group at run time.</summary>
    public string? User { get; init; }
    /// <summary>
    /// Read-only, and without an <c>ImmutableDictionary</c> when empty: that type's static set-up
    /// (its comparers, resolved at run time for shared generics) took about 15 µs of every warm
    /// `run IMAGE` (perf, 300 runs), for labels a run never reads.
    /// </summary>
    public IReadOnlyDictionary<string, string> Labels { get; init; } = System.Collections.ObjectModel.ReadOnlyDictionary<string, string>.Empty;
    public string? StopSignal { get; init; }
}

/// <summary>One layer of an image in the store.</summary>
public sealed record LayerInfo
{
    /// <summary>The digest of the uncompressed tar stream (the config's rootfs.diff_ids entry).</summary>
    public required string DiffId { get; init; }

    /// <summary>The unpacked directory, absolute; the run mounts it as an overlay lower directory.</summary>
    public required string Directory { get; init; }

    /// <summary>Bytes of the uncompressed layer stream.</summary>
    public long Size { get; init; }

    /// <summary>Who owns the unpacked files on disk.</summary>
    public LayerOwnership Ownership { get; init; } = LayerOwnership.Legacy;
}

public enum LayerOwnershipKind
{
    /// <summary>Every file belongs to the user who imported the layer (0 inside any sandbox).</summary>
    Flattened,
    /// <summary>Files keep the tar's owners, written as the host ids of <see cref="LayerOwnership.Map"/>.</summary>
    Mapped,
}

/// <summary>How a layer's files are owned on disk: flattened to the caller, or the image's owners under a subordinate-range map.</summary>
public sealed record LayerOwnership
{
    /// <summary>A layer stored before owners were recorded: flattened, with unknown owners in its tar.</summary>
    public static LayerOwnership Legacy { get; } = new() { Kind = LayerOwnershipKind.Flattened };

    public LayerOwnershipKind Kind { get; init; }

    /// <summary>The map the owners were written for (<see cref="LayerOwnershipKind.Mapped"/> only).</summary>
    public IdMapping? Map { get; init; }

    /// <summary>
    /// Entries whose owner in the tar is not 0:0: kept (Mapped) or made the caller's (Flattened).
    /// Null when unknown. A layer with none is the same on disk under every map.
    /// </summary>
    public long? NonRootEntries { get; init; }

    /// <summary>True when the layer's owners were lost (or may have been): flattened with entries of other owners.</summary>
    public bool LostOwners => Kind == LayerOwnershipKind.Flattened && NonRootEntries is not 0;
}

/// <summary>An image in the store.</summary>
public sealed record ImageRecord
{
    /// <summary>
    /// The image's identity in the store: the digest of its manifest (OCI archives and layouts). A
    /// docker archive has no manifest: there it is the config digest, which docker shows as the image id.
    /// </summary>
    public required string Digest { get; init; }

    /// <summary>The digest of the image config (docker's image id).</summary>
    public required string ConfigDigest { get; init; }

    /// <summary>Names (<c>repo:tag</c>) that refer to this image; empty for an unnamed one. A name belongs to one image at a time.</summary>
    public ImmutableArray<string> Names { get; init; } = [];

    /// <summary>The first name, or null when unnamed.</summary>
    public string? Name => Names.IsDefaultOrEmpty ? null : Names[0];

    /// <summary>When the image was built (the config's <c>created</c>), if it says.</summary>
    public DateTimeOffset? Created { get; init; }

    /// <summary>When it was imported into this store.</summary>
    public DateTimeOffset Imported { get; init; }

    /// <summary>Bytes of all layers, uncompressed.</summary>
    public long Size { get; init; }

    /// <summary><c>os/architecture[/variant]</c> from the config.</summary>
    public string Platform { get; init; } = "";

    /// <summary>docker-archive, oci-archive or oci-layout.</summary>
    public string SourceFormat { get; init; } = "";

    /// <summary>The layers, lowest first.</summary>
    public ImmutableArray<LayerInfo> Layers { get; init; } = [];

    /// <summary>
    /// The unpacked layer directories, lowest first, as absolute paths (overlay wants them highest
    /// first in <c>lowerdir=</c>). A layer that occurs more than once (old images repeat the empty
    /// layer) is listed once, at its highest place: the same content again on top makes the lower
    /// copy invisible, and overlayfs may refuse a directory twice.
    /// </summary>
    public ImmutableArray<string> LayerDirectories
    {
        get
        {
            var seen = new HashSet<string>(StringComparer.Ordinal);
            var highestFirst = new List<string>();
            for (int i = Layers.Length - 1; i >= 0; i--)
            {
                if (seen.Add(Layers[i].Directory))
                    highestFirst.Add(Layers[i].Directory);
            }
            highestFirst.Reverse();
            return [.. highestFirst];
        }
    }

    public ImageConfig Config { get; init; } = ImageConfig.Empty;

    /// <summary>
    /// True: some layer's files belong to the user who imported the image although its tar gave them
    /// other owners (the import had no subordinate range, or ran with <c>--userns single</c>); they
    /// appear as root's inside. False: every file has the owner the image gives it (under
    /// <see cref="IdMap"/> for layers with owners other than root).
    /// </summary>
    public bool OwnershipFlattened => Layers.Any(l => l.Ownership.LostOwners);

    /// <summary>The subordinate-range map the layers with owners other than root were unpacked for; null when none has such owners on disk.</summary>
    public IdMapping? IdMap
    {
        get
        {
            foreach (LayerInfo layer in Layers)
            {
                if (layer.Ownership.Kind == LayerOwnershipKind.Mapped)
                    return layer.Ownership.Map;
            }
            return null;
        }
    }
}

/// <summary>What <c>prune</c> removed.</summary>
public sealed record PruneResult(int LayersRemoved, long BytesFreed, int BlobsRemoved, int TemporaryEntriesRemoved);
