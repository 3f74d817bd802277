using System.Collections.Immutable;
using Sandbox.Images;
using Sandbox.Rootfs;
using Sandbox.Runtime;
using Sandbox.Tests.TestSupport;

namespace Sandbox.Tests.Planning;

/// <summary>How each storage driver turns an image's layers into /newroot.</summary>
public class ImageRootPlanTests
{
    private FakeHost _host = null!;
    private ImageRecord _image = null!;
    private string _store = null!;

    [SetUp]
    public void SetUp()
    {
        _host = new FakeHost();
        _store = _host.Dir.CreateDirectory("store");
        string lower = _host.Dir.CreateDirectory("store", "l", "aaaa");
        string upper = _host.Dir.CreateDirectory("store", "l", "bbbb");
        _image = new ImageRecord
        {
            Digest = "sha256:" + new string('1', 64),
            ConfigDigest = "sha256:" + new string('2', 64),
            Layers = [new LayerInfo { DiffId = "sha256:a", Directory = lower }, new LayerInfo { DiffId = "sha256:b", Directory = upper }],
        };
    }

    [TearDown]
    public void TearDown() => _host.Dispose();

    [Test]
    public void AMissingWorkingDirectoryIsMadeInAWritableImageRootOnly()
    {
        var writable = SandboxPlanner.Plan(new SandboxSpec(["/bin/true"]) { Root = new ImageRoot(_image), WorkingDirectory = "/srv/app" }, _host.Context).Steps.Unconfined();
        Assert.That(writable, Does.Contain(new MakeDirectoryStep("/newroot/srv/app")));
        var readOnly = SandboxPlanner.Plan(new SandboxSpec(["/bin/true"]) { Root = new ImageRoot(_image, ReadOnly: true), WorkingDirectory = "/srv/app" }, _host.Context).Steps.Unconfined();
        Assert.That(readOnly, Does.Not.Contain(new MakeDirectoryStep("/newroot/srv/app")));
    }

    private ImmutableArray<SetupStep> Plan(ImageRoot root) =>
        SandboxPlanner.Plan(new SandboxSpec(["/bin/true"]) { Root = root }, _host.Context).Steps.Unconfined();

    private static int PivotIntoScratch(ImmutableArray<SetupStep> steps) => steps.IndexOf(new PivotRootStep("/tmp", "oldroot") { PreparedBySpare = true });

    [Test]
    public void HomeFilesWithAnImageRoot_Throw()
    {
        var spec = new SandboxSpec(["/bin/true"]) { Root = new ImageRoot(_image), HomeFiles = ["marker"] };
        var e = Assert.Throws<SandboxException>(() => SandboxPlanner.Plan(spec, _host.Context));
        Assert.That(e!.Code, Is.EqualTo(SandboxErrorCode.InvalidSpec));
        Assert.That(e.Message, Does.Contain("only made for the host's root or a directory root"));
    }

    [Test]
    public void AutoAndOverlayMountKernelOverlayWithRelativeLayerKeys()
    {
        foreach (StorageDriver driver in new[] { StorageDriver.Auto, StorageDriver.Overlay })
        {
            var steps = Plan(new ImageRoot(_image, Driver: driver));
            MountStep overlay = steps.OfType<MountStep>().Single(m => m.FileSystemType == "overlay");
            Assert.That(overlay.Target, Is.EqualTo("/newroot"));
            Assert.That(overlay.Data, Is.EqualTo("lowerdir=bbbb:aaaa,upperdir=/upper,workdir=/work,userxattr"));
            Assert.That(steps.OfType<RunProgramStep>(), Is.Empty);
        }
    }

    [Test]
    public void TheOverlaysStepsAreMarkedForAPreparedNamespaceExceptWithKeep()
    {
        // sandbox_init.c's mount_overlay replays exactly these five: the upper and work directories,
        // into the store, the mount, back to /.
        var steps = Plan(new ImageRoot(_image, Driver: StorageDriver.Overlay));
        Assert.That(steps.Where(s => s.OverlayPreparedBySpare), Is.EqualTo(new SetupStep[]
        {
            new MakeDirectoryStep("/upper") { OverlayPreparedBySpare = true },
            new MakeDirectoryStep("/work") { OverlayPreparedBySpare = true },
            new ChangeDirectoryStep($"/oldroot{_store}/l") { OverlayPreparedBySpare = true },
            new MountStep("overlay", "/newroot", "overlay", MountFlags.None, "lowerdir=bbbb:aaaa,upperdir=/upper,workdir=/work,userxattr")
            {
                OverlayPreparedBySpare = true,
                LowerIdentities = Sandbox.Linux.Syscalls.DirectoryIdentity($"{_store}/l/aaaa") + ":" + Sandbox.Linux.Syscalls.DirectoryIdentity($"{_store}/l/bbbb"),
            },
            new ChangeDirectoryStep("/") { OverlayPreparedBySpare = true },
        }));
        string keep = _host.Dir.CreateDirectory("kept-marks");
        Assert.That(Plan(new ImageRoot(_image, KeepDirectory: keep, Driver: StorageDriver.Overlay)).Where(s => s.OverlayPreparedBySpare), Is.Empty);
    }

    [Test]
    public void AKeepDirectoryWithACommaOrABackslashIsEscapedInTheOverlaysOptions()
    {
        // overlayfs splits its options at commas, with a backslash as the escape (ovl_next_opt).
        string keep = _host.Dir.CreateDirectory("kept,with\\back");
        MountStep overlay = Plan(new ImageRoot(_image, KeepDirectory: keep, Driver: StorageDriver.Overlay)).OfType<MountStep>().Single(m => m.FileSystemType == "overlay");
        string escaped = "/oldroot" + keep.Replace("\\", "\\\\", StringComparison.Ordinal).Replace(",", "\\,", StringComparison.Ordinal);
        Assert.That(overlay.Data, Is.EqualTo($"lowerdir=bbbb:aaaa,upperdir={escaped}/upper,workdir={escaped}/work,userxattr"));
        Assert.That(escaped, Does.Contain("kept\\,with\\\\back"));
    }

    [Test]
    public void AKeepDirectoryTooLongForTheOverlaysOptionsIsNamedAsTheCause()
    {
        // upperdir= and workdir= both carry it: a 2,000-character path overflows the page of mount data.
        string keep = _host.Dir.CreateDirectory(string.Join('/', Enumerable.Repeat(new string('k', 200), 10)));
        var e = Assert.Throws<SandboxException>(() => Plan(new ImageRoot(_image, KeepDirectory: keep, Driver: StorageDriver.Overlay)));
        Assert.That(e!.Message, Does.StartWith("the --keep directory's path is too long for an overlay mount's options"));
    }

    [Test]
    public void ALayerStoredAgainAtItsPathIsAnotherDirectoryToTheHolder()
    {
        // image rm, prune and a new import of the same image: same paths, same mount data. A holder's
        // spare mounted the removed directories, and must not be taken for this image's overlay.
        string? Identities() => Plan(new ImageRoot(_image, Driver: StorageDriver.Overlay)).OfType<MountStep>().Single(m => m.FileSystemType == "overlay").LowerIdentities;
        string? before = Identities();
        string layer = $"{_store}/l/aaaa";
        string moved = _host.Dir.CreateDirectory("removed");
        Directory.Move(layer, Path.Combine(moved, "aaaa")); // kept, so that its inode number is not free for reuse
        Directory.CreateDirectory(layer);
        Assert.That(Identities(), Is.Not.EqualTo(before));
        Thread.Sleep(10);
        Directory.Delete(layer);
        Directory.CreateDirectory(layer); // its inode number may well come back: the change time does not
        string? again = Identities();
        Assert.That(again, Is.Not.EqualTo(before));
    }

    [Test]
    public void FuseOverlayfsRunsTheHostProgramOnTheScratchRootBeforeTheRootIsUsed()
    {
        var steps = Plan(new ImageRoot(_image, Driver: StorageDriver.FuseOverlayfs) { FuseOverlayfsProgram = "/usr/bin/fuse-overlayfs" });
        int pivot = PivotIntoScratch(steps);
        RunProgramStep run = steps.OfType<RunProgramStep>().Single();
        int at = steps.IndexOf(run);
        Assert.That(at, Is.GreaterThan(pivot));
        Assert.That(run.Program, Is.EqualTo("/oldroot/usr/bin/fuse-overlayfs"));
        Assert.That(run.Arguments, Is.EqualTo(new[]
        {
            "fuse-overlayfs", "-o", $"lowerdir=/oldroot{_store}/l/bbbb:/oldroot{_store}/l/aaaa,upperdir=/upper,workdir=/work", "/newroot",
        }));
        // Its interpreter, libraries, /proc and devices are there by then; nothing is mounted on /newroot before it.
        var before = steps.Take(at).ToList();
        Assert.That(before, Does.Contain(new MountStep("/oldroot/usr", "/usr", null, MountFlags.Bind | MountFlags.Recursive)));
        Assert.That(before, Does.Contain(new MountStep("/oldroot/proc", "/proc", null, MountFlags.Bind | MountFlags.Recursive)));
        Assert.That(before, Does.Contain(new MountStep("/oldroot/dev/fuse", "/dev/fuse", null, MountFlags.Bind)));
        Assert.That(before, Does.Contain(new MountStep("/oldroot/dev/null", "/dev/null", null, MountFlags.Bind)));
        // On a tmpfs of their own at /dev, unmounted right after it: the sandbox's /dev, built at /dev
        // on the scratch root later (or there already in a prepared mount namespace), gets neither.
        int devTmpfs = steps.IndexOf(new MountStep("tmpfs", "/dev", "tmpfs", MountFlags.NoSuid | MountFlags.NoExec, "mode=0755"));
        Assert.That(devTmpfs, Is.GreaterThan(pivot).And.LessThan(before.IndexOf(new MountStep("/oldroot/dev/fuse", "/dev/fuse", null, MountFlags.Bind))));
        Assert.That(steps[at + 1], Is.EqualTo(new UnmountStep("/dev")));
        Assert.That(steps.IndexOf(new BuildDevStep { PreparedBySpare = true }), Is.GreaterThan(at + 1));
        Assert.That(before, Does.Contain(new MakeDirectoryStep("/upper")).And.Contain(new MakeDirectoryStep("/work")));
        Assert.That(steps.OfType<MountStep>().Where(m => m.Target == "/newroot"), Is.Empty);
        Assert.That(steps.OfType<MountStep>().Where(m => m.FileSystemType == "overlay"), Is.Empty);
        // The rest is as for any image: mount points in the new root, then the final pivot.
        Assert.That(steps.IndexOf(new MakeDirectoryStep("/newroot/proc")), Is.GreaterThan(at));
        Assert.That(steps[^1], Is.EqualTo(new PivotRootStep("/newroot", null)));
    }

    [Test]
    public void FuseOverlayfsKeepsItsUpperOnTheHostWithKeep()
    {
        string keep = _host.Dir.CreateDirectory("kept");
        var steps = Plan(new ImageRoot(_image, KeepDirectory: keep, Driver: StorageDriver.FuseOverlayfs) { FuseOverlayfsProgram = "/usr/bin/fuse-overlayfs" });
        RunProgramStep run = steps.OfType<RunProgramStep>().Single();
        Assert.That(run.Arguments[2], Does.EndWith($",upperdir=/oldroot{keep}/upper,workdir=/oldroot{keep}/work"));
        Assert.That(steps, Does.Not.Contain(new MakeDirectoryStep("/upper")));
    }

    [Test]
    public void FuseOverlayfsRefusesPathsItsOptionsCannotCarry()
    {
        var e = Assert.Throws<SandboxException>(() => RootfsPlanner.FuseOverlayfsStep("/usr/bin/fuse-overlayfs", ["/a,b"], "/u", "/w", "/m"))!;
        Assert.That(e.Code, Is.EqualTo(SandboxErrorCode.InvalidSpec));
        Assert.That(e.Message, Does.Contain("/a,b"));
    }

    [Test]
    public void CopyBindsTheCopiedRootAndMountsNoOverlay()
    {
        string copied = _host.Dir.CreateDirectory("run", "root");
        var steps = Plan(new ImageRoot(_image, Driver: StorageDriver.Copy) { CopiedRoot = copied });
        int pivot = PivotIntoScratch(steps);
        Assert.That(steps[pivot + 1], Is.EqualTo(new MountStep("/oldroot" + copied, "/newroot", null, MountFlags.Bind | MountFlags.Recursive)));
        Assert.That(steps.OfType<MountStep>().Where(m => m.FileSystemType == "overlay"), Is.Empty);
        Assert.That(steps.OfType<RunProgramStep>(), Is.Empty);
        // Writable unless --read-only, like any image root.
        Assert.That(steps, Does.Contain(new SetMountAttributesStep("/newroot", MountAttributes.NoSuid, MountAttributes.None, Recursive: true)));
        var readOnly = Plan(new ImageRoot(_image, ReadOnly: true, Driver: StorageDriver.Copy) { CopiedRoot = copied });
        Assert.That(readOnly, Does.Contain(new SetMountAttributesStep("/newroot", MountAttributes.ReadOnly | MountAttributes.NoSuid, MountAttributes.None, Recursive: true)));
    }

    [Test]
    public void KeptChangesAreTheUpperDirectoryOrTheWholeCopiedRoot()
    {
        Assert.That(new ImageRoot(_image, KeepDirectory: "/k", Driver: StorageDriver.Overlay).KeptChanges, Is.EqualTo("/k/upper"));
        Assert.That(new ImageRoot(_image, KeepDirectory: "/k", Driver: StorageDriver.FuseOverlayfs).KeptChanges, Is.EqualTo("/k/upper"));
        Assert.That(new ImageRoot(_image, KeepDirectory: "/k", Driver: StorageDriver.Copy).KeptChanges, Is.EqualTo("/k/root"));
        Assert.That(new ImageRoot(_image).KeptChanges, Is.Null);
    }
}
