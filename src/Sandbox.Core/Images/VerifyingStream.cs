using System.Security.Cryptography;

namespace Sandbox.Images;

/// <summary>
/// Reads a blob and checks, as the bytes pass, that it is exactly what names it: its size (no more
/// bytes than stated, and at the end exactly that many) and, at the end, its digest. A mismatch
/// throws <see cref="SandboxErrorCode.DigestMismatch"/> or <see cref="SandboxErrorCode.BlobSizeMismatch"/>
/// naming the blob, the expected and the actual value. With no expected digest it only computes one.
/// </summary>
internal sealed class VerifyingStream : Stream
{
    private readonly Stream _inner;
    private readonly Digest? _expected;
    private readonly long? _expectedSize;
    private readonly long _maxBytes;
    private readonly string _what;
    private readonly IncrementalHash _hash;
    private readonly string _algorithm;
    private Digest? _actual;
    private SandboxException? _failure;

    public VerifyingStream(Stream inner, Digest? expected, long? expectedSize, string what, long maxBytes = long.MaxValue, string algorithm = "sha256")
    {
        _inner = inner;
        _expected = expected;
        _expectedSize = expectedSize;
        _maxBytes = maxBytes;
        _what = what;
        _algorithm = expected?.Algorithm ?? algorithm;
        _hash = expected?.CreateHash() ?? IncrementalHash.CreateHash(_algorithm == "sha512" ? HashAlgorithmName.SHA512 : HashAlgorithmName.SHA256);
    }

    /// <summary>Bytes read so far.</summary>
    public long BytesRead { get; private set; }

    /// <summary>Called with the number of bytes after every read (progress).</summary>
    public Action<int>? OnRead { get; set; }

    /// <summary>The digest of everything read, once the end was reached.</summary>
    public Digest? Actual => _actual;

    public override int Read(Span<byte> buffer)
    {
        if (_failure is not null)
            throw _failure;
        if (_actual is not null || buffer.IsEmpty)
            return 0; // an empty read is not the end of the stream
        int n = _inner.Read(buffer);
        if (n == 0)
        {
            Finish();
            return 0;
        }
        _hash.AppendData(buffer[..n]);
        BytesRead += n;
        if (_expectedSize is long size && BytesRead > size)
            throw _failure = new SandboxException(SandboxErrorCode.BlobSizeMismatch,
                $"{_what}: is larger than the {size} bytes its descriptor states; nothing was stored");
        if (BytesRead > _maxBytes)
            throw _failure = new SandboxException(SandboxErrorCode.ImageTooLarge,
                $"{_what}: is larger than the limit of {_maxBytes} bytes (uncompressed); nothing was stored");
        OnRead?.Invoke(n);
        return n;
    }

    public override int Read(byte[] buffer, int offset, int count) => Read(buffer.AsSpan(offset, count));

    /// <summary>Reads whatever is left (a decompressor or a tar reader may stop before the end) and verifies.</summary>
    public Digest ReadToEndAndVerify()
    {
        byte[] buffer = new byte[81920];
        while (Read(buffer) > 0)
        {
        }
        return _actual!.Value;
    }

    /// <summary>
    /// Reads the rest and returns the size or digest mismatch, if any, instead of throwing: used
    /// after another failure, to tell whether the content itself was wrong. Null when it matches
    /// (or cannot be read further).
    /// </summary>
    public SandboxException? VerifyRest()
    {
        try
        {
            ReadToEndAndVerify();
            return null;
        }
        catch (SandboxException e) when (e.Code is SandboxErrorCode.DigestMismatch or SandboxErrorCode.BlobSizeMismatch)
        {
            return e;
        }
        catch (Exception e) when (e is IOException or InvalidDataException or SandboxException or InvalidOperationException)
        {
            return null;
        }
    }

    private void Finish()
    {
        if (_actual is not null)
            return;
        _actual = Digest.FromHash(_algorithm, _hash.GetHashAndReset());
        if (_expectedSize is long size && BytesRead != size)
            _failure = new SandboxException(SandboxErrorCode.BlobSizeMismatch,
                $"{_what}: is {BytesRead} bytes, its descriptor states {size}; nothing was stored");
        else if (_expected is Digest expected && _actual.Value != expected)
            _failure = new SandboxException(SandboxErrorCode.DigestMismatch,
                $"{_what}: digest mismatch: expected {expected}, actual {_actual.Value}; nothing was stored");
        if (_failure is not null)
            throw _failure;
    }

    public override bool CanRead => true;
    public override bool CanSeek => false;
    public override bool CanWrite => false;
    public override long Length => throw new NotSupportedException();
    public override long Position { get => BytesRead; set => throw new NotSupportedException(); }
    public override void Flush() { }
    public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();
    public override void SetLength(long value) => throw new NotSupportedException();
    public override void Write(byte[] buffer, int offset, int count) => throw new NotSupportedException();

    protected override void Dispose(bool disposing)
    {
        if (disposing)
        {
            _hash.Dispose();
            _inner.Dispose();
        }
        base.Dispose(disposing);
    }
}
