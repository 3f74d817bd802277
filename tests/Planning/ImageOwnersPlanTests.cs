using System.Collections.Immutable;
using Sandbox.Identity;
using Sandbox.Images;
using Sandbox.Runtime;

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
}
