using System.Collections.Immutable;

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
    public ImmutableDictionary<string, string> Labels { get; init; } = ImmutableDictionary<string, string>.Empty;
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
    /// True: the files belong to the user who imported the image, whatever owners the layers
    /// recorded (an unprivileged user cannot chown). Inside a single-uid user namespace they
    /// appear as root's.
    /// </summary>
    public bool OwnershipFlattened { get; init; } = true;
}

/// <summary>What <c>prune</c> removed.</summary>
public sealed record PruneResult(int LayersRemoved, long BytesFreed, int BlobsRemoved, int TemporaryEntriesRemoved);
