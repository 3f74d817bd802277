using Sandbox.Rootfs;
using Sandbox.Tests.TestSupport;

namespace Sandbox.Tests.Rootfs;

public class HostPathsTests
{
    private TempDirectory _dir = null!;

    [SetUp]
    public void SetUp() => _dir = new TempDirectory();

    [TearDown]
    public void TearDown() => _dir.Dispose();

    [Test]
    public void Resolve_PlainExistingPath_Unchanged()
    {
        string sub = _dir.CreateDirectory("a", "b");
        Assert.That(HostPaths.Resolve(sub), Is.EqualTo(sub));
        Assert.That(HostPaths.Resolve("/"), Is.EqualTo("/"));
    }

    [Test]
    public void Resolve_RelativeSymlink()
    {
        string real = _dir.CreateDirectory("real", "inner");
        _dir.CreateDirectory("links");
        Directory.CreateSymbolicLink(_dir.Combine("links", "rel"), "../real");
        Assert.That(HostPaths.Resolve(_dir.Combine("links", "rel", "inner")), Is.EqualTo(real));
    }

    [Test]
    public void Resolve_AbsoluteSymlink()
    {
        string real = _dir.CreateDirectory("real");
        Directory.CreateSymbolicLink(_dir.Combine("abs"), real);
        Assert.That(HostPaths.Resolve(_dir.Combine("abs")), Is.EqualTo(real));
    }

    [Test]
    public void Resolve_ChainOfLinksToAFile()
    {
        string file = _dir.CreateFile("real/file.txt", "x");
        File.CreateSymbolicLink(_dir.Combine("l1"), "l2");
        File.CreateSymbolicLink(_dir.Combine("l2"), _dir.Combine("real", "file.txt"));
        Assert.That(HostPaths.Resolve(_dir.Combine("l1")), Is.EqualTo(file));
    }

    [Test]
    public void Resolve_DotDotAfterASymlink_IsTakenFromTheTarget()
    {
        // /d/link -> real/deep; /d/link/.. is /d/real (as the kernel resolves it), not /d.
        string real = _dir.CreateDirectory("real");
        _dir.CreateDirectory("real", "deep");
        Directory.CreateSymbolicLink(_dir.Combine("link"), "real/deep");
        Assert.That(HostPaths.Resolve(_dir.Path + "/link/.."), Is.EqualTo(real));
    }

    [Test]
    public void Resolve_DotAndDotDotAndDuplicateSlashes()
    {
        string b = _dir.CreateDirectory("a", "b");
        Assert.That(HostPaths.Resolve(_dir.Path + "//a/./c/../b/"), Is.EqualTo(b));
        Assert.That(HostPaths.Resolve("/../../"), Is.EqualTo("/"));
    }

    [Test]
    public void Resolve_NonexistentTail_IsKept()
    {
        string real = _dir.CreateDirectory("real");
        Directory.CreateSymbolicLink(_dir.Combine("link"), real);
        Assert.That(HostPaths.Resolve(_dir.Path + "/link/not/yet"), Is.EqualTo(real + "/not/yet"));
        Assert.That(HostPaths.Resolve(_dir.Path + "/missing/x"), Is.EqualTo(_dir.Path + "/missing/x"));
    }

    [Test]
    public void Resolve_DanglingSymlink_IsFollowed()
    {
        Directory.CreateSymbolicLink(_dir.Combine("dangling"), _dir.Combine("target-later"));
        Assert.That(HostPaths.Resolve(_dir.Combine("dangling")), Is.EqualTo(_dir.Combine("target-later")));
    }

    [Test]
    public void Resolve_Loop_Throws()
    {
        File.CreateSymbolicLink(_dir.Combine("loop1"), "loop2");
        File.CreateSymbolicLink(_dir.Combine("loop2"), "loop1");
        var e = Assert.Throws<IOException>(() => HostPaths.Resolve(_dir.Combine("loop1", "x")));
        Assert.That(e!.Message, Does.Contain("too many levels of symbolic links"));
    }

    [Test]
    public void Resolve_SelfLoop_Throws()
    {
        File.CreateSymbolicLink(_dir.Combine("self"), "self");
        Assert.That(() => HostPaths.Resolve(_dir.Combine("self")), Throws.InstanceOf<IOException>());
    }

    [Test]
    public void Resolve_MaxLinks_IsHonoured()
    {
        string real = _dir.CreateDirectory("real");
        File.CreateSymbolicLink(_dir.Combine("l1"), "l2");
        File.CreateSymbolicLink(_dir.Combine("l2"), "real");
        Assert.That(HostPaths.Resolve(_dir.Combine("l1"), maxLinks: 2), Is.EqualTo(real));
        Assert.That(() => HostPaths.Resolve(_dir.Combine("l1"), maxLinks: 1), Throws.InstanceOf<IOException>());
    }

    [Test]
    public void Resolve_RelativePath_Throws()
    {
        Assert.That(() => HostPaths.Resolve("relative/path"), Throws.ArgumentException.With.Message.Contains("not an absolute path"));
    }

    [TestCase("/newroot", "/a/b", "/newroot/a/b")]
    [TestCase("/newroot", "/", "/newroot")]
    [TestCase("/newroot/", "/a", "/newroot/a")]
    [TestCase("/tmp", "/newroot", "/tmp/newroot")]
    public void Under(string root, string path, string expected)
    {
        Assert.That(HostPaths.Under(root, path), Is.EqualTo(expected));
    }

    [Test]
    public void Ancestry_ShortestFirst()
    {
        Assert.That(HostPaths.Ancestry("/a/b/c"), Is.EqualTo(new[] { "/a", "/a/b", "/a/b/c" }));
        Assert.That(HostPaths.Ancestry("/a//b/"), Is.EqualTo(new[] { "/a", "/a/b" }));
        Assert.That(HostPaths.Ancestry("/"), Is.Empty);
    }

    [TestCase("/a/./b/../c", "/a/c")]
    [TestCase("//a//b//", "/a/b")]
    [TestCase("/../..", "/")]
    [TestCase("/", "/")]
    [TestCase("/a/b/../../..", "/")]
    [TestCase("/a/..b/c", "/a/..b/c")]
    public void Normalize(string path, string expected)
    {
        Assert.That(HostPaths.Normalize(path), Is.EqualTo(expected));
    }
}
