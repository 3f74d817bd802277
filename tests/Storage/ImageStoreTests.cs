using System.Text;
using System.Text.Json.Nodes;
using Sandbox.Images;
using Sandbox.Linux;
using Sandbox.Storage;
using Sandbox.Tests.Images;
using Sandbox.Tests.TestSupport;

namespace Sandbox.Tests.Storage;

public class ImageStoreTests
{
    private static ImageBuilder TwoLayerImage(LayerCompression compression = LayerCompression.Gzip)
    {
        var image = new ImageBuilder { Compression = compression };
        image.AddLayer(new LayerBuilder()
            .Dir("bin").File("bin/tool", "#!/bin/sh\necho tool\n", mode: 0x1ED)
            .Dir("etc").File("etc/passwd", "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534::/:/bin/false\n")
            .File("etc/deleted.conf", "gone in layer 2")
            .Dir("var").Dir("var/cache").File("var/cache/old", "old cache")
            .Symlink("bin/sh", "tool"));
        image.AddLayer(new LayerBuilder()
            .Dir("etc").Whiteout("etc/deleted.conf")
            .Dir("var").Dir("var/cache").Opaque("var/cache").File("var/cache/new", "new cache")
            .File("etc/added", "layer 2"));
        return image;
    }

    private static string Write(Scratch temp, ImageBuilder image, ArchiveFormat format)
    {
        string path = temp.Combine(format switch { ArchiveFormat.OciLayout => "layout", ArchiveFormat.OciArchive => "oci.tar", _ => "docker.tar" });
        image.Write(format, path);
        return path;
    }

    [Test]
    public void ImportsEveryFormatAndCompression(
        [Values] ArchiveFormat format,
        [Values(LayerCompression.None, LayerCompression.Gzip, LayerCompression.Zstd)] LayerCompression compression)
    {
        using var temp = new Scratch();
        ImageBuilder image = TwoLayerImage(compression);
        string path = Write(temp, image, format);
        var store = new ImageStore(temp.Combine("store"));
        var reports = new List<ImportProgress>();
        ImageRecord record = store.Import(path, format == ArchiveFormat.OciLayout ? "mine" : null, new SyncProgress(reports));

        Assert.That(record.Layers, Has.Length.EqualTo(2));
        Assert.That(record.LayerDirectories, Has.Length.EqualTo(2));
        Assert.That(record.Layers.Select(l => l.DiffId), Is.EqualTo(image.Layers.Select(ImageBuilder.Sha256)));
        Assert.That(record.OwnershipFlattened, Is.False, "every entry is 0:0: nothing to flatten");
        Assert.That(record.Layers.Select(l => l.Ownership.Kind), Is.All.EqualTo(LayerOwnershipKind.Flattened));
        Assert.That(record.Platform, Is.EqualTo("linux/amd64"));
        Assert.That(record.Size, Is.EqualTo(image.Layers.Sum(l => (long)l.Length)));
        Assert.That(record.Created, Is.EqualTo(new DateTimeOffset(2024, 5, 6, 7, 8, 9, TimeSpan.Zero)));
        if (format == ArchiveFormat.DockerArchive)
        {
            Assert.That(record.Names, Is.EqualTo(new[] { "example.com/test/image:1.0" }));
            Assert.That(record.Digest, Is.EqualTo(record.ConfigDigest));
            Assert.That(record.SourceFormat, Is.EqualTo("docker-archive"));
        }
        else
        {
            Assert.That(record.Digest, Is.EqualTo(image.ManifestDigest));
            Assert.That(record.SourceFormat, Is.EqualTo(format == ArchiveFormat.OciArchive ? "oci-archive" : "oci-layout"));
        }
        if (format == ArchiveFormat.OciLayout)
            Assert.That(record.Names, Is.EqualTo(new[] { "mine:latest" }));

        Assert.That(record.Config.Env, Does.Contain("GREETING=hello"));
        Assert.That(record.Config.Entrypoint, Is.EqualTo(new[] { "/bin/sh", "-c" }));
        Assert.That(record.Config.Cmd, Is.EqualTo(new[] { "echo hi" }));
        Assert.That(record.Config.WorkingDir, Is.EqualTo("/work"));
        Assert.That(record.Config.User, Is.EqualTo("nobody"));
        Assert.That(record.Config.Labels["org.example.test"], Is.EqualTo("yes"));

        string lower = record.LayerDirectories[0];
        string upper = record.LayerDirectories[1];
        Assert.That(File.ReadAllText(Path.Combine(lower, "bin", "tool")), Does.Contain("echo tool"));
        Assert.That(new FileInfo(Path.Combine(lower, "bin", "sh")).LinkTarget, Is.EqualTo("tool"));
        Assert.That(File.ReadAllText(Path.Combine(upper, "etc", "added")), Is.EqualTo("layer 2"));

        // The deleted file is an overlay whiteout; the opaque directory carries the xattr.
        FileStatus wh = Inspect.LStat(Path.Combine(upper, "etc", "deleted.conf"))!.Value;
        Assert.That(wh.Kind, Is.EqualTo(FileKind.CharDevice));
        Assert.That(wh.RawDevice, Is.EqualTo(0UL));
        Assert.That(Inspect.Xattr(Path.Combine(upper, "var", "cache"), "user.overlay.opaque"), Is.EqualTo("y"));
        Assert.That(Inspect.Xattr(Path.Combine(lower, "var", "cache"), "user.overlay.opaque"), Is.Null);
        Assert.That(File.Exists(Path.Combine(upper, "etc", ".wh.deleted.conf")), Is.False);
        Assert.That(File.Exists(Path.Combine(upper, "var", "cache", ".wh..wh..opq")), Is.False);

        // Short, fixed-length layer paths under l/.
        Assert.That(Path.GetFileName(lower), Has.Length.EqualTo(20));
        Assert.That(Path.GetDirectoryName(lower), Is.EqualTo(Path.Combine(store.Root, "l")));

        Assert.That(reports.Select(r => r.Stage), Does.Contain(ImportStage.Unpacking).And.Contain(ImportStage.Done));
        Assert.That(reports.Where(r => r.Stage == ImportStage.Unpacking).Max(r => r.BytesDone),
            Is.EqualTo(reports.First(r => r.Stage == ImportStage.Unpacking).BytesTotal));
        Assert.That(Directory.EnumerateFileSystemEntries(Path.Combine(store.Root, "tmp")), Is.Empty);

        // Found by name, digest prefix, config digest; listed.
        Assert.That(store.List(), Has.Count.EqualTo(1));
        Assert.That(store.Find(record.Digest)!.Digest, Is.EqualTo(record.Digest));
        Assert.That(store.Find(record.Digest[7..19])!.Digest, Is.EqualTo(record.Digest));
        Assert.That(store.Find(record.ConfigDigest)!.Digest, Is.EqualTo(record.Digest));
    }

    /// <summary>
    /// `image import /dev/stdin`, `&lt;(…)`, a named FIFO: read once, into the store's work area, then
    /// imported as a file (a gzip'ed archive too). Before, the compression sniff rewound the pipe and
    /// the CLI aborted with NotSupportedException's stack trace.
    /// </summary>
    [TestCase(LayerCompression.None)]
    [TestCase(LayerCompression.Gzip)]
    public void AnArchiveReadFromAFifoIsImported(LayerCompression whole)
    {
        using var temp = new Scratch();
        byte[] archive = File.ReadAllBytes(Write(temp, TwoLayerImage(), ArchiveFormat.OciArchive));
        string fifo = temp.Combine("archive.fifo");
        FileSystemCalls.MakeFifo(fifo, 0x180);
        var writer = Task.Run(() => File.WriteAllBytes(fifo, ImageBuilder.Compress(archive, whole)));
        var store = new ImageStore(temp.Combine("store"));

        ImageRecord record = store.Import(fifo, "piped", null);

        writer.Wait();
        Assert.That(record.Layers, Has.Length.EqualTo(2));
        Assert.That(store.Find("piped")!.Digest, Is.EqualTo(record.Digest));
        Assert.That(Directory.EnumerateFileSystemEntries(Path.Combine(store.Root, "tmp")), Is.Empty, "the spooled copy is removed");
    }

    [Test]
    public void LayerTreesAreTheOwnersAloneInAStoreDirectoryMadeOpenBeforehand()
    {
        // The layers' setuid programs are stored as the caller's ids: anyone who could reach them
        // could run them as the caller. A store directory the user made (0755) keeps its own mode.
        using var temp = new Scratch();
        string root = temp.CreateDirectory("store");
        FileSystemCalls.ChangeModeAt(root, 0x1ED); // 0755
        Directory.CreateDirectory(Path.Combine(root, ImageStore.LayersDirectoryName));
        FileSystemCalls.ChangeModeAt(Path.Combine(root, ImageStore.LayersDirectoryName), 0x1ED);
        var store = new ImageStore(root);
        store.Prune();
        Assert.That(Inspect.LStat(root)!.Value.Permissions, Is.EqualTo(0x1EDu), "the user's own directory keeps its mode");
        Assert.That(Inspect.LStat(Path.Combine(root, ImageStore.LayersDirectoryName))!.Value.Permissions, Is.EqualTo(0x1C0u));
        Assert.That(Inspect.LStat(Path.Combine(root, "tmp"))!.Value.Permissions, Is.EqualTo(0x1C0u));
    }

    [Test]
    public void PruneWaitsWhileARunHoldsTheStore()
    {
        using var temp = new Scratch();
        string root = temp.Combine("store");
        var store = new ImageStore(root);
        IDisposable use = store.AcquireUse();
        Task<PruneResult> pruning;
        using (var waiting = new ManualResetEventSlim())
        {
            Assert.That(Inspect.LStat(root)!.Value.Permissions, Is.EqualTo(0x1C0u), "a missing store is made, private");
            pruning = Task.Run(() => new ImageStore(root).Prune(onWait: waiting.Set));
            Assert.That(waiting.Wait(TimeSpan.FromSeconds(10)), Is.True, "prune found the store in use");
            Assert.That(pruning.Wait(200), Is.False, "prune waits for the run");
        }
        use.Dispose();
        Assert.That(pruning.Wait(TimeSpan.FromSeconds(10)), Is.True, "prune goes on once the run let go");

        // A store that exists keeps what it has: the hold adds its lock file only.
        Directory.Delete(Path.Combine(root, "tmp"));
        store.AcquireUse().Dispose();
        Assert.That(Directory.Exists(Path.Combine(root, "tmp")), Is.False);
        Assert.That(File.Exists(Path.Combine(root, "gc.lock")), Is.True);
    }

    [Test]
    public void KeepsModesTimesLinksAndUserXattrs()
    {
        using var temp = new Scratch();
        var mtime = new DateTimeOffset(2001, 2, 3, 4, 5, 6, TimeSpan.Zero).AddTicks(1234500);
        var image = new ImageBuilder { Compression = LayerCompression.None };
        image.AddLayer(new LayerBuilder()
            .Dir("ro", mode: 0x16D, mtime: mtime) // 0555, with content: created writable, made read-only at the end
            .File("ro/file", "x", mode: 0x124, mtime: mtime) // 0444
            .File("setuid", "x", mode: 0x9ED, mtime: mtime) // 04755
            .Dir("sticky", mode: 0x3FF) // 01777
            .File("attrs", "x", pax: new() { ["SCHILY.xattr.user.mime_type"] = "text/plain" })
            .Link("ro/hard", "ro/file")
            .Symlink("link", "ro/file"));
        string path = temp.Combine("img.tar");
        image.WriteDockerArchive(path);
        ImageRecord record = new ImageStore(temp.Combine("store")).Import(path, null);
        string l = record.LayerDirectories[0];

        Assert.That(Inspect.LStat(Path.Combine(l, "ro"))!.Value.Permissions, Is.EqualTo(0x16Du));
        Assert.That(Inspect.LStat(Path.Combine(l, "ro", "file"))!.Value.Permissions, Is.EqualTo(0x124u));
        Assert.That(Inspect.LStat(Path.Combine(l, "setuid"))!.Value.Permissions, Is.EqualTo(0x9EDu));
        Assert.That(Inspect.LStat(Path.Combine(l, "sticky"))!.Value.Permissions, Is.EqualTo(0x3FFu));
        Assert.That(File.GetLastWriteTimeUtc(Path.Combine(l, "ro", "file")), Is.EqualTo(mtime.UtcDateTime));
        Assert.That(File.GetLastWriteTimeUtc(Path.Combine(l, "ro")), Is.EqualTo(mtime.UtcDateTime), "directory mtime set after its content");
        Assert.That(Inspect.LStat(Path.Combine(l, "ro", "hard"))!.Value.Inode, Is.EqualTo(Inspect.LStat(Path.Combine(l, "ro", "file"))!.Value.Inode));
        Assert.That(new FileInfo(Path.Combine(l, "link")).LinkTarget, Is.EqualTo("ro/file"));
        Assert.That(Inspect.Xattr(Path.Combine(l, "attrs"), "user.mime_type"), Is.EqualTo("text/plain"));
        Assert.That(Inspect.LStat(Path.Combine(l, "attrs"))!.Value.Uid, Is.EqualTo(Syscalls.RealUserId), "ownership flattened to the caller");
    }

    [TestCase(ArchiveFormat.OciArchive, LayerCompression.Gzip, SandboxErrorCode.DigestMismatch)]
    [TestCase(ArchiveFormat.OciLayout, LayerCompression.Zstd, SandboxErrorCode.DigestMismatch)]
    [TestCase(ArchiveFormat.OciArchive, LayerCompression.None, SandboxErrorCode.DigestMismatch)]
    [TestCase(ArchiveFormat.DockerArchive, LayerCompression.None, SandboxErrorCode.DigestMismatch)]
    public void CorruptLayerIsRejectedAndNothingIsStored(ArchiveFormat format, LayerCompression compression, SandboxErrorCode expected)
    {
        using var temp = new Scratch();
        ImageBuilder image = TwoLayerImage(compression);
        image.CorruptLayerByte = (1, -1); // in the middle of the second layer's blob
        string path = Write(temp, image, format);
        var store = new ImageStore(temp.Combine("store"));
        var e = Assert.Throws<SandboxException>(() => store.Import(path, null));
        Assert.That(e!.Code, Is.EqualTo(expected), e.Message);
        Assert.That(e.Message, Does.Contain("expected sha256:").And.Contain("actual sha256:"));
        AssertNothingStored(store);
    }

    /// <summary>
    /// A layer whose real paths are longer than PATH_MAX (4096): each entry's name is short enough,
    /// but it goes through the layer's own symlinks, so its file lands at about 7.6 KB of path. The
    /// store removes such trees descriptor by descriptor; by path, removal failed (ENAMETOOLONG), so
    /// a failed import left its work directory for good, and prune stopped halfway.
    /// </summary>
    private static LayerBuilder DeepLayer()
    {
        string a = string.Join('/', Enumerable.Repeat(new string('a', 200), 19));
        string b = string.Join('/', Enumerable.Repeat(new string('b', 200), 19));
        return new LayerBuilder().File(a + "/seed", "s").Symlink("s1", a).Symlink(a + "/s2", b).File("s1/s2/f", "deep file");
    }

    [Test]
    public void AFailedImportOfALayerDeeperThanPathMaxLeavesNothing()
    {
        using var temp = new Scratch();
        var image = new ImageBuilder { Compression = LayerCompression.None };
        image.AddLayer(DeepLayer());
        image.DiffIdsOverride = ["sha256:" + new string('0', 64)];
        string path = Write(temp, image, ArchiveFormat.OciArchive);
        var store = new ImageStore(temp.Combine("store"));
        var e = Assert.Throws<SandboxException>(() => store.Import(path, null));
        Assert.That(e!.Code, Is.EqualTo(SandboxErrorCode.DigestMismatch), e.Message);
        AssertNothingStored(store);
    }

    [Test]
    public void ALayerDeeperThanPathMaxIsPrunedWithEverythingElse()
    {
        using var temp = new Scratch();
        var image = new ImageBuilder { Compression = LayerCompression.Gzip };
        image.AddLayer(new LayerBuilder().File("base", "b"));
        image.AddLayer(DeepLayer());
        var store = new ImageStore(temp.Combine("store"));
        ImageRecord record = store.Import(Write(temp, image, ArchiveFormat.OciArchive), "deep:1");
        Assert.That(store.Remove("deep:1"), Is.True);

        store.Prune();

        Assert.That(Directory.EnumerateFileSystemEntries(Path.Combine(store.Root, "l")), Is.Empty, $"both layers of {record.Digest} are gone");
        Assert.That(Directory.EnumerateFileSystemEntries(Path.Combine(store.Root, "tmp")), Is.Empty);
    }

    [TestCase(ArchiveFormat.OciArchive, LayerCompression.Gzip)]
    [TestCase(ArchiveFormat.OciLayout, LayerCompression.Gzip)]
    [TestCase(ArchiveFormat.DockerArchive, LayerCompression.None)] // HEX/layer.tar: only a diff id to check it by
    public void ACorruptBlobIsRejectedEvenWhenTheStoreHasItsLayer(ArchiveFormat format, LayerCompression compression)
    {
        using var temp = new Scratch();
        var store = new ImageStore(temp.Combine("store"));
        store.Import(Write(temp, TwoLayerImage(compression), format), "good:1");
        using var other = new Scratch();
        ImageBuilder corrupt = TwoLayerImage(compression);
        corrupt.CorruptLayerByte = (1, -1); // same diff ids: the store has both layers
        var e = Assert.Throws<SandboxException>(() => store.Import(Write(other, corrupt, format), "bad:1"));
        Assert.That(e!.Code, Is.EqualTo(SandboxErrorCode.DigestMismatch), e.Message);
        Assert.That(store.Find("bad:1"), Is.Null);
        Assert.That(store.Find("good:1"), Is.Not.Null);
    }

    [Test]
    public void CorruptGzipInDockerArchiveIsRejected()
    {
        using var temp = new Scratch();
        ImageBuilder image = TwoLayerImage(LayerCompression.Gzip);
        image.CorruptLayerByte = (0, 60);
        string path = Write(temp, image, ArchiveFormat.DockerArchive);
        var store = new ImageStore(temp.Combine("store"));
        var e = Assert.Throws<SandboxException>(() => store.Import(path, null));
        Assert.That(e!.Code, Is.AnyOf(SandboxErrorCode.DigestMismatch, SandboxErrorCode.ImageFormatInvalid), e.Message);
        AssertNothingStored(store);
    }

    // A gzip layer of a docker archive has no blob digest, and its diff id is taken over the data
    // decompressed: only the gzip trailer (CRC-32, length; RFC 1952 2.2) tells a cut blob from a whole one.
    [TestCase(LayerCompression.Gzip, 1)]
    [TestCase(LayerCompression.Gzip, 8)]
    [TestCase(LayerCompression.Gzip, 40)]
    [TestCase(LayerCompression.Zstd, 4)]
    public void CutLayerInDockerArchiveIsNamedAsCut(LayerCompression compression, int cut)
    {
        using var temp = new Scratch();
        ImageBuilder image = TwoLayerImage(compression);
        image.CutLayerTail = (1, cut);
        string path = Write(temp, image, ArchiveFormat.DockerArchive);
        var store = new ImageStore(temp.Combine("store"));
        var e = Assert.Throws<SandboxException>(() => store.Import(path, null));
        Assert.That(e!.Code, Is.EqualTo(SandboxErrorCode.ImageFormatInvalid), e.Message);
        Assert.That(e.Message, Does.Contain($"the {compression.ToString().ToLowerInvariant()} data ends early: the file was cut short"));
        AssertNothingStored(store);
    }

    [TestCase(LayerCompression.Gzip, 1)]
    [TestCase(LayerCompression.Gzip, 4)]
    [TestCase(LayerCompression.Gzip, 8)]
    [TestCase(LayerCompression.Gzip, 300)]
    [TestCase(LayerCompression.Zstd, 4)]
    [TestCase(LayerCompression.Zstd, 300)]
    public void CutCompressedArchiveIsNamedAsCut(LayerCompression compression, int cut)
    {
        using var temp = new Scratch();
        string tar = temp.Combine("docker.tar");
        TwoLayerImage(LayerCompression.None).WriteDockerArchive(tar);
        byte[] whole = ImageBuilder.Compress(File.ReadAllBytes(tar), compression);
        string path = temp.Combine("cut.tar." + (compression == LayerCompression.Gzip ? "gz" : "zst"));
        File.WriteAllBytes(path, whole[..^cut]);
        var store = new ImageStore(temp.Combine("store"));
        var e = Assert.Throws<SandboxException>(() => store.Import(path, null));
        Assert.That(e!.Code, Is.EqualTo(SandboxErrorCode.ImageFormatInvalid), e.Message);
        Assert.That(e.Message, Does.StartWith($"{path}: the {compression.ToString().ToLowerInvariant()} data ends early"));
        AssertNothingStored(store);
        File.WriteAllBytes(path, whole);
        Assert.That(store.Import(path, null).Layers.Length, Is.EqualTo(2), "the whole file imports");
    }

    [Test]
    public void ConcatenatedGzipMembersAreOneStream()
    {
        // RFC 1952 2.2: a gzip file is a series of members; gzip -d and docker load read them all.
        using var temp = new Scratch();
        string tar = temp.Combine("docker.tar");
        TwoLayerImage(LayerCompression.None).WriteDockerArchive(tar);
        byte[] bytes = File.ReadAllBytes(tar);
        int half = bytes.Length / 2;
        string path = temp.Combine("two-members.tar.gz");
        File.WriteAllBytes(path, [.. ImageBuilder.Compress(bytes[..half], LayerCompression.Gzip), .. ImageBuilder.Compress(bytes[half..], LayerCompression.Gzip)]);
        var store = new ImageStore(temp.Combine("store"));
        Assert.That(store.Import(path, null).Layers.Length, Is.EqualTo(2));
    }

    [TestCase(1)]
    [TestCase(-1)]
    public void WrongBlobSizeIsRejected(int delta)
    {
        using var temp = new Scratch();
        ImageBuilder image = TwoLayerImage();
        byte[] blob0 = ImageBuilder.Compress(image.Layers[0], LayerCompression.Gzip);
        image.Layer0SizeOverride = blob0.Length + delta;
        string path = Write(temp, image, ArchiveFormat.OciArchive);
        var store = new ImageStore(temp.Combine("store"));
        var e = Assert.Throws<SandboxException>(() => store.Import(path, null));
        Assert.That(e!.Code, Is.EqualTo(SandboxErrorCode.BlobSizeMismatch), e.Message);
        AssertNothingStored(store);
    }

    [Test]
    public void WrongDiffIdIsRejected()
    {
        using var temp = new Scratch();
        ImageBuilder image = TwoLayerImage();
        image.DiffIdsOverride = [ImageBuilder.Sha256(image.Layers[0]), ImageBuilder.Sha256("not the layer"u8.ToArray())];
        string path = Write(temp, image, ArchiveFormat.OciArchive);
        var store = new ImageStore(temp.Combine("store"));
        var e = Assert.Throws<SandboxException>(() => store.Import(path, null));
        Assert.That(e!.Code, Is.EqualTo(SandboxErrorCode.DigestMismatch));
        Assert.That(e.Message, Does.Contain("diff id").And.Contain(ImageBuilder.Sha256("not the layer"u8.ToArray())));
        AssertNothingStored(store);
    }

    [Test]
    public void ManyLayersUnpackedSideBySideAllArriveWithTheirOwnFiles()
    {
        using var temp = new Scratch();
        var image = new ImageBuilder { Compression = LayerCompression.Gzip };
        for (int i = 0; i < 7; i++)
        {
            var layer = new LayerBuilder().Dir($"layer{i}");
            for (int f = 0; f < 50; f++)
                layer.File($"layer{i}/file{f}", new string((char)('a' + i), 10_000 + f));
            image.AddLayer(layer);
        }
        string path = Write(temp, image, ArchiveFormat.OciArchive);
        var store = new ImageStore(temp.Combine("store"));
        var progress = new List<ImportProgress>();
        ImageRecord record = store.Import(path, "many:1", new Progress(progress));
        Assert.That(record.Layers, Has.Length.EqualTo(7));
        var dirs = record.Layers.Select(l => l.Directory).ToList();
        for (int i = 0; i < 7; i++)
        {
            Assert.That(Directory.GetFiles(Path.Combine(dirs[i], $"layer{i}")), Has.Length.EqualTo(50));
            Assert.That(File.ReadAllText(Path.Combine(dirs[i], $"layer{i}", "file49")), Is.EqualTo(new string((char)('a' + i), 10_049)));
        }
        // One running total across the layers, never above the whole.
        var unpacking = progress.Where(p => p.Stage == ImportStage.Unpacking).ToList();
        Assert.That(unpacking.Max(p => p.BytesDone), Is.LessThanOrEqualTo(unpacking[0].BytesTotal));
    }

    [Test]
    public void AFailingLayerAmongManyStoresNothing()
    {
        using var temp = new Scratch();
        var image = new ImageBuilder { Compression = LayerCompression.Gzip };
        for (int i = 0; i < 6; i++)
            image.AddLayer(new LayerBuilder().Dir($"d{i}").File($"d{i}/f", new string('x', 200_000 + i)));
        var diffIds = image.Layers.Select(ImageBuilder.Sha256).ToList();
        diffIds[4] = ImageBuilder.Sha256("not layer 5"u8.ToArray());
        image.DiffIdsOverride = [.. diffIds];
        string path = Write(temp, image, ArchiveFormat.OciArchive);
        var store = new ImageStore(temp.Combine("store"));
        var e = Assert.Throws<SandboxException>(() => store.Import(path, null));
        Assert.That(e!.Code, Is.EqualTo(SandboxErrorCode.DigestMismatch), e.Message);
        Assert.That(e.Message, Does.Contain(diffIds[4]));
        AssertNothingStored(store);
    }

    private sealed class Progress(List<ImportProgress> into) : IProgress<ImportProgress>
    {
        public void Report(ImportProgress value)
        {
            lock (into)
                into.Add(value);
        }
    }

    [Test]
    public void CorruptConfigIsRejected()
    {
        using var temp = new Scratch();
        ImageBuilder image = TwoLayerImage();
        var files = image.BuildOciFiles();
        string configHex = ImageBuilder.Sha256(image.ConfigBytes())[7..];
        var corrupted = files.Select(f => f.Path.EndsWith(configHex, StringComparison.Ordinal)
            ? (f.Path, Encoding.UTF8.GetBytes(Encoding.UTF8.GetString(f.Content).Replace("hello", "HELLO")))
            : f).ToList();
        string path = temp.Combine("oci.tar");
        ImageBuilder.WriteTar(path, corrupted);
        var store = new ImageStore(temp.Combine("store"));
        var e = Assert.Throws<SandboxException>(() => store.Import(path, null));
        Assert.That(e!.Code, Is.EqualTo(SandboxErrorCode.DigestMismatch));
        Assert.That(e.Message, Does.Contain("config sha256:" + configHex));
        AssertNothingStored(store);
    }

    [Test]
    public void SharedLayersAreStoredOnceAndNamesMove()
    {
        using var temp = new Scratch();
        var store = new ImageStore(temp.Combine("store"));
        var baseLayer = new LayerBuilder().File("base", "shared");
        var a = new ImageBuilder().AddLayer(baseLayer).AddLayer(new LayerBuilder().File("a", "a"));
        var b = new ImageBuilder().AddLayer(baseLayer).AddLayer(new LayerBuilder().File("b", "b"));
        a.WriteOciArchive(temp.Combine("a.tar"));
        b.WriteOciArchive(temp.Combine("b.tar"));
        ImageRecord ra = store.Import(temp.Combine("a.tar"), "app");
        var reports = new List<ImportProgress>();
        ImageRecord rb = store.Import(temp.Combine("b.tar"), "app:latest", new SyncProgress(reports));

        Assert.That(rb.LayerDirectories[0], Is.EqualTo(ra.LayerDirectories[0]));
        Assert.That(Directory.GetDirectories(Path.Combine(store.Root, "l")), Has.Length.EqualTo(3));
        Assert.That(reports.Count(r => r.Stage == ImportStage.LayerReused), Is.EqualTo(1));
        Assert.That(store.Find("app")!.Digest, Is.EqualTo(rb.Digest), "the name moved to the newer image");
        Assert.That(store.Find(ra.Digest)!.Names, Is.Empty);
        Assert.That(store.List(), Has.Count.EqualTo(2));

        // Removing b by name drops its record; prune then frees b's own layer but keeps the shared one (a uses it).
        Assert.That(store.Remove("app"), Is.True);
        Assert.That(store.Find("app"), Is.Null);
        Assert.That(store.Remove("app"), Is.False);
        PruneResult pruned = store.Prune();
        Assert.That(pruned.LayersRemoved, Is.EqualTo(1));
        Assert.That(pruned.BlobsRemoved, Is.EqualTo(2), "b's manifest and config");
        Assert.That(Directory.Exists(ra.LayerDirectories[0]), Is.True);
        Assert.That(Directory.Exists(ra.LayerDirectories[1]), Is.True);
        Assert.That(Directory.Exists(rb.LayerDirectories[1]), Is.False);

        Assert.That(store.Remove(ra.Digest[7..20]), Is.True);
        Assert.That(store.Prune().LayersRemoved, Is.EqualTo(2));
        Assert.That(Directory.GetFileSystemEntries(Path.Combine(store.Root, "l")), Is.Empty);
        Assert.That(Directory.GetFileSystemEntries(Path.Combine(store.Root, "layers")), Is.Empty);
        Assert.That(Directory.GetFileSystemEntries(Path.Combine(store.Root, "blobs", "sha256")), Is.Empty);
    }

    [Test]
    public void ReimportingIsIdempotent()
    {
        using var temp = new Scratch();
        string path = Write(temp, TwoLayerImage(), ArchiveFormat.DockerArchive);
        var store = new ImageStore(temp.Combine("store"));
        ImageRecord first = store.Import(path, null);
        ImageRecord second = store.Import(path, "other");
        Assert.That(second.Digest, Is.EqualTo(first.Digest));
        Assert.That(second.Names, Is.EquivalentTo(new[] { "other:latest", "example.com/test/image:1.0" }));
        Assert.That(store.List(), Has.Count.EqualTo(1));
        Assert.That(store.Remove("other"), Is.True);
        Assert.That(store.Find(first.Digest)!.Names, Is.EqualTo(new[] { "example.com/test/image:1.0" }));
    }

    [Test]
    public void FindsByFamiliarNameAndRejectsAmbiguousPrefixes()
    {
        using var temp = new Scratch();
        var store = new ImageStore(temp.Combine("store"));
        var image = new ImageBuilder { RepoTags = ["docker.io/library/busybox:latest"] }.AddLayer(new LayerBuilder().File("x", "1"));
        image.WriteDockerArchive(temp.Combine("bb.tar"));
        ImageRecord r = store.Import(temp.Combine("bb.tar"), null);
        Assert.That(store.Find("busybox")!.Digest, Is.EqualTo(r.Digest));
        Assert.That(store.Find("busybox:latest")!.Digest, Is.EqualTo(r.Digest));
        Assert.That(store.Find("docker.io/library/busybox")!.Digest, Is.EqualTo(r.Digest));
        Assert.That(store.Find("busybox:1.0"), Is.Null);
        Assert.That(store.Find("nothing"), Is.Null);
        Assert.Throws<SandboxException>(() => store.Get("nothing"));

        // Enough images that two digests share a first hex digit: a 1-digit prefix is too short, a shared one is ambiguous.
        for (int i = 0; i < 20; i++)
        {
            new ImageBuilder { RepoTags = null }.AddLayer(new LayerBuilder().File("x", i.ToString())).WriteDockerArchive(temp.Combine($"{i}.tar"));
            store.Import(temp.Combine($"{i}.tar"), null);
        }
        var digests = store.List().Select(x => x.Digest[7..]).ToList();
        string shared = digests.GroupBy(d => d[..1]).First(g => g.Count() > 1).Key;
        Assert.That(store.Find(shared), Is.Null, "1 hex digit is not a prefix lookup");
        string? twoShared = digests.GroupBy(d => d[..4]).FirstOrDefault(g => g.Count() > 1)?.Key;
        if (twoShared is not null)
            Assert.That(Assert.Throws<SandboxException>(() => store.Find(twoShared))!.Code, Is.EqualTo(SandboxErrorCode.ImageAmbiguous));
    }

    [Test]
    public void OneNameSpelledThreeWaysIsKeptOnceAsLastSpelled()
    {
        // busybox, docker.io/library/busybox and localhost/busybox are one name to lookups (README):
        // docker likewise stores a reference normalised, and `docker tag foo docker.io/library/foo` adds nothing.
        using var temp = new Scratch();
        var store = new ImageStore(temp.Combine("store"));
        string path = Write(temp, TwoLayerImage(), ArchiveFormat.DockerArchive);
        foreach (string name in (string[])["foo", "docker.io/library/foo", "localhost/foo"])
            store.Import(path, name);
        store.Import(path, "bar:2");
        Assert.That(store.List().Single().Names, Is.EqualTo(new[] { "bar:2", "localhost/foo:latest" }));
        Assert.That(store.Find("foo")!.Names, Does.Contain("localhost/foo:latest"));
    }

    [Test]
    public void AnImagesOwnDigestComesBeforeAnotherImagesConfigDigest()
    {
        // One image imported twice: from a docker archive (known by its config digest) and from an
        // OCI archive (known by its manifest's digest, holding the same config).
        using var temp = new Scratch();
        var store = new ImageStore(temp.Combine("store"));
        ImageBuilder image = TwoLayerImage(LayerCompression.Gzip);
        ImageRecord docker = store.Import(Write(temp, image, ArchiveFormat.DockerArchive), "from-docker");
        ImageRecord oci = store.Import(Write(temp, image, ArchiveFormat.OciArchive), "from-oci");
        Assert.That(oci.ConfigDigest, Is.EqualTo(docker.Digest), "the case in point");

        Assert.That(store.Find(docker.Digest)!.Digest, Is.EqualTo(docker.Digest), "the full digest");
        Assert.That(store.Find(docker.Digest[7..19])!.Digest, Is.EqualTo(docker.Digest), "the 12 digits of its ID in image ls");
        Assert.That(store.Find(oci.Digest)!.Digest, Is.EqualTo(oci.Digest));
        Assert.That(store.Remove(docker.Digest), Is.True);
        Assert.That(store.Find(docker.Digest)!.Digest, Is.EqualTo(oci.Digest), "then its config digest finds the other");
    }

    [Test]
    public void InvalidNamesAreRejected()
    {
        using var temp = new Scratch();
        string path = Write(temp, TwoLayerImage(), ArchiveFormat.DockerArchive);
        var store = new ImageStore(temp.Combine("store"));
        foreach (string bad in new[] { "UPPER", "a b", "-x", "x:", new string('a', 64) })
            Assert.That(Assert.Throws<SandboxException>(() => store.Import(path, bad))!.Code, Is.EqualTo(SandboxErrorCode.ImageNameInvalid), bad);
        Assert.That(Directory.Exists(store.Root), Is.False, "nothing created for a bad name");
    }

    [Test]
    public void PicksTheHostPlatformFromNestedMultiPlatformIndexes()
    {
        using var temp = new Scratch();
        string layout = temp.CreateDirectory("layout");
        var amd = new ImageBuilder { Architecture = "amd64" }.AddLayer(new LayerBuilder().File("arch", "amd64"));
        var arm = new ImageBuilder { Architecture = "arm64" }.AddLayer(new LayerBuilder().File("arch", "arm64"));
        var files = amd.BuildOciFiles().Concat(arm.BuildOciFiles()).Where(f => f.Path is not ("index.json" or "oci-layout")).ToList();
        JsonObject Descriptor(ImageBuilder b, string arch) => new()
        {
            ["mediaType"] = "application/vnd.oci.image.manifest.v1+json",
            ["digest"] = b.ManifestDigest,
            ["size"] = files.First(f => f.Path == "blobs/sha256/" + b.ManifestDigest![7..]).Content.Length,
            ["platform"] = new JsonObject { ["os"] = "linux", ["architecture"] = arch, ["variant"] = arch == "arm64" ? "v8" : null },
        };
        var attestation = new JsonObject
        {
            ["mediaType"] = "application/vnd.oci.image.manifest.v1+json",
            ["digest"] = "sha256:" + new string('0', 64),
            ["size"] = 10,
            ["platform"] = new JsonObject { ["os"] = "unknown", ["architecture"] = "unknown" },
        };
        byte[] nested = Encoding.UTF8.GetBytes(new JsonObject
        {
            ["schemaVersion"] = 2,
            ["mediaType"] = "application/vnd.oci.image.index.v1+json",
            ["manifests"] = new JsonArray(attestation, Descriptor(arm, "arm64"), Descriptor(amd, "amd64")),
        }.ToJsonString());
        string nestedDigest = ImageBuilder.Sha256(nested);
        files.Add(("blobs/sha256/" + nestedDigest[7..], nested));
        files.Add(("oci-layout", """{"imageLayoutVersion":"1.0.0"}"""u8.ToArray()));
        files.Add(("index.json", Encoding.UTF8.GetBytes(new JsonObject
        {
            ["schemaVersion"] = 2,
            ["manifests"] = new JsonArray(new JsonObject
            {
                ["mediaType"] = "application/vnd.oci.image.index.v1+json",
                ["digest"] = nestedDigest,
                ["size"] = nested.Length,
                ["annotations"] = new JsonObject { ["io.containerd.image.name"] = "example.com/multi:2" },
            }),
        }.ToJsonString())));
        foreach (var (p, content) in files)
        {
            Directory.CreateDirectory(Path.GetDirectoryName(Path.Combine(layout, p))!);
            File.WriteAllBytes(Path.Combine(layout, p), content);
        }

        var store = new ImageStore(temp.Combine("store"));
        ImageRecord a = store.Import(layout, null, platform: "linux/amd64");
        Assert.That(File.ReadAllText(Path.Combine(a.LayerDirectories[0], "arch")), Is.EqualTo("amd64"));
        Assert.That(a.Names, Is.EqualTo(new[] { "example.com/multi:2" }));
        ImageRecord b = store.Import(layout, "multi-arm", platform: "linux/arm64");
        Assert.That(File.ReadAllText(Path.Combine(b.LayerDirectories[0], "arch")), Is.EqualTo("arm64"));
        Assert.That(b.Platform, Is.EqualTo("linux/arm64"));
        ImageRecord host = store.Import(layout, null);
        Assert.That(host.Platform, Is.EqualTo(Platform.Host.ToString()));

        var e = Assert.Throws<SandboxException>(() => store.Import(layout, null, platform: "linux/s390x"));
        Assert.That(e!.Code, Is.EqualTo(SandboxErrorCode.PlatformNotFound));
        Assert.That(e.Message, Does.Contain("linux/amd64").And.Contain("linux/arm64/v8"));
    }

    [Test]
    public void WholeArchiveCompressedAndDockerBlobsLayoutImport()
    {
        using var temp = new Scratch();
        ImageBuilder image = TwoLayerImage(LayerCompression.None);
        string tar = temp.Combine("docker.tar");
        image.WriteDockerArchive(tar, blobsLayout: true);
        File.WriteAllBytes(temp.Combine("docker.tar.gz"), ImageBuilder.Compress(File.ReadAllBytes(tar), LayerCompression.Gzip));
        File.WriteAllBytes(temp.Combine("docker.tar.zst"), ImageBuilder.Compress(File.ReadAllBytes(tar), LayerCompression.Zstd));
        var store = new ImageStore(temp.Combine("store"));
        ImageRecord plain = store.Import(tar, null);
        ImageRecord gz = store.Import(temp.Combine("docker.tar.gz"), null);
        ImageRecord zst = store.Import(temp.Combine("docker.tar.zst"), null);
        Assert.That(gz.Digest, Is.EqualTo(plain.Digest));
        Assert.That(zst.Digest, Is.EqualTo(plain.Digest));
        Assert.That(Directory.EnumerateFileSystemEntries(Path.Combine(store.Root, "tmp")), Is.Empty, "the decompressed copy is gone");
    }

    [Test]
    public void NotAnImageIsAFormatError()
    {
        using var temp = new Scratch();
        var store = new ImageStore(temp.Combine("store"));
        ImageBuilder.WriteTar(temp.Combine("x.tar"), [("hello.txt", "hi"u8.ToArray())]);
        Assert.That(Assert.Throws<SandboxException>(() => store.Import(temp.Combine("x.tar"), null))!.Code, Is.EqualTo(SandboxErrorCode.ImageFormatInvalid));
        File.WriteAllText(temp.Combine("junk"), "not a tar at all, just some text that is long enough to fill a header block or two" + new string('x', 1200));
        Assert.That(Assert.Throws<SandboxException>(() => store.Import(temp.Combine("junk"), null))!.Code, Is.EqualTo(SandboxErrorCode.ImageFormatInvalid));
        Assert.That(Assert.Throws<SandboxException>(() => store.Import(temp.Combine("missing.tar"), null))!.Code, Is.EqualTo(SandboxErrorCode.ImageNotFound));
        byte[] gz = ImageBuilder.Compress(new byte[100_000].Select((_, i) => (byte)(i * 7919 % 251)).ToArray(), LayerCompression.Gzip);
        File.WriteAllBytes(temp.Combine("truncated.tar.gz"), gz[..(gz.Length / 2)]);
        Assert.That(Assert.Throws<SandboxException>(() => store.Import(temp.Combine("truncated.tar.gz"), null))!.Code, Is.EqualTo(SandboxErrorCode.ImageFormatInvalid));
        Assert.That(Directory.EnumerateFileSystemEntries(Path.Combine(store.Root, "tmp")), Is.Empty);
    }

    [Test]
    public void AnErrorInTheMetadataNamesTheArchive()
    {
        using var temp = new Scratch();
        string path = temp.Combine("oci.tar");
        TwoLayerImage().WriteOciArchive(path, (_, descriptor, _) =>
        {
            var wrong = (JsonObject)descriptor.DeepClone();
            wrong["digest"] = "md5:0123456789abcdef0123456789abcdef";
            return new JsonObject { ["schemaVersion"] = 2, ["manifests"] = new JsonArray(wrong) };
        });
        var store = new ImageStore(temp.Combine("store"));
        var e = Assert.Throws<SandboxException>(() => store.Import(path, null));
        Assert.That(e!.Message, Does.StartWith(path + ": ").And.Contain("'md5:0123456789abcdef0123456789abcdef' is not a supported digest"));
        AssertNothingStored(store);
    }

    [Test]
    public void AbandonedWorkIsIgnoredAndCleanedUp()
    {
        using var temp = new Scratch();
        ImageBuilder image = TwoLayerImage();
        string path = Write(temp, image, ArchiveFormat.OciArchive);
        var store = new ImageStore(temp.Combine("store"));
        string key = ImageStore.LayerKey(ImageBuilder.Sha256(image.Layers[0]));

        // What a process killed mid-unpack leaves: a tmp dir with its (unlocked) lock file, a half
        // layer; and a layer directory that never got its metadata (as if written by a broken tool).
        string tmp = Path.Combine(store.Root, "tmp");
        Directory.CreateDirectory(Path.Combine(tmp, "deadbeef", "etc"));
        File.WriteAllText(Path.Combine(tmp, "deadbeef", "etc", "half"), "half");
        File.WriteAllText(Path.Combine(tmp, "deadbeef.lock"), "");
        Directory.CreateDirectory(Path.Combine(tmp, "nolock", "x"));
        Directory.CreateDirectory(Path.Combine(store.Root, "l", key, "bogus"));

        ImageRecord r = store.Import(path, null);
        Assert.That(Directory.EnumerateFileSystemEntries(tmp), Is.Empty);
        Assert.That(Directory.Exists(Path.Combine(r.LayerDirectories[0], "bogus")), Is.False, "the layer without metadata was replaced");
        Assert.That(File.Exists(Path.Combine(r.LayerDirectories[0], "etc", "passwd")), Is.True);
    }

    [Test]
    public void ALiveImportsWorkIsNotCleanedUp()
    {
        using var temp = new Scratch();
        var area = new TempArea(temp.Combine("tmp"));
        using WorkDirectory live = area.Create();
        File.WriteAllText(Path.Combine(live.Path, "f"), "x");
        Assert.That(area.CleanAbandoned(), Is.EqualTo(0));
        Assert.That(File.Exists(Path.Combine(live.Path, "f")), Is.True);
    }

    [Test]
    public void AbandonedWorkDirectoriesAreCountedOnceEach()
    {
        // A dead import's work directory and its (unlocked) lock file are one entry, however the
        // directory lists them: a lock met first took its directory along, which was then counted again.
        using var temp = new Scratch();
        string tmp = temp.CreateDirectory("tmp");
        for (int i = 0; i < 8; i++)
        {
            Directory.CreateDirectory(Path.Combine(tmp, $"work{i}", "layer"));
            File.WriteAllText(Path.Combine(tmp, $"work{i}.lock"), "");
        }
        Directory.CreateDirectory(Path.Combine(tmp, "nolock"));
        Assert.That(new TempArea(tmp).CleanAbandoned(), Is.EqualTo(9));
        Assert.That(Directory.EnumerateFileSystemEntries(tmp), Is.Empty);
    }

    [Test]
    public void EightConcurrentImportsOfOneTarballAllSucceedWithOneCopy()
    {
        using var temp = new Scratch();
        var image = TwoLayerImage();
        // Some bulk, so that the imports overlap.
        var bulk = new LayerBuilder();
        for (int i = 0; i < 300; i++)
            bulk.File($"bulk/{i}", new string((char)('a' + i % 26), 4000));
        image.AddLayer(bulk);
        string path = Write(temp, image, ArchiveFormat.OciArchive);
        string root = temp.Combine("store");

        var start = new ManualResetEventSlim();
        var results = new ImageRecord?[8];
        var errors = new Exception?[8];
        var threads = Enumerable.Range(0, 8).Select(i => new Thread(() =>
        {
            start.Wait();
            try
            {
                results[i] = new ImageStore(root).Import(path, $"concurrent:{i}");
            }
            catch (Exception e)
            {
                errors[i] = e;
            }
        })).ToList();
        threads.ForEach(t => t.Start());
        start.Set();
        threads.ForEach(t => t.Join());

        Assert.That(errors.Where(e => e is not null), Is.Empty);
        Assert.That(results.Select(r => r!.Digest).Distinct().Count(), Is.EqualTo(1));
        Assert.That(Directory.GetDirectories(Path.Combine(root, "l")), Has.Length.EqualTo(3));
        Assert.That(Directory.GetFiles(Path.Combine(root, "images"), "*.json"), Has.Length.EqualTo(1));
        Assert.That(Directory.EnumerateFileSystemEntries(Path.Combine(root, "tmp")), Is.Empty);
        Assert.That(new ImageStore(root).List().Single().Names, Has.Length.EqualTo(8));
    }

    [Test]
    public void DuplicateLayersAreListedOnceAtTheirHighestPlace()
    {
        using var temp = new Scratch();
        var empty = new LayerBuilder();
        var image = new ImageBuilder().AddLayer(empty).AddLayer(new LayerBuilder().File("f", "1")).AddLayer(empty);
        image.WriteOciArchive(temp.Combine("i.tar"));
        ImageRecord r = new ImageStore(temp.Combine("store")).Import(temp.Combine("i.tar"), null);
        Assert.That(r.Layers, Has.Length.EqualTo(3));
        Assert.That(r.LayerDirectories, Is.EqualTo(new[] { r.Layers[1].Directory, r.Layers[2].Directory }));
    }

    [Test]
    public void StoreLocationFollowsTheOverrideThenTheEnvironment()
    {
        Dictionary<string, string?> env = new() { ["HOME"] = "/home/u" };
        string Resolve(string? o) => StoreLocation.Resolve(o, k => env.GetValueOrDefault(k));
        Assert.That(Resolve(null), Is.EqualTo("/home/u/.local/share/sandbox"));
        env["XDG_DATA_HOME"] = "relative/ignored";
        Assert.That(Resolve(null), Is.EqualTo("/home/u/.local/share/sandbox"));
        env["XDG_DATA_HOME"] = "/data";
        Assert.That(Resolve(null), Is.EqualTo("/data/sandbox"));
        env["SANDBOX_ROOT"] = "/srv/sbx";
        Assert.That(Resolve(null), Is.EqualTo("/srv/sbx"));
        Assert.That(Resolve("/opt/s"), Is.EqualTo("/opt/s"));
    }

    [Test]
    public void StoreRootIsPrivate()
    {
        using var temp = new Scratch();
        var store = new ImageStore(temp.Combine("store"));
        store.Import(Write(temp, TwoLayerImage(), ArchiveFormat.DockerArchive), null);
        Assert.That(Inspect.LStat(store.Root)!.Value.Permissions, Is.EqualTo(0x1C0u));
    }

    [TestCase(0x1FFu, "writable by every user (mode 777)")]
    [TestCase(0x1FDu, "writable by its group (mode 775)")]
    [TestCase(0x1F0u, "writable by its group (mode 760)")]
    public void AStoreOthersCanWriteToIsRefusedWithTheFix(uint mode, string why)
    {
        using var temp = new Scratch();
        string root = temp.Combine("store");
        Directory.CreateDirectory(root);
        FileSystemCalls.ChangeModeAt(root, mode);
        var store = new ImageStore(root);
        string path = Write(temp, TwoLayerImage(), ArchiveFormat.DockerArchive);
        foreach (TestDelegate use in new TestDelegate[] { () => store.Import(path, "x:1"), () => store.Find("x:1") })
        {
            var e = Assert.Throws<SandboxException>(use);
            Assert.That(e!.Code, Is.EqualTo(SandboxErrorCode.StoreNotPrivate));
            Assert.That(e.Message, Does.Contain(why).And.Contain($"chmod go-w {root}"));
        }
        FileSystemCalls.ChangeModeAt(root, mode & ~0x12u);
        store.Import(path, "x:1");
        Assert.That(store.Find("x:1"), Is.Not.Null);
    }

    [Test]
    public void AStoreOnlyItsOwnerOrRootControlsIsUsed()
    {
        FileStatus Dir(uint uid, uint mode) => new(FileKind.Directory, 0x4000 | mode, 1, 2, 0, 0, uid, 2);
        Assert.That(ImageStore.WhyOthersCanChange("/s", Dir(1000, 0x1C0), 1000), Is.Null);
        Assert.That(ImageStore.WhyOthersCanChange("/s", Dir(1000, 0x1ED), 1000), Is.Null, "0755: others read only");
        Assert.That(ImageStore.WhyOthersCanChange("/s", Dir(0, 0x1ED), 1000), Is.Null, "root's, as a shared read-only store");
        Assert.That(ImageStore.WhyOthersCanChange("/s", Dir(1000, 0x3FF), 1000), Is.Null, "1777: the sticky bit keeps others from renaming l/");
        Assert.That(ImageStore.WhyOthersCanChange("/s", Dir(1001, 0x1C0), 1000), Does.StartWith("image store /s belongs to uid 1001, not to you (uid 1000)"));
        Assert.That(ImageStore.WhyOthersCanChange("/s", Dir(0, 0x1FF), 1000), Does.Contain("writable by every user"));
    }

    [Test]
    public void KeptRunsArePrivateEvenInARunsDirectoryMadeOpenBefore()
    {
        // A kept root holds setuid programs stored as the caller's ids: others must not reach them.
        using var temp = new Scratch();
        var store = new ImageStore(temp.Combine("store"));
        Directory.CreateDirectory(Path.Combine(store.Root, "runs"));
        FileSystemCalls.ChangeModeAt(Path.Combine(store.Root, "runs"), 0x1ED);
        string kept = store.CreateKeptRunDirectory();
        Assert.That(Path.GetDirectoryName(kept), Is.EqualTo(Path.Combine(store.Root, "runs")));
        Assert.That(Inspect.LStat(Path.Combine(store.Root, "runs"))!.Value.Permissions, Is.EqualTo(0x1C0u));
        Assert.That(Inspect.LStat(kept)!.Value.Permissions, Is.EqualTo(0x1C0u));
        Assert.That(store.CreateKeptRunDirectory(), Is.Not.EqualTo(kept));
    }

    private static void AssertNothingStored(ImageStore store)
    {
        string[] Entries(string sub) => Directory.Exists(Path.Combine(store.Root, sub)) ? Directory.GetFileSystemEntries(Path.Combine(store.Root, sub)) : [];
        Assert.That(Entries("l"), Is.Empty, "no layer");
        Assert.That(Entries("images"), Is.Empty, "no image record");
        Assert.That(Entries("tmp"), Is.Empty, "no leftovers");
        Assert.That(Entries("layers"), Is.Empty, "no layer metadata");
    }

    /// <summary>IProgress that reports on the calling thread (Progress&lt;T&gt; posts to the thread pool).</summary>
    private sealed class SyncProgress(List<ImportProgress> into) : IProgress<ImportProgress>
    {
        public void Report(ImportProgress value) => into.Add(value);
    }

    [Test]
    public void ADamagedRecordIsAnErrorThatNamesTheFileAndTheFix()
    {
        using var temp = new Scratch();
        var store = new ImageStore(temp.Combine("store"));
        ImageRecord record = store.Import(Write(temp, TwoLayerImage(), ArchiveFormat.DockerArchive), null);
        string file = Path.Combine(store.Root, "images", Digest.Parse(record.Digest, "test").Hex + ".json");
        File.WriteAllText(file, "{\"schemaVersion\": 1, \"digest\": ");

        var e = Assert.Throws<SandboxException>(() => store.Find("example.com/test/image:1.0"))!;
        Assert.That(e.Code, Is.EqualTo(SandboxErrorCode.StoreFailed));
        Assert.That(e.Message, Does.Contain(file).And.Contain("is damaged").And.Contain("sandbox image prune"));
    }

    [Test]
    public void ARecordThatCannotBeReadIsAStoreErrorNotAMissingImage()
    {
        using var temp = new Scratch();
        var store = new ImageStore(temp.Combine("store"));
        store.Import(Write(temp, TwoLayerImage(), ArchiveFormat.DockerArchive), null);
        // A directory where a record should be: open(2) works, read(2) fails (EISDIR).
        string odd = Path.Combine(store.Root, "images", new string('0', 64) + ".json");
        Directory.CreateDirectory(odd);

        // A name without a hint (here: none in the store) reads every record.
        var e = Assert.Throws<SandboxException>(() => store.Find("not-here"))!;
        Assert.That(e.Code, Is.EqualTo(SandboxErrorCode.StoreFailed));
        Assert.That(e.Message, Does.Contain(odd).And.Contain("--root"));
    }

    private static ImageRecord ImportOne(Scratch temp, ImageStore store, string content, string name)
    {
        string path = temp.Combine(content + ".tar");
        new ImageBuilder { RepoTags = null }.AddLayer(new LayerBuilder().File("x", content)).WriteOciArchive(path);
        return store.Import(path, name);
    }

    /// <summary>A store with two images, named app and other.</summary>
    private static (ImageStore Store, ImageRecord App, ImageRecord Other) AppAndOther(Scratch temp)
    {
        var store = new ImageStore(temp.Combine("store"));
        return (store, ImportOne(temp, store, "a", "app"), ImportOne(temp, store, "b", "other"));
    }

    private static string Hex(ImageRecord r) => Digest.Parse(r.Digest, "test").Hex;

    [Test]
    public void FindByNameReadsOnlyThatImagesRecord()
    {
        using var temp = new Scratch();
        var (store, app, other) = AppAndOther(temp);
        File.WriteAllText(Path.Combine(store.Root, "images", Hex(other) + ".json"), "{\"schemaVersion\": 1, \"digest\": ");

        Assert.That(store.Find("app")!.Digest, Is.EqualTo(app.Digest), "found through its hint: the damaged record is not read");
        Assert.That(store.Find("docker.io/library/app:latest")!.Digest, Is.EqualTo(app.Digest));
        Assert.That(Assert.Throws<SandboxException>(() => store.Find("other"))!.Code, Is.EqualTo(SandboxErrorCode.StoreFailed));
        Assert.That(Assert.Throws<SandboxException>(() => store.Find(Hex(app)[..12]))!.Code, Is.EqualTo(SandboxErrorCode.StoreFailed),
            "a digest prefix reads every record");
    }

    [TestCase("app:latest", "b259956569da9869")]
    [TestCase("docker.io/library/busybox:1.36", "9a907dc1bed9ad10")]
    [TestCase("", "cbf29ce484222325")]
    public void NameHintsKeepTheirFileNames(string familiar, string fileName)
    {
        // Stores written by earlier builds have their hints under these names (FNV-1a, 64 bits, over
        // the UTF-16 code units, in 16 hex digits): a change of the naming would lose them, and every
        // run would read every record.
        using var temp = new Scratch();
        var store = new ImageStore(temp.Path);
        Assert.That(Path.GetFileName(store.NameHintPath(familiar)), Is.EqualTo(fileName));
    }

    [Test]
    public void AMissingStaleOrGarbledHintFallsBackToTheRecords()
    {
        using var temp = new Scratch();
        var (store, app, other) = AppAndOther(temp);
        string hint = store.NameHintPath("app:latest");
        Assert.That(File.ReadAllText(hint), Is.EqualTo(Hex(app)));

        File.WriteAllText(hint, Hex(other)); // points at an image without the name (a crash between the two writes)
        Assert.That(store.Find("app")!.Digest, Is.EqualTo(app.Digest));
        File.WriteAllText(hint, "not a digest");
        Assert.That(store.Find("app")!.Digest, Is.EqualTo(app.Digest));
        File.WriteAllText(hint, new string('0', 64)); // a record that is not there
        Assert.That(store.Find("app")!.Digest, Is.EqualTo(app.Digest));
        Directory.Delete(Path.Combine(store.Root, "names"), recursive: true); // a store made before hints
        Assert.That(store.Find("app")!.Digest, Is.EqualTo(app.Digest));
        Assert.That(store.Find("other")!.Digest, Is.EqualTo(other.Digest));
        Assert.That(store.Find("nothing"), Is.Null);

        // prune gives such a store its hints
        store.Prune();
        Assert.That(File.ReadAllText(hint), Is.EqualTo(Hex(app)));
        Assert.That(File.ReadAllText(store.NameHintPath("other:latest")), Is.EqualTo(Hex(other)));
    }

    [Test]
    public void PruneLeavesTheHintsOfCurrentNamesAndNothingElse()
    {
        using var temp = new Scratch();
        var (store, app, _) = AppAndOther(temp);
        string orphan = store.NameHintPath("gone:latest"); // its image was removed, its hint not (a crash between the two)
        File.WriteAllText(orphan, Hex(app));
        string halfWritten = Path.Combine(store.Root, "names", ".0123456789abcdef.a1b2c3d4e5f6.tmp");
        File.WriteAllText(halfWritten, "");

        store.Prune();
        Assert.That(File.Exists(orphan), Is.False, "no image has that name");
        Assert.That(File.Exists(halfWritten), Is.False, "a dead process's temporary");
        Assert.That(Directory.GetFiles(Path.Combine(store.Root, "names")).Order(),
            Is.EqualTo(new[] { store.NameHintPath("app:latest"), store.NameHintPath("other:latest") }.Order()));
        Assert.That(store.Find("app")!.Digest, Is.EqualTo(app.Digest));
    }

    [Test]
    public void HintsFollowTheirNamesAndGoWithThem()
    {
        using var temp = new Scratch();
        var store = new ImageStore(temp.Combine("store"));
        ImageRecord first = ImportOne(temp, store, "a", "app");
        ImageRecord second = ImportOne(temp, store, "b", "app:latest");
        string hint = store.NameHintPath("app:latest");
        Assert.That(File.ReadAllText(hint), Is.EqualTo(Hex(second)), "the name moved, its hint with it");
        Assert.That(store.Find("app")!.Digest, Is.EqualTo(second.Digest));
        Assert.That(store.Find(first.Digest)!.Names, Is.Empty);

        store.Import(temp.Combine("b.tar"), "app:2");
        Assert.That(store.Remove("app"), Is.True, "one of its two names");
        Assert.That(File.Exists(hint), Is.False);
        Assert.That(store.Find("app"), Is.Null);
        Assert.That(File.ReadAllText(store.NameHintPath("app:2")), Is.EqualTo(Hex(second)));

        Assert.That(store.Remove(Hex(second)[..12]), Is.True, "the record, by digest");
        Assert.That(File.Exists(store.NameHintPath("app:2")), Is.False);
        Assert.That(store.Find("app:2"), Is.Null);
    }
}
