using Sandbox.Cli;

namespace Sandbox.Tests.Cli;

public class DurationParserTests
{
    private static IEnumerable<TestCaseData> Valid()
    {
        yield return new TestCaseData("30s", TimeSpan.FromSeconds(30));
        yield return new TestCaseData("500ms", TimeSpan.FromMilliseconds(500));
        yield return new TestCaseData("2m", TimeSpan.FromMinutes(2));
        yield return new TestCaseData("1h", TimeSpan.FromHours(1));
        yield return new TestCaseData("1h30m", TimeSpan.FromMinutes(90));
        yield return new TestCaseData("1m30s500ms", TimeSpan.FromMilliseconds(90_500));
        yield return new TestCaseData("1.5s", TimeSpan.FromMilliseconds(1500));
        yield return new TestCaseData("0.25h", TimeSpan.FromMinutes(15));
        yield return new TestCaseData("10", TimeSpan.FromSeconds(10));
        yield return new TestCaseData("2.5", TimeSpan.FromSeconds(2.5));
        yield return new TestCaseData(" 5s ", TimeSpan.FromSeconds(5));
    }

    [TestCaseSource(nameof(Valid))]
    public void Parse_Valid(string text, TimeSpan expected)
    {
        Assert.That(DurationParser.Parse(text, "--timeout"), Is.EqualTo(expected));
    }

    [TestCase("")]
    [TestCase("   ")]
    [TestCase("0")]
    [TestCase("0s")]
    [TestCase("0ms")]
    [TestCase("-1s")]
    [TestCase("-5")]
    [TestCase("abc")]
    [TestCase("5x")]
    [TestCase("s")]
    [TestCase("1m30")]
    [TestCase("1 m")]
    [TestCase("1.s")]
    public void Parse_Invalid(string text)
    {
        var e = Assert.Throws<SandboxException>(() => DurationParser.Parse(text, "--timeout"));
        Assert.That(e!.Code, Is.EqualTo(SandboxErrorCode.InvalidSpec));
        Assert.That(e.Message, Is.EqualTo($"--timeout {text}: expected a positive duration up to 30 days, such as 30s, 500ms, 5m or 1h30m"));
    }

    [TestCase("NaN")]
    [TestCase("Infinity")]
    [TestCase("100000000000000000000")]
    [TestCase("9999999999999h")]
    [TestCase("31d")]
    [TestCase("721h")]
    public void Parse_RejectsNonFiniteOverflowingAndTooLong(string text)
    {
        var e = Assert.Throws<SandboxException>(() => DurationParser.Parse(text, "--timeout"));
        Assert.That(e!.Code, Is.EqualTo(SandboxErrorCode.InvalidSpec));
    }
}
