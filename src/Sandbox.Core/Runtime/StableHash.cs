namespace Sandbox.Runtime;

/// <summary>
/// FNV-1a, 64 bits, over UTF-16 code units: a short name that stays the same from run to run and
/// version to version (string.GetHashCode is randomised per process), for file names derived from
/// longer keys. Not a defence against anyone choosing the keys: where a collision could matter, the
/// file's content is checked.
/// </summary>
internal static class StableHash
{
    public static ulong Fnv1a(string text)
    {
        ulong hash = 14695981039346656037UL;
        foreach (char c in text)
        {
            hash ^= c;
            hash *= 1099511628211UL;
        }
        return hash;
    }
}
