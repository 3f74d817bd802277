using System.Collections.Immutable;
using System.Text.Json.Serialization;
using Sandbox.Images;

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
    public bool OwnershipFlattened { get; set; } = true;
    public bool HasManifest { get; set; }
    public List<StoredLayer> Layers { get; set; } = [];
    public StoredConfig Config { get; set; } = new();

    public ImageRecord ToRecord(string root) => new()
    {
        Digest = Digest,
        ConfigDigest = ConfigDigest,
        Names = [.. Names],
        Created = Created,
        Imported = Imported,
        Size = Size,
        Platform = Platform,
        SourceFormat = SourceFormat,
        OwnershipFlattened = OwnershipFlattened,
        Layers = Layers.Select(l => new LayerInfo { DiffId = l.DiffId, Directory = Path.Combine(root, ImageStore.LayersDirectoryName, l.Key), Size = l.Size }).ToImmutableArray(),
        Config = Config.ToConfig(),
    };
}

internal sealed class StoredLayer
{
    public string DiffId { get; set; } = "";
    public string Key { get; set; } = "";
    public long Size { get; set; }
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
        Labels = (Labels ?? []).ToImmutableDictionary(StringComparer.Ordinal),
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
}

[JsonSourceGenerationOptions(WriteIndented = true, PropertyNamingPolicy = JsonKnownNamingPolicy.CamelCase,
    DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull)]
[JsonSerializable(typeof(StoredImage))]
[JsonSerializable(typeof(StoredLayerMeta))]
internal sealed partial class StoreJsonContext : JsonSerializerContext
{
}
