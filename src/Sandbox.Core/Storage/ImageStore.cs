using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using Sandbox.Identity;
using Sandbox.Images;
using Sandbox.Linux;
using Sandbox.Runtime;

namespace Sandbox.Storage;

/// <summary>
/// The content-addressed image and layer store, shared safely by concurrent processes.
/// <code>
/// ROOT/                   0700
///   l/KEY/                an unpacked layer, KEY = first 20 hex of sha256(diff id): short, so that
///                         overlay's lowerdir= (one page) holds many layers. A layer whose files
///                         keep owners other than root under a subordinate-range map has
///                         KEY = sha256(diff id + the map): another map is another directory
///   layers/KEY.json       the layer's diff id, owners (flattened or the map) and unpack statistics
///                         (written before l/KEY appears)
///   images/HEX.json       an image record (HEX of its digest): names, config, layers
///   names/KEY             a hint: the HEX of the image that has a name, KEY = 16 hex of FNV-1a of
///                         the name's familiar form. Checked against the record it points to, so a
///                         stale or missing hint only costs a read of every record
///   blobs/sha256/HEX      manifests and configs, verified (layer blobs are not kept once unpacked)
///   tmp/NAME, NAME.lock   unpacks in progress, each locked by its process
///   locks/KEY.lock        per-layer locks: one process unpacks a layer, others wait and reuse it
///   index.lock            held to change images/
///   gc.lock               shared by imports (and runs, see <see cref="AcquireUse"/>), exclusive for prune
/// </code>
/// A layer is unpacked into tmp/, verified (blob digest and size, diff id), and renamed to l/KEY
/// only when the whole image verified: a layer directory is complete or absent, and a failed
/// import stores nothing. Locks are flock(2): the kernel drops them when a process dies.
/// <para>Owners (<see cref="ImportOwnership"/>): with a subordinate range the tar's owners are
/// applied in one pass inside a user namespace with the run's map, after the layer verified and
/// before it is renamed into place; a layer whose entries are all 0:0 is the same under every map
/// and is stored once, flattened. Directories such owners make unreadable to the caller (0700 of
/// uid 1000) are removed inside such a namespace too (<see cref="TreeRemover"/>).</para>
/// </summary>
public sealed class ImageStore
{
    internal const string LayersDirectoryName = "l";
    private const int ProgressStep = 1 << 20;
    private readonly ImportLimits _limits;

    public ImageStore(string root, ImportLimits? limits = null)
    {
        Root = Path.GetFullPath(root);
        _limits = limits ?? ImportLimits.Default;
    }

    /// <summary>The store's directory, absolute.</summary>
    public string Root { get; }

    private string LayerRoot => Path.Combine(Root, LayersDirectoryName);
    private string ImagesDir => Path.Combine(Root, "images");
    private string NamesDir => Path.Combine(Root, "names");
    private string LayerMetaDir => Path.Combine(Root, "layers");
    private string LocksDir => Path.Combine(Root, "locks");
    private string BlobsDir => Path.Combine(Root, "blobs");
    private string IndexLockPath => Path.Combine(Root, "index.lock");
    private string GcLockPath => Path.Combine(Root, "gc.lock");
    private string TempRoot => Path.Combine(Root, "tmp");
    private TempArea Temp => new(TempRoot);

    /// <summary>The directory name of a layer under <c>l/</c>: 20 hex digits of sha256 of the diff id.</summary>
    public static string LayerKey(string diffId) =>
        Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(diffId)))[..20];

    /// <summary>The directory name of a layer unpacked with owners for <paramref name="map"/>.</summary>
    public static string LayerKey(string diffId, IdMapping map) => LayerKey(diffId + "\n" + map.Key);

    // ---- import --------------------------------------------------------------------------------

    /// <summary>
    /// Imports a docker archive (<c>docker save</c>), an OCI archive or an OCI layout directory,
    /// detected by content. The manifest for <paramref name="platform"/> (<c>os/arch[/variant]</c>;
    /// default the host's) is chosen from multi-platform indexes. Every blob is verified while it is
    /// read; layers already in the store (same diff id) are reused. The image gets
    /// <paramref name="name"/> (normalized, <c>:latest</c> added), or else the names the archive
    /// gives it; a name moves from any image that had it.
    /// </summary>
    /// <remarks>
    /// <paramref name="ownership"/> (default: flattened) says whether files keep the tar's owners
    /// under a subordinate-range map; an owner outside that map fails the import
    /// (<see cref="SandboxErrorCode.OwnerOutsideIdMap"/>) and stores nothing.
    /// </remarks>
    public ImageRecord Import(string path, string? name, IProgress<ImportProgress>? progress = null, string? platform = null,
        ImportOwnership? ownership = null, CancellationToken ct = default)
    {
        ownership ??= ImportOwnership.Flatten("the import was given no id map");
        string? normalizedName = name is null ? null : ImageName.Normalize(name);
        Platform? requested = platform is null ? null : Platform.Parse(platform);
        try
        {
            EnsureLayout();
            progress?.Report(new ImportProgress(ImportStage.Reading, $"reading {path}"));
            using FileLock gc = FileLock.Acquire(GcLockPath, exclusive: false, ct,
                () => progress?.Report(new ImportProgress(ImportStage.Waiting, "waiting for a prune of the store to finish")));
            TempArea temp = Temp;
            temp.CleanAbandoned();
            using ImageSource source = ImageSource.Open(path, temp.Create, _limits, ct);
            ResolvedImage image;
            try
            {
                image = new ImageReader(source, _limits).Read(normalizedName, requested);
            }
            catch (SandboxException e)
            {
                throw Prefixed(e, source); // every error of an import names the file
            }
            foreach (string warning in image.Warnings)
                progress?.Report(new ImportProgress(ImportStage.Warning, warning));
            List<StoredLayer> layers = ImportLayers(source, image, temp, ownership, progress, ct);

            WriteBlob(image.ConfigDigest, image.ConfigBytes);
            if (image.ManifestBytes is not null)
                WriteBlob(image.Digest, image.ManifestBytes);

            var names = normalizedName is not null ? [normalizedName] : image.Names.ToList();
            var stored = new StoredImage
            {
                Digest = image.Digest.ToString(),
                ConfigDigest = image.ConfigDigest.ToString(),
                Names = names,
                Created = image.Config.Created,
                Imported = DateTimeOffset.UtcNow,
                Size = layers.Sum(l => l.Size),
                Platform = PlatformOf(image.Config),
                SourceFormat = image.Format,
                OwnershipFlattened = layers.Any(l => (l.Owners ?? StoredOwners.Flattened(null)).ToOwnership().LostOwners),
                HasManifest = image.ManifestBytes is not null,
                Layers = layers,
                Config = StoredConfig.From(image.Config.Config),
            };
            ImageRecord record;
            using (FileLock.Acquire(IndexLockPath, exclusive: true, ct))
                record = SaveRecord(stored);
            progress?.Report(new ImportProgress(ImportStage.Done,
                $"imported {record.Name ?? image.Digest.ToString()} ({image.Digest.Short}, {layers.Count} layers)"));
            return record;
        }
        catch (LinuxException e)
        {
            throw new SandboxException(SandboxErrorCode.StoreFailed, $"image store {Root}: {e.Message}", e);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new SandboxException(SandboxErrorCode.StoreFailed, $"image store {Root}: {e.Message}", e);
        }
    }

    /// <summary>The layer's compression, from its first bytes (returned, to be read again) and its media type, which must agree.</summary>
    private static (LayerCompression Compression, byte[] Head, int Got) ReadCompression(ImageSource source, LayerSource layer, Stream blob)
    {
        byte[] head = new byte[6];
        int got = blob.ReadAtLeast(head, head.Length, throwOnEndOfStream: false);
        LayerCompression sniffed = Compression.Detect(head.AsSpan(0, got), out string? unsupported);
        if (unsupported is not null)
            throw new SandboxException(SandboxErrorCode.ImageFormatInvalid, $"{source.Description}: {layer.What} is {unsupported}-compressed, which is not supported (tar, gzip, zstd)");
        LayerCompression compression = layer.Compression switch
        {
            null => sniffed,
            LayerCompression.None => sniffed, // mislabelled tar: the bytes say what they are
            var declared when declared == sniffed => sniffed,
            var declared => throw new SandboxException(SandboxErrorCode.ImageFormatInvalid,
                $"{source.Description}: {layer.What}: media type says {declared.Value.ToString().ToLowerInvariant()} but the data is not"),
        };
        return (compression, head, got);
    }

    /// <summary>
    /// A blob whose layer the store has: its digest, size and compression are checked all the same,
    /// so that one archive is refused or accepted whatever the store holds. An OCI blob by its blob
    /// digest; a docker archive's layer, which has only its diff id, decompressed and hashed against
    /// that (without unpacking). Before, such a layer was not read at all: a damaged download of an
    /// image the store had, or an archive claiming another layer's diff id, passed.
    /// </summary>
    private void VerifyReusedBlob(ImageSource source, LayerSource layer)
    {
        using var blob = new VerifyingStream(source.Open(layer.Path), layer.BlobDigest, layer.BlobSize, layer.What);
        var (compression, head, got) = ReadCompression(source, layer, blob);
        if (layer.BlobDigest is not null)
        {
            blob.ReadToEndAndVerify();
            return;
        }
        using Stream decompressed = Compression.Decompress(new PrefixedStream(head[..got], blob), compression);
        using var diff = new VerifyingStream(decompressed, layer.DiffId, null, $"{layer.What} (uncompressed: diff id)", _limits.MaxLayerSize);
        diff.ReadToEndAndVerify();
    }

    private List<StoredLayer> ImportLayers(ImageSource source, ResolvedImage image, TempArea temp, ImportOwnership ownership,
        IProgress<ImportProgress>? progress, CancellationToken ct)
    {
        int count = image.Layers.Count;
        IdMapping? map = ownership.Mapping;
        var diffIds = image.Layers.Select(l => l.DiffId.ToString()).ToList();
        // Where a layer may be: flattened (also what an all-root layer is under any map), and with owners for this map.
        var flatKeys = diffIds.Distinct().ToDictionary(d => d, d => LayerKey(d), StringComparer.Ordinal);
        var mapKeys = map is null ? null : diffIds.Distinct().ToDictionary(d => d, d => LayerKey(d, map), StringComparer.Ordinal);
        var locks = new List<FileLock>();
        var staged = new List<(string Key, WorkDirectory Dir, StoredLayerMeta Meta)>();
        var chosen = new Dictionary<string, (string Key, StoredLayerMeta Meta)>(StringComparer.Ordinal);
        try
        {
            // Every layer lock, in one global order (no deadlock between imports sharing layers), held to the end.
            foreach (string key in flatKeys.Values.Concat(mapKeys?.Values ?? Enumerable.Empty<string>()).Distinct().Order(StringComparer.Ordinal))
            {
                locks.Add(FileLock.Acquire(Path.Combine(LocksDir, key + ".lock"), exclusive: true, ct,
                    () => progress?.Report(new ImportProgress(ImportStage.Waiting, $"waiting for another process unpacking layer {key}"))));
            }

            foreach (string diffId in flatKeys.Keys)
            {
                if (FindStoredLayer(diffId, flatKeys[diffId], mapKeys?[diffId], map) is { } found)
                    chosen[diffId] = found;
            }
            long total = image.Layers.Where(l => !chosen.ContainsKey(l.DiffId.ToString())).Sum(l => l.BlobSize);
            long imageBytes = 0;
            long flattenedEntries = 0;
            var metaUpdates = new List<(string Key, StoredLayerMeta Meta)>();

            // The layers the store lacks, once each, each into a work directory of its own.
            var work = new List<(int Index, WorkDirectory Dir)>();
            for (int i = 0; i < count; i++)
            {
                string diffId = diffIds[i];
                if (diffIds.IndexOf(diffId) != i)
                    continue;
                if (chosen.ContainsKey(diffId))
                {
                    // Stored already, yet the archive's blob is checked as if it were not: an archive
                    // whose blob is not what its descriptor says fails the same whatever the store holds.
                    VerifyReusedBlob(source, image.Layers[i]);
                    progress?.Report(new ImportProgress(ImportStage.LayerReused, $"layer {i + 1}/{count} {image.Layers[i].DiffId.Short}: already in the store")
                    { LayerIndex = i + 1, LayerCount = count, LayerDigest = diffId, BytesDone = 0, BytesTotal = total });
                    continue;
                }
                WorkDirectory dir = temp.Create();
                staged.Add((flatKeys[diffId], dir, new StoredLayerMeta { DiffId = diffId }));
                work.Add((i, dir));
            }
            StoredLayerMeta[] unpackedLayers = UnpackSideBySide(source, image, work, total, ownership.Map, progress, ct);

            for (int w = 0; w < work.Count; w++)
            {
                int i = work[w].Index;
                WorkDirectory dir = work[w].Dir;
                LayerSource layer = image.Layers[i];
                string diffId = diffIds[i];
                StoredLayerMeta unpacked = unpackedLayers[w];
                int at = staged.FindIndex(s => ReferenceEquals(s.Dir, dir));
                imageBytes += unpacked.Size;
                if (imageBytes > _limits.MaxImageSize)
                    throw new SandboxException(SandboxErrorCode.ImageTooLarge, $"{source.Description}: more than {_limits.MaxImageSize} bytes of layers");
                long nonRoot = unpacked.Owners!.NonRootEntries ?? 0;
                if (map is null)
                    flattenedEntries += nonRoot;
                string key = map is not null && nonRoot > 0 ? mapKeys![diffId] : flatKeys[diffId];
                if (key == flatKeys[diffId] && TryReadLayerMeta(key, diffId) is { } legacy)
                {
                    // All-root content, and l/KEY holds this diff id flattened from before owners
                    // were recorded: the same files. Keep that one and record what is now known.
                    legacy.Owners = StoredOwners.Flattened(0);
                    metaUpdates.Add((key, legacy));
                    staged.RemoveAt(at);
                    dir.Dispose();
                    chosen[diffId] = (key, legacy);
                }
                else
                {
                    staged[at] = (key, dir, unpacked);
                    chosen[diffId] = (key, unpacked);
                }
                ReportStats(layer, unpacked, i, count, progress);
            }
            if (flattenedEntries > 0)
            {
                progress?.Report(new ImportProgress(ImportStage.Warning,
                    $"owners flattened to you ({flattenedEntries} file(s) belong to other users in the image, to you here): {ownership.FlattenedBecause}"));
            }

            // Everything verified: move the new layers into place (metadata first: a directory under l/ always has it).
            foreach (var (key, meta) in metaUpdates)
                WriteFileAtomic(Path.Combine(LayerMetaDir, key + ".json"), JsonSerializer.SerializeToUtf8Bytes(meta, StoreJsonContext.Default.StoredLayerMeta));
            foreach (var (key, dir, meta) in staged)
            {
                WriteFileAtomic(Path.Combine(LayerMetaDir, key + ".json"), JsonSerializer.SerializeToUtf8Bytes(meta, StoreJsonContext.Default.StoredLayerMeta));
                string target = Path.Combine(LayerRoot, key);
                if (!FileSystemCalls.RenameNoReplace(dir.Path, target))
                {
                    // Not ours to find (we hold its lock and saw no valid layer): an invalid leftover. Replace it.
                    DiscardLayerDirectory(key, temp);
                    if (!FileSystemCalls.RenameNoReplace(dir.Path, target))
                        throw new SandboxException(SandboxErrorCode.StoreFailed, $"image store {Root}: cannot move layer {key} into place");
                }
            }
            return diffIds.Select(d => new StoredLayer
            {
                DiffId = d,
                Key = chosen[d].Key,
                Size = chosen[d].Meta.Size,
                Owners = chosen[d].Meta.Owners ?? StoredOwners.Flattened(null),
            }).ToList();
        }
        finally
        {
            foreach (var s in staged)
                s.Dir.Dispose(); // removes what was not moved into place
            foreach (FileLock l in locks)
                l.Dispose();
        }
    }

    /// <summary>
    /// A complete layer of <paramref name="diffId"/> this import may use: with a map, the one
    /// unpacked for that map, else a flattened one that has no owners other than root (the same
    /// files under every map); without a map, the flattened one.
    /// </summary>
    private (string Key, StoredLayerMeta Meta)? FindStoredLayer(string diffId, string flatKey, string? mapKey, IdMapping? map)
    {
        if (map is not null)
        {
            if (TryReadLayerMeta(mapKey!, diffId) is { } mapped && mapped.Owners?.Map == map)
                return (mapKey!, mapped);
            if (TryReadLayerMeta(flatKey, diffId) is { Owners: { Kind: StoredOwners.FlattenedKind, NonRootEntries: 0 } } rootOnly)
                return (flatKey, rootOnly);
            return null;
        }
        if (TryReadLayerMeta(flatKey, diffId) is { } flat && (flat.Owners is null || flat.Owners.Kind == StoredOwners.FlattenedKind))
            return (flatKey, flat);
        return null;
    }

    /// <summary>
    /// Unpacks the given layers side by side, one per CPU: each reads its own slice of the archive
    /// (pread), decompresses and verifies on its own, into its own directory. Decompression is the
    /// bottleneck of an import (gzip inflates at ~100-200 MB/s per core), so an image's layers
    /// together go up to CPU-count times faster than `tar -xzf` of them one after the other.
    /// The first failure, in layer order, is the one reported; the others are cancelled.
    /// </summary>
    private StoredLayerMeta[] UnpackSideBySide(ImageSource source, ResolvedImage image, List<(int Index, WorkDirectory Dir)> work, long total,
        IdMapPlan? plan, IProgress<ImportProgress>? progress, CancellationToken ct)
    {
        var results = new StoredLayerMeta[work.Count];
        if (work.Count == 0)
            return results;
        var counter = new ProgressCounter();
        IProgress<ImportProgress>? serialized = progress is null ? null : new SerializedProgress(progress);
        if (work.Count == 1 || Environment.ProcessorCount == 1)
        {
            for (int w = 0; w < work.Count; w++)
                results[w] = UnpackLayer(source, image.Layers[work[w].Index], work[w].Dir.Path, work[w].Index, image.Layers.Count, total, counter, plan, serialized, ct);
            return results;
        }
        using var stop = CancellationTokenSource.CreateLinkedTokenSource(ct);
        var failures = new Exception?[work.Count];
        var workers = new Thread[Math.Min(Environment.ProcessorCount, work.Count)];
        int next = -1;
        for (int t = 0; t < workers.Length; t++)
        {
            workers[t] = new Thread(() =>
            {
                int w;
                while ((w = Interlocked.Increment(ref next)) < work.Count && !stop.IsCancellationRequested)
                {
                    try
                    {
                        results[w] = UnpackLayer(source, image.Layers[work[w].Index], work[w].Dir.Path, work[w].Index, image.Layers.Count, total, counter, plan, serialized, stop.Token);
                    }
                    catch (Exception e)
                    {
                        failures[w] = e;
                        stop.Cancel();
                    }
                }
            }) { IsBackground = true, Name = $"unpack {t}" };
            workers[t].Start();
        }
        foreach (Thread worker in workers)
            worker.Join();
        ct.ThrowIfCancellationRequested();
        // The first real failure in layer order; the cancellations it caused in others say nothing.
        Exception? failure = failures.FirstOrDefault(f => f is not null and not OperationCanceledException) ?? failures.FirstOrDefault(f => f is not null);
        if (failure is not null)
            System.Runtime.ExceptionServices.ExceptionDispatchInfo.Throw(failure);
        return results;
    }

    /// <summary>Bytes read so far by all the layers being unpacked, for one progress figure.</summary>
    private sealed class ProgressCounter
    {
        private long _bytes;

        public long Add(long n) => Interlocked.Add(ref _bytes, n);
    }

    /// <summary>Progress reports from several unpacking threads, handed on one at a time.</summary>
    private sealed class SerializedProgress(IProgress<ImportProgress> inner) : IProgress<ImportProgress>
    {
        private readonly Lock _lock = new();

        public void Report(ImportProgress value)
        {
            lock (_lock)
                inner.Report(value);
        }
    }

    private StoredLayerMeta UnpackLayer(ImageSource source, LayerSource layer, string directory, int index, int count, long total,
        ProgressCounter counter, IdMapPlan? plan, IProgress<ImportProgress>? progress, CancellationToken ct)
    {
        IdMapping? map = plan is null ? null : IdMapping.Of(plan);
        long done = 0;
        long lastReport = 0;
        long read = 0;
        void Report(bool force)
        {
            if (progress is null || (!force && read - lastReport < ProgressStep))
                return;
            lastReport = read;
            progress.Report(new ImportProgress(ImportStage.Unpacking, $"layer {index + 1}/{count} {layer.DiffId.Short}")
            { LayerIndex = index + 1, LayerCount = count, LayerDigest = layer.DiffId.ToString(), BytesDone = done, BytesTotal = total });
        }

        Report(force: true);
        using var blob = new VerifyingStream(source.Open(layer.Path), layer.BlobDigest, layer.BlobSize, layer.What)
        {
            OnRead = n =>
            {
                read += n;
                done = counter.Add(n);
                Report(force: false);
            },
        };
        var (compression, head, got) = ReadCompression(source, layer, blob);

        using Stream decompressed = Compression.Decompress(new PrefixedStream(head[..got], blob), compression);
        using var diff = new VerifyingStream(decompressed, layer.DiffId, null, $"{layer.What} (uncompressed: diff id)", _limits.MaxLayerSize);
        using var unpacker = new LayerUnpacker(directory, _limits);
        try
        {
            unpacker.Unpack(diff, ct);
            diff.ReadToEndAndVerify();
            blob.ReadToEndAndVerify();
        }
        catch (Exception e) when (e is not OperationCanceledException)
        {
            // Content that is not what its digest says explains any other failure: report that first.
            if (e is SandboxException { Code: SandboxErrorCode.DigestMismatch or SandboxErrorCode.BlobSizeMismatch })
                throw Prefixed((SandboxException)e, source);
            if (layer.BlobDigest is not null && blob.VerifyRest() is { } blobProblem)
                throw Prefixed(blobProblem, source);
            if (layer.BlobDigest is null && compression == LayerCompression.None && diff.VerifyRest() is { } diffProblem)
                throw Prefixed(diffProblem, source);
            if (e is SandboxException se)
                throw new SandboxException(se.Code, $"{source.Description}: {layer.What}: {se.Message}", se);
            if (e is TruncatedCompressedDataException)
                throw new SandboxException(SandboxErrorCode.ImageFormatInvalid, $"{source.Description}: {layer.What}: {e.Message}", e);
            throw new SandboxException(SandboxErrorCode.ImageFormatInvalid, $"{source.Description}: {layer.What}: unreadable ({e.Message})", e);
        }
        IReadOnlyList<EntryOwner> owners = unpacker.Owners;
        if (map is not null && owners.Count > 0)
            ApplyOwners(directory, owners, plan!, map, source, layer, ct);
        Report(force: true);
        LayerStats s = unpacker.Stats;
        return new StoredLayerMeta
        {
            DiffId = layer.DiffId.ToString(),
            Size = diff.BytesRead,
            Entries = s.Entries,
            Whiteouts = s.Whiteouts,
            OpaqueDirectories = s.OpaqueDirectories,
            SkippedDevices = s.SkippedDevices,
            DroppedXattrs = s.DroppedXattrs,
            SkippedOther = s.SkippedOther,
            Unpacked = DateTimeOffset.UtcNow,
            Owners = map is not null && owners.Count > 0 ? StoredOwners.Mapped(map, owners.Count) : StoredOwners.Flattened(owners.Count),
        };
    }

    /// <summary>
    /// Gives the verified layer in <paramref name="directory"/> its tar's owners: one pass inside a
    /// user namespace whose map is the run's (<paramref name="map"/>), where lchown to an image id
    /// lands on the host id that map gives it. Owners outside the map fail the import, as podman's
    /// "potentially insufficient UIDs or GIDs available in user namespace" does: a file the sandbox
    /// would show as nobody (65534) is not the image's file.
    /// </summary>
    private static void ApplyOwners(string directory, IReadOnlyList<EntryOwner> owners, IdMapPlan plan, IdMapping map, ImageSource source, LayerSource layer, CancellationToken ct)
    {
        foreach (EntryOwner o in owners)
        {
            if (!map.Covers(o.Uid, o.Gid))
            {
                throw new SandboxException(SandboxErrorCode.OwnerOutsideIdMap,
                    $"{source.Description}: {layer.What}: '{o.Path}' is owned by {o.Uid}:{o.Gid}, outside the ids your subordinate range gives a sandbox " +
                    $"(0-{map.MaxUid} for users, 0-{map.MaxGid} for groups: {map.Describe()}). Give your user a range of at least {Math.Max(o.Uid, o.Gid)} ids " +
                    $"in /etc/subuid and /etc/subgid (sudo usermod --add-subuids START-END --add-subgids START-END USER), or import with --userns single to make every file yours");
            }
        }
        ct.ThrowIfCancellationRequested();
        var ops = owners.Select(o => (UserNamespaceFileOp)new ChownOp(o.Path, o.Uid, o.Gid, o.Mode)).ToList();
        UserNamespaceFileResult result = IdMappedFiles.Run(directory, ops, plan);
        if (!result.Succeeded)
        {
            string what = result.FailedOp >= 0 && result.FailedOp < ops.Count
                ? $"lchown '{ops[(int)result.FailedOp].Path}' to {owners[(int)result.FailedOp].Uid}:{owners[(int)result.FailedOp].Gid}: {Errno.Describe(result.Error)}"
                : $"the user namespace's child ended with wait status {result.WaitStatus}";
            throw new SandboxException(SandboxErrorCode.StoreFailed,
                $"{source.Description}: {layer.What}: giving files their owners inside a user namespace ({map.Describe()}) failed: {what}. " +
                "The store's file system must let root of a user namespace chown (a local file system, not NFS); or import with --userns single to make every file yours");
        }
    }

    private static SandboxException Prefixed(SandboxException e, ImageSource source) =>
        e.Message.StartsWith(source.Description, StringComparison.Ordinal) ? e : new SandboxException(e.Code, $"{source.Description}: {e.Message}", e);

    private static void ReportStats(LayerSource layer, StoredLayerMeta meta, int index, int count, IProgress<ImportProgress>? progress)
    {
        if (progress is null)
            return;
        var notes = new List<string>();
        if (meta.SkippedDevices > 0)
            notes.Add($"skipped {meta.SkippedDevices} device node(s): an unprivileged user cannot create them (the sandbox's /dev provides the usual ones)");
        if (meta.DroppedXattrs > 0)
            notes.Add($"dropped {meta.DroppedXattrs} extended attribute(s) outside user.* (e.g. file capabilities): an unprivileged user cannot set them");
        foreach (string note in notes)
        {
            progress.Report(new ImportProgress(ImportStage.Warning, $"layer {index + 1}/{count} {layer.DiffId.Short}: {note}")
            { LayerIndex = index + 1, LayerCount = count, LayerDigest = layer.DiffId.ToString() });
        }
    }

    /// <summary>The layer's metadata when l/KEY is a complete layer of that diff id; otherwise null (and an invalid leftover is set aside).</summary>
    private StoredLayerMeta? TryReadLayerMeta(string key, string diffId)
    {
        string dir = Path.Combine(LayerRoot, key);
        if (FileSystemCalls.TryLStat(dir) is not { Kind: FileKind.Directory })
            return null;
        StoredLayerMeta? meta = null;
        try
        {
            meta = JsonSerializer.Deserialize(File.ReadAllBytes(Path.Combine(LayerMetaDir, key + ".json")), StoreJsonContext.Default.StoredLayerMeta);
        }
        catch (Exception e) when (e is IOException or JsonException)
        {
        }
        return meta is not null && meta.DiffId == diffId ? meta : null;
    }

    /// <summary>Moves l/KEY out of the way (into tmp/, then removes it): never a half-deleted layer under l/.</summary>
    private long DiscardLayerDirectory(string key, TempArea temp)
    {
        string dir = Path.Combine(LayerRoot, key);
        if (FileSystemCalls.TryLStat(dir) is null)
            return 0;
        using WorkDirectory trash = temp.Create();
        FileSystemCalls.Rename(dir, Path.Combine(trash.Path, "layer"));
        // Removed here rather than by the trash's disposal, which keeps quiet about failures: a layer
        // that cannot be removed (files of ids outside the current subordinate range) is reported.
        return TreeRemover.Remove(Path.Combine(trash.Path, "layer"));
    }

    // ---- queries -------------------------------------------------------------------------------

    /// <summary>Every image in the store, newest import first.</summary>
    public IReadOnlyList<ImageRecord> List() =>
        LoadAll().Select(s => s.ToRecord(Root)).OrderByDescending(r => r.Imported).ToList();

    /// <summary>
    /// The image with this name (<c>busybox</c> finds <c>busybox:latest</c> and
    /// <c>docker.io/library/busybox:latest</c>), or whose digest or config digest starts with this
    /// (with or without <c>sha256:</c>, at least 4 hex digits); null when none.
    /// Throws <see cref="SandboxErrorCode.ImageAmbiguous"/> when several match.
    /// </summary>
    public ImageRecord? Find(string nameOrDigestPrefix)
    {
        RefuseIfOthersCanChange();
        if (FindByNameHint(nameOrDigestPrefix) is StoredImage named)
            return named.ToRecord(Root);
        List<StoredImage> all = LoadAll();
        StoredImage? match = Match(all, nameOrDigestPrefix, out _);
        return match?.ToRecord(Root);
    }

    /// <summary>
    /// The image that has the name <paramref name="query"/>, through its hint in names/: one record
    /// read instead of all of them (each costs about 20 µs of a warm `run`: 40 images in a store
    /// made a start 0.8 to 1.0 ms slower). Null when the query is no name, or the hint is missing or stale
    /// (the record it points to is gone or no longer has the name): the caller then reads every
    /// record. A name belongs to one image (<see cref="SaveRecord"/>), so the hinted image is the
    /// one <see cref="Match"/> would find by that name.
    /// </summary>
    private StoredImage? FindByNameHint(string query)
    {
        if (!ImageName.TryNormalize(query, out string? normalized))
            return null;
        string familiar = ImageName.Familiar(normalized);
        if (ReadingStore(() => ReadNameHint(familiar)) is not string hex)
            return null;
        string file = Path.Combine(ImagesDir, hex + ".json");
        byte[]? bytes = ReadingStore(() => FileSystemCalls.TryReadAllBytes(file));
        if (bytes is null)
            return null;
        StoredImage record = ParseRecord(file, bytes);
        return record.Names.Any(n => ImageName.Familiar(n) == familiar) ? record : null;
    }

    /// <summary>names/KEY for a name's familiar form (<see cref="ImageName.Familiar"/>).</summary>
    internal string NameHintPath(string familiar) =>
        Path.Combine(NamesDir, StableHash.Fnv1aHex(familiar));

    /// <summary>The image hex a name's hint holds; null when there is none or it holds anything else.</summary>
    private string? ReadNameHint(string familiar)
    {
        byte[]? hint = FileSystemCalls.TryReadAllBytes(NameHintPath(familiar));
        if (hint is not { Length: 64 })
            return null;
        string hex = Encoding.ASCII.GetString(hint);
        return Digest.IsLowerHex(hex) ? hex : null;
    }

    /// <summary>Points the hints of <paramref name="record"/>'s names at it (after its record is written).</summary>
    private void WriteNameHints(StoredImage record, bool onlyWhereWrong = false)
    {
        string hex = Digest.Parse(record.Digest, "record").Hex;
        foreach (string familiar in record.Names.Select(ImageName.Familiar))
        {
            if (!onlyWhereWrong || ReadNameHint(familiar) != hex)
                WriteFileAtomic(NameHintPath(familiar), Encoding.ASCII.GetBytes(hex));
        }
    }

    /// <summary>Removes the hints of names <paramref name="record"/> no longer has, where they still point at it.</summary>
    private void RemoveNameHints(StoredImage record, IEnumerable<string> names)
    {
        string hex = Digest.Parse(record.Digest, "record").Hex;
        foreach (string familiar in names.Select(ImageName.Familiar))
        {
            if (ReadNameHint(familiar) == hex)
                FileSystemCalls.Unlink(NameHintPath(familiar), directory: false);
        }
    }

    /// <summary>Like <see cref="Find"/>, but a missing image is an <see cref="SandboxErrorCode.ImageNotFound"/> error.</summary>
    public ImageRecord Get(string nameOrDigest) =>
        Find(nameOrDigest) ?? throw new SandboxException(SandboxErrorCode.ImageNotFound,
            $"no image '{nameOrDigest}' in {Root}; import one with `sandbox image import FILE`, list them with `sandbox image ls`");

    private static StoredImage? Match(List<StoredImage> all, string query, out bool byName)
    {
        byName = true;
        var named = all.Where(r => r.Names.Any(n => ImageName.Matches(n, query))).ToList();
        if (named.Count == 1)
            return named[0];
        if (named.Count > 1)
            throw new SandboxException(SandboxErrorCode.ImageAmbiguous,
                $"'{query}' names {named.Count} images ({string.Join(", ", named.SelectMany(r => r.Names.Where(n => ImageName.Matches(n, query))))}); use the full name or a digest");

        byName = false;
        string q = query.Trim().ToLowerInvariant();
        int colon = q.IndexOf(':');
        string? algorithm = null;
        if (colon > 0)
        {
            algorithm = q[..colon];
            q = q[(colon + 1)..];
        }
        if (q.Length < 4 || !q.All(char.IsAsciiHexDigit))
            return null;
        bool Hit(string digest) =>
            Digest.TryParse(digest, out Digest d) && (algorithm is null || algorithm == d.Algorithm) && d.Hex.StartsWith(q, StringComparison.Ordinal);
        // An image's own digest (its ID in `image ls`) comes before another's config digest: a docker
        // archive's image is known by its config digest, which an OCI import of the same image holds
        // as its config (docker's lookup likewise prefers the ID).
        var byDigest = all.Where(r => Hit(r.Digest)).ToList();
        if (byDigest.Count == 0)
            byDigest = all.Where(r => Hit(r.ConfigDigest)).ToList();
        if (byDigest.Count > 1)
            throw new SandboxException(SandboxErrorCode.ImageAmbiguous,
                $"'{query}' is the start of {byDigest.Count} images' digests ({string.Join(", ", byDigest.Select(r => r.Digest))}); give more digits");
        return byDigest.Count == 1 ? byDigest[0] : null;
    }

    // ---- removal -------------------------------------------------------------------------------

    /// <summary>
    /// By name: removes that name (and the image with it when it was its last name). By digest
    /// (prefix): removes the image record. Its layers stay until <see cref="Prune"/>. False when
    /// nothing matched.
    /// </summary>
    public bool Remove(string nameOrDigest, CancellationToken ct = default)
    {
        if (!Directory.Exists(ImagesDir))
            return false;
        try
        {
            using FileLock index = FileLock.Acquire(IndexLockPath, exclusive: true, ct);
            List<StoredImage> all = LoadAll();
            StoredImage? match = Match(all, nameOrDigest, out bool byName);
            if (match is null)
                return false;
            var removedNames = byName ? match.Names.Where(n => ImageName.Matches(n, nameOrDigest)).ToList() : match.Names;
            if (byName && removedNames.Count < match.Names.Count)
            {
                match.Names = match.Names.Except(removedNames).ToList();
                WriteRecordFile(match);
            }
            else
            {
                FileSystemCalls.Unlink(RecordPath(match.Digest), directory: false); // by digest, or its last name
            }
            RemoveNameHints(match, removedNames);
            return true;
        }
        catch (LinuxException e)
        {
            throw new SandboxException(SandboxErrorCode.StoreFailed, $"image store {Root}: {e.Message}", e);
        }
    }

    /// <summary>
    /// Deletes layers no image uses, manifests and configs no image refers to, and whatever dead
    /// imports left in tmp/. Waits for running imports (and holders of <see cref="AcquireUse"/>).
    /// </summary>
    public PruneResult Prune(CancellationToken ct = default, Action? onWait = null)
    {
        if (!Directory.Exists(Root))
            return new PruneResult(0, 0, 0, 0);
        try
        {
            EnsureLayout();
            using FileLock gc = FileLock.Acquire(GcLockPath, exclusive: true, ct, onWait);
            using FileLock index = FileLock.Acquire(IndexLockPath, exclusive: true, ct);
            TempArea temp = Temp;
            int tempRemoved = temp.CleanAbandoned();
            List<StoredImage> all = LoadAll();
            var usedLayers = all.SelectMany(r => r.Layers.Select(l => l.Key)).ToHashSet(StringComparer.Ordinal);
            int layersRemoved = 0;
            long bytes = 0;
            var failures = new List<string>();
            foreach (string dir in Directory.EnumerateFileSystemEntries(LayerRoot).ToList())
            {
                string key = Path.GetFileName(dir);
                if (usedLayers.Contains(key))
                    continue;
                try
                {
                    bytes += DiscardLayerDirectory(key, temp);
                    layersRemoved++;
                }
                catch (Exception e) when (e is SandboxException or LinuxException or IOException or UnauthorizedAccessException)
                {
                    // Out of l/ already (nothing uses it); the rest of the prune goes on.
                    failures.Add(e.Message);
                }
            }
            foreach (string meta in Directory.EnumerateFiles(LayerMetaDir).ToList())
            {
                string name = Path.GetFileName(meta);
                string key = name.EndsWith(".json", StringComparison.Ordinal) ? name[..^5] : name;
                if (!usedLayers.Contains(key) || name.StartsWith('.'))
                    File.Delete(meta);
            }
            foreach (string lockFile in Directory.EnumerateFiles(LocksDir).ToList())
            {
                if (!usedLayers.Contains(Path.GetFileNameWithoutExtension(lockFile)))
                    File.Delete(lockFile); // no import runs (gc lock): nobody holds or waits for it
            }
            foreach (string stale in Directory.EnumerateFiles(ImagesDir, ".*").ToList())
                File.Delete(stale); // half-written records of dead processes
            // names/ holds the hints of the names the records have, and nothing else: half-written
            // hints of dead processes go, and so do hints whose name no image has any more (a crash
            // between a record's removal and its hints'); a store made before hints gets them here.
            var hints = all.SelectMany(r => r.Names).Select(n => NameHintPath(ImageName.Familiar(n))).ToHashSet(StringComparer.Ordinal);
            foreach (string file in Directory.EnumerateFiles(NamesDir).ToList())
            {
                if (!hints.Contains(file))
                    File.Delete(file);
            }
            foreach (StoredImage record in all)
                WriteNameHints(record, onlyWhereWrong: true);

            var usedBlobs = all.SelectMany(r => r.HasManifest ? new[] { r.Digest, r.ConfigDigest } : [r.ConfigDigest]).ToHashSet(StringComparer.Ordinal);
            int blobsRemoved = 0;
            foreach (string algDir in Directory.EnumerateDirectories(BlobsDir).ToList())
            {
                foreach (string blob in Directory.EnumerateFiles(algDir).ToList())
                {
                    if (!usedBlobs.Contains($"{Path.GetFileName(algDir)}:{Path.GetFileName(blob)}"))
                    {
                        File.Delete(blob);
                        blobsRemoved++;
                    }
                }
            }
            if (failures.Count > 0)
            {
                throw new SandboxException(SandboxErrorCode.StoreFailed,
                    $"image store {Root}: removed {layersRemoved} unused layer(s) and {blobsRemoved} blob(s), but {failures.Count} layer(s) could not be removed: {string.Join("; ", failures)}");
            }
            return new PruneResult(layersRemoved, bytes, blobsRemoved, tempRemoved);
        }
        catch (LinuxException e)
        {
            throw new SandboxException(SandboxErrorCode.StoreFailed, $"image store {Root}: {e.Message}", e);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new SandboxException(SandboxErrorCode.StoreFailed, $"image store {Root}: {e.Message}", e);
        }
    }

    /// <summary>
    /// A shared hold on the store's layers: while any is held, <see cref="Prune"/> waits. A run
    /// takes one before it mounts an image's layers and keeps it until the mount is gone.
    /// </summary>
    public IDisposable AcquireUse(CancellationToken ct = default)
    {
        // Only the lock file's directory is needed; a run's image is in a store that has it
        // (six mkdir calls less on every start).
        if (!Directory.Exists(Root))
            EnsureLayout();
        return FileLock.Acquire(GcLockPath, exclusive: false, ct);
    }

    /// <summary>
    /// Whether <paramref name="image"/>'s record is still in the store (one stat(2)). A run reads the
    /// record before it takes <see cref="AcquireUse"/>; an `image rm` and a `prune` in between may have
    /// removed the record and then its layers. Once the shared lock is held, prune waits, so a record
    /// found then keeps its layers until the run ends.
    /// </summary>
    public bool StillHas(ImageRecord image) => FileSystemCalls.TryLStat(RecordPath(image.Digest)) is not null;

    // ---- records and files ---------------------------------------------------------------------

    private ImageRecord SaveRecord(StoredImage stored)
    {
        List<StoredImage> all = LoadAll();
        // A name belongs to one image: take it from any other (which stays, perhaps unnamed).
        foreach (StoredImage other in all.Where(o => o.Digest != stored.Digest))
        {
            int before = other.Names.Count;
            other.Names.RemoveAll(n => stored.Names.Any(mine => ImageName.Familiar(mine) == ImageName.Familiar(n)));
            if (other.Names.Count != before)
                WriteRecordFile(other);
        }
        if (all.FirstOrDefault(o => o.Digest == stored.Digest) is { } existing)
            stored.Names = stored.Names.Concat(existing.Names).DistinctBy(ImageName.Familiar).ToList(); // one spelling per name: the newest
        WriteRecordFile(stored);
        // After the record: a hint never points at a record that lacks its name for long (and when
        // it does, after a crash, Find checks it and reads every record instead). A hint that cannot
        // be written (a disk that filled up just now) fails nothing: the image is stored, and a
        // missing hint costs a read of every record, until prune writes it.
        try
        {
            WriteNameHints(stored);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or LinuxException)
        {
        }
        return stored.ToRecord(Root);
    }

    private string RecordPath(string digest) =>
        Path.Combine(ImagesDir, Digest.Parse(digest, "record").Hex + ".json");

    private void WriteRecordFile(StoredImage record) =>
        WriteFileAtomic(RecordPath(record.Digest), JsonSerializer.SerializeToUtf8Bytes(record, StoreJsonContext.Default.StoredImage));

    private List<StoredImage> LoadAll()
    {
        var result = new List<StoredImage>();
        List<string>? names = ReadingStore(() => FileSystemCalls.TryListDirectory(ImagesDir));
        if (names is null)
            return result;
        names.Sort(StringComparer.Ordinal);
        foreach (string name in names)
        {
            if (name.StartsWith('.') || !name.EndsWith(".json", StringComparison.Ordinal))
                continue;
            string file = Path.Combine(ImagesDir, name);
            byte[]? bytes = ReadingStore(() => FileSystemCalls.TryReadAllBytes(file));
            if (bytes is null)
                continue; // removed meanwhile
            result.Add(ParseRecord(file, bytes));
        }
        return result;
    }

    private StoredImage ParseRecord(string file, byte[] bytes)
    {
        try
        {
            StoredImage? record = StoredImageReader.Read(bytes);
            if (record is null || record.SchemaVersion != 1 || !Digest.TryParse(record.Digest, out _))
                throw new JsonException("not an image record of this version");
            return record;
        }
        catch (JsonException e)
        {
            throw new SandboxException(SandboxErrorCode.StoreFailed,
                $"image store {Root}: {file} is damaged ({e.Message}); remove it (its image is then gone) and run `sandbox image prune`", e);
        }
    }

    private T ReadingStore<T>(Func<T> read)
    {
        try
        {
            return read();
        }
        catch (LinuxException e)
        {
            throw new SandboxException(SandboxErrorCode.StoreFailed,
                $"image store {Root}: {e.Message} (check that you own the store and can read it, or use another with --root)", e);
        }
    }

    private void WriteBlob(Digest digest, byte[] content)
    {
        string dir = Path.Combine(BlobsDir, digest.Algorithm);
        string path = Path.Combine(dir, digest.Hex);
        if (File.Exists(path))
            return;
        Directory.CreateDirectory(dir);
        WriteFileAtomic(path, content);
    }

    /// <summary>Writes a file whole or not at all: a hidden temporary beside it, then rename.</summary>
    private static void WriteFileAtomic(string path, byte[] content)
    {
        string temp = Path.Combine(Path.GetDirectoryName(path)!, $".{Path.GetFileName(path)}.{Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(6))}.tmp");
        try
        {
            using (var f = new FileStream(temp, FileMode.CreateNew, FileAccess.Write))
            {
                f.Write(content);
                f.Flush(flushToDisk: true);
            }
            FileSystemCalls.Rename(temp, path);
        }
        catch
        {
            File.Delete(temp);
            throw;
        }
    }

    private void EnsureLayout()
    {
        bool created = !Directory.Exists(Root);
        Directory.CreateDirectory(Root);
        if (created)
            FileSystemCalls.ChangeModeAt(Root, 0x1C0); // 0700: layers keep setuid bits; nobody else needs to reach them
        else
            RefuseIfOthersCanChange();
        foreach (string dir in new[] { LayerRoot, ImagesDir, NamesDir, LayerMetaDir, LocksDir, BlobsDir, TempRoot })
            Directory.CreateDirectory(dir);
        // A store directory the user made beforehand keeps its mode (0755, say). The layers' setuid
        // programs, stored as the caller's or its subordinate ids, would then run as those for any
        // local user; so the two directories that hold layer trees (unpacked, and copied for runs)
        // are the owner's alone whatever the root's mode is, as podman's rootless storage is 0700.
        foreach (string dir in new[] { LayerRoot, TempRoot })
            MakeOwnersAlone(dir);
    }

    /// <summary>Makes an existing directory 0700 when it has any group or other bits.</summary>
    private static void MakeOwnersAlone(string dir)
    {
        if (FileSystemCalls.TryLStat(dir) is { } status && (status.Permissions & 0x3F) != 0)
            FileSystemCalls.ChangeModeAt(dir, 0x1C0);
    }

    /// <summary>
    /// A new directory under runs/ for a `run --keep`'s changes. runs/ is the owner's alone (0700),
    /// as l/ and tmp/ are, also when an earlier version made it open: a kept root holds setuid
    /// programs stored as the caller's ids (the image's, or ones root inside made), which any local
    /// user could otherwise run as the caller.
    /// </summary>
    public string CreateKeptRunDirectory()
    {
        string runs = Path.Combine(Root, "runs");
        Directory.CreateDirectory(runs);
        MakeOwnersAlone(runs);
        string kept = Path.Combine(runs, $"{DateTime.UtcNow:yyyyMMdd-HHmmss}-{Guid.NewGuid().ToString("N")[..8]}");
        Directory.CreateDirectory(kept);
        MakeOwnersAlone(kept);
        return kept;
    }

    /// <summary>
    /// Refuses a store directory that another user could change: one owned by someone else than the
    /// caller or root, or that group or others may write to without the sticky bit. They could rename
    /// its l/ or images/ and put their own layers and image configs in their place, which the
    /// caller's sandboxes would then run with its binds and variables (as ssh's StrictModes refuses
    /// such a home directory; podman's rootless storage is the user's alone). With the root safe, its
    /// entries can be replaced only by the caller. One stat(2) on the run path.
    /// </summary>
    private void RefuseIfOthersCanChange()
    {
        FileStatus? status;
        try
        {
            status = FileSystemCalls.TryStat(Root);
        }
        catch (LinuxException)
        {
            return; // unreadable: the next access says why
        }
        if (status is { Kind: FileKind.Directory } s && WhyOthersCanChange(Root, s, Syscalls.EffectiveUserId) is string why)
            throw new SandboxException(SandboxErrorCode.StoreNotPrivate, why);
    }

    /// <summary>Why a store directory with this status is not the caller's alone (<see cref="RefuseIfOthersCanChange"/>), with the fix; null when it is.</summary>
    internal static string? WhyOthersCanChange(string root, FileStatus status, uint self)
    {
        if (status.Uid != self && status.Uid != 0)
            return $"image store {root} belongs to uid {status.Uid}, not to you (uid {self}): its owner could replace the layers your sandboxes run. " +
                   "Use a store of your own (--root DIR or SANDBOX_ROOT; the default is in your home)";
        bool othersMayWrite = (status.Permissions & 0x12) != 0 && (status.Permissions & 0x200) == 0; // g+w or o+w, not sticky
        return othersMayWrite
            ? $"image store {root} is writable by {((status.Permissions & 0x2) != 0 ? "every user" : "its group")} (mode {Convert.ToString(status.Permissions, 8)}): " +
              $"another user could replace the layers your sandboxes run. Fix: chmod go-w {root}, or use another --root"
            : null;
    }

    private static string PlatformOf(OciImageConfig config) =>
        config.Os is null || config.Architecture is null ? ""
        : config.Variant is { Length: > 0 } v ? $"{config.Os}/{config.Architecture}/{v}" : $"{config.Os}/{config.Architecture}";
}
