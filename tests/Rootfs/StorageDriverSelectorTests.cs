using Sandbox.Rootfs;

namespace Sandbox.Tests.Rootfs;

public class StorageDriverSelectorTests
{
    /// <summary>A host whose answers the test sets, and which records what was asked (auto must not probe what it does not need).</summary>
    private sealed class Host : IStorageDriverHost
    {
        public string? Overlay { get; init; }
        public string? Program { get; init; } = "/usr/bin/fuse-overlayfs";
        public string? Fuse { get; init; }
        public string? KernelRelease { get; init; } = "6.8.0";
        public Version? KernelVersion => Sandbox.Diagnostics.HostCheck.ParseKernelVersion(KernelRelease);
        public List<string> Asked { get; } = [];

        public string? KernelOverlayProblem()
        {
            Asked.Add("overlay");
            return Overlay;
        }

        public string? FindFuseOverlayfs()
        {
            Asked.Add("find");
            return Program;
        }

        public string? FuseOverlayfsProblem(string program)
        {
            Asked.Add("fuse " + program);
            return Fuse;
        }
    }

    [Test]
    public void AutoPicksKernelOverlayWhenItMountsAndAsksNothingElse()
    {
        var host = new Host();
        StorageDriverChoice choice = StorageDriverSelector.Choose(StorageDriver.Auto, host);
        Assert.That(choice, Is.EqualTo(new StorageDriverChoice(StorageDriver.Overlay, null, null)));
        Assert.That(host.Asked, Is.EqualTo(new[] { "overlay" }));
    }

    [Test]
    public void AutoFallsBackToFuseOverlayfsWithOneWarningNamingWhyAndTheFix()
    {
        var host = new Host { Overlay = "mount overlay: Operation not permitted (EPERM)", KernelRelease = "5.10.0-28-amd64" };
        StorageDriverChoice choice = StorageDriverSelector.Choose(StorageDriver.Auto, host);
        Assert.That(choice.Driver, Is.EqualTo(StorageDriver.FuseOverlayfs));
        Assert.That(choice.FuseOverlayfsProgram, Is.EqualTo("/usr/bin/fuse-overlayfs"));
        Assert.That(choice.Warning, Is.EqualTo(
            "kernel overlayfs cannot be mounted in a user namespace here (mount overlay: Operation not permitted (EPERM)); " +
            "using fuse-overlayfs, which is slower. For kernel overlay: Linux 5.11 or later (this is 5.10.0-28-amd64)."));
        Assert.That(choice.Warning, Does.Not.Contain("\n"));
        Assert.That(host.Asked, Is.EqualTo(new[] { "overlay", "find", "fuse /usr/bin/fuse-overlayfs" }));
    }

    [Test]
    public void AutoPassesKernelOverlayByForAnImageOfMoreLayersThanOneMountTakes()
    {
        // 260 layers' keys do not fit one page of overlay options: auto takes fuse-overlayfs (or a
        // copy) at once, where the run failed with "too many layers" under the default driver.
        var host = new Host();
        StorageDriverChoice choice = StorageDriverSelector.Choose(StorageDriver.Auto, host, layerCount: 260);
        Assert.That(choice.Driver, Is.EqualTo(StorageDriver.FuseOverlayfs));
        Assert.That(choice.Warning, Does.StartWith($"the image has 260 layers, more than one kernel overlay mount's options hold (about {RootfsPlanner.MaxOverlayLayers}); using fuse-overlayfs"));
        Assert.That(host.Asked, Does.Not.Contain("overlay"), "no probe of a mount that could not take the image anyway");
        Assert.That(StorageDriverSelector.Choose(StorageDriver.Auto, new Host(), layerCount: RootfsPlanner.MaxOverlayLayers).Driver, Is.EqualTo(StorageDriver.Overlay));
        Assert.That(StorageDriverSelector.Choose(StorageDriver.Auto, new Host { Program = null }, layerCount: 260).Driver, Is.EqualTo(StorageDriver.Copy));
    }

    [Test]
    public void AutoFallsBackToCopyWhenFuseOverlayfsIsNotInstalled()
    {
        var host = new Host { Overlay = "mount overlay: EPERM", Program = null };
        StorageDriverChoice choice = StorageDriverSelector.Choose(StorageDriver.Auto, host);
        Assert.That(choice.Driver, Is.EqualTo(StorageDriver.Copy));
        Assert.That(choice.Warning, Is.EqualTo(
            "kernel overlayfs cannot be mounted in a user namespace here (mount overlay: EPERM), and fuse-overlayfs is not installed; " +
            "copying the image's layers for this run instead, which is slow. Fix: Linux 5.11 or later for kernel overlay, or sudo apt-get install fuse-overlayfs."));
    }

    [Test]
    public void AutoFallsBackToCopyWhenDevFuseIsNotUsableAndSaysHowToFixIt()
    {
        var host = new Host { Overlay = "mount overlay: EPERM", Fuse = "/dev/fuse is not readable and writable by you (mode 0600, owner uid 0)" };
        StorageDriverChoice choice = StorageDriverSelector.Choose(StorageDriver.Auto, host);
        Assert.That(choice.Driver, Is.EqualTo(StorageDriver.Copy));
        Assert.That(choice.Warning, Does.Contain("fuse-overlayfs cannot mount here (/dev/fuse is not readable and writable by you (mode 0600, owner uid 0))"));
        Assert.That(choice.Warning, Does.EndWith("or sudo chmod 0666 /dev/fuse (the mode udev gives it) for fuse-overlayfs."));
    }

    [Test]
    public void AutoNeverGivesFuseOverlayfsToAPayloadThatMayPtrace()
    {
        var host = new Host { Overlay = "mount overlay: EPERM" };
        StorageDriverChoice choice = StorageDriverSelector.Choose(StorageDriver.Auto, host, payloadMayPtrace: true);
        Assert.That(choice.Driver, Is.EqualTo(StorageDriver.Copy));
        Assert.That(choice.Warning, Does.Contain("CAP_SYS_PTRACE"));
        Assert.That(host.Asked, Does.Not.Contain("fuse /usr/bin/fuse-overlayfs"), "no reason to probe what will not be used");
    }

    [Test]
    public void AKernelOverlayWorksForAPayloadThatMayPtrace()
    {
        Assert.That(StorageDriverSelector.Choose(StorageDriver.Auto, new Host(), payloadMayPtrace: true).Driver, Is.EqualTo(StorageDriver.Overlay));
    }

    [Test]
    public void ExplicitChoicesAreTakenAsGivenWithoutProbes()
    {
        var host = new Host { Overlay = "would fail" };
        Assert.That(StorageDriverSelector.Choose(StorageDriver.Overlay, host), Is.EqualTo(new StorageDriverChoice(StorageDriver.Overlay, null, null)));
        Assert.That(StorageDriverSelector.Choose(StorageDriver.FuseOverlayfs, host),
            Is.EqualTo(new StorageDriverChoice(StorageDriver.FuseOverlayfs, "/usr/bin/fuse-overlayfs", null)));
        StorageDriverChoice copy = StorageDriverSelector.Choose(StorageDriver.Copy, host);
        Assert.That(copy.Driver, Is.EqualTo(StorageDriver.Copy));
        Assert.That(copy.Warning, Does.Contain("slow"));
        Assert.That(host.Asked, Is.EqualTo(new[] { "find" }));
    }

    [Test]
    public void ExplicitFuseOverlayfsFailsClearlyWhenMissingOrWhenThePayloadMayPtrace()
    {
        var missing = Assert.Throws<SandboxException>(() => StorageDriverSelector.Choose(StorageDriver.FuseOverlayfs, new Host { Program = null }))!;
        Assert.That(missing.Code, Is.EqualTo(SandboxErrorCode.InvalidSpec));
        Assert.That(missing.Message, Does.Contain("sudo apt-get install fuse-overlayfs"));

        var ptrace = Assert.Throws<SandboxException>(() => StorageDriverSelector.Choose(StorageDriver.FuseOverlayfs, new Host(), payloadMayPtrace: true))!;
        Assert.That(ptrace.Code, Is.EqualTo(SandboxErrorCode.InvalidSpec));
        Assert.That(ptrace.Message, Does.Contain("CAP_SYS_PTRACE").And.Contain("--storage-driver overlay or copy"));
    }

    [TestCase("auto", StorageDriver.Auto)]
    [TestCase("overlay", StorageDriver.Overlay)]
    [TestCase("fuse-overlayfs", StorageDriver.FuseOverlayfs)]
    [TestCase("COPY", StorageDriver.Copy)]
    public void NamesParseAndRoundTrip(string name, StorageDriver driver)
    {
        Assert.That(StorageDriverNames.Parse(name), Is.EqualTo(driver));
        Assert.That(StorageDriverNames.Parse(driver.Name()), Is.EqualTo(driver));
    }

    [Test]
    public void AnUnknownNameIsRejectedWithTheChoices()
    {
        var e = Assert.Throws<SandboxException>(() => StorageDriverNames.Parse("vfs"))!;
        Assert.That(e.Message, Is.EqualTo("unknown storage driver 'vfs': use overlay, fuse-overlayfs, copy or auto"));
        Assert.That(e.ExitCode, Is.EqualTo(125));
    }
}
