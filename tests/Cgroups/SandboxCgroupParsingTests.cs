using Sandbox.Cgroups;
using Sandbox.Tests.TestSupport;

namespace Sandbox.Tests.Cgroups;

public class SandboxCgroupParsingTests
{
    // As the kernel writes them (cgroup-v2.rst; Linux 6.x).
    private const string MemoryEvents = "low 0\nhigh 17\nmax 12\noom 3\noom_kill 2\noom_group_kill 0\n";
    private const string PidsEvents = "max 7\n";
    private const string CpuStat =
        "usage_usec 123456789\nuser_usec 100000000\nsystem_usec 23456789\nnr_periods 40\nnr_throttled 5\nthrottled_usec 991\nnr_bursts 0\nburst_usec 0\n";
    private const string V1OomControl = "oom_kill_disable 0\nunder_oom 0\noom_kill 4\n";

    [TestCase("oom_kill", 2L)]
    [TestCase("oom", 3L)]
    [TestCase("max", 12L)]
    [TestCase("high", 17L)]
    [TestCase("low", 0L)]
    [TestCase("oom_group_kill", 0L)]
    public void FlatKey_MemoryEvents(string key, long expected)
    {
        Assert.That(SandboxCgroup.FlatKey(MemoryEvents, key), Is.EqualTo(expected));
    }

    [Test]
    public void FlatKey_PidsEvents()
    {
        Assert.That(SandboxCgroup.FlatKey(PidsEvents, "max"), Is.EqualTo(7L));
    }

    [TestCase("usage_usec", 123456789L)]
    [TestCase("user_usec", 100000000L)]
    [TestCase("system_usec", 23456789L)]
    [TestCase("nr_throttled", 5L)]
    public void FlatKey_CpuStat(string key, long expected)
    {
        Assert.That(SandboxCgroup.FlatKey(CpuStat, key), Is.EqualTo(expected));
    }

    [Test]
    public void FlatKey_V1OomControl()
    {
        Assert.That(SandboxCgroup.FlatKey(V1OomControl, "oom_kill"), Is.EqualTo(4L));
        Assert.That(SandboxCgroup.FlatKey(V1OomControl, "under_oom"), Is.EqualTo(0L));
    }

    [Test]
    public void FlatKey_MissingOrUnparsable_IsNull()
    {
        Assert.That(SandboxCgroup.FlatKey(MemoryEvents, "oom_kil"), Is.Null); // no prefix matching
        Assert.That(SandboxCgroup.FlatKey(MemoryEvents, "kill"), Is.Null);
        Assert.That(SandboxCgroup.FlatKey(CpuStat, "usage"), Is.Null);
        Assert.That(SandboxCgroup.FlatKey(null, "max"), Is.Null);
        Assert.That(SandboxCgroup.FlatKey("", "max"), Is.Null);
        Assert.That(SandboxCgroup.FlatKey("max many\n", "max"), Is.Null);
        Assert.That(SandboxCgroup.FlatKey("max 1 2\n", "max"), Is.Null);
    }

    [Test]
    public void FlatKey_FirstMatchWins_AndToleratesExtraSpaces()
    {
        Assert.That(SandboxCgroup.FlatKey("max  9\nmax 10\n", "max"), Is.EqualTo(9L));
    }

    [TestCase("536870912\n", 536870912L)]
    [TestCase("0\n", 0L)]
    [TestCase("  42  ", 42L)]
    [TestCase("9223372036854771712\n", 9223372036854771712L)] // v1 "unlimited" memory.limit_in_bytes
    public void SingleValue_Number(string content, long expected)
    {
        Assert.That(SandboxCgroup.SingleValue(content), Is.EqualTo(expected));
    }

    [TestCase("max\n")]
    [TestCase("")]
    [TestCase("1 2\n")]
    [TestCase(null)]
    public void SingleValue_NotANumber_IsNull(string? content)
    {
        Assert.That(SandboxCgroup.SingleValue(content), Is.Null);
    }

    [Test]
    public void Write_MissingFile_IsCgroupFailedNamingValueAndFile()
    {
        using var dir = new TempDirectory();
        string file = dir.Combine("memory.max");
        var e = Assert.Throws<SandboxException>(() => CgroupHelpers.CallWrite(file, "1024\n"));
        Assert.That(e!.Code, Is.EqualTo(SandboxErrorCode.CgroupFailed));
        Assert.That(e.Message, Does.StartWith($"cgroup: writing '1024' to {file} failed: "));
        Assert.That(e.InnerException, Is.InstanceOf<Sandbox.Linux.LinuxException>());
        Assert.That(((Sandbox.Linux.LinuxException)e.InnerException!).Errno, Is.EqualTo(2)); // ENOENT
        Assert.That(File.Exists(file), Is.False, "no O_CREAT: a cgroup file that is not there is not made");
    }

    [Test]
    public void Write_ExistingFile_WritesTheValue()
    {
        using var dir = new TempDirectory();
        string file = dir.CreateFile("pids.max");
        CgroupHelpers.CallWrite(file, "64");
        Assert.That(File.ReadAllText(file), Is.EqualTo("64"));
    }

    [Test]
    public void ReadOrNull()
    {
        using var dir = new TempDirectory();
        Assert.That(CgroupHelpers.CallReadOrNull(dir.Combine("absent")), Is.Null);
        Assert.That(CgroupHelpers.CallReadOrNull(dir.CreateFile("memory.peak", "77\n")), Is.EqualTo("77\n"));
    }

    [Test]
    public void RemoveDirectory_RemovesAnEmptyOne_AndIgnoresAMissingOne()
    {
        using var dir = new TempDirectory();
        string empty = dir.CreateDirectory("sandbox-1-1");
        CgroupHelpers.CallRemoveDirectory(empty);
        Assert.That(Directory.Exists(empty), Is.False);
        Assert.DoesNotThrow(() => CgroupHelpers.CallRemoveDirectory(dir.Combine("never-there")));
    }

    [Test]
    public void DeviceNumbers_CharacterDevice()
    {
        Assert.That(CgroupHelpers.CallDeviceNumbers("/dev/null"), Is.EqualTo((1, 3)));
        Assert.That(CgroupHelpers.CallDeviceNumbers("/dev/zero"), Is.EqualTo((1, 5)));
    }

    [Test]
    public void DeviceNumbers_NotADevice_IsInvalidSpec()
    {
        using var dir = new TempDirectory();
        string file = dir.CreateFile("disk.img");
        var e = Assert.Throws<SandboxException>(() => CgroupHelpers.CallDeviceNumbers(file));
        Assert.That(e!.Code, Is.EqualTo(SandboxErrorCode.InvalidSpec));
        Assert.That(e.Message, Does.StartWith($"device {file}: "));

        var missing = Assert.Throws<SandboxException>(() => CgroupHelpers.CallDeviceNumbers(dir.Combine("no-such-disk")));
        Assert.That(missing!.Code, Is.EqualTo(SandboxErrorCode.InvalidSpec));
    }
}
