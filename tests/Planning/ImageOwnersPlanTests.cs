using System.Collections.Immutable;
using Sandbox.Identity;
using Sandbox.Images;
using Sandbox.Runtime;
using Sandbox.Tests.TestSupport;

namespace Sandbox.Tests.Planning;

/// <summary>A run against an image whose layers keep their owners for one subordinate-range map.</summary>
public class ImageOwnersPlanTests
{
    private static readonly IdRange Range = new(100000, 65536);
    private static readonly IdMapPlan SubuidRun = new(IdMapKind.SubordinateRange, 1001, 1001, Range, Range);
    private static readonly IdMapPlan SingleRun = new(IdMapKind.SingleId, 1001, 1001);

    private static ImageRecord Image(params LayerOwnership[] owners) => new()
    {
        Digest = "sha256:" + new string('a', 64),
        ConfigDigest = "sha256:" + new string('b', 64),
        Names = ["example.com/owned:1"],
        Layers = [.. owners.Select((o, i) => new LayerInfo { DiffId = $"sha256:{i}", Directory = $"/store/l/{i}", Ownership = o })],
    };

    private static LayerOwnership Mapped(IdRange uids) =>
        new() { Kind = LayerOwnershipKind.Mapped, Map = new IdMapping(1001, 1001, uids, Range), NonRootEntries = 3 };

    private static readonly LayerOwnership RootOnly = new() { Kind = LayerOwnershipKind.Flattened, NonRootEntries = 0 };

    [Test]
    public void TheSameMapShowsTheImagesOwners()
    {
        ImageRecord image = Image(RootOnly, Mapped(Range));
        Assert.That(SandboxPlanner.CheckImageOwners(image, SubuidRun), Is.Null);
        Assert.That(image.IdMap, Is.EqualTo(IdMapping.Of(SubuidRun)));
        Assert.That(image.OwnershipFlattened, Is.False);
    }

    [Test]
    public void FlattenedLayersSuitEveryRun()
    {
        ImageRecord image = Image(RootOnly, LayerOwnership.Legacy);
        Assert.That(SandboxPlanner.CheckImageOwners(image, SubuidRun), Is.Null);
        Assert.That(SandboxPlanner.CheckImageOwners(image, SingleRun), Is.Null);
    }

    [Test]
    public void ASingleIdRunWarnsThatOtherOwnersShowAsNobody()
    {
        string? warning = SandboxPlanner.CheckImageOwners(Image(Mapped(Range)), SingleRun);
        Assert.That(warning, Does.Contain("example.com/owned:1").And.Contain("nobody (65534)").And.Contain("--userns subuid"));
    }

    [Test]
    public void AnotherRangeFailsTheRun()
    {
        var e = Assert.Throws<SandboxException>(() => SandboxPlanner.CheckImageOwners(Image(Mapped(new IdRange(200000, 65536))), SubuidRun))!;
        Assert.That(e.Code, Is.EqualTo(SandboxErrorCode.LayerIdMapMismatch));
        Assert.That(e.ExitCode, Is.EqualTo(125));
        Assert.That(e.Message, Does.Contain("200000-265535").And.Contain("100000-165535").And.Contain("Import the image again"));
    }

    // ---- the copy storage driver: which user namespace copies the layers ----------------------------

    private static IdentityEnvironment Caller(TempDirectory dir, string subuid)
    {
        string bin = dir.CreateDirectory("bin");
        dir.CreateFile("bin/newuidmap");
        dir.CreateFile("bin/newgidmap");
        string sub = dir.CreateFile("subuid", subuid);
        return new IdentityEnvironment(1001, 1001, "alice", sub, sub, bin);
    }

    [Test]
    public void FlattenedLayersAreCopiedInProcess()
    {
        using var dir = new TempDirectory();
        Assert.That(Sandbox.Rootfs.LayerCopyHelper.MapFor(Image(RootOnly, LayerOwnership.Legacy), SubuidRun, Caller(dir, "")), Is.Null);
    }

    [Test]
    public void OwnedLayersAreCopiedWithTheRunsMapOrForASingleIdRunWithTheCallersRange()
    {
        using var dir = new TempDirectory();
        ImageRecord image = Image(RootOnly, Mapped(Range));
        Assert.That(Sandbox.Rootfs.LayerCopyHelper.MapFor(image, SubuidRun, Caller(dir, "")), Is.SameAs(SubuidRun));
        IdMapPlan? single = Sandbox.Rootfs.LayerCopyHelper.MapFor(image, SingleRun, Caller(dir, "alice:100000:65536\n"));
        Assert.That(single!.Kind, Is.EqualTo(IdMapKind.SubordinateRange));
        Assert.That(IdMapping.Of(single), Is.EqualTo(image.IdMap));
    }

    [Test]
    public void OwnedLayersCannotBeCopiedWithoutTheirRangeAndTheErrorSaysWhatToDo()
    {
        using var dir = new TempDirectory();
        var none = Assert.Throws<SandboxException>(() => Sandbox.Rootfs.LayerCopyHelper.MapFor(Image(Mapped(Range)), SingleRun, Caller(dir, "bob:1:2\n")))!;
        Assert.That(none.Code, Is.EqualTo(SandboxErrorCode.LayerIdMapMismatch));
        Assert.That(none.Message, Does.Contain("100000-165535").And.Contain("there is none now").And.Contain("--storage-driver overlay or fuse-overlayfs"));
        using var other = new TempDirectory();
        var moved = Assert.Throws<SandboxException>(() => Sandbox.Rootfs.LayerCopyHelper.MapFor(Image(Mapped(Range)), SingleRun, Caller(other, "alice:300000:65536\n")))!;
        Assert.That(moved.Message, Does.Contain("yours is now").And.Contain("300000-365535"));
        var mixed = Assert.Throws<SandboxException>(() => Sandbox.Rootfs.LayerCopyHelper.MapFor(Image(Mapped(Range), Mapped(new IdRange(200000, 65536))), SubuidRun, Caller(other, "")))!;
        Assert.That(mixed.Message, Does.Contain("different subordinate ranges"));
    }
}
