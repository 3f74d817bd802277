using System.Formats.Tar;
using System.IO.Compression;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using Sandbox.Images;

namespace Sandbox.Tests.Images;

/// <summary>Builds a layer tar in memory, entry by entry, hostile ones included (PAX headers: long names, xattrs).</summary>
public sealed class LayerBuilder
{
    private static readonly DateTimeOffset DefaultTime = new(2024, 5, 6, 7, 8, 9, TimeSpan.Zero);
    private readonly List<PaxTarEntry> _entries = [];

    public LayerBuilder Dir(string name, int mode = 0x1ED, DateTimeOffset? mtime = null, Dictionary<string, string>? pax = null)
    {
        _entries.Add(new PaxTarEntry(TarEntryType.Directory, name, pax ?? []) { Mode = (UnixFileMode)mode, ModificationTime = mtime ?? DefaultTime });
        return this;
    }

    public LayerBuilder File(string name, string content = "", int mode = 0x1A4, DateTimeOffset? mtime = null, Dictionary<string, string>? pax = null) =>
        File(name, Encoding.UTF8.GetBytes(content), mode, mtime, pax);

    public LayerBuilder File(string name, byte[] content, int mode = 0x1A4, DateTimeOffset? mtime = null, Dictionary<string, string>? pax = null)
    {
        _entries.Add(new PaxTarEntry(TarEntryType.RegularFile, name, pax ?? [])
        {
            Mode = (UnixFileMode)mode,
            ModificationTime = mtime ?? DefaultTime,
            DataStream = new MemoryStream(content),
        });
        return this;
    }

    public LayerBuilder Symlink(string name, string target)
    {
        _entries.Add(new PaxTarEntry(TarEntryType.SymbolicLink, name) { LinkName = target, Mode = (UnixFileMode)0x1FF, ModificationTime = DefaultTime });
        return this;
    }

    public LayerBuilder Link(string name, string target)
    {
        _entries.Add(new PaxTarEntry(TarEntryType.HardLink, name) { LinkName = target, Mode = (UnixFileMode)0x1A4, ModificationTime = DefaultTime });
        return this;
    }

    public LayerBuilder CharDevice(string name, int major, int minor)
    {
        _entries.Add(new PaxTarEntry(TarEntryType.CharacterDevice, name) { DeviceMajor = major, DeviceMinor = minor, Mode = (UnixFileMode)0x1B6 });
        return this;
    }

    public LayerBuilder BlockDevice(string name, int major, int minor)
    {
        _entries.Add(new PaxTarEntry(TarEntryType.BlockDevice, name) { DeviceMajor = major, DeviceMinor = minor, Mode = (UnixFileMode)0x1B6 });
        return this;
    }

    public LayerBuilder Fifo(string name, int mode = 0x1A4)
    {
        _entries.Add(new PaxTarEntry(TarEntryType.Fifo, name) { Mode = (UnixFileMode)mode, ModificationTime = DefaultTime });
        return this;
    }

    /// <summary>An OCI whiteout for <paramref name="path"/> (dir/name → dir/.wh.name).</summary>
    public LayerBuilder Whiteout(string path)
    {
        int slash = path.LastIndexOf('/');
        string name = slash < 0 ? ".wh." + path : path[..(slash + 1)] + ".wh." + path[(slash + 1)..];
        return File(name);
    }

    public LayerBuilder Opaque(string dir) => File(dir.TrimEnd('/') + "/.wh..wh..opq");

    /// <summary>Gives the entry added last the owner <paramref name="uid"/>:<paramref name="gid"/> (every entry is 0:0 otherwise).</summary>
    public LayerBuilder Owner(int uid, int gid)
    {
        _entries[^1].Uid = uid;
        _entries[^1].Gid = gid;
        return this;
    }

    public byte[] Build() => Build(TarEntryFormat.Pax);

    /// <summary>The layer in <paramref name="format"/>: Ustar leaves out PAX's extended headers (and whatever they would hold).</summary>
    public byte[] Build(TarEntryFormat format)
    {
        if (_entries.Count == 0)
            return new byte[1024]; // an empty tar: the end-of-archive marker alone
        var ms = new MemoryStream();
        using (var w = new TarWriter(ms, format, leaveOpen: true))
        {
            foreach (PaxTarEntry e in _entries)
            {
                if (e.DataStream is not null)
                    e.DataStream.Position = 0;
                w.WriteEntry(format == TarEntryFormat.Ustar ? new UstarTarEntry(e) : e);
            }
        }
        return ms.ToArray();
    }
}

public enum ArchiveFormat
{
    DockerArchive,
    OciArchive,
    OciLayout,
}

/// <summary>Builds whole images (docker archive, OCI archive, OCI layout) from layer tars, the way docker save, skopeo and buildah lay them out.</summary>
internal sealed class ImageBuilder
{
    public List<byte[]> Layers { get; } = [];
    public LayerCompression Compression { get; set; } = LayerCompression.Gzip;
    public string Architecture { get; set; } = "amd64";
    public string Os { get; set; } = "linux";
    public string[]? RepoTags { get; set; } = ["example.com/test/image:1.0"];
    public string? RefName { get; set; }
    public string[] Env { get; set; } = ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "GREETING=hello"];
    public string[]? Entrypoint { get; set; } = ["/bin/sh", "-c"];
    public string[]? Cmd { get; set; } = ["echo hi"];
    public string? WorkingDir { get; set; } = "/work";
    public string? User { get; set; } = "nobody";
    /// <summary>Overrides the config's diff ids (to make them wrong).</summary>
    public List<string>? DiffIdsOverride { get; set; }
    /// <summary>Changes a layer blob after its digest was taken (index, byte offset; negative: the middle).</summary>
    public (int Layer, int Offset)? CorruptLayerByte { get; set; }
    /// <summary>Cuts bytes off the end of a layer blob after its digest was taken (index, how many).</summary>
    public (int Layer, int Bytes)? CutLayerTail { get; set; }
    /// <summary>States a wrong size for layer 0 in the manifest.</summary>
    public long? Layer0SizeOverride { get; set; }

    public ImageBuilder AddLayer(LayerBuilder layer)
    {
        Layers.Add(layer.Build());
        return this;
    }

    public static string Sha256(byte[] data) => "sha256:" + Convert.ToHexStringLower(SHA256.HashData(data));

    public static byte[] Compress(byte[] tar, LayerCompression compression)
    {
        switch (compression)
        {
            case LayerCompression.None:
                return tar;
            case LayerCompression.Gzip:
            {
                var ms = new MemoryStream();
                using (var gz = new GZipStream(ms, CompressionLevel.Fastest, leaveOpen: true))
                    gz.Write(tar);
                return ms.ToArray();
            }
            case LayerCompression.Zstd:
            {
                var ms = new MemoryStream();
                using (var z = new SharpCompress.Compressors.ZStandard.CompressionStream(ms, 3, 0, true))
                    z.Write(tar);
                return ms.ToArray();
            }
            default:
                throw new ArgumentOutOfRangeException(nameof(compression));
        }
    }

    private byte[] Damaged(int layer, byte[] blob)
    {
        if (CorruptLayerByte is { } c && c.Layer == layer)
        {
            blob = (byte[])blob.Clone();
            blob[c.Offset < 0 ? blob.Length / 2 : c.Offset] ^= 0x55;
        }
        if (CutLayerTail is { } cut && cut.Layer == layer)
            blob = blob[..^cut.Bytes];
        return blob;
    }

    public static string LayerMediaType(LayerCompression c) => c switch
    {
        LayerCompression.None => "application/vnd.oci.image.layer.v1.tar",
        LayerCompression.Gzip => "application/vnd.oci.image.layer.v1.tar+gzip",
        _ => "application/vnd.oci.image.layer.v1.tar+zstd",
    };

    public byte[] ConfigBytes()
    {
        var config = new JsonObject
        {
            ["created"] = "2024-05-06T07:08:09Z",
            ["architecture"] = Architecture,
            ["os"] = Os,
            ["config"] = new JsonObject
            {
                ["Env"] = new JsonArray([.. Env.Select(e => (JsonNode)e!)]),
                ["Entrypoint"] = Entrypoint is null ? null : new JsonArray([.. Entrypoint.Select(e => (JsonNode)e!)]),
                ["Cmd"] = Cmd is null ? null : new JsonArray([.. Cmd.Select(e => (JsonNode)e!)]),
                ["WorkingDir"] = WorkingDir,
                ["User"] = User,
                ["Labels"] = new JsonObject { ["org.example.test"] = "yes" },
            },
            ["rootfs"] = new JsonObject
            {
                ["type"] = "layers",
                ["diff_ids"] = new JsonArray([.. (DiffIdsOverride ?? Layers.Select(Sha256).ToList()).Select(d => (JsonNode)d!)]),
            },
        };
        return Encoding.UTF8.GetBytes(config.ToJsonString());
    }

    private List<byte[]> Blobs(LayerCompression compression)
    {
        var blobs = Layers.Select(l => Compress(l, compression)).ToList();
        return blobs;
    }

    /// <summary>Writes an OCI image layout into <paramref name="dir"/>; returns the manifest digest.</summary>
    public string WriteOciLayout(string dir, Func<string, JsonObject, byte[], JsonObject>? wrapIndex = null)
    {
        Directory.CreateDirectory(Path.Combine(dir, "blobs", "sha256"));
        var files = BuildOciFiles(wrapIndex);
        foreach (var (path, content) in files)
        {
            Directory.CreateDirectory(Path.GetDirectoryName(Path.Combine(dir, path))!);
            System.IO.File.WriteAllBytes(Path.Combine(dir, path), content);
        }
        return ManifestDigest!;
    }

    public string? ManifestDigest { get; private set; }

    /// <summary>The files of an OCI layout: path → content.</summary>
    public List<(string Path, byte[] Content)> BuildOciFiles(Func<string, JsonObject, byte[], JsonObject>? wrapIndex = null)
    {
        var files = new List<(string, byte[])>();
        byte[] config = ConfigBytes();
        string configDigest = Sha256(config);
        files.Add(("blobs/sha256/" + configDigest[7..], config));
        var layerDescriptors = new JsonArray();
        List<byte[]> blobs = Blobs(Compression);
        for (int i = 0; i < blobs.Count; i++)
        {
            byte[] blob = blobs[i];
            string digest = Sha256(blob);
            blob = Damaged(i, blob);
            files.Add(("blobs/sha256/" + digest[7..], blob));
            layerDescriptors.Add(new JsonObject
            {
                ["mediaType"] = LayerMediaType(Compression),
                ["digest"] = digest,
                ["size"] = i == 0 && Layer0SizeOverride is long s ? s : blob.Length,
            });
        }
        var manifest = new JsonObject
        {
            ["schemaVersion"] = 2,
            ["mediaType"] = "application/vnd.oci.image.manifest.v1+json",
            ["config"] = new JsonObject { ["mediaType"] = "application/vnd.oci.image.config.v1+json", ["digest"] = configDigest, ["size"] = config.Length },
            ["layers"] = layerDescriptors,
        };
        byte[] manifestBytes = Encoding.UTF8.GetBytes(manifest.ToJsonString());
        string manifestDigest = Sha256(manifestBytes);
        ManifestDigest = manifestDigest;
        files.Add(("blobs/sha256/" + manifestDigest[7..], manifestBytes));
        var descriptor = new JsonObject
        {
            ["mediaType"] = "application/vnd.oci.image.manifest.v1+json",
            ["digest"] = manifestDigest,
            ["size"] = manifestBytes.Length,
        };
        if (RefName is not null)
            descriptor["annotations"] = new JsonObject { ["org.opencontainers.image.ref.name"] = RefName };
        var index = new JsonObject { ["schemaVersion"] = 2, ["mediaType"] = "application/vnd.oci.image.index.v1+json", ["manifests"] = new JsonArray(descriptor) };
        if (wrapIndex is not null)
            index = wrapIndex(manifestDigest, descriptor, manifestBytes);
        files.Add(("oci-layout", """{"imageLayoutVersion":"1.0.0"}"""u8.ToArray()));
        files.Add(("index.json", Encoding.UTF8.GetBytes(index.ToJsonString())));
        return files;
    }

    public void WriteOciArchive(string path, Func<string, JsonObject, byte[], JsonObject>? wrapIndex = null) =>
        WriteTar(path, BuildOciFiles(wrapIndex));

    /// <summary>docker save's classic layout: HEX.json config, LAYERID/layer.tar, manifest.json, repositories.</summary>
    public void WriteDockerArchive(string path, bool blobsLayout = false)
    {
        var files = new List<(string, byte[])>();
        byte[] config = ConfigBytes();
        string configHex = Sha256(config)[7..];
        string configPath = blobsLayout ? "blobs/sha256/" + configHex : configHex + ".json";
        files.Add((configPath, config));
        var layerPaths = new List<string>();
        List<byte[]> blobs = Blobs(Compression);
        for (int i = 0; i < blobs.Count; i++)
        {
            byte[] blob = blobs[i];
            string hex = Sha256(blob)[7..];
            blob = Damaged(i, blob);
            string p = blobsLayout ? "blobs/sha256/" + hex : $"{hex}/layer.tar";
            layerPaths.Add(p);
            files.Add((p, blob));
        }
        var manifest = new JsonArray(new JsonObject
        {
            ["Config"] = configPath,
            ["RepoTags"] = RepoTags is null ? null : new JsonArray([.. RepoTags.Select(t => (JsonNode)t!)]),
            ["Layers"] = new JsonArray([.. layerPaths.Select(p => (JsonNode)p!)]),
        });
        files.Add(("manifest.json", Encoding.UTF8.GetBytes(manifest.ToJsonString())));
        files.Add(("repositories", "{}"u8.ToArray()));
        WriteTar(path, files);
    }

    public static void WriteTar(string path, IEnumerable<(string Path, byte[] Content)> files)
    {
        using FileStream fs = System.IO.File.Create(path);
        using var w = new TarWriter(fs, TarEntryFormat.Pax);
        var dirs = new HashSet<string>();
        foreach (var (p, content) in files)
        {
            string? d = Path.GetDirectoryName(p);
            if (!string.IsNullOrEmpty(d) && dirs.Add(d))
                w.WriteEntry(new PaxTarEntry(TarEntryType.Directory, d + "/") { Mode = (UnixFileMode)0x1ED });
            w.WriteEntry(new PaxTarEntry(TarEntryType.RegularFile, p) { DataStream = new MemoryStream(content), Mode = (UnixFileMode)0x1A4 });
        }
    }

    public void Write(ArchiveFormat format, string path)
    {
        switch (format)
        {
            case ArchiveFormat.DockerArchive:
                WriteDockerArchive(path);
                break;
            case ArchiveFormat.OciArchive:
                WriteOciArchive(path);
                break;
            default:
                WriteOciLayout(path);
                break;
        }
    }
}

/// <summary>Helpers to look at what an unpack produced.</summary>
internal static class Inspect
{
    public static Linux.FileStatus? LStat(string path) => Linux.FileSystemCalls.TryLStat(path);

    public static string? Xattr(string path, string name) =>
        Linux.FileSystemCalls.GetXattr(path, name) is { } v ? Encoding.UTF8.GetString(v) : null;

    /// <summary>Every path under <paramref name="root"/>, relative, sorted.</summary>
    public static List<string> Tree(string root)
    {
        // By hand with lstat: the enumerator's recursion would follow a symlink to / into the whole host.
        var result = new List<string>();
        void Walk(string dir)
        {
            foreach (string p in Directory.EnumerateFileSystemEntries(dir, "*", new EnumerationOptions { AttributesToSkip = 0 }))
            {
                result.Add(Path.GetRelativePath(root, p));
                if (LStat(p) is { Kind: Linux.FileKind.Directory })
                    Walk(p);
            }
        }
        Walk(root);
        result.Sort(StringComparer.Ordinal);
        return result;
    }
}

/// <summary>
/// A fresh temporary directory for image tests, removed with the store's own remover: layers keep
/// their images' modes (read-only directories), which a plain recursive delete cannot remove as an
/// unprivileged user.
/// </summary>
internal sealed class Scratch : IDisposable
{
    public Scratch()
    {
        Path = Sandbox.Rootfs.HostPaths.Resolve(Directory.CreateTempSubdirectory("sandbox-img-tests-").FullName);
    }

    public string Path { get; }

    public string Combine(params string[] parts) => System.IO.Path.Combine([Path, .. parts]);

    public string CreateDirectory(params string[] parts)
    {
        string dir = Combine(parts);
        Directory.CreateDirectory(dir);
        return dir;
    }

    public void Dispose() => Sandbox.Storage.TreeRemover.Remove(Path);
}
