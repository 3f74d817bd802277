using Sandbox.Cgroups;

namespace Sandbox.Tests.Cgroups;

public class SizesTests
{
    [TestCase("512m", 536_870_912L)]
    [TestCase("1g", 1_073_741_824L)]
    [TestCase("100k", 102_400L)]
    [TestCase("1024b", 1024L)]
    [TestCase("1.5g", 1_610_612_736L)]
    [TestCase("512mb", 536_870_912L)]
    [TestCase("2G", 2_147_483_648L)]
    [TestCase("4096", 4096L)]
    [TestCase("100KB", 102_400L)]
    [TestCase("1t", 1_099_511_627_776L)]
    [TestCase("0.5k", 512L)]
    [TestCase(" 64m ", 67_108_864L)]
    public void Parse_Valid(string text, long expected)
    {
        Assert.That(Sizes.Parse(text, "--memory"), Is.EqualTo(expected));
    }

    [TestCase("")]
    [TestCase("abc")]
    [TestCase("-1m")]
    [TestCase("+1m")]
    [TestCase("0")]
    [TestCase("0m")]
    [TestCase("1x")]
    [TestCase("1bb")]
    [TestCase("5b b")]
    [TestCase("NaN")]
    [TestCase("99999999999t")]
    [TestCase("b")]
    [TestCase("mb")]
    [TestCase(".5g")]
    [TestCase("1.5.5g")]
    [TestCase("1 m")]
    [TestCase("0.4b")]
    public void Parse_Invalid_IsInvalidSpecNamingTheOption(string text)
    {
        var e = Assert.Throws<SandboxException>(() => Sizes.Parse(text, "--memory-swap"));
        Assert.That(e!.Code, Is.EqualTo(SandboxErrorCode.InvalidSpec));
        Assert.That(e.Message, Is.EqualTo($"--memory-swap {text}: expected a size such as 512m, 1g or 100k"));
    }

    [TestCase(100L << 20, "100 MiB")]
    [TestCase(1L << 30, "1 GiB")]
    [TestCase(3L << 29, "1.5 GiB")]
    [TestCase(512L << 10, "512 KiB")]
    [TestCase(10L, "10 B")]
    [TestCase(0L, "0 B")]
    [TestCase(1023L, "1023 B")]
    [TestCase(1024L, "1 KiB")]
    [TestCase(4L << 30, "4 GiB")]
    [TestCase((1L << 30) + (100L << 20), "1.1 GiB")]
    public void Format(long bytes, string expected)
    {
        Assert.That(Sizes.Format(bytes), Is.EqualTo(expected));
    }

    [Test]
    public void Format_RoundTripsThroughParse()
    {
        Assert.That(Sizes.Format(Sizes.Parse("1.5g", "--memory")), Is.EqualTo("1.5 GiB"));
        Assert.That(Sizes.Format(Sizes.Parse("512mb", "--memory")), Is.EqualTo("512 MiB"));
    }
}

public class DeviceRateTests
{
    [Test]
    public void Parse_DeviceAndRate()
    {
        Assert.That(DeviceRate.Parse("/dev/sda:10mb", "--device-read-bps"), Is.EqualTo(new DeviceRate("/dev/sda", 10_485_760)));
    }

    [Test]
    public void Parse_SplitsAtTheLastColon()
    {
        // by-path names contain colons themselves.
        Assert.That(DeviceRate.Parse("/dev/disk/by-path/pci-0000:00:1f.2-ata-1:1m", "--device-write-bps"),
            Is.EqualTo(new DeviceRate("/dev/disk/by-path/pci-0000:00:1f.2-ata-1", 1_048_576)));
    }

    [TestCase("/dev/sda")]
    [TestCase("/dev/sda:")]
    [TestCase(":10mb")]
    [TestCase("")]
    public void Parse_NotDeviceColonRate(string value)
    {
        var e = Assert.Throws<SandboxException>(() => DeviceRate.Parse(value, "--device-read-bps"));
        Assert.That(e!.Code, Is.EqualTo(SandboxErrorCode.InvalidSpec));
        Assert.That(e.Message, Is.EqualTo($"--device-read-bps {value}: expected DEVICE:RATE, e.g. /dev/sda:10mb"));
    }

    [Test]
    public void Parse_BadRate_NamesTheOption()
    {
        var e = Assert.Throws<SandboxException>(() => DeviceRate.Parse("/dev/sda:fast", "--device-write-bps"));
        Assert.That(e!.Code, Is.EqualTo(SandboxErrorCode.InvalidSpec));
        Assert.That(e.Message, Is.EqualTo("--device-write-bps fast: expected a size such as 512m, 1g or 100k"));
    }
}
