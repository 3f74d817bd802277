using System.Text.Json;
using System.Text.Json.Nodes;
using Sandbox.Identity;
using Sandbox.Images;
using Sandbox.Linux;
using Sandbox.Runtime;
using Sandbox.Storage;
using Sandbox.Tests.Images;
using Sandbox.Tests.TestSupport;

namespace Sandbox.Tests.Storage;

/// <summary>
/// Owners of layer files: what the unpacker records, what the store writes down per layer, and
/// how the choice between flattened and a subordinate-range map is made. Applying owners in a user
/// namespace needs newuidmap and a range: integration/Images/OwnershipTests.cs.
/// </summary>
public class LayerOwnershipTests
{
    private const uint Dir = 0x4000, Reg = 0x8000, Lnk = 0xA000, Fifo = 0x1000;

    private static IReadOnlyList<EntryOwner> Unpack(Scratch temp, LayerBuilder layer)
    {
        string root = temp.CreateDirectory("layer");
        using var unpacker = new LayerUnpacker(root);
        unpacker.Unpack(new MemoryStream(layer.Build()));
        return unpacker.Owners;
    }

    [Test]
    public void TheUnpackerRecordsTheOwnersOnDiskAfterTheWholeLayer()
    {
        using var temp = new Scratch();
        IReadOnlyList<EntryOwner> owners = Unpack(temp, new LayerBuilder()
            .Dir("home").Dir("home/user", mode: 0x1C0).Owner(1000, 1000)
            .File("home/user/secret", "s", mode: 0x180).Owner(1000, 1000)
            .File("bin-tool", "x", mode: 0xDED).Owner(1000, 50) // 06755
            .File("replaced", "first").Owner(5, 5)
            .File("replaced", "second") // root's now: nothing to record
            .Dir("gone").Owner(7, 7).File("gone/inside", "x").Owner(7, 7)
            .File("gone", "a file replaces the directory and what it held")
            .File("target", "t").Owner(2000, 2000)
            .Link("hard", "target").Owner(0, 0) // a link has its target's owner, not its own header's
            .File("target", "new root-owned target")
            .Symlink("link", "home").Owner(1000, 1000)
            .Fifo("pipe", mode: 0x1B0).Owner(3, 4)
            .Dir("srv", mode: 0x5FD).Owner(33, 33)); // 02775

        Assert.That(owners, Is.EqualTo(new[]
        {
            new EntryOwner("bin-tool", 1000, 50, Reg | 0xDED),
            new EntryOwner("hard", 2000, 2000, Reg | 0x1A4),
            new EntryOwner("link", 1000, 1000, Lnk | 0x1FF),
            new EntryOwner("pipe", 3, 4, Fifo | 0x1B0),
            new EntryOwner("srv", 33, 33, Dir | 0x5FD),
            new EntryOwner("home/user", 1000, 1000, Dir | 0x1C0),
            new EntryOwner("home/user/secret", 1000, 1000, Reg | 0x180),
        }), "grouped by directory: the native pass opens each directory once");
    }

    [Test]
    public void OwnersAreRecordedUnderTheRealPathThroughSymlinkedDirectories()
    {
        using var temp = new Scratch();
        IReadOnlyList<EntryOwner> owners = Unpack(temp, new LayerBuilder()
            .Dir("real").Symlink("alias", "real").File("alias/f", "x").Owner(9, 9));
        Assert.That(owners.Select(o => o.Path), Is.EqualTo(new[] { "real/f" }));
    }

    private static ImageBuilder OwnedImage()
    {
        var image = new ImageBuilder { Compression = LayerCompression.None };
        image.AddLayer(new LayerBuilder().Dir("etc").File("etc/passwd", "root:x:0:0::/root:/bin/sh\n"));
        image.AddLayer(new LayerBuilder()
            .Dir("home").Dir("home/user", mode: 0x1C0).Owner(1000, 1000)
            .File("home/user/secret", "s", mode: 0x180).Owner(1000, 1000)
            .File("setuid", "x", mode: 0x9ED)); // 04755, root's
        return image;
    }

    [Test]
    public void AFlattenedImportMakesEveryFileTheCallersAndSaysWhy()
    {
        using var temp = new Scratch();
        ImageBuilder image = OwnedImage();
        string path = temp.Combine("img.tar");
        image.WriteDockerArchive(path);
        var store = new ImageStore(temp.Combine("store"));
        var reports = new List<ImportProgress>();
        ImageRecord r = store.Import(path, null, new SyncProgress(reports), ownership: ImportOwnership.Flatten("no subordinate id range: test"));

        Assert.That(Inspect.LStat(Path.Combine(r.LayerDirectories[1], "home", "user", "secret"))!.Value.Uid, Is.EqualTo(Syscalls.RealUserId));
        Assert.That(Inspect.LStat(Path.Combine(r.LayerDirectories[1], "setuid"))!.Value.Permissions, Is.EqualTo(0x9EDu));
        Assert.That(r.Layers[0].Ownership, Is.EqualTo(new LayerOwnership { Kind = LayerOwnershipKind.Flattened, NonRootEntries = 0 }));
        Assert.That(r.Layers[1].Ownership, Is.EqualTo(new LayerOwnership { Kind = LayerOwnershipKind.Flattened, NonRootEntries = 2 }));
        Assert.That(r.OwnershipFlattened, Is.True);
        Assert.That(r.IdMap, Is.Null);
        string note = reports.Single(p => p.Stage == ImportStage.Warning).Message;
        Assert.That(note, Does.StartWith("owners flattened to you (2 file(s) belong to other users").And.EndWith("no subordinate id range: test"));

        // Written down per layer, and in the image record.
        string key = ImageStore.LayerKey(ImageBuilder.Sha256(image.Layers[1]));
        Assert.That(Path.GetFileName(r.LayerDirectories[1]), Is.EqualTo(key));
        JsonNode meta = JsonNode.Parse(File.ReadAllText(Path.Combine(store.Root, "layers", key + ".json")))!;
        Assert.That(meta["owners"]!.ToJsonString(), Is.EqualTo("""{"kind":"flattened","nonRootEntries":2}"""));
        Assert.That(store.Find(r.Digest)!.Layers[1].Ownership, Is.EqualTo(r.Layers[1].Ownership), "read back from the record");
    }

    [Test]
    public void AnImageWithOnlyRootsFilesLosesNothingAndSaysNothing()
    {
        using var temp = new Scratch();
        var image = new ImageBuilder { Compression = LayerCompression.None };
        image.AddLayer(new LayerBuilder().Dir("etc").File("etc/x", "x"));
        string path = temp.Combine("img.tar");
        image.WriteDockerArchive(path);
        var reports = new List<ImportProgress>();
        ImageRecord r = new ImageStore(temp.Combine("store")).Import(path, null, new SyncProgress(reports), ownership: ImportOwnership.Flatten("test"));
        Assert.That(r.OwnershipFlattened, Is.False);
        Assert.That(reports.Where(p => p.Stage == ImportStage.Warning), Is.Empty);
    }

    [Test]
    public void OwnersOutsideTheMapFailTheImportAndNothingIsStored()
    {
        using var temp = new Scratch();
        var image = new ImageBuilder { Compression = LayerCompression.None };
        image.AddLayer(new LayerBuilder().File("big-uid", "x").Owner(70000, 0));
        string path = temp.Combine("img.tar");
        image.WriteDockerArchive(path);
        var store = new ImageStore(temp.Combine("store"));
        // A map with 65536 ids: 70000 is not among them. Checked before any user namespace is made.
        var plan = new IdMapPlan(IdMapKind.SubordinateRange, 1001, 1001, new IdRange(100000, 65536), new IdRange(100000, 65536));
        var e = Assert.Throws<SandboxException>(() => store.Import(path, null, ownership: new ImportOwnership { Map = plan }))!;
        Assert.That(e.Code, Is.EqualTo(SandboxErrorCode.OwnerOutsideIdMap));
        Assert.That(e.ExitCode, Is.EqualTo(125));
        Assert.That(e.Message, Does.Contain("'big-uid' is owned by 70000:0").And.Contain("0-65536").And.Contain("/etc/subuid").And.Contain("--userns single"));
        Assert.That(Directory.EnumerateFileSystemEntries(Path.Combine(store.Root, "l")), Is.Empty);
        Assert.That(Directory.EnumerateFileSystemEntries(Path.Combine(store.Root, "tmp")), Is.Empty);
        Assert.That(store.List(), Is.Empty);
    }

    [Test]
    public void LayerKeysDependOnTheMap()
    {
        const string diffId = "sha256:0123";
        var a = new IdMapping(1001, 1001, new IdRange(100000, 65536), new IdRange(100000, 65536));
        var b = a with { Uids = new IdRange(200000, 65536) };
        Assert.That(ImageStore.LayerKey(diffId, a), Is.Not.EqualTo(ImageStore.LayerKey(diffId)));
        Assert.That(ImageStore.LayerKey(diffId, a), Is.Not.EqualTo(ImageStore.LayerKey(diffId, b)));
        Assert.That(ImageStore.LayerKey(diffId, a), Is.EqualTo(ImageStore.LayerKey(diffId, a with { })));
        Assert.That(ImageStore.LayerKey(diffId, a), Has.Length.EqualTo(20));
    }

    [Test]
    public void OwnerRecordsRoundTrip()
    {
        var map = new IdMapping(1001, 1002, new IdRange(100000, 65536), new IdRange(300000, 4096));
        var meta = new StoredLayerMeta { DiffId = "sha256:ab", Owners = StoredOwners.Mapped(map, 7) };
        byte[] json = JsonSerializer.SerializeToUtf8Bytes(meta, StoreJsonContext.Default.StoredLayerMeta);
        Assert.That(JsonNode.Parse(json)!["owners"]!.ToJsonString(), Is.EqualTo(
            """{"kind":"mapped","hostUid":1001,"hostGid":1002,"uidStart":100000,"uidCount":65536,"gidStart":300000,"gidCount":4096,"nonRootEntries":7}"""));
        StoredLayerMeta back = JsonSerializer.Deserialize(json, StoreJsonContext.Default.StoredLayerMeta)!;
        Assert.That(back.Owners!.Map, Is.EqualTo(map));
        Assert.That(back.Owners.ToOwnership(), Is.EqualTo(new LayerOwnership { Kind = LayerOwnershipKind.Mapped, Map = map, NonRootEntries = 7 }));
        Assert.That(back.Owners.ToOwnership().LostOwners, Is.False);
    }

    [Test]
    public void RecordsFromBeforeOwnersWereKeptReadAsFlattened()
    {
        using var temp = new Scratch();
        ImageBuilder image = OwnedImage();
        string path = temp.Combine("img.tar");
        image.WriteDockerArchive(path);
        var store = new ImageStore(temp.Combine("store"));
        ImageRecord r = store.Import(path, null);
        string record = Directory.GetFiles(Path.Combine(store.Root, "images"), "*.json").Single();
        JsonObject json = JsonNode.Parse(File.ReadAllText(record))!.AsObject();
        foreach (JsonNode? layer in json["layers"]!.AsArray())
            layer!.AsObject().Remove("owners");
        File.WriteAllText(record, json.ToJsonString());

        ImageRecord old = store.Get(r.Digest);
        Assert.That(old.Layers.Select(l => l.Ownership), Is.All.EqualTo(LayerOwnership.Legacy));
        Assert.That(old.OwnershipFlattened, Is.True, "unknown owners: maybe lost");
        Assert.That(old.IdMap, Is.Null);
    }

    // ---- the choice an import makes ---------------------------------------------------------------

    private static IdentityEnvironment Env(TempDirectory dir, bool range)
    {
        string bin = dir.CreateDirectory("bin-" + Guid.NewGuid().ToString("N"));
        dir.CreateFile(Path.GetRelativePath(dir.Path, Path.Combine(bin, "newuidmap")));
        dir.CreateFile(Path.GetRelativePath(dir.Path, Path.Combine(bin, "newgidmap")));
        string sub = dir.CreateFile("sub-" + Guid.NewGuid().ToString("N"), range ? "alice:100000:65536\n" : "bob:1:2\n");
        return new IdentityEnvironment(1000, 1000, "alice", sub, sub, bin);
    }

    [Test]
    public void AutoKeepsOwnersWithARangeAndFlattensWithoutOneSayingWhy()
    {
        using var dir = new TempDirectory();
        ImportOwnership kept = ImportOwnership.Resolve(UserNamespaceMode.Auto, Env(dir, range: true));
        Assert.That(kept.Mapping, Is.EqualTo(new IdMapping(1000, 1000, new IdRange(100000, 65536), new IdRange(100000, 65536))));

        ImportOwnership noRange = ImportOwnership.Resolve(UserNamespaceMode.Auto, Env(dir, range: false));
        Assert.That(noRange.Map, Is.Null);
        Assert.That(noRange.FlattenedBecause, Does.StartWith("no subordinate id range:").And.Contain("has no range for alice").And.Contain("usermod --add-subuids"));

    }

    [Test]
    public void SingleFlattensAndSubuidFailsWithoutARange()
    {
        using var dir = new TempDirectory();
        ImportOwnership single = ImportOwnership.Resolve(UserNamespaceMode.Single, Env(dir, range: true));
        Assert.That(single.Map, Is.Null);
        Assert.That(single.FlattenedBecause, Is.EqualTo("--userns single"));
        var e = Assert.Throws<SandboxException>(() => ImportOwnership.Resolve(UserNamespaceMode.Subuid, Env(dir, range: false)))!;
        Assert.That(e.Code, Is.EqualTo(SandboxErrorCode.IdMappingFailed));
        Assert.That(e.Message, Does.StartWith("--userns subuid:"));
    }

    private sealed class SyncProgress(List<ImportProgress> into) : IProgress<ImportProgress>
    {
        public void Report(ImportProgress value) => into.Add(value);
    }
}
