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

    /// <summary>
    /// <see cref="Fnv1a"/> as 16 lowercase hex digits (what ":x16" formats), written without the
    /// formatting machinery: the name of a file looked up on every warm start.
    /// </summary>
    public static string Fnv1aHex(string text)
    {
        ulong hash = Fnv1a(text);
        return string.Create(16, hash, static (digits, value) =>
        {
            for (int i = digits.Length - 1; i >= 0; i--, value >>= 4)
                digits[i] = "0123456789abcdef"[(int)(value & 0xF)];
        });
    }
}
