using System.Text;

namespace Sandbox.MSBuild;

/// <summary>
/// Reassembles lines from one output stream's chunks (a chunk is whatever one read of the pipe
/// returned: part of a line, or several). Works on bytes, so that a UTF-8 sequence split between two
/// chunks (those arrive as base64) decodes whole. A line longer than <see cref="MaxLineBytes"/> is
/// cut there rather than buffered without bound.
/// </summary>
internal sealed class LineAssembler
{
    public const int MaxLineBytes = 1 << 20;

    private readonly MemoryStream _pending = new();

    public void Append(ReadOnlySpan<byte> chunk, List<string> lines)
    {
        while (!chunk.IsEmpty)
        {
            int newline = chunk.IndexOf((byte)'\n');
            if (newline < 0)
            {
                _pending.Write(chunk);
                if (_pending.Length >= MaxLineBytes)
                    lines.Add(Take());
                return;
            }
            _pending.Write(chunk[..newline]);
            lines.Add(Take());
            chunk = chunk[(newline + 1)..];
        }
    }

    /// <summary>The unterminated last line, if any.</summary>
    public string? Flush() => _pending.Length > 0 ? Take() : null;

    private string Take()
    {
        ReadOnlySpan<byte> bytes = _pending.GetBuffer().AsSpan(0, (int)_pending.Length);
        if (!bytes.IsEmpty && bytes[^1] == (byte)'\r')
            bytes = bytes[..^1];
        string line = Encoding.UTF8.GetString(bytes);
        _pending.SetLength(0);
        return line;
    }
}
