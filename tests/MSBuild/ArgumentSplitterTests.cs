using Sandbox.MSBuild;

namespace Sandbox.Tests.MSBuild;

public class ArgumentSplitterTests
{
    [TestCase("", new string[0])]
    [TestCase("   ", new string[0])]
    [TestCase("a b  c", new[] { "a", "b", "c" })]
    [TestCase("--filter \"FullyQualifiedName~Slow&Category!=Db\" --blame-hang-timeout 5m", new[] { "--filter", "FullyQualifiedName~Slow&Category!=Db", "--blame-hang-timeout", "5m" })]
    [TestCase("--logger 'console;verbosity=normal'", new[] { "--logger", "console;verbosity=normal" })]
    [TestCase("a\"b c\"d", new[] { "ab cd" })]
    [TestCase("\"say \\\"hi\\\" \\\\ \\n\"", new[] { "say \"hi\" \\ \\n" })]
    [TestCase("a\\ b c", new[] { "a b", "c" })]
    [TestCase("''", new[] { "" })]
    [TestCase("-v /data:/data:ro\t--limits best-effort\n-e X=1", new[] { "-v", "/data:/data:ro", "--limits", "best-effort", "-e", "X=1" })]
    public void Splits_like_a_shell(string text, string[] expected)
    {
        Assert.That(ArgumentSplitter.Split(text), Is.EqualTo(expected));
    }

    [TestCase("'open")]
    [TestCase("\"open")]
    public void Unterminated_quotes_are_refused(string text)
    {
        Assert.Throws<FormatException>(() => ArgumentSplitter.Split(text));
    }
}
