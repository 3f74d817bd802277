using System.Text;
using Sandbox.Identity;
using Sandbox.Linux;
using Sandbox.Tests.TestSupport;

namespace Sandbox.Tests.Identity;

public class ByteLinesTests
{
    [TestCase("a\nb\n")]
    [TestCase("a\nb")]
    [TestCase("a\r\nb\r\n")]
    [TestCase("a\n\nb\n")]
    [TestCase("a\n\n")]
    [TestCase("\n")]
    [TestCase("\r\r\n\n")]
    [TestCase("")]
    [TestCase("jörg:100000:65536\nü\n")]
    public void SplitsAsTryReadAllLines(string text)
    {
        using var dir = new TempDirectory();
        string file = dir.CreateFile("f", text);
        Assert.That(ByteLines.TryRead(file, out ByteLines lines), Is.True);
        var decoded = new List<string>();
        foreach (ReadOnlySpan<byte> line in lines)
            decoded.Add(Encoding.UTF8.GetString(line));
        Assert.That(decoded, Is.EqualTo(FileSystemCalls.TryReadAllLines(file)));
    }

    [Test]
    public void WhatCannotBeReadIsFalse()
    {
        using var dir = new TempDirectory();
        Assert.That(ByteLines.TryRead(dir.Combine("missing"), out _), Is.False);
        Assert.That(ByteLines.TryRead(dir.Path, out _), Is.False, "a directory (EISDIR)");
    }

    [TestCase("0", 0L)]
    [TestCase("007", 7L)]
    [TestCase("100000", 100000L)]
    [TestCase("9223372036854775807", long.MaxValue)]
    public void ParsesDecimals(string text, long expected)
    {
        Assert.That(AsciiText.TryParseDecimal(Encoding.ASCII.GetBytes(text), out long value), Is.True);
        Assert.That(value, Is.EqualTo(expected));
    }

    [TestCase("")]
    [TestCase("9223372036854775808")]
    [TestCase("99999999999999999999")]
    [TestCase("-5")]
    [TestCase("+5")]
    [TestCase(" 5")]
    [TestCase("5 ")]
    [TestCase("0x10")]
    public void RejectsWhatLongTryParseWithNoStylesRejects(string text)
    {
        Assert.That(long.TryParse(text, System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out _), Is.False, "the reference");
        Assert.That(AsciiText.TryParseDecimal(Encoding.ASCII.GetBytes(text), out _), Is.False);
    }

    [TestCase(0u)]
    [TestCase(7u)]
    [TestCase(1001u)]
    [TestCase(uint.MaxValue)]
    public void WritesDecimalsAsToString(uint number)
    {
        Assert.That(Encoding.ASCII.GetString(AsciiText.Decimal(number, stackalloc byte[10])), Is.EqualTo(number.ToString(System.Globalization.CultureInfo.InvariantCulture)));
    }
}
