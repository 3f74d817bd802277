namespace Sandbox.Images;

/// <summary>
/// Image names as docker writes them, <c>[REGISTRY[:PORT]/]REPO[/REPO...][:TAG]</c>. A name without
/// a tag gets <c>:latest</c>. Lookups treat <c>busybox</c>, <c>docker.io/library/busybox</c> and
/// <c>localhost/busybox</c> (podman's prefix for local images) as the same name.
/// <para>
/// The grammar is distribution/reference's (the regular expressions in its <c>regexp.go</c>), checked
/// by hand: every <c>sandbox run IMAGE</c> checks names, and a generated Regex cost a NativeAOT start
/// its static constructor and first match (about 0.05 ms in perf) and the binary the Regex runtime.
/// A test compares this checker with the grammar as a Regex over a hundred thousand strings.
/// </para>
/// </summary>
public static class ImageName
{
    private const int MaxTagLength = 128;

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
        if (IsHexId(name))
            return false; // would be taken for an image id
        if (!IsReference(name, out bool tagged))
            return false;
        normalized = tagged ? name : name + ":latest";
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

    /// <summary>64 lower-case hex digits: an image id.</summary>
    private static bool IsHexId(ReadOnlySpan<char> s) => s.Length == 64 && Digest.IsLowerHex(s);

    /// <summary>
    /// <c>[DOMAIN[:PORT]/]COMPONENT[/COMPONENT...][:TAG]</c>. A ':' after the last '/' starts the tag (a
    /// port is followed by a '/'). The first of several path parts is read as a domain when it is not a
    /// valid component (upper case, a port), as the expression's backtracking would.
    /// </summary>
    private static bool IsReference(ReadOnlySpan<char> s, out bool tagged)
    {
        tagged = false;
        int colon = s.LastIndexOf(':');
        if (colon > s.LastIndexOf('/'))
        {
            if (!IsTag(s[(colon + 1)..]))
                return false;
            tagged = true;
            s = s[..colon];
        }
        int slash = s.IndexOf('/');
        if (slash >= 0 && !IsComponent(s[..slash]))
        {
            // Not a component, so it must be the domain, and a repository must follow it.
            if (!IsDomainAndPort(s[..slash]))
                return false;
            s = s[(slash + 1)..];
        }
        foreach (Range part in s.Split('/'))
        {
            if (!IsComponent(s[part]))
                return false;
        }
        return true;
    }

    /// <summary><c>[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*</c>: lower-case runs joined by '.', '_', '__' or dashes.</summary>
    private static bool IsComponent(ReadOnlySpan<char> s)
    {
        int i = 0;
        while (true)
        {
            int run = i;
            while (i < s.Length && (char.IsAsciiLetterLower(s[i]) || char.IsAsciiDigit(s[i])))
                i++;
            if (i == run)
                return false; // empty, or starts or ends with a separator, or two separators in a row
            if (i == s.Length)
                return true;
            int separator = i;
            while (i < s.Length && s[i] is '.' or '_' or '-')
                i++;
            ReadOnlySpan<char> sep = s[separator..i];
            if (sep is not ("." or "_" or "__") && sep.ContainsAnyExcept('-'))
                return false;
        }
    }

    /// <summary><c>LABEL(?:\.LABEL)*(?::[0-9]+)?</c>, a label being letters, digits and inner dashes.</summary>
    private static bool IsDomainAndPort(ReadOnlySpan<char> s)
    {
        int colon = s.IndexOf(':');
        if (colon >= 0)
        {
            ReadOnlySpan<char> port = s[(colon + 1)..];
            if (port.IsEmpty || port.ContainsAnyExceptInRange('0', '9'))
                return false;
            s = s[..colon];
        }
        foreach (Range part in s.Split('.'))
        {
            ReadOnlySpan<char> label = s[part];
            if (label.IsEmpty || !char.IsAsciiLetterOrDigit(label[0]) || !char.IsAsciiLetterOrDigit(label[^1]))
                return false;
            foreach (char c in label)
            {
                if (!char.IsAsciiLetterOrDigit(c) && c != '-')
                    return false;
            }
        }
        return true;
    }

    /// <summary>
    /// <c>[\w][\w.-]{0,127}</c> with \w as in Go's regexp, which docker uses: ASCII letters, digits and
    /// '_' (.NET's \w would also take other scripts' letters, which docker refuses).
    /// </summary>
    private static bool IsTag(ReadOnlySpan<char> s)
    {
        if (s.IsEmpty || s.Length > MaxTagLength || !IsWordChar(s[0]))
            return false;
        foreach (char c in s)
        {
            if (!IsWordChar(c) && c is not '.' and not '-')
                return false;
        }
        return true;
    }

    private static bool IsWordChar(char c) => char.IsAsciiLetterOrDigit(c) || c == '_';
}
