using System.Diagnostics.CodeAnalysis;
using System.Security.Cryptography;

namespace Sandbox.Images;

/// <summary>A content digest, <c>sha256:&lt;64 hex&gt;</c> or <c>sha512:&lt;128 hex&gt;</c> (the OCI algorithms).</summary>
public readonly record struct Digest
{
    private Digest(string algorithm, string hex)
    {
        Algorithm = algorithm;
        Hex = hex;
    }

    public string Algorithm { get; }

    /// <summary>Lower-case hex of the hash.</summary>
    public string Hex { get; }

    public override string ToString() => $"{Algorithm}:{Hex}";

    /// <summary>The first 12 hex digits, as docker shows image ids.</summary>
    public string Short => Hex[..12];

    public static bool TryParse(string? text, out Digest digest)
    {
        digest = default;
        if (text is null)
            return false;
        // sha256:<64 lowercase hex> or sha512:<128>. By hand, not a regex: every `run IMAGE` parses
        // the store's digests, and a regex's first use costs more than all the rest of this.
        int colon = text.IndexOf(':');
        string alg = colon > 0 ? text[..colon] : "";
        int length = alg switch { "sha256" => 64, "sha512" => 128, _ => -1 };
        if (text.Length - colon - 1 != length || !IsLowerHex(text.AsSpan(colon + 1)))
            return false;
        digest = new Digest(alg, text[(colon + 1)..]);
        return true;
    }

    /// <summary>Parses <paramref name="text"/> or throws <see cref="SandboxErrorCode.ImageFormatInvalid"/> naming <paramref name="what"/>.</summary>
    public static Digest Parse(string? text, string what)
    {
        if (TryParse(text, out Digest d))
            return d;
        throw new SandboxException(SandboxErrorCode.ImageFormatInvalid,
            $"{what}: '{text}' is not a supported digest (expected sha256:<64 hex> or sha512:<128 hex>)");
    }

    public static Digest Sha256(ReadOnlySpan<byte> data) => new("sha256", Convert.ToHexStringLower(SHA256.HashData(data)));

    public static Digest FromHash(string algorithm, byte[] hash) => new(algorithm, Convert.ToHexStringLower(hash));

    internal IncrementalHash CreateHash() => Algorithm switch
    {
        "sha256" => IncrementalHash.CreateHash(HashAlgorithmName.SHA256),
        "sha512" => IncrementalHash.CreateHash(HashAlgorithmName.SHA512),
        _ => throw new InvalidOperationException(Algorithm),
    };

    /// <summary>Whether <paramref name="data"/> hashes to this digest.</summary>
    public bool Matches(ReadOnlySpan<byte> data)
    {
        using IncrementalHash h = CreateHash();
        h.AppendData(data);
        return Convert.ToHexStringLower(h.GetHashAndReset()) == Hex;
    }

    /// <summary>Only 0-9 and a-f, as digests and image ids are written.</summary>
    internal static bool IsLowerHex(ReadOnlySpan<char> s)
    {
        foreach (char c in s)
        {
            if (!char.IsAsciiHexDigitLower(c))
                return false;
        }
        return true;
    }

    public static bool IsHex(string s, [NotNullWhen(true)] out string? lower)
    {
        lower = null;
        foreach (char c in s)
        {
            if (!char.IsAsciiHexDigit(c))
                return false;
        }
        lower = s.ToLowerInvariant();
        return true;
    }
}
