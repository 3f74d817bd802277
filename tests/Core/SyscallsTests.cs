using Microsoft.Win32.SafeHandles;
using Sandbox.Linux;
using Sandbox.Security;
using Sandbox.Tests.TestSupport;

namespace Sandbox.Tests.Core;

/// <summary>The small path and file helpers the warm-start path uses instead of System.IO.</summary>
public sealed class SyscallsTests
{
    [Test]
    public void KindOfTellsDirectoriesFilesAndMissingPathsApartFollowingSymlinks()
    {
        using var dir = new TempDirectory();
        string file = dir.Combine("file");
        File.WriteAllText(file, "x");
        File.CreateSymbolicLink(dir.Combine("to-dir"), dir.Path);
        File.CreateSymbolicLink(dir.Combine("dangling"), dir.Combine("nothing"));
        Assert.Multiple(() =>
        {
            Assert.That(Syscalls.KindOf(dir.Path), Is.EqualTo(PathKind.Directory));
            Assert.That(Syscalls.KindOf(file), Is.EqualTo(PathKind.Other));
            Assert.That(Syscalls.KindOf("/dev/null"), Is.EqualTo(PathKind.Other));
            Assert.That(Syscalls.KindOf(dir.Combine("to-dir")), Is.EqualTo(PathKind.Directory));
            Assert.That(Syscalls.KindOf(dir.Combine("dangling")), Is.EqualTo(PathKind.Missing));
            Assert.That(Syscalls.KindOf(dir.Combine("nothing")), Is.EqualTo(PathKind.Missing));
        });
    }

    [Test]
    public void TryReadSmallFileReadsUpToTheLimitAndGivesNullForWhatCannotBeRead()
    {
        using var dir = new TempDirectory();
        File.WriteAllText(dir.Combine("value"), "40\n");
        File.WriteAllText(dir.Combine("long"), new string('a', 1000));
        Assert.Multiple(() =>
        {
            Assert.That(Syscalls.TryReadSmallFile(dir.Combine("value")), Is.EqualTo("40\n"));
            Assert.That(Syscalls.TryReadSmallFile(dir.Combine("long"), maxBytes: 10), Is.EqualTo("aaaaaaaaaa"));
            Assert.That(Syscalls.TryReadSmallFile(dir.Combine("missing")), Is.Null);
            Assert.That(Syscalls.TryReadSmallFile(dir.Path), Is.Null, "a directory cannot be read");
            Assert.That(Syscalls.TryReadSmallFile("/proc/sys/kernel/cap_last_cap"), Does.Match(@"^\d+\n$"));
        });
    }

    [Test]
    public void TryRealPathResolvesExistingPathsOnly()
    {
        using var dir = new TempDirectory();
        Directory.CreateDirectory(dir.Combine("a/b"));
        File.CreateSymbolicLink(dir.Combine("link"), "a/b");
        string real = Syscalls.TryRealPath(dir.Path)!;
        Assert.Multiple(() =>
        {
            Assert.That(Syscalls.TryRealPath(dir.Combine("link/../b/.")), Is.EqualTo(real + "/a/b"));
            Assert.That(Syscalls.TryRealPath(dir.Combine("link/missing")), Is.Null);
        });
    }

    [Test]
    public void KindOfDescriptorTellsTheNullDeviceAndPipesFromTheRest()
    {
        using var dir = new TempDirectory();
        string file = dir.CreateFile("file", "x");
        using var appended = File.OpenHandle("/dev/null", FileMode.Append, FileAccess.Write);
        using var plain = Syscalls.OpenWriteOnly("/dev/null");
        using var zero = Syscalls.OpenReadOnly("/dev/zero");
        using var regular = Syscalls.OpenReadOnly(file);
        var (read, write) = Syscalls.CreatePipe();
        using (read)
        using (write)
        {
            Assert.Multiple(() =>
            {
                Assert.That(Syscalls.KindOfDescriptor(appended), Is.EqualTo(DescriptorKind.NullDevice));
                Assert.That(Syscalls.KindOfDescriptor(plain), Is.EqualTo(DescriptorKind.NullDevice));
                Assert.That(Syscalls.KindOfDescriptor(zero), Is.EqualTo(DescriptorKind.Other));
                Assert.That(Syscalls.KindOfDescriptor(regular), Is.EqualTo(DescriptorKind.RegularFile));
                Assert.That(Syscalls.KindOfDescriptor(write), Is.EqualTo(DescriptorKind.Pipe));
                Assert.That(Syscalls.KindOfDescriptor(read), Is.EqualTo(DescriptorKind.Pipe));
            });
        }
    }

    [Test]
    public void AReopenedPipeIsTheSamePipeWithFlagsOfItsOwn()
    {
        var (read, write) = Syscalls.CreatePipe();
        using (read)
        {
            using (write)
            {
                using SafeFileHandle own = Syscalls.TryReopenPipeForWriting(write)!;
                Assert.That(own, Is.Not.Null);
                Assert.That(Tmds.Linux.LibC.fcntl((int)own.DangerousGetHandle(), Tmds.Linux.LibC.F_GETFL) & Tmds.Linux.LibC.O_NONBLOCK, Is.Zero, "blocking, as a payload expects");
                // O_NONBLOCK on the new description leaves the original's flags alone.
                Tmds.Linux.LibC.fcntl((int)own.DangerousGetHandle(), Tmds.Linux.LibC.F_SETFL, Tmds.Linux.LibC.O_WRONLY | Tmds.Linux.LibC.O_NONBLOCK);
                Assert.That(Tmds.Linux.LibC.fcntl((int)write.DangerousGetHandle(), Tmds.Linux.LibC.F_GETFL) & Tmds.Linux.LibC.O_NONBLOCK, Is.Zero);
                byte[] data = "through the reopened end"u8.ToArray();
                using (var stream = new FileStream(own, FileAccess.Write, 1))
                    stream.Write(data);
                var got = new byte[64];
                int n = Syscalls.Read(read, got);
                Assert.That(System.Text.Encoding.ASCII.GetString(got, 0, n), Is.EqualTo("through the reopened end"));
            }
        }
    }

    [Test]
    public void TryListDirectoryGivesEveryNameButDotAndDotDotAcrossSeveralReads()
    {
        using var dir = new TempDirectory();
        // 300 names of 60 bytes: about 24 KiB of dirents, three times the 8 KiB buffer.
        var expected = Enumerable.Range(0, 300).Select(i => $"{i:D3}-" + new string('n', 56)).ToList();
        foreach (string name in expected)
            File.WriteAllText(dir.Combine(name), "");
        Directory.CreateDirectory(dir.Combine("sub"));
        File.CreateSymbolicLink(dir.Combine("link"), "nowhere");
        expected.AddRange(["sub", "link"]);
        Assert.Multiple(() =>
        {
            Assert.That(FileSystemCalls.TryListDirectory(dir.Path), Is.EquivalentTo(expected));
            Assert.That(FileSystemCalls.TryListDirectory(dir.Combine("missing")), Is.Null);
            Assert.That(FileSystemCalls.TryListDirectory(dir.Combine("000-" + new string('n', 56))), Is.Null, "a file is no directory");
        });
    }

    [Test]
    public void TryReadAllBytesReadsWholeFilesGivesNullWhenMissingAndThrowsOtherwise()
    {
        using var dir = new TempDirectory();
        byte[] big = new byte[300_000];
        new Random(7).NextBytes(big);
        File.WriteAllBytes(dir.Combine("big"), big);
        File.WriteAllBytes(dir.Combine("empty"), []);
        Assert.Multiple(() =>
        {
            Assert.That(FileSystemCalls.TryReadAllBytes(dir.Combine("big")), Is.EqualTo(big));
            Assert.That(FileSystemCalls.TryReadAllBytes(dir.Combine("empty")), Is.Empty);
            Assert.That(FileSystemCalls.TryReadAllBytes(dir.Combine("missing")), Is.Null);
            // /proc files say st_size 0: read to the end anyway (mountinfo is longer than 4 KiB on most hosts).
            Assert.That(FileSystemCalls.TryReadAllBytes("/proc/self/mountinfo"), Is.Not.Empty);
            Assert.That(System.Text.Encoding.UTF8.GetString(FileSystemCalls.TryReadAllBytes("/proc/self/status")!), Does.StartWith("Name:").And.Contain("\nPid:"));
            // read(2) of a directory: EISDIR, which is not "missing".
            Assert.That(Assert.Throws<LinuxException>(() => FileSystemCalls.TryReadAllBytes(dir.Path))!.Errno, Is.EqualTo(21));
        });
    }

    [TestCase("a\nb\n", new[] { "a", "b" })]
    [TestCase("a\nb", new[] { "a", "b" })]
    [TestCase("a\r\nb\r\n", new[] { "a", "b" })]
    [TestCase("a\n\nb\n", new[] { "a", "", "b" })]
    [TestCase("\n", new[] { "" })]
    [TestCase("", new string[0])]
    public void TryReadAllLinesSplitsAsFileReadAllLines(string text, string[] expected)
    {
        using var dir = new TempDirectory();
        File.WriteAllText(dir.Combine("f"), text);
        Assert.That(FileSystemCalls.TryReadAllLines(dir.Combine("f")), Is.EqualTo(expected));
        Assert.That(File.ReadAllLines(dir.Combine("f")), Is.EqualTo(expected), "the BCL agrees");
    }

    [Test]
    public void TryReadAllLinesGivesNullForWhatCannotBeRead()
    {
        using var dir = new TempDirectory();
        Assert.That(FileSystemCalls.TryReadAllLines(dir.Combine("missing")), Is.Null);
        Assert.That(FileSystemCalls.TryReadAllLines(dir.Path), Is.Null);
    }
}
