using System.Buffers.Text;

namespace Sandbox.Identity;

/// <summary>
/// The lines of a small host file (/etc/passwd, /etc/subuid, nsswitch.conf) as spans of its bytes,
/// split as <see cref="Linux.FileSystemCalls.TryReadAllLines"/> splits them (at '\n', a trailing '\r'
/// dropped, no empty line after the last terminator), but without a string per line. These files are
/// read at every default-mode start, and the strings, splits and UTF-8 decoding of the whole file were
/// most of what their parsers cost on a warm start. The separators these formats use (':', '\n',
/// blanks) are ASCII, and UTF-8 never uses ASCII bytes inside a multi-byte character, so splitting
/// bytes finds the same fields as splitting the decoded text.
/// </summary>
internal ref struct ByteLines
{
    private ReadOnlySpan<byte> _rest;

    public ByteLines(ReadOnlySpan<byte> text)
    {
        _rest = text;
        Current = default;
    }

    public ReadOnlySpan<byte> Current { get; private set; }

    /// <summary>The file's lines; false when it is missing or cannot be read, as for TryReadAllLines.</summary>
    public static bool TryRead(string path, out ByteLines lines)
    {
        byte[]? bytes;
        int length;
        try
        {
            bytes = Linux.FileSystemCalls.TryReadAllBytes(path, out length);
        }
        catch (Linux.LinuxException)
        {
            bytes = null;
            length = 0;
        }
        lines = bytes is null ? default : new ByteLines(bytes.AsSpan(0, length));
        return bytes is not null;
    }

    public readonly ByteLines GetEnumerator() => this;

    public bool MoveNext()
    {
        if (_rest.IsEmpty)
            return false;
        int end = _rest.IndexOf((byte)'\n');
        ReadOnlySpan<byte> line = end < 0 ? _rest : _rest[..end];
        _rest = end < 0 ? default : _rest[(end + 1)..];
        Current = line.TrimEnd((byte)'\r');
        return true;
    }
}

/// <summary>The C locale's view of bytes that the host's text files are parsed with.</summary>
internal static class AsciiText
{
    /// <summary>isspace(3) in the C locale: what glibc's parsers of these files skip.</summary>
    public static ReadOnlySpan<byte> Blanks => " \t\n\v\f\r"u8;

    public static ReadOnlySpan<byte> BlanksOrColon => " \t\n\v\f\r:"u8;

    public static ReadOnlySpan<byte> BlanksOrBracket => " \t\n\v\f\r["u8;

    /// <summary>
    /// A non-negative decimal of digits only (leading zeros allowed; no sign, blank or separator),
    /// as long.TryParse with NumberStyles.None reads it; false when it is not one or overflows.
    /// </summary>
    public static bool TryParseDecimal(ReadOnlySpan<byte> text, out long value)
    {
        value = 0;
        foreach (byte c in text)
        {
            int digit = c - '0';
            if (digit is < 0 or > 9 || value > (long.MaxValue - digit) / 10)
                return false;
            value = value * 10 + digit;
        }
        return !text.IsEmpty;
    }

    /// <summary>A number's decimal digits, as ToString(InvariantCulture) writes them, without culture data.</summary>
    public static ReadOnlySpan<byte> Decimal(uint number, Span<byte> buffer) =>
        Utf8Formatter.TryFormat(number, buffer, out int written) ? buffer[..written] : throw new ArgumentException("too small", nameof(buffer));
}
