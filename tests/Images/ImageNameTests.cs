using System.Text;
using System.Text.RegularExpressions;
using Sandbox.Images;

namespace Sandbox.Tests.Images;

public sealed class ImageNameTests
{
    // distribution/reference's grammar (regexp.go) as one expression, with Go's ASCII \w: the oracle
    // for the hand-written checker. RegexOptions.None: the domain may have upper case, the path not.
    private static readonly Regex s_reference = new(
        @"^(?:(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)(?:\.(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?))*(?::[0-9]+)?/)?" +
        @"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*(?::(?<tag>[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}))?\z",
        RegexOptions.CultureInvariant);

    private static readonly Regex s_hexId = new("^[a-f0-9]{64}\\z", RegexOptions.CultureInvariant);

    private static string? Oracle(string name)
    {
        if (string.IsNullOrWhiteSpace(name) || name.Length > 255)
            return null;
        name = name.Trim();
        if (s_hexId.IsMatch(name))
            return null;
        Match m = s_reference.Match(name);
        return !m.Success ? null : m.Groups["tag"].Success ? name : name + ":latest";
    }

    [TestCase("busybox", "busybox:latest")]
    [TestCase("busybox:1.36", "busybox:1.36")]
    [TestCase("library/busybox", "library/busybox:latest")]
    [TestCase("docker.io/library/busybox:1.36.1", "docker.io/library/busybox:1.36.1")]
    [TestCase("localhost:5000/team/app:v2", "localhost:5000/team/app:v2")]
    [TestCase("Example.COM/team/app", "Example.COM/team/app:latest")]
    [TestCase("a.b__c---d/e_f:TAG_1.x-y", "a.b__c---d/e_f:TAG_1.x-y")]
    [TestCase("  busybox  ", "busybox:latest")]
    [TestCase("host:5000/app", "host:5000/app:latest")]
    [TestCase("app:5000", "app:5000")]
    public void ValidNamesAreNormalized(string name, string expected)
    {
        Assert.That(ImageName.TryNormalize(name, out string? normalized), Is.True);
        Assert.That(normalized, Is.EqualTo(expected));
        Assert.That(Oracle(name), Is.EqualTo(expected), "the oracle agrees");
    }

    [TestCase("")]
    [TestCase("Busybox")]               // upper case in the repository
    [TestCase("busybox:")]              // empty tag
    [TestCase("busybox:.1")]            // a tag starts with a word character
    [TestCase("busybox:v1é")]           // docker's \w is ASCII
    [TestCase("a..b")]                  // one dot between runs
    [TestCase("a___b")]                 // at most two underscores
    [TestCase("a-_b")]                  // separators do not mix
    [TestCase("-a")]
    [TestCase("a-")]
    [TestCase("a/")]
    [TestCase("/a")]
    [TestCase("a//b")]
    [TestCase("host:port/app")]         // a port is digits
    [TestCase("-host.com/app")]         // a label starts with a letter or digit
    [TestCase("host-.com/app")]
    [TestCase("host..com/app")]
    [TestCase("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef")] // an image id
    public void InvalidNamesAreRefused(string name)
    {
        Assert.That(ImageName.TryNormalize(name, out _), Is.False);
        Assert.That(Oracle(name), Is.Null, "the oracle agrees");
    }

    [Test]
    public void TagsUpTo128CharactersAndNamesUpTo255()
    {
        Assert.That(ImageName.TryNormalize("a:" + new string('t', 128), out _), Is.True);
        Assert.That(ImageName.TryNormalize("a:" + new string('t', 129), out _), Is.False);
        Assert.That(ImageName.TryNormalize(new string('a', 255), out _), Is.True);
        Assert.That(ImageName.TryNormalize(new string('a', 256), out _), Is.False);
    }

    /// <summary>
    /// A hundred thousand strings over the grammar's characters (and some it refuses), each checked
    /// against the expression: the hand-written checker has to agree on every one.
    /// </summary>
    [Test]
    public void AgreesWithTheGrammarOnRandomNames()
    {
        const string alphabet = "abz09AZ._-/:_-./é ";
        var random = new Random(20261127);
        var text = new StringBuilder();
        int valid = 0;
        for (int i = 0; i < 100_000; i++)
        {
            text.Clear();
            int length = random.Next(1, 16);
            for (int j = 0; j < length; j++)
                text.Append(alphabet[random.Next(alphabet.Length)]);
            string name = text.ToString();
            string? expected = Oracle(name);
            Assert.That(ImageName.TryNormalize(name, out string? actual) ? actual : null, Is.EqualTo(expected), $"'{name}'");
            if (expected is not null)
                valid++;
        }
        // Both kinds must be well represented, or the comparison proves little.
        Assert.That(valid, Is.InRange(2_000, 98_000), "valid names among the samples");
    }

    [TestCase("busybox:latest", "busybox")]
    [TestCase("docker.io/library/busybox:latest", "busybox")]
    [TestCase("docker.io/library/busybox:latest", "localhost/busybox:latest")]
    [TestCase("busybox:latest", "index.docker.io/library/busybox")]
    public void FamiliarFormsMatch(string stored, string query) =>
        Assert.That(ImageName.Matches(stored, query), Is.True);

    [TestCase("busybox:latest", "busybox:1.36")]
    [TestCase("team/busybox:latest", "busybox")]
    [TestCase("busybox:latest", "Busybox")]
    public void OtherNamesDoNotMatch(string stored, string query) =>
        Assert.That(ImageName.Matches(stored, query), Is.False);
}
