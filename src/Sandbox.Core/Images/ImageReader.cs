using System.Text.Json;
using System.Text.Json.Serialization.Metadata;

namespace Sandbox.Images;

/// <summary>A layer to import: where its blob is in the source, and what must hash to what.</summary>
internal sealed record LayerSource(
    int Index,
    string Path,
    long BlobSize,
    Digest? BlobDigest,
    LayerCompression? Compression,
    Digest DiffId,
    string What);

/// <summary>An image found in a source: its config, verified, and its layers, not yet read.</summary>
internal sealed record ResolvedImage(
    string Format,
    Digest Digest,
    Digest ConfigDigest,
    byte[] ConfigBytes,
    byte[]? ManifestBytes,
    OciImageConfig Config,
    IReadOnlyList<LayerSource> Layers,
    IReadOnlyList<string> Names,
    IReadOnlyList<string> Warnings);

/// <summary>
/// Finds the image in a docker archive (<c>manifest.json</c>) or an OCI layout (<c>oci-layout</c> +
/// <c>index.json</c>, as a directory or a tarball), following nested indexes to the manifest for
/// the requested platform (the host's by default). Every JSON blob it reads by digest is verified
/// (size and digest) before it is parsed.
/// </summary>
internal sealed class ImageReader(ImageSource source, ImportLimits limits)
{
    private const int MaxIndexDepth = 4;
    private readonly List<string> _warnings = [];

    public ResolvedImage Read(string? requestedName, Platform? requestedPlatform)
    {
        bool oci = source.Exists("oci-layout") && source.Exists("index.json");
        bool docker = source.Exists("manifest.json");
        if (oci)
            return ReadOci(requestedPlatform, docker);
        if (docker)
            return ReadDocker(requestedName, requestedPlatform);
        throw new SandboxException(SandboxErrorCode.ImageFormatInvalid,
            $"{source.Description}: neither a docker archive (manifest.json) nor an OCI image layout (oci-layout and index.json)");
    }

    // ---- OCI ---------------------------------------------------------------------------------

    private ResolvedImage ReadOci(Platform? requested, bool alsoDocker)
    {
        OciLayoutFile layout = Parse(source.ReadAll("oci-layout", limits.MaxJsonSize), OciJsonContext.Default.OciLayoutFile, "oci-layout");
        if (layout.ImageLayoutVersion is not { } version || !version.StartsWith("1.", StringComparison.Ordinal))
            throw Invalid($"oci-layout: unsupported imageLayoutVersion '{layout.ImageLayoutVersion}'");
        OciIndex index = Parse(source.ReadAll("index.json", limits.MaxJsonSize), OciJsonContext.Default.OciIndex, "index.json");

        var names = new List<string>();
        (OciDescriptor descriptor, byte[] manifestBytes) = SelectManifest(index, requested, "index.json", depth: 0, names);
        Digest manifestDigest = Digest.Parse(descriptor.Digest, "manifest descriptor");
        OciManifest manifest = Parse(manifestBytes, OciJsonContext.Default.OciManifest, $"manifest {manifestDigest}");
        if (manifest.SchemaVersion != 2)
            throw Invalid($"manifest {manifestDigest}: schemaVersion {manifest.SchemaVersion} is not supported (2 expected)");
        if (manifest.Config is not { } configDescriptor)
            throw Invalid($"manifest {manifestDigest}: no config");

        Digest configDigest = Digest.Parse(configDescriptor.Digest, $"manifest {manifestDigest} config");
        byte[] configBytes = ReadBlob(configDigest, configDescriptor.Size, $"config {configDigest}");
        OciImageConfig config = Parse(configBytes, OciJsonContext.Default.OciImageConfig, $"config {configDigest}");
        List<Digest> diffIds = DiffIds(config, configDigest);
        CheckPlatform(config, requested);

        List<OciDescriptor> layers = manifest.Layers ?? [];
        if (layers.Count != diffIds.Count)
            throw Invalid($"manifest {manifestDigest} lists {layers.Count} layers but its config has {diffIds.Count} diff ids");
        var result = new List<LayerSource>();
        for (int i = 0; i < layers.Count; i++)
        {
            OciDescriptor l = layers[i];
            Digest blob = Digest.Parse(l.Digest, $"manifest {manifestDigest} layer {i + 1}");
            if (l.MediaType?.Contains("encrypted", StringComparison.Ordinal) == true)
                throw Invalid($"layer {blob}: encrypted layers ({l.MediaType}) are not supported");
            LayerCompression compression = MediaTypes.LayerCompressionOf(l.MediaType)
                ?? throw Invalid($"layer {blob}: media type '{l.MediaType}' is not a layer type this store reads (tar, tar+gzip, tar+zstd)");
            string path = BlobPath(blob);
            if (!source.Exists(path))
                throw Invalid(l.Urls is { Count: > 0 }
                    ? $"layer {blob} is a foreign layer (to be downloaded from {l.Urls[0]}): not in the archive"
                    : $"layer {blob} ({path}) is not in the archive");
            if (l.Size < 0)
                throw Invalid($"layer {blob}: descriptor without a size");
            result.Add(new LayerSource(i, path, l.Size, blob, compression, diffIds[i], $"layer {blob}"));
        }

        if (names.Count == 0 && alsoDocker)
            names.AddRange(DockerNamesFor(configDigest));
        return new ResolvedImage(source.IsArchive ? "oci-archive" : "oci-layout", manifestDigest, configDigest, configBytes, manifestBytes,
            config, result, names.Distinct().ToList(), _warnings);
    }

    /// <summary>
    /// Picks the manifest: among an index's entries that are manifests or indexes (attestations
    /// excluded), the one for the platform (requested or host) when they state platforms, else the
    /// only one. Nested indexes are read (verified) and searched the same way.
    /// </summary>
    private (OciDescriptor, byte[]) SelectManifest(OciIndex index, Platform? requested, string what, int depth, List<string> names)
    {
        if (depth > MaxIndexDepth)
            throw Invalid($"{what}: indexes nested more than {MaxIndexDepth} deep");
        var candidates = (index.Manifests ?? [])
            .Where(d => MediaTypes.IsIndex(d.MediaType) || MediaTypes.IsManifest(d.MediaType) || d.MediaType is null)
            .Where(d => d.Platform?.Os != "unknown" && d.Annotations?.ContainsKey("vnd.docker.reference.type") != true)
            .ToList();
        if (candidates.Count == 0)
        {
            if ((index.Manifests ?? []).Any(d => d.MediaType is MediaTypes.DockerManifestV1 or MediaTypes.DockerManifestV1Signed))
                throw Invalid($"{what}: docker schema 1 manifests are not supported");
            throw Invalid($"{what}: lists no image manifest");
        }

        Platform platform = requested ?? Platform.Host;
        OciDescriptor chosen;
        var withPlatform = candidates.Where(d => d.Platform is not null).ToList();
        if (withPlatform.Count > 0)
        {
            chosen = withPlatform.FirstOrDefault(d => platform.Matches(d.Platform!.Os, d.Platform.Architecture, d.Platform.Variant))
                ?? throw new SandboxException(SandboxErrorCode.PlatformNotFound,
                    $"{source.Description}: no image for {platform}{(requested is null ? " (this host)" : "")}; it has " +
                    string.Join(", ", withPlatform.Select(d => PlatformText(d.Platform!)).Distinct()) + ". Choose one with --platform");
        }
        else if (candidates.Count == 1)
        {
            chosen = candidates[0];
        }
        else
        {
            string refs = string.Join(", ", candidates.Select(d => d.Annotations?.GetValueOrDefault("org.opencontainers.image.ref.name") ?? d.Digest));
            throw Invalid($"{what}: holds {candidates.Count} images ({refs}); import one image per archive or layout");
        }

        AddNames(chosen.Annotations, names);
        Digest digest = Digest.Parse(chosen.Digest, $"{what} entry");
        byte[] bytes = ReadBlob(digest, chosen.Size, $"manifest {digest}");
        string? mediaType = chosen.MediaType;
        if (mediaType is null || MediaTypes.IsIndex(mediaType))
        {
            // A descriptor without a media type: the document says what it is.
            OciManifest probe = Parse(bytes, OciJsonContext.Default.OciManifest, $"manifest {digest}");
            if (MediaTypes.IsIndex(mediaType) || MediaTypes.IsIndex(probe.MediaType) || (probe.Manifests is not null && probe.Config is null))
            {
                OciIndex nested = Parse(bytes, OciJsonContext.Default.OciIndex, $"index {digest}");
                return SelectManifest(nested, requested, $"index {digest}", depth + 1, names);
            }
        }
        return (chosen, bytes);
    }

    private static void AddNames(Dictionary<string, string>? annotations, List<string> names)
    {
        if (annotations is null)
            return;
        // containerd and docker write the full name; OCI's ref.name is often only a tag ("latest"): a name only when it says more.
        if (annotations.TryGetValue("io.containerd.image.name", out string? full) && ImageName.TryNormalize(full, out string? n1))
            names.Add(n1);
        if (annotations.TryGetValue("org.opencontainers.image.ref.name", out string? refName)
            && (refName.Contains('/') || refName.Contains(':')) && ImageName.TryNormalize(refName, out string? n2))
            names.Add(n2);
    }

    private static string PlatformText(OciPlatform p) =>
        p.Variant is { Length: > 0 } ? $"{p.Os}/{p.Architecture}/{p.Variant}" : $"{p.Os}/{p.Architecture}";

    private IEnumerable<string> DockerNamesFor(Digest configDigest)
    {
        List<DockerArchiveEntry> entries;
        try
        {
            entries = Parse(source.ReadAll("manifest.json", limits.MaxJsonSize), OciJsonContext.Default.ListDockerArchiveEntry, "manifest.json") ?? [];
        }
        catch (SandboxException)
        {
            yield break;
        }
        foreach (DockerArchiveEntry e in entries)
        {
            if (e.Config is null || !e.Config.Contains(configDigest.Hex, StringComparison.Ordinal))
                continue;
            foreach (string tag in e.RepoTags ?? [])
            {
                if (ImageName.TryNormalize(tag, out string? n))
                    yield return n;
            }
        }
    }

    // ---- docker archive ------------------------------------------------------------------------

    private ResolvedImage ReadDocker(string? requestedName, Platform? requested)
    {
        List<DockerArchiveEntry> entries = Parse(source.ReadAll("manifest.json", limits.MaxJsonSize), OciJsonContext.Default.ListDockerArchiveEntry, "manifest.json")
            ?? throw Invalid("manifest.json: empty");
        if (entries.Count == 0)
            throw Invalid("manifest.json lists no image");
        DockerArchiveEntry entry;
        if (entries.Count == 1)
        {
            entry = entries[0];
        }
        else
        {
            entry = (requestedName is null ? null
                : entries.FirstOrDefault(e => (e.RepoTags ?? []).Any(t => ImageName.TryNormalize(t, out string? n) && ImageName.Matches(n, requestedName))))
                ?? throw Invalid($"manifest.json holds {entries.Count} images ({string.Join(", ", entries.SelectMany(e => e.RepoTags ?? ["<unnamed>"]))}); " +
                    "name the one to import with --name (one of its tags)");
        }

        string configPath = entry.Config ?? throw Invalid("manifest.json: an image without Config");
        long configSize = source.SizeOf(configPath) ?? throw Invalid($"manifest.json: config {configPath} is not in the archive");
        if (configSize > limits.MaxJsonSize)
            throw new SandboxException(SandboxErrorCode.ImageTooLarge, $"{source.Description}: config {configPath} is {configSize} bytes, more than {limits.MaxJsonSize}");
        // docker names the config (and, from docker 25 on, every blob) by its sha256: check it.
        Digest? namedConfig = DigestFromPath(configPath);
        Digest configDigest;
        byte[] configBytes;
        using (var verifying = new VerifyingStream(source.Open(configPath), namedConfig, configSize, $"config {configPath}"))
        {
            configBytes = new byte[configSize];
            verifying.ReadExactly(configBytes);
            configDigest = verifying.ReadToEndAndVerify();
        }
        OciImageConfig config = Parse(configBytes, OciJsonContext.Default.OciImageConfig, $"config {configDigest}");
        List<Digest> diffIds = DiffIds(config, configDigest);
        CheckPlatform(config, requested);

        List<string> layers = entry.Layers ?? [];
        if (layers.Count != diffIds.Count)
            throw Invalid($"manifest.json lists {layers.Count} layers but config {configDigest} has {diffIds.Count} diff ids");
        var result = new List<LayerSource>();
        for (int i = 0; i < layers.Count; i++)
        {
            string path = layers[i];
            long size = source.SizeOf(path) ?? throw Invalid($"layer {path} is not in the archive");
            // Compression: by magic bytes (docker archives carry no media types).
            result.Add(new LayerSource(i, path, size, DigestFromPath(path), null, diffIds[i], $"layer {path}"));
        }
        var names = (entry.RepoTags ?? []).Select(t => ImageName.TryNormalize(t, out string? n) ? n : null).OfType<string>().Distinct().ToList();
        return new ResolvedImage("docker-archive", configDigest, configDigest, configBytes, null, config, result, names, _warnings);
    }

    /// <summary><c>blobs/sha256/HEX</c> or <c>HEX.json</c> / <c>HEX/layer.tar</c>-style names carry a digest only in the first form, and in <c>HEX.json</c> for configs.</summary>
    private static Digest? DigestFromPath(string path)
    {
        string p = ImageSource.NormalizeRelative(path, "path");
        string[] parts = p.Split('/');
        if (parts is ["blobs", var alg, var hex] && Digest.TryParse($"{alg}:{hex}", out Digest d))
            return d;
        if (parts is [var file] && file.EndsWith(".json", StringComparison.Ordinal) && Digest.TryParse("sha256:" + file[..^5], out Digest c))
            return c;
        return null;
    }

    // ---- shared --------------------------------------------------------------------------------

    private List<Digest> DiffIds(OciImageConfig config, Digest configDigest)
    {
        if (config.Rootfs is not { } rootfs || rootfs.Type != "layers")
            throw Invalid($"config {configDigest}: rootfs.type is not 'layers'");
        List<string> ids = rootfs.DiffIds ?? [];
        if (ids.Count > limits.MaxLayers)
            throw new SandboxException(SandboxErrorCode.ImageTooLarge, $"{source.Description}: {ids.Count} layers, more than the limit of {limits.MaxLayers}");
        return ids.Select((d, i) => Digest.Parse(d, $"config {configDigest} diff id {i + 1}")).ToList();
    }

    private void CheckPlatform(OciImageConfig config, Platform? requested)
    {
        Platform wanted = requested ?? Platform.Host;
        if (config.Os is null || config.Architecture is null || wanted.Matches(config.Os, config.Architecture, config.Variant))
            return;
        string actual = config.Variant is { Length: > 0 } ? $"{config.Os}/{config.Architecture}/{config.Variant}" : $"{config.Os}/{config.Architecture}";
        if (requested is not null)
            throw new SandboxException(SandboxErrorCode.PlatformNotFound, $"{source.Description}: the image is for {actual}, not {requested}");
        _warnings.Add($"the image is for {actual}, this host is {wanted}: its programs may not run here");
    }

    private byte[] ReadBlob(Digest digest, long size, string what)
    {
        string path = BlobPath(digest);
        long actualSize = source.SizeOf(path) ?? throw Invalid($"{what} ({path}) is not in the archive");
        if (size < 0)
            throw Invalid($"{what}: descriptor without a size");
        if (size > limits.MaxJsonSize || actualSize > limits.MaxJsonSize)
            throw new SandboxException(SandboxErrorCode.ImageTooLarge, $"{source.Description}: {what} is larger than {limits.MaxJsonSize} bytes");
        using var verifying = new VerifyingStream(source.Open(path), digest, size, what);
        var buffer = new byte[size];
        int n = verifying.ReadAtLeast(buffer, buffer.Length, throwOnEndOfStream: false);
        if (n < buffer.Length)
            verifying.ReadToEndAndVerify(); // throws the size mismatch
        verifying.ReadToEndAndVerify();
        return buffer;
    }

    internal static string BlobPath(Digest d) => $"blobs/{d.Algorithm}/{d.Hex}";

    private T Parse<T>(byte[] json, JsonTypeInfo<T> type, string what)
    {
        try
        {
            return JsonSerializer.Deserialize(json, type) ?? throw Invalid($"{what}: empty document");
        }
        catch (JsonException e)
        {
            throw Invalid($"{what}: not valid JSON ({e.Message})");
        }
    }

    private SandboxException Invalid(string message) =>
        new(SandboxErrorCode.ImageFormatInvalid, $"{source.Description}: {message}");
}
