using System.Text.Json;

namespace Sandbox.Storage;

/// <summary>
/// Reads an image record (images/HEX.json) with <see cref="JsonDocument"/> instead of the
/// serializer. Every <c>sandbox run IMAGE</c> reads the store's records, and the serializer's first
/// use builds the metadata of the whole record graph (<c>StoreJsonContext.StoredImage</c>): about
/// 1.3 ms of a 9 ms warm start in perf, against microseconds for a parse. Records are still written
/// by the serializer (<see cref="StoreJsonContext"/>); a test reads back a record with every property
/// set, so a property added there and not here fails it.
/// Same rules as the serializer's defaults: camelCase names, case-sensitive, unknown names ignored,
/// null or missing leaves the default; a value of the wrong kind is a <see cref="JsonException"/>.
/// </summary>
internal static class StoredImageReader
{
    public static StoredImage Read(ReadOnlyMemory<byte> utf8Json)
    {
        try
        {
            using JsonDocument document = JsonDocument.Parse(utf8Json);
            JsonElement root = document.RootElement;
            Expect(root, JsonValueKind.Object);
            var image = new StoredImage();
            foreach (JsonProperty p in root.EnumerateObject())
            {
                JsonElement v = p.Value;
                if (IsNull(v))
                {
                    SetNull(image, p.Name);
                    continue;
                }
                switch (p.Name)
                {
                    case "schemaVersion": image.SchemaVersion = v.GetInt32(); break;
                    case "digest": image.Digest = String(v); break;
                    case "configDigest": image.ConfigDigest = String(v); break;
                    case "names": image.Names = Strings(v); break;
                    case "created": image.Created = v.GetDateTimeOffset(); break;
                    case "imported": image.Imported = v.GetDateTimeOffset(); break;
                    case "size": image.Size = v.GetInt64(); break;
                    case "platform": image.Platform = String(v); break;
                    case "sourceFormat": image.SourceFormat = String(v); break;
                    case "ownershipFlattened": image.OwnershipFlattened = v.GetBoolean(); break;
                    case "hasManifest": image.HasManifest = v.GetBoolean(); break;
                    case "layers": image.Layers = Layers(v); break;
                    case "config": image.Config = Config(v); break;
                }
            }
            return image;
        }
        catch (Exception e) when (e is InvalidOperationException or FormatException)
        {
            // JsonElement's accessors throw these for a value of another kind or out of range.
            throw new JsonException(e.Message, e);
        }
    }

    // The serializer sets a reference-typed property to null for a JSON null; value types cannot be null.
    private static void SetNull(StoredImage image, string name)
    {
        switch (name)
        {
            case "digest": image.Digest = null!; break;
            case "configDigest": image.ConfigDigest = null!; break;
            case "names": image.Names = null!; break;
            case "created": image.Created = null; break;
            case "platform": image.Platform = null!; break;
            case "sourceFormat": image.SourceFormat = null!; break;
            case "layers": image.Layers = null!; break;
            case "config": image.Config = null!; break;
            case "schemaVersion" or "imported" or "size" or "ownershipFlattened" or "hasManifest":
                throw new JsonException($"'{name}' cannot be null");
        }
    }

    private static List<StoredLayer> Layers(JsonElement array)
    {
        Expect(array, JsonValueKind.Array);
        var layers = new List<StoredLayer>(array.GetArrayLength());
        foreach (JsonElement item in array.EnumerateArray())
        {
            Expect(item, JsonValueKind.Object);
            var layer = new StoredLayer();
            foreach (JsonProperty p in item.EnumerateObject())
            {
                JsonElement v = p.Value;
                switch (p.Name)
                {
                    case "diffId": layer.DiffId = NullableString(v)!; break;
                    case "key": layer.Key = NullableString(v)!; break;
                    case "size": layer.Size = v.GetInt64(); break;
                    case "owners": layer.Owners = IsNull(v) ? null : Owners(v); break;
                }
            }
            layers.Add(layer);
        }
        return layers;
    }

    private static StoredOwners Owners(JsonElement value)
    {
        Expect(value, JsonValueKind.Object);
        var owners = new StoredOwners();
        foreach (JsonProperty p in value.EnumerateObject())
        {
            JsonElement v = p.Value;
            switch (p.Name)
            {
                case "kind": owners.Kind = NullableString(v)!; break;
                case "hostUid": owners.HostUid = IsNull(v) ? null : v.GetUInt32(); break;
                case "hostGid": owners.HostGid = IsNull(v) ? null : v.GetUInt32(); break;
                case "uidStart": owners.UidStart = NullableInt64(v); break;
                case "uidCount": owners.UidCount = NullableInt64(v); break;
                case "gidStart": owners.GidStart = NullableInt64(v); break;
                case "gidCount": owners.GidCount = NullableInt64(v); break;
                case "nonRootEntries": owners.NonRootEntries = NullableInt64(v); break;
            }
        }
        return owners;
    }

    private static StoredConfig Config(JsonElement value)
    {
        Expect(value, JsonValueKind.Object);
        var config = new StoredConfig();
        foreach (JsonProperty p in value.EnumerateObject())
        {
            JsonElement v = p.Value;
            switch (p.Name)
            {
                case "env": config.Env = IsNull(v) ? null : Strings(v); break;
                case "entrypoint": config.Entrypoint = IsNull(v) ? null : Strings(v); break;
                case "cmd": config.Cmd = IsNull(v) ? null : Strings(v); break;
                case "workingDir": config.WorkingDir = NullableString(v); break;
                case "user": config.User = NullableString(v); break;
                case "labels": config.Labels = IsNull(v) ? null : Labels(v); break;
                case "stopSignal": config.StopSignal = NullableString(v); break;
            }
        }
        return config;
    }

    private static Dictionary<string, string> Labels(JsonElement value)
    {
        Expect(value, JsonValueKind.Object);
        var labels = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (JsonProperty p in value.EnumerateObject())
            labels[p.Name] = NullableString(p.Value)!;
        return labels;
    }

    private static List<string> Strings(JsonElement array)
    {
        Expect(array, JsonValueKind.Array);
        var list = new List<string>(array.GetArrayLength());
        foreach (JsonElement item in array.EnumerateArray())
            list.Add(NullableString(item)!);
        return list;
    }

    private static string String(JsonElement value)
    {
        Expect(value, JsonValueKind.String);
        return value.GetString()!;
    }

    private static string? NullableString(JsonElement value) => IsNull(value) ? null : String(value);

    private static long? NullableInt64(JsonElement value) => IsNull(value) ? null : value.GetInt64();

    private static bool IsNull(JsonElement value) => value.ValueKind == JsonValueKind.Null;

    private static void Expect(JsonElement value, JsonValueKind kind)
    {
        if (value.ValueKind != kind)
            throw new JsonException($"expected {kind}, found {value.ValueKind}");
    }
}
