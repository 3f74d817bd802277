using System.Collections.Immutable;
using Sandbox.Runtime;

namespace Sandbox.Tests.Runtime;

/// <summary>When a run uses the holder's prepared mount namespace, and the overlay mounted in it.</summary>
public class PreparedMountTests
{
    private const string Ours = "/oldroot/store/l\0lowerdir=a,upperdir=/upper,workdir=/work,userxattr\0" + "1234.1700000000.5\0";
    private const string Other = "/oldroot/other/l\0lowerdir=b,upperdir=/upper,workdir=/work,userxattr\0" + "99.1700000000.5\0";
    // The same paths and data, but its layer directory removed and stored again (image rm, prune, import).
    private const string OursStoredAgain = "/oldroot/store/l\0lowerdir=a,upperdir=/upper,workdir=/work,userxattr\0" + "1234.1700000099.7\0";

    [Test]
    public void TheSameOverlayIsUsedAsItIsMounted()
    {
        Assert.That(Launcher.PreparedMountUse(true, true, Ours, Ours), Is.EqualTo((true, true)));
    }

    [Test]
    public void AnotherOverlayKeepsAnOverlayPlanOutOfThePreparedNamespace()
    {
        // Its upper and work directories are the mounted one's: a second overlay on them is undefined.
        Assert.That(Launcher.PreparedMountUse(true, true, Other, Ours), Is.EqualTo((false, false)));
    }

    [Test]
    public void AnOverlayOfLayersStoredAgainAtTheSamePathsIsAnotherOverlay()
    {
        // Its lower directories are the removed ones: the run would see an empty root.
        Assert.That(Launcher.PreparedMountUse(true, true, OursStoredAgain, Ours), Is.EqualTo((false, false)));
    }

    [Test]
    public void APlanWithoutAnOverlayStacksItsRootOverAMountedOne()
    {
        Assert.That(Launcher.PreparedMountUse(true, true, Other, null), Is.EqualTo((true, false)));
        Assert.That(Launcher.PreparedMountUse(true, true, null, Ours), Is.EqualTo((true, false)));
        Assert.That(Launcher.PreparedMountUse(true, true, null, null), Is.EqualTo((true, false)));
    }

    [Test]
    public void NoPreparedNamespaceOrAPlanOfItsOwnIsNeverJoined()
    {
        Assert.That(Launcher.PreparedMountUse(false, true, null, null), Is.EqualTo((false, false)));
        Assert.That(Launcher.PreparedMountUse(true, false, Ours, Ours), Is.EqualTo((false, false)));
    }

    [Test]
    public void TheHintNamesTheStoreDirectoryAndTheOverlaysDataOfTheMarkedSteps()
    {
        var steps = ImmutableArray.Create<SetupStep>(
            new MakeDirectoryStep("/upper") { OverlayPreparedBySpare = true },
            new ChangeDirectoryStep("/oldroot/store/l") { OverlayPreparedBySpare = true },
            new MountStep("overlay", "/newroot", "overlay", MountFlags.None, "lowerdir=a,upperdir=/upper,workdir=/work,userxattr") { OverlayPreparedBySpare = true, LowerIdentities = "1234.1700000000.5" },
            new ChangeDirectoryStep("/") { OverlayPreparedBySpare = true });
        var plan = new RuntimePlan(new ProcessPlan("/bin/true", ["/bin/true"], [], null, null), NamespaceSet.None, new IdMapPlan(IdMapKind.SingleId, 1000, 1000), steps);
        Assert.That(UserNamespaceHolder.OverlayHint(plan), Is.EqualTo(Ours));
        Assert.That(UserNamespaceHolder.OverlayHint(plan with { Steps = [new ChangeDirectoryStep("/oldroot/store/l"), steps[2] with { OverlayPreparedBySpare = false }] }), Is.Null);
    }
}
