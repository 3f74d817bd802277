using System.Formats.Tar;
using System.Text;
using Sandbox.Images;
using Sandbox.Linux;
using Sandbox.Tests.TestSupport;

namespace Sandbox.Tests.Images;

/// <summary>
/// Layers that try to write outside their directory, after containerd's TestBreakouts (the cases
/// learnt there, written anew, plus this unpacker's own: whiteouts, xattrs, limits). Each case
/// unpacks into PARENT/layer next to a sentinel PARENT/outside holding a file "secret", and checks
/// that nothing outside the layer changed, and that the entry was rejected or resolved inside.
/// </summary>
public class HostileArchiveTests
{
    private const string Secret = "original";

    /// <summary>What the layer does; {out} in names and targets is replaced by the sentinel's absolute path.</summary>
    public sealed record Case(string Name, Func<string, LayerBuilder> Build, SandboxErrorCode? Error, Action<string, string, LayerStats>? Check = null, ImportLimits? Limits = null)
    {
        public override string ToString() => Name;
    }

    private static readonly ImportLimits SmallLimits = ImportLimits.Default with { MaxEntrySize = 1024, MaxEntries = 3 };

    private static readonly Case[] Cases =
    [
        new("DotDotFile", o => new LayerBuilder().File("../outside/evil", "pwned"), SandboxErrorCode.HostileArchiveEntry),
        new("DotDotAfterDirectory", o => new LayerBuilder().Dir("a").File("a/../../outside/evil", "pwned"), SandboxErrorCode.HostileArchiveEntry),
        new("DotDotDirectory", o => new LayerBuilder().Dir("../outside/newdir"), SandboxErrorCode.HostileArchiveEntry),
        new("AbsoluteFile", o => new LayerBuilder().File(o + "/evil", "pwned"), SandboxErrorCode.HostileArchiveEntry),
        new("AbsoluteEtcPasswd", o => new LayerBuilder().File("/etc/passwd", "pwned"), SandboxErrorCode.HostileArchiveEntry),
        new("InnerDotDotStaysInside", o => new LayerBuilder().Dir("a").File("a/../b", "fine"), null,
            (l, o, _) => Assert.That(File.ReadAllText(Path.Combine(l, "b")), Is.EqualTo("fine"))),

        // A symlink pointing out, then an entry written through it: resolved as if the layer were /.
        new("SymlinkAbsoluteThenWriteThrough", o => new LayerBuilder().Symlink("escape", o).File("escape/evil", "pwned"), null,
            (l, o, _) => Assert.That(File.ReadAllText(Path.Combine(l, o[1..], "evil")), Is.EqualTo("pwned"))),
        new("SymlinkRelativeThenWriteThrough", o => new LayerBuilder().Symlink("escape", "../outside").File("escape/evil", "pwned"), null,
            (l, o, _) => Assert.That(File.ReadAllText(Path.Combine(l, "outside", "evil")), Is.EqualTo("pwned"))),
        new("SymlinkUpAndOut", o => new LayerBuilder().Dir("etc").Dir("dummy").Symlink("localetc", "/dummy/../../../etc").File("localetc/unbroken", "inside"), null,
            (l, o, _) => Assert.That(File.ReadAllText(Path.Combine(l, "etc", "unbroken")), Is.EqualTo("inside"))),
        new("SymlinkToRootThenEtcPasswd", o => new LayerBuilder().Symlink("root", "/").File("root/etc/passwd", "pwned"), null,
            (l, o, _) => Assert.That(File.ReadAllText(Path.Combine(l, "etc", "passwd")), Is.EqualTo("pwned"))),
        new("SymlinkChainUpAndOut", o => new LayerBuilder().Symlink("a", "b").Symlink("b", "../../../..").File("a/evil", "pwned"), null,
            (l, o, _) => Assert.That(File.ReadAllText(Path.Combine(l, "evil")), Is.EqualTo("pwned"))),
        new("SymlinkMultipleAbsolute", o => new LayerBuilder().Dir("etc").Dir("dummy").Symlink("dummy/etc", "/etc").Symlink("localetc", "/dummy/etc").File("localetc/unbroken", "inside"), null,
            (l, o, _) => Assert.That(File.ReadAllText(Path.Combine(l, "etc", "unbroken")), Is.EqualTo("inside"))),
        new("SymlinkThenOverwriteTheSymlink", o => new LayerBuilder().Symlink("link", o + "/secret").File("link", "pwned"), null,
            (l, o, _) =>
            {
                Assert.That(Inspect.LStat(Path.Combine(l, "link"))!.Value.Kind, Is.EqualTo(FileKind.Regular));
                Assert.That(File.ReadAllText(Path.Combine(l, "link")), Is.EqualTo("pwned"));
            }),
        new("SymlinkLoop", o => new LayerBuilder().Symlink("a", "b").Symlink("b", "a").File("a/x", "x"), SandboxErrorCode.HostileArchiveEntry),
        new("SymlinkKeptAsWritten", o => new LayerBuilder().Symlink("passwd", "../../../etc/passwd"), null,
            (l, o, _) =>
            {
                Assert.That(Inspect.LStat(Path.Combine(l, "passwd"))!.Value.Kind, Is.EqualTo(FileKind.Symlink));
                Assert.That(new FileInfo(Path.Combine(l, "passwd")).LinkTarget, Is.EqualTo("../../../etc/passwd"));
            }),

        // Hard links: only to entries of this layer.
        new("HardlinkAbsoluteOutside", o => new LayerBuilder().Link("h", o + "/secret"), SandboxErrorCode.HostileArchiveEntry),
        new("HardlinkDotDotOutside", o => new LayerBuilder().Link("h", "../outside/secret"), SandboxErrorCode.HostileArchiveEntry),
        new("HardlinkThroughAbsoluteSymlink", o => new LayerBuilder().Symlink("s", o).Link("h", "s/secret"), SandboxErrorCode.ImageFormatInvalid),
        new("HardlinkThroughRelativeSymlink", o => new LayerBuilder().Symlink("s", "../outside").Link("h", "s/secret"), SandboxErrorCode.ImageFormatInvalid),
        new("HardlinkThroughSymlinkResolvesInside", o => new LayerBuilder().Dir("etc").File("etc/passwd", "inside").Dir("b").Symlink("b/d1", "../../etc").Link("b/mypasswd", "b/d1/passwd"), null,
            (l, o, _) => Assert.That(Inspect.LStat(Path.Combine(l, "b", "mypasswd"))!.Value.Inode, Is.EqualTo(Inspect.LStat(Path.Combine(l, "etc", "passwd"))!.Value.Inode))),
        new("HardlinkToSymlinkPointingOut", o => new LayerBuilder().Symlink("s", o + "/secret").Link("h", "s"), null,
            (l, o, _) =>
            {
                // The link is to the symlink itself (linkat without AT_SYMLINK_FOLLOW), not to what it points at.
                Assert.That(Inspect.LStat(Path.Combine(l, "h"))!.Value.Kind, Is.EqualTo(FileKind.Symlink));
            }),
        new("HardlinkToSymlinkThenWriteThrough", o => new LayerBuilder().Symlink("s", o + "/secret").Link("h", "s").File("h", "pwned"), null,
            (l, o, _) => Assert.That(Inspect.LStat(Path.Combine(l, "h"))!.Value.Kind, Is.EqualTo(FileKind.Regular))),
        new("HardlinkToDirectory", o => new LayerBuilder().Dir("d").Link("h", "d"), SandboxErrorCode.HostileArchiveEntry),
        new("HardlinkToMissing", o => new LayerBuilder().Link("h", "nothere"), SandboxErrorCode.ImageFormatInvalid),
        new("HardlinkInside", o => new LayerBuilder().File("f", "data").Link("h", "f"), null,
            (l, o, _) => Assert.That(Inspect.LStat(Path.Combine(l, "h"))!.Value.Inode, Is.EqualTo(Inspect.LStat(Path.Combine(l, "f"))!.Value.Inode))),

        // Devices are skipped and counted; fifos are made.
        new("DeviceNodes", o => new LayerBuilder().Dir("dev").CharDevice("dev/null", 1, 3).BlockDevice("dev/sda", 8, 0).CharDevice("dev/wh", 0, 0).Link("dev/null2", "dev/null"), null,
            (l, o, s) =>
            {
                Assert.That(s.SkippedDevices, Is.EqualTo(4));
                Assert.That(Directory.EnumerateFileSystemEntries(Path.Combine(l, "dev")), Is.Empty);
            }),
        new("Fifo", o => new LayerBuilder().Fifo("pipe"), null,
            (l, o, _) => Assert.That(Inspect.LStat(Path.Combine(l, "pipe"))!.Value.Kind, Is.EqualTo(FileKind.Fifo))),

        // Replacing: a symlink replaced by a directory, and the reverse.
        new("SymlinkReplacedByDirectory", o => new LayerBuilder().Symlink("d", o).Dir("d").File("d/evil", "inside"), null,
            (l, o, _) =>
            {
                Assert.That(Inspect.LStat(Path.Combine(l, "d"))!.Value.Kind, Is.EqualTo(FileKind.Directory));
                Assert.That(File.ReadAllText(Path.Combine(l, "d", "evil")), Is.EqualTo("inside"));
            }),
        new("DirectoryReplacedBySymlinkThenWriteThrough", o => new LayerBuilder().Dir("d").File("d/f", "x").Symlink("d", o).File("d/evil", "pwned"), null,
            (l, o, _) => Assert.That(File.ReadAllText(Path.Combine(l, o[1..], "evil")), Is.EqualTo("pwned"))),
        new("ParentIsAFile", o => new LayerBuilder().File("f", "x").File("f/g", "y"), SandboxErrorCode.ImageFormatInvalid),

        // Whiteouts and xattrs.
        new("WhiteoutDotDot", o => new LayerBuilder().File("../.wh.outside"), SandboxErrorCode.HostileArchiveEntry),
        new("WhiteoutOfDot", o => new LayerBuilder().File("a/.wh.."), SandboxErrorCode.HostileArchiveEntry),
        new("WhiteoutThroughSymlink", o => new LayerBuilder().Symlink("s", o).Whiteout("s/secret"), null,
            (l, o, _) => Assert.That(Inspect.LStat(Path.Combine(l, o[1..], "secret"))!.Value.IsWhiteout, Is.True)),
        new("OpaqueThroughSymlink", o => new LayerBuilder().Symlink("s", o).Opaque("s"), null,
            (l, o, _) => Assert.That(Inspect.Xattr(Path.Combine(l, o[1..]), "user.overlay.opaque"), Is.EqualTo("y"))),
        new("OverlayXattrsFromTheArchiveAreDropped", o => new LayerBuilder().File("f", "x", pax: new()
            {
                ["SCHILY.xattr.user.overlay.redirect"] = "/etc",
                ["SCHILY.xattr.user.overlay.opaque"] = "y",
                ["SCHILY.xattr.trusted.overlay.opaque"] = "y",
                ["SCHILY.xattr.security.capability"] = "x",
                ["SCHILY.xattr.user.kept"] = "yes",
            }), null,
            (l, o, s) =>
            {
                string f = Path.Combine(l, "f");
                Assert.That(FileSystemCalls.ListXattrs(f), Is.EquivalentTo(new[] { "user.kept" }));
                Assert.That(s.DroppedXattrs, Is.EqualTo(4));
            }),

        // Bounds.
        new("EntryLargerThanLimit", o => new LayerBuilder().File("big", new byte[2048]), SandboxErrorCode.ImageTooLarge, Limits: SmallLimits),
        new("TooManyEntries", o => new LayerBuilder().File("a").File("b").File("c").File("d"), SandboxErrorCode.ImageTooLarge, Limits: SmallLimits),
        new("NameWithNul", o => new LayerBuilder().File("a\0b"), SandboxErrorCode.HostileArchiveEntry),
    ];

    private static IEnumerable<Case> AllCases() => Cases;

    /// <summary>
    /// Two names that differ only in bytes that are not UTF-8 ("caf\xe9", "caf\xe8", Latin-1) decode
    /// to the same string; stored, the second replaced the first without a word.
    /// </summary>
    [TestCase("name")]
    [TestCase("symlink target")]
    public void ANameThatIsNotUtf8IsRefused_NotStoredUnderAnotherName(string where)
    {
        using var temp = new Scratch();
        string layer = temp.CreateDirectory("layer");
        byte[] tar = where == "name"
            ? UstarWithByte(new LayerBuilder().File("cafX", "first").File("cafY", "second"), ("cafX", 0xE9), ("cafY", 0xE8))
            : UstarWithByte(new LayerBuilder().Symlink("link", "cafX"), ("cafX", 0xE9));
        using var unpacker = new LayerUnpacker(layer, ImportLimits.Default);
        var e = Assert.Throws<SandboxException>(() => unpacker.Unpack(new MemoryStream(tar)));
        Assert.That(e!.Code, Is.EqualTo(SandboxErrorCode.ImageFormatInvalid));
        Assert.That(e.Message, Does.Contain($"{where} is not valid UTF-8").And.Contain("rename the file"));
    }

    // The BCL writer writes only UTF-8 names: write ASCII placeholders in ustar headers (no PAX
    // records, which would hold the name again), then put the raw byte in and fix each checksum.
    private static byte[] UstarWithByte(LayerBuilder layer, params (string Placeholder, byte Byte)[] patches)
    {
        byte[] tar = layer.Build(TarEntryFormat.Ustar);
        for (int header = 0; header + 512 <= tar.Length; header += 512)
        {
            bool patched = false;
            foreach (var (placeholder, value) in patches)
            {
                byte[] p = Encoding.ASCII.GetBytes(placeholder);
                foreach (int field in new[] { 0, 157 }) // name, linkname
                {
                    if (tar.AsSpan(header + field, p.Length).SequenceEqual(p) && tar[header + field + p.Length] == 0)
                    {
                        tar[header + field + p.Length - 1] = value;
                        patched = true;
                    }
                }
            }
            if (!patched)
                continue;
            tar.AsSpan(header + 148, 8).Fill((byte)' ');
            int sum = 0;
            for (int i = 0; i < 512; i++)
                sum += tar[header + i];
            Encoding.ASCII.GetBytes(Convert.ToString(sum, 8).PadLeft(6, '0') + "\0 ").CopyTo(tar, header + 148);
        }
        return tar;
    }

    [TestCaseSource(nameof(AllCases))]
    public void Breakout(Case c)
    {
        using var temp = new Scratch();
        string parent = temp.CreateDirectory("parent");
        string layer = Path.Combine(parent, "layer");
        string outside = Path.Combine(parent, "outside");
        Directory.CreateDirectory(layer);
        Directory.CreateDirectory(outside);
        File.WriteAllText(Path.Combine(outside, "secret"), Secret);
        var before = Inspect.Tree(parent).Where(p => !p.StartsWith("layer", StringComparison.Ordinal)).ToList();

        byte[] tar;
        try
        {
            tar = c.Build(outside).Build();
        }
        catch (ArgumentException e)
        {
            // The fixture must be buildable, or the case tests nothing.
            Assert.Fail($"the BCL tar writer refuses this case's entry, so the case cannot be built: {e.Message}");
            return;
        }
        Exception? error = null;
        LayerStats? stats = null;
        using (var unpacker = new LayerUnpacker(layer, c.Limits))
        {
            try
            {
                stats = unpacker.Unpack(new MemoryStream(tar));
            }
            catch (SandboxException e)
            {
                error = e;
            }
        }

        // Nothing outside the layer changed, whatever happened.
        Assert.That(Inspect.Tree(parent).Where(p => !p.StartsWith("layer", StringComparison.Ordinal)), Is.EqualTo(before));
        Assert.That(File.ReadAllText(Path.Combine(outside, "secret")), Is.EqualTo(Secret));
        Assert.That(Inspect.LStat(Path.Combine(outside, "secret"))!.Value.Kind, Is.EqualTo(FileKind.Regular));
        Assert.That(FileSystemCalls.ListXattrs(outside), Is.Empty);
        Assert.That(Inspect.LStat(Path.Combine(outside, "secret"))!.Value.LinkCount, Is.EqualTo(1UL), "no hard link to the sentinel");

        if (c.Error is { } expected)
        {
            Assert.That(error, Is.InstanceOf<SandboxException>(), "expected the layer to be rejected");
            Assert.That(((SandboxException)error!).Code, Is.EqualTo(expected), error.Message);
        }
        else
        {
            Assert.That(error, Is.Null, error?.Message);
            c.Check?.Invoke(layer, outside, stats!);
        }
    }

    [Test]
    public void SymlinkReplacedByDirectoryInALaterLayer()
    {
        // Each layer is unpacked into its own directory: a later layer's directory never goes through an earlier layer's symlink.
        using var temp = new Scratch();
        string outside = temp.CreateDirectory("outside");
        string lower = temp.CreateDirectory("lower");
        string upper = temp.CreateDirectory("upper");
        using (var u = new LayerUnpacker(lower))
            u.Unpack(new MemoryStream(new LayerBuilder().Symlink("etc", outside).Build()));
        using (var u = new LayerUnpacker(upper))
            u.Unpack(new MemoryStream(new LayerBuilder().Dir("etc").File("etc/passwd", "root:x:0:0::/root:/bin/sh\n").Build()));
        Assert.That(Directory.EnumerateFileSystemEntries(outside), Is.Empty);
        Assert.That(Inspect.LStat(Path.Combine(upper, "etc"))!.Value.Kind, Is.EqualTo(FileKind.Directory));
        Assert.That(Inspect.LStat(Path.Combine(lower, "etc"))!.Value.Kind, Is.EqualTo(FileKind.Symlink));
    }

    [Test]
    public void ACaseForEachFamilyOfTestBreakouts()
    {
        Assert.That(Cases.Select(c => c.Name), Has.Some.StartsWith("Symlink").And.Some.StartsWith("Hardlink").And.Some.StartsWith("DotDot")
            .And.Some.StartsWith("Absolute").And.Some.StartsWith("Whiteout").And.Some.EqualTo("DeviceNodes"));
        Assert.That(Encoding.UTF8.GetByteCount(Secret), Is.GreaterThan(0));
    }
}
