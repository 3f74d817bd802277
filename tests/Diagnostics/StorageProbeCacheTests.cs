using Sandbox.Diagnostics;
using Sandbox.Tests.TestSupport;

namespace Sandbox.Tests.Diagnostics;

public class StorageProbeCacheTests
{
    [Test]
    public void OnlyAnswersAboutTheKernelAreKeptNotAProbeSandboxThatCouldNotBeMade()
    {
        Assert.That(StorageProbe.IsLasting(null), Is.True);
        Assert.That(StorageProbe.IsLasting("mount overlay: Operation not permitted (EPERM)"), Is.True);
        Assert.That(StorageProbe.IsLasting($"could not create the sandbox's init process (clone: {Sandbox.Linux.Errno.Describe(24)})"), Is.False);
        Assert.That(StorageProbe.IsLasting($"could not start the sandbox: pipe2: {Sandbox.Linux.Errno.Describe(24)}"), Is.False);
        Assert.That(StorageProbe.IsLasting($"could not create the sandbox's init process (clone: {Sandbox.Linux.Errno.Describe(12)})"), Is.False);
    }

    [Test]
    public void AnswersAreKeptPerBootAndForgottenAfterAReboot()
    {
        using var dir = new TempDirectory();
        string file = dir.Combine("sub", "storage-probe");
        var cache = new StorageProbeCache(file, "boot-1");
        Assert.That(cache.TryGet("overlay", out _), Is.False);

        cache.Set("overlay", null);
        cache.Set("fuse /usr/bin/fuse-overlayfs 1 600:0", "/dev/fuse is not readable\tand writable");
        var again = new StorageProbeCache(file, "boot-1");
        Assert.That(again.TryGet("overlay", out string? overlay), Is.True);
        Assert.That(overlay, Is.Null);
        Assert.That(again.TryGet("fuse /usr/bin/fuse-overlayfs 1 600:0", out string? fuse), Is.True);
        Assert.That(fuse, Is.EqualTo("/dev/fuse is not readable and writable"), "tabs cannot break the format");
        Assert.That(again.TryGet("fuse /usr/bin/fuse-overlayfs 1 666:0", out _), Is.False, "another /dev/fuse mode is another question");

        var rebooted = new StorageProbeCache(file, "boot-2");
        Assert.That(rebooted.TryGet("overlay", out _), Is.False);
        rebooted.Set("overlay", "mount overlay: EPERM");
        Assert.That(File.ReadAllLines(file), Is.EqualTo(new[] { "boot\tboot-2", "overlay\tfail\tmount overlay: EPERM" }));
    }

    [Test]
    public void AGarbledFileIsAnEmptyCacheAndAnUnwritableOneIsNoError()
    {
        using var dir = new TempDirectory();
        string file = dir.CreateFile("storage-probe", "boot\tb\nnonsense\noverlay\tmaybe\n");
        var cache = new StorageProbeCache(file, "b");
        Assert.That(cache.TryGet("overlay", out _), Is.False);
        Assert.That(cache.TryGet("nonsense", out _), Is.False);

        var nowhere = new StorageProbeCache("/proc/no-such-dir/storage-probe", "b");
        Assert.DoesNotThrow(() => nowhere.Set("overlay", null));
        Assert.That(nowhere.TryGet("overlay", out _), Is.False);
    }

    [Test]
    public void TheCacheLivesUnderTheRuntimeDirectoryWhenThereIsOne()
    {
        string? saved = Environment.GetEnvironmentVariable("XDG_RUNTIME_DIR");
        using var dir = new TempDirectory();
        try
        {
            Environment.SetEnvironmentVariable("XDG_RUNTIME_DIR", dir.Path);
            Assert.That(StorageProbe.CacheFileFor("/store"), Is.EqualTo(Path.Combine(dir.Path, "sandbox", "storage-probe")));
            Environment.SetEnvironmentVariable("XDG_RUNTIME_DIR", null);
            Assert.That(StorageProbe.CacheFileFor("/store"), Is.EqualTo("/store/storage-probe"));
        }
        finally
        {
            Environment.SetEnvironmentVariable("XDG_RUNTIME_DIR", saved);
        }
    }
}
