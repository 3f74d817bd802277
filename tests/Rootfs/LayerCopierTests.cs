using Sandbox.Images;
using Sandbox.Linux;
using Sandbox.Rootfs;
using Sandbox.Storage;
using Sandbox.Tests.Images;

namespace Sandbox.Tests.Rootfs;

/// <summary>
/// The copy storage driver on layers as the store really keeps them (imported through ImageStore:
/// whiteouts as 0:0 character devices, opaque directories as user.overlay.opaque): the copy must
/// show what overlay would.
/// </summary>
public class LayerCopierTests
{
    private static ImageRecord Import(Scratch temp, params LayerBuilder[] layers)
    {
        var image = new ImageBuilder();
        foreach (LayerBuilder layer in layers)
            image.AddLayer(layer);
        string archive = temp.Combine("image.tar");
        image.Write(ArchiveFormat.OciArchive, archive);
        return new ImageStore(temp.Combine("store")).Import(archive, null);
    }

    [Test]
    public void AppliesWhiteoutsOpaqueDirectoriesAndReplacementsAsOverlayDoes()
    {
        using var temp = new Scratch();
        ImageRecord record = Import(temp,
            new LayerBuilder()
                .Dir("bin").File("bin/tool", "#!/bin/sh\necho tool\n", mode: 0x1ED).Symlink("bin/sh", "tool")
                .Dir("etc").File("etc/deleted.conf", "gone in layer 2").File("etc/readded.conf", "first")
                .Dir("var").Dir("var/cache").File("var/cache/old", "old cache").Dir("var/cache/sub").File("var/cache/sub/deep", "deep")
                .Dir("gone").File("gone/inside", "x")
                .File("was-file", "file in layer 1")
                .Dir("was-dir").File("was-dir/child", "child")
                .Dir("ro", mode: 0x16D).File("ro/lower", "in a 0555 directory")
                .File("h1", "linked").Link("h2", "h1")
                .Fifo("pipe"),
            new LayerBuilder()
                .Dir("etc").Whiteout("etc/deleted.conf").Whiteout("etc/readded.conf")
                .Dir("var").Dir("var/cache").Opaque("var/cache").File("var/cache/new", "new cache")
                .Whiteout("gone")
                .Dir("was-file").File("was-file/now", "a directory now")
                .File("was-dir", "a file now")
                .Dir("ro", mode: 0x16D).File("ro/upper", "added over it"),
            new LayerBuilder()
                .Dir("etc").File("etc/readded.conf", "again"));
        string root = temp.Combine("root");

        long bytes = LayerCopier.Copy(record.LayerDirectories, root);

        Assert.That(Inspect.Tree(root), Is.EqualTo(new[]
        {
            "bin", "bin/sh", "bin/tool", "etc", "etc/readded.conf", "h1", "h2", "pipe", "ro", "ro/lower", "ro/upper",
            "var", "var/cache", "var/cache/new", "was-dir", "was-file", "was-file/now",
        }));
        Assert.That(File.ReadAllText(Path.Combine(root, "etc", "readded.conf")), Is.EqualTo("again"));
        Assert.That(File.ReadAllText(Path.Combine(root, "var", "cache", "new")), Is.EqualTo("new cache"));
        Assert.That(File.ReadAllText(Path.Combine(root, "was-dir")), Is.EqualTo("a file now"));
        Assert.That(File.ReadAllText(Path.Combine(root, "ro", "lower")), Is.EqualTo("in a 0555 directory"));
        Assert.That(new FileInfo(Path.Combine(root, "bin", "sh")).LinkTarget, Is.EqualTo("tool"));
        FileStatus h1 = Inspect.LStat(Path.Combine(root, "h1"))!.Value, h2 = Inspect.LStat(Path.Combine(root, "h2"))!.Value;
        Assert.That(h2.Inode, Is.EqualTo(h1.Inode), "a hard link in a layer stays one");
        Assert.That(Inspect.LStat(Path.Combine(root, "pipe"))!.Value.Kind, Is.EqualTo(FileKind.Fifo));
        Assert.That(Inspect.LStat(Path.Combine(root, "bin", "tool"))!.Value.Permissions, Is.EqualTo(0x1EDu));
        Assert.That(Inspect.LStat(Path.Combine(root, "ro"))!.Value.Permissions, Is.EqualTo(0x16Du), "the layer's mode, after filling");
        Assert.That(Inspect.Xattr(Path.Combine(root, "var", "cache"), LayerCopier.OpaqueXattr), Is.Null, "overlay's metadata is not copied");
        Assert.That(bytes, Is.GreaterThan(0));
        // Nothing of the store changed.
        Assert.That(Inspect.LStat(Path.Combine(record.LayerDirectories[1], "etc", "deleted.conf"))!.Value.IsWhiteout, Is.True);
        TreeRemover.Remove(root);
    }

    /// <summary>
    /// An entry its owner may not read (a 0000 file, with an xattr) is never chmod'ed in the store:
    /// the caller's in-process copy fails on it (EACCES), and ImageRootPreparer then copies as root
    /// of a single-id user namespace (integration/Images/StorageDriverTests.cs runs that for real).
    /// Root outside (CAP_DAC_OVERRIDE) reads it in process. Either way the store's file is as it was.
    /// </summary>
    [Test]
    public void AnEntryItsOwnerCannotReadIsNeverChangedInTheStore()
    {
        using var temp = new Scratch();
        ImageRecord record = Import(temp, new LayerBuilder().File("secret", "root only", mode: 0, pax: new() { ["SCHILY.xattr.user.secret"] = "on a 0000 file" }));
        string root = temp.Combine("root");
        if (Syscalls.RealUserId == 0)
        {
            LayerCopier.Copy(record.LayerDirectories, root);
            Assert.That(Inspect.LStat(Path.Combine(root, "secret"))!.Value.Permissions, Is.EqualTo(0u));
            Assert.That(File.ReadAllText(Path.Combine(root, "secret")), Is.EqualTo("root only"));
            Assert.That(Inspect.Xattr(Path.Combine(root, "secret"), "user.secret"), Is.EqualTo("on a 0000 file"));
        }
        else
        {
            Assert.That(() => LayerCopier.Copy(record.LayerDirectories, root), Throws.InstanceOf<UnauthorizedAccessException>());
        }
        Assert.That(Inspect.LStat(Path.Combine(record.LayerDirectories[0], "secret"))!.Value.Permissions, Is.EqualTo(0u));
        TreeRemover.Remove(root);
    }

    [Test]
    public void UserXattrsModesAndFifosAreCopiedAsTheLayerHasThem()
    {
        using var temp = new Scratch();
        ImageRecord record = Import(temp, new LayerBuilder()
            .Dir("d", mode: 0x16D, pax: new() { ["SCHILY.xattr.user.dir"] = "on a 0555 directory" })
            .File("ro", "x", mode: 0x124, pax: new() { ["SCHILY.xattr.user.mime_type"] = "text/plain" })   // 0444
            .File("setuid", "x", mode: 0x9ED)                                                             // 04755
            .Fifo("pipe", mode: 0x1B6));                                                                  // 0666
        string root = temp.Combine("root");
        LayerCopier.Copy(record.LayerDirectories, root);
        Assert.That(Inspect.Xattr(Path.Combine(root, "d"), "user.dir"), Is.EqualTo("on a 0555 directory"));
        Assert.That(Inspect.Xattr(Path.Combine(root, "ro"), "user.mime_type"), Is.EqualTo("text/plain"));
        Assert.That(Inspect.LStat(Path.Combine(root, "ro"))!.Value.Permissions, Is.EqualTo(0x124u));
        Assert.That(Inspect.LStat(Path.Combine(root, "setuid"))!.Value.Permissions, Is.EqualTo(0x9EDu));
        Assert.That(Inspect.LStat(Path.Combine(root, "pipe"))!.Value.Permissions, Is.EqualTo(0x1B6u), "0666, whatever the umask");
        TreeRemover.Remove(root);
    }

    [Test]
    public void TheTargetMustBeEmpty()
    {
        using var temp = new Scratch();
        ImageRecord record = Import(temp, new LayerBuilder().File("a", "a"));
        File.WriteAllText(Path.Combine(temp.CreateDirectory("root"), "stale"), "");
        Assert.Throws<SandboxException>(() => LayerCopier.Copy(record.LayerDirectories, temp.Combine("root")));
    }
}
