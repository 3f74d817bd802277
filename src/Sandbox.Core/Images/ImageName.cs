using System.Text.RegularExpressions;

namespace Sandbox.Images;

/// <summary>
/// Image names as docker writes them, <c>[REGISTRY[:PORT]/]REPO[/REPO...][:TAG]</c>. A name without
/// a tag gets <c>:latest</c>. Lookups treat <c>busybox</c>, <c>docker.io/library/busybox</c> and
/// <c>localhost/busybox</c> (podman's prefix for local images) as the same name.
/// </summary>
public static partial class ImageName
{
    /// <summary>The canonical form of <paramref name="name"/> (tag added), or an <see cref="SandboxErrorCode.ImageNameInvalid"/> error.</summary>
    public static string Normalize(string name)
    {
        if (TryNormalize(name, out string? normalized))
            return normalized;
        throw new SandboxException(SandboxErrorCode.ImageNameInvalid,
            $"'{name}' is not a valid image name: expected [REGISTRY/]REPOSITORY[:TAG] in lower case, e.g. busybox:1.36 or example.com/team/app:v2");
    }

    public static bool TryNormalize(string? name, [System.Diagnostics.CodeAnalysis.NotNullWhen(true)] out string? normalized)
    {
        normalized = null;
        if (string.IsNullOrWhiteSpace(name) || name.Length > 255)
            return false;
        name = name.Trim();
        if (HexId().IsMatch(name))
            return false; // would be taken for an image id
        Match m = Reference().Match(name);
        if (!m.Success)
            return false;
        normalized = m.Groups["tag"].Success ? name : name + ":latest";
        return true;
    }

    /// <summary>The short form used to compare names: without docker.io/library/, docker.io/ or localhost/.</summary>
    public static string Familiar(string normalized)
    {
        foreach (string prefix in (ReadOnlySpan<string>)["docker.io/library/", "index.docker.io/library/", "docker.io/", "index.docker.io/", "localhost/"])
        {
            if (normalized.StartsWith(prefix, StringComparison.Ordinal))
                return normalized[prefix.Length..];
        }
        return normalized;
    }

    /// <summary>Whether <paramref name="query"/> (as typed) names the stored <paramref name="name"/>.</summary>
    public static bool Matches(string name, string query) =>
        TryNormalize(query, out string? q) && Familiar(name) == Familiar(q);

    [GeneratedRegex(@"^(?:(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)(?:\.(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?))*(?::[0-9]+)?/)?[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*(?::(?<tag>[\w][\w.-]{0,127}))?$", RegexOptions.CultureInvariant)]
    private static partial Regex Reference();

    [GeneratedRegex("^[a-f0-9]{64}$", RegexOptions.CultureInvariant)]
    private static partial Regex HexId();
}
