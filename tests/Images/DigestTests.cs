using Sandbox.Images;

namespace Sandbox.Tests.Images;

public sealed class DigestTests
{
    private static readonly string Hex64 = string.Concat(Enumerable.Repeat("0123456789abcdef", 4));
    private static readonly string Hex128 = Hex64 + Hex64;

    [Test]
    public void Sha256AndSha512WithLowercaseHexOfTheirLengthParse()
    {
        Assert.That(Digest.TryParse("sha256:" + Hex64, out Digest d256), Is.True);
        Assert.That((d256.Algorithm, d256.Hex), Is.EqualTo(("sha256", Hex64)));
        Assert.That(Digest.TryParse("sha512:" + Hex128, out Digest d512), Is.True);
        Assert.That((d512.Algorithm, d512.Hex), Is.EqualTo(("sha512", Hex128)));
    }

    [TestCase(null)]
    [TestCase("")]
    [TestCase(":")]
    [TestCase("sha256")]
    [TestCase("sha256:")]
    [TestCase("md5:0123456789abcdef0123456789abcdef")]
    [TestCase("SHA256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef")]
    [TestCase("sha256:0123456789ABCDEF0123456789abcdef0123456789abcdef0123456789abcdef")]
    [TestCase("sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcde")]
    [TestCase("sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0")]
    [TestCase("sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef\n")]
    [TestCase("sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdeg")]
    [TestCase("sha512:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef")]
    [TestCase(" sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef")]
    public void AnythingElseDoesNot(string? text)
    {
        Assert.That(Digest.TryParse(text, out _), Is.False);
        Assert.Throws<SandboxException>(() => Digest.Parse(text, "the test's digest"));
    }
}
