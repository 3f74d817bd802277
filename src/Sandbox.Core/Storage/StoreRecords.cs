using System.Collections.Immutable;
using System.Text.Json.Serialization;
using Sandbox.Identity;
using Sandbox.Images;
using Sandbox.Runtime;

namespace Sandbox.Storage;

// What the store writes: images/HEX.json (one per image) and layers/KEY.json (one per unpacked
// layer). Paths inside are relative to the store root, so a store can be moved or copied whole.

internal sealed class StoredImage
{
    public int SchemaVersion { get; set; } = 1;
    public string Digest { get; set; } = "";
    public string ConfigDigest { get; set; } = "";
    public List<string> Names { get; set; } = [];
    public DateTimeOffset? Created { get; set; }
    public DateTimeOffset Imported { get; set; }
    public long Size { get; set; }
    public string Platform { get; set; } = "";
    public string SourceFormat { get; set; } = "";
    /// <summary>Written for readers of the file; the record's value is computed from the layers' owners.</summary>
    public bool OwnershipFlattened { get; set; } = true;
    public bool HasManifest { get; set; }
    public List<StoredLayer> Layers { get; set; } = [];
    public StoredConfig Config { get; set; } = new();

    public ImageRecord ToRecord(string root)
    {
        // A loop, not Select().ToImmutableArray(): every `run IMAGE` converts its record, and
        // NativeAOT resolves a LINQ operator's generic calls at their first use (RootfsPlanner).
        var layers = ImmutableArray.CreateBuilder<LayerInfo>(Layers.Count);
        foreach (StoredLayer l in Layers)
        {
            layers.Add(new LayerInfo
            {
                DiffId = l.DiffId,
                Directory = Path.Combine(root, ImageStore.LayersDirectoryName, l.Key),
                Size = l.Size,
                Ownership = l.Owners?.ToOwnership() ?? LayerOwnership.Legacy,
            });
        }
        return new()
        {
            Digest = Digest,
            ConfigDigest = ConfigDigest,
            Names = [.. Names],
            Created = Created,
            Imported = Imported,
            Size = Size,
            Platform = Platform,
            SourceFormat = SourceFormat,
            Layers = layers.MoveToImmutable(),
            Config = Config.ToConfig(),
        };
    }
}

internal sealed class StoredLayer
{
    public string DiffId { get; set; } = "";
    public string Key { get; set; } = "";
    public long Size { get; set; }
    /// <summary>Null in records written before owners were kept: flattened.</summary>
    public StoredOwners? Owners { get; set; }
}

/// <summary>
/// How a layer directory's files are owned (in layers/KEY.json and in each image record that uses
/// it): <c>flattened</c> (the caller's), or <c>mapped</c> with the exact map the owners were written
/// for (0 → hostUid/hostGid, 1..count → start..start+count-1), and how many entries have owners other than 0:0.
/// </summary>
internal sealed class StoredOwners
{
    public const string FlattenedKind = "flattened";
    public const string MappedKind = "mapped";

    public string Kind { get; set; } = FlattenedKind;
    public uint? HostUid { get; set; }
    public uint? HostGid { get; set; }
    public long? UidStart { get; set; }
    public long? UidCount { get; set; }
    public long? GidStart { get; set; }
    public long? GidCount { get; set; }
    public long? NonRootEntries { get; set; }

    public static StoredOwners Flattened(long? nonRootEntries) => new() { Kind = FlattenedKind, NonRootEntries = nonRootEntries };

    public static StoredOwners Mapped(IdMapping map, long nonRootEntries) => new()
    {
        Kind = MappedKind,
        HostUid = map.HostUid,
        HostGid = map.HostGid,
        UidStart = map.Uids.Start,
        UidCount = map.Uids.Count,
        GidStart = map.Gids.Start,
        GidCount = map.Gids.Count,
        NonRootEntries = nonRootEntries,
    };

    /// <summary>The map of a mapped record; null when flattened or incomplete.</summary>
    [JsonIgnore]
    public IdMapping? Map =>
        Kind == MappedKind && HostUid is uint u && HostGid is uint g && UidStart is long us && UidCount is long uc && GidStart is long gs && GidCount is long gc
            ? new IdMapping(u, g, new IdRange(us, uc), new IdRange(gs, gc))
            : null;

    public LayerOwnership ToOwnership() => Map is IdMapping map
        ? new LayerOwnership { Kind = LayerOwnershipKind.Mapped, Map = map, NonRootEntries = NonRootEntries }
        : new LayerOwnership { Kind = LayerOwnershipKind.Flattened, NonRootEntries = NonRootEntries };
}

internal sealed class StoredConfig
{
    public List<string>? Env { get; set; }
    public List<string>? Entrypoint { get; set; }
    public List<string>? Cmd { get; set; }
    public string? WorkingDir { get; set; }
    public string? User { get; set; }
    public Dictionary<string, string>? Labels { get; set; }
    public string? StopSignal { get; set; }

    public static StoredConfig From(OciRuntimeConfig? c) => new()
    {
        Env = c?.Env,
        Entrypoint = c?.Entrypoint,
        Cmd = c?.Cmd,
        WorkingDir = string.IsNullOrEmpty(c?.WorkingDir) ? null : c.WorkingDir,
        User = string.IsNullOrEmpty(c?.User) ? null : c.User,
        Labels = c?.Labels,
        StopSignal = string.IsNullOrEmpty(c?.StopSignal) ? null : c.StopSignal,
    };

    public ImageConfig ToConfig() => new()
    {
        Env = [.. Env ?? []],
        Entrypoint = Entrypoint is null ? null : [.. Entrypoint],
        Cmd = Cmd is null ? null : [.. Cmd],
        WorkingDir = WorkingDir,
        User = User,
        // Most images have no labels: no dictionary to build then (the default comparer of string
        // keys is ordinal too).
        Labels = Labels is { Count: > 0 } labels ? labels.ToImmutableDictionary(StringComparer.Ordinal) : System.Collections.ObjectModel.ReadOnlyDictionary<string, string>.Empty,
        StopSignal = StopSignal,
    };
}

/// <summary>Written before a layer directory is renamed into place: a directory under l/ always has one.</summary>
internal sealed class StoredLayerMeta
{
    public string DiffId { get; set; } = "";
    public long Size { get; set; }
    public long Entries { get; set; }
    public int Whiteouts { get; set; }
    public int OpaqueDirectories { get; set; }
    public int SkippedDevices { get; set; }
    public int DroppedXattrs { get; set; }
    public int SkippedOther { get; set; }
    public DateTimeOffset Unpacked { get; set; }
    /// <summary>Null in metadata written before owners were kept: flattened, owners in the tar unknown.</summary>
    public StoredOwners? Owners { get; set; }
}

[JsonSourceGenerationOptions(WriteIndented = true, PropertyNamingPolicy = JsonKnownNamingPolicy.CamelCase,
    DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull)]
[JsonSerializable(typeof(StoredImage))]
[JsonSerializable(typeof(StoredLayerMeta))]
internal sealed partial class StoreJsonContext : JsonSerializerContext
{
}
