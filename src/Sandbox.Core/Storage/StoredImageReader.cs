using System.Globalization;
using System.Text.Json;

namespace Sandbox.Storage;

/// <summary>
/// Reads an image record (images/HEX.json) with <see cref="RecordJson"/> instead of the serializer.
/// Every <c>sandbox run IMAGE</c> reads the store's records, and the serializer's first use builds
/// the metadata of the whole record graph (<c>StoreJsonContext.StoredImage</c>): about 1.3 ms of a 9
/// ms warm start in perf, against microseconds for a parse; <see cref="JsonDocument"/>, used here
/// before, cost about 50 µs of System.Text.Json's own start-up (RecordJson says why). Records are
/// still written by the serializer (<see cref="StoreJsonContext"/>); a test reads back a record with
/// every property set, so a property added there and not here fails it.
/// Same rules as the serializer's defaults: camelCase names, case-sensitive, unknown names ignored,
/// null or missing leaves the default; a value of the wrong kind is a <see cref="JsonException"/>.
/// </summary>
internal static class StoredImageReader
{
    public static StoredImage Read(ReadOnlyMemory<byte> utf8Json)
    {
        RecordJsonValue root = RecordJson.Parse(utf8Json.Span);
        Expect(root, RecordJsonKind.Object);
        var image = new StoredImage();
        foreach (var (name, v) in root.Members!)
        {
            if (IsNull(v))
            {
                SetNull(image, name);
                continue;
            }
            switch (name)
            {
                case "schemaVersion": image.SchemaVersion = Int32(v); break;
                case "digest": image.Digest = String(v); break;
                case "configDigest": image.ConfigDigest = String(v); break;
                case "names": image.Names = Strings(v); break;
                case "created": image.Created = DateTime(v); break;
                case "imported": image.Imported = DateTime(v); break;
                case "size": image.Size = Int64(v); break;
                case "platform": image.Platform = String(v); break;
                case "sourceFormat": image.SourceFormat = String(v); break;
                case "ownershipFlattened": image.OwnershipFlattened = Boolean(v); break;
                case "hasManifest": image.HasManifest = Boolean(v); break;
                case "layers": image.Layers = Layers(v); break;
                case "config": image.Config = Config(v); break;
            }
        }
        return image;
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

    private static List<StoredLayer> Layers(RecordJsonValue array)
    {
        Expect(array, RecordJsonKind.Array);
        var layers = new List<StoredLayer>(array.Items!.Count);
        foreach (RecordJsonValue item in array.Items)
        {
            Expect(item, RecordJsonKind.Object);
            var layer = new StoredLayer();
            foreach (var (name, v) in item.Members!)
            {
                switch (name)
                {
                    case "diffId": layer.DiffId = NullableString(v)!; break;
                    case "key": layer.Key = NullableString(v)!; break;
                    case "size": layer.Size = Int64(v); break;
                    case "owners": layer.Owners = IsNull(v) ? null : Owners(v); break;
                }
            }
            layers.Add(layer);
        }
        return layers;
    }

    private static StoredOwners Owners(RecordJsonValue value)
    {
        Expect(value, RecordJsonKind.Object);
        var owners = new StoredOwners();
        foreach (var (name, v) in value.Members!)
        {
            switch (name)
            {
                case "kind": owners.Kind = NullableString(v)!; break;
                case "hostUid": owners.HostUid = IsNull(v) ? null : UInt32(v); break;
                case "hostGid": owners.HostGid = IsNull(v) ? null : UInt32(v); break;
                case "uidStart": owners.UidStart = NullableInt64(v); break;
                case "uidCount": owners.UidCount = NullableInt64(v); break;
                case "gidStart": owners.GidStart = NullableInt64(v); break;
                case "gidCount": owners.GidCount = NullableInt64(v); break;
                case "nonRootEntries": owners.NonRootEntries = NullableInt64(v); break;
            }
        }
        return owners;
    }

    private static StoredConfig Config(RecordJsonValue value)
    {
        Expect(value, RecordJsonKind.Object);
        var config = new StoredConfig();
        foreach (var (name, v) in value.Members!)
        {
            switch (name)
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

    private static Dictionary<string, string> Labels(RecordJsonValue value)
    {
        Expect(value, RecordJsonKind.Object);
        var labels = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var (name, v) in value.Members!)
            labels[name] = NullableString(v)!;
        return labels;
    }

    private static List<string> Strings(RecordJsonValue array)
    {
        Expect(array, RecordJsonKind.Array);
        var list = new List<string>(array.Items!.Count);
        foreach (RecordJsonValue item in array.Items)
            list.Add(NullableString(item)!);
        return list;
    }

    private static string String(RecordJsonValue value)
    {
        Expect(value, RecordJsonKind.String);
        return value.Text!;
    }

    private static string? NullableString(RecordJsonValue value) => IsNull(value) ? null : String(value);

    private static long? NullableInt64(RecordJsonValue value) => IsNull(value) ? null : Int64(value);

    // Whole numbers as the serializer takes them: no fraction or exponent, in the type's range.
    private static long Int64(RecordJsonValue value)
    {
        Expect(value, RecordJsonKind.Number);
        return long.TryParse(value.Text, NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out long n)
            ? n
            : throw new JsonException($"{value.Text} is not a whole number in range");
    }

    private static int Int32(RecordJsonValue value)
    {
        Expect(value, RecordJsonKind.Number);
        return int.TryParse(value.Text, NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out int n)
            ? n
            : throw new JsonException($"{value.Text} is not a 32-bit whole number");
    }

    private static uint UInt32(RecordJsonValue value)
    {
        Expect(value, RecordJsonKind.Number);
        return uint.TryParse(value.Text, NumberStyles.None, CultureInfo.InvariantCulture, out uint n)
            ? n
            : throw new JsonException($"{value.Text} is not an unsigned 32-bit number");
    }

    private static bool Boolean(RecordJsonValue value) => value.Kind switch
    {
        RecordJsonKind.True => true,
        RecordJsonKind.False => false,
        _ => throw new JsonException($"expected a boolean, found {value.Kind}"),
    };

    private static DateTimeOffset DateTime(RecordJsonValue value)
    {
        string text = String(value);
        return IsoDate.TryParse(text, out DateTimeOffset date) ? date : throw new JsonException($"'{text}' is not an ISO 8601 date and time");
    }

    private static bool IsNull(RecordJsonValue value) => value.Kind == RecordJsonKind.Null;

    private static void Expect(RecordJsonValue value, RecordJsonKind kind)
    {
        if (value.Kind != kind)
            throw new JsonException($"expected {kind}, found {value.Kind}");
    }
}

/// <summary>
/// The date and time forms the serializer writes for a DateTimeOffset: <c>yyyy-MM-ddTHH:mm:ss</c>,
/// 0 to 7 digits of fraction (it reads up to 16), then <c>Z</c> or <c>±HH:mm</c>. Anything else goes to
/// <see cref="DateTimeOffset.TryParseExact(string, string[], IFormatProvider, DateTimeStyles, out DateTimeOffset)"/>
/// with the ISO 8601 forms the serializer also reads (date only, no offset: UTC).
/// </summary>
internal static class IsoDate
{
    private static readonly string[] s_otherForms =
        ["yyyy'-'MM'-'dd", "yyyy'-'MM'-'dd'T'HH':'mm", "yyyy'-'MM'-'dd'T'HH':'mm':'ss", "yyyy'-'MM'-'dd'T'HH':'mm':'ss.FFFFFFF", "yyyy'-'MM'-'dd'T'HH':'mmzzz"];

    public static bool TryParse(string text, out DateTimeOffset value)
    {
        if (TryParseWritten(text, out value))
            return true;
        return DateTimeOffset.TryParseExact(text, s_otherForms, CultureInfo.InvariantCulture, DateTimeStyles.AssumeUniversal, out value);
    }

    private static bool TryParseWritten(string s, out DateTimeOffset value)
    {
        value = default;
        if (s.Length < 20 || s[4] != '-' || s[7] != '-' || s[10] != 'T' || s[13] != ':' || s[16] != ':')
            return false;
        if (!Number(s, 0, 4, out int year) || !Number(s, 5, 2, out int month) || !Number(s, 8, 2, out int day) ||
            !Number(s, 11, 2, out int hour) || !Number(s, 14, 2, out int minute) || !Number(s, 17, 2, out int second))
            return false;
        int at = 19;
        long ticks = 0;
        if (at < s.Length && s[at] == '.')
        {
            at++;
            int digits = 0;
            // The serializer takes up to 16 digits and keeps the first 7 (a tick is 100 ns).
            while (at < s.Length && char.IsAsciiDigit(s[at]))
            {
                if (++digits > 16)
                    return false;
                if (digits <= 7)
                    ticks = ticks * 10 + (s[at] - '0');
                at++;
            }
            if (digits == 0)
                return false;
            for (int i = digits; i < 7; i++)
                ticks *= 10;
        }
        TimeSpan offset;
        if (at == s.Length - 1 && s[at] == 'Z')
        {
            offset = TimeSpan.Zero;
        }
        else if (at == s.Length - 6 && s[at] is '+' or '-' && s[at + 3] == ':' &&
                 Number(s, at + 1, 2, out int offsetHours) && Number(s, at + 4, 2, out int offsetMinutes) && offsetHours <= 14 && offsetMinutes < 60)
        {
            offset = new TimeSpan(offsetHours, offsetMinutes, 0);
            if (s[at] == '-')
                offset = -offset;
        }
        else
        {
            return false;
        }
        if (month is < 1 or > 12 || day < 1 || day > System.DateTime.DaysInMonth(year == 0 ? 1 : year, month) || year == 0 ||
            hour > 23 || minute > 59 || second > 59)
            return false;
        try
        {
            value = new DateTimeOffset(year, month, day, hour, minute, second, offset).AddTicks(ticks);
            return true;
        }
        catch (ArgumentOutOfRangeException)
        {
            return false; // the offset takes it out of DateTimeOffset's range
        }
    }

    private static bool Number(string s, int start, int length, out int value)
    {
        value = 0;
        for (int i = start; i < start + length; i++)
        {
            if (!char.IsAsciiDigit(s[i]))
                return false;
            value = value * 10 + (s[i] - '0');
        }
        return true;
    }
}
