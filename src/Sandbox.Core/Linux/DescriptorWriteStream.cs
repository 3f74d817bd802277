namespace Sandbox.Linux;

/// <summary>
/// One of this process's standard descriptors as a write-only stream, written with write(2) and
/// nothing else. Console's streams need more: <see cref="Console.OpenStandardError"/> dup(2)s the
/// descriptor, and the first write initialises the terminal (its terminfo file, a dup of stdout),
/// each one descriptor more. Under `ulimit -n 8` that made even the message naming the too-low limit
/// fail, and the CLI aborted with .NET's stack trace instead.
/// </summary>
/// <param name="fd">The descriptor (1 or 2).</param>
/// <param name="brokenPipeFails">
/// Whether EPIPE (the reader went away) is an IOException: for what relays the payload's output
/// (JSON events, `sandbox test`'s observed output), whose run must then end as a shell pipeline's
/// writer would; it ran on, its output dropped, until a CI timeout. Otherwise the bytes are dropped,
/// as Console's streams drop them.
/// </param>
public sealed class DescriptorWriteStream(int fd, bool brokenPipeFails = false) : Stream
{
    public override bool CanRead => false;

    public override bool CanSeek => false;

    public override bool CanWrite => true;

    public override long Length => throw new NotSupportedException();

    public override long Position
    {
        get => throw new NotSupportedException();
        set => throw new NotSupportedException();
    }

    public override void Write(ReadOnlySpan<byte> buffer)
    {
        int result = StreamCalls.WriteAll(fd, buffer);
        if (result < 0 && (brokenPipeFails || result != -Errno.EPIPE))
            throw new IOException(new LinuxException("write", null, -result).Message, -result);
    }

    public override void Write(byte[] buffer, int offset, int count) => Write(buffer.AsSpan(offset, count));

    public override void Flush()
    {
    }

    public override int Read(byte[] buffer, int offset, int count) => throw new NotSupportedException();

    public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();

    public override void SetLength(long value) => throw new NotSupportedException();
}
