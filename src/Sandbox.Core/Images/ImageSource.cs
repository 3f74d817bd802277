using System.Formats.Tar;
using System.IO.Compression;
using Microsoft.Win32.SafeHandles;
using Sandbox.Linux;
using Sandbox.Storage;

namespace Sandbox.Images;

/// <summary>
/// The files of an image as delivered: a tarball (docker save, OCI archive; read in place with
/// random access, or first decompressed into the store's tmp/ when the whole tarball is gzip or
/// zstd) or a directory (OCI layout). Paths are relative, '/'-separated.
/// </summary>
internal abstract class ImageSource : IDisposable
{
    protected ImageSource(string description)
    {
        Description = description;
    }

    public string Description { get; }

    /// <summary>True for a tarball, false for a directory.</summary>
    public abstract bool IsArchive { get; }

    /// <summary>Size of the file at <paramref name="path"/> (links resolved), or null when there is none.</summary>
    public abstract long? SizeOf(string path);

    public bool Exists(string path) => SizeOf(path) is not null;

    /// <summary>Opens a file for reading; throws <see cref="SandboxErrorCode.ImageFormatInvalid"/> when it is missing.</summary>
    public abstract Stream Open(string path);

    /// <summary>Reads a small file (a JSON document) whole, bounded by <paramref name="maxBytes"/>.</summary>
    public byte[] ReadAll(string path, int maxBytes)
    {
        long size = SizeOf(path) ?? throw Missing(path);
        if (size > maxBytes)
            throw new SandboxException(SandboxErrorCode.ImageTooLarge, $"{Description}: {path} is {size} bytes, more than the limit of {maxBytes} for a JSON document");
        using Stream s = Open(path);
        var buffer = new byte[size];
        s.ReadExactly(buffer);
        return buffer;
    }

    protected SandboxException Missing(string path) =>
        new(SandboxErrorCode.ImageFormatInvalid, $"{Description}: {path} is missing");

    public virtual void Dispose()
    {
    }

    /// <summary>
    /// Opens <paramref name="path"/>: a directory is an OCI layout (or an unpacked docker archive);
    /// a file a tarball, compressed as a whole or not (<paramref name="createTemp"/> gives a place
    /// to decompress it to). A pipe or FIFO (`sandbox image import /dev/stdin`, `<(…)`), which can be
    /// read only once and not rewound, is read into that place first, as `docker load` reads its stdin.
    /// </summary>
    public static ImageSource Open(string path, Func<WorkDirectory> createTemp, ImportLimits limits, CancellationToken ct)
    {
        string full = Path.GetFullPath(path);
        FileStatus status = StatInput(path, full);
        if (status.Kind == FileKind.Directory)
            return new DirectorySource(full);

        WorkDirectory? temp = null;
        LayerCompression compression = LayerCompression.None;
        try
        {
            string readable = full;
            if (status.Kind != FileKind.Regular)
            {
                temp = createTemp();
                readable = Path.Combine(temp.Path, "input");
                using FileStream input = OpenInput(path, full);
                CopyLimited(input, readable, full, limits, ct, "is larger");
            }
            using (FileStream probe = OpenInput(path, readable))
                compression = Compression.Sniff(probe, out _);
            if (compression == LayerCompression.None)
                return new TarArchiveSource(full, readable, temp, limits);

            temp ??= createTemp();
            string tar = Path.Combine(temp.Path, "archive.tar");
            using (FileStream input = OpenInput(path, readable))
            using (Stream decompressed = Compression.Decompress(input, compression))
                CopyLimited(decompressed, tar, full, limits, ct, "decompresses to more");
            if (readable != full)
                File.Delete(readable);
            return new TarArchiveSource(full, tar, temp, limits);
        }
        catch (TruncatedCompressedDataException e)
        {
            temp?.Dispose();
            throw new SandboxException(SandboxErrorCode.ImageFormatInvalid, $"{full}: {e.Message}", e);
        }
        catch (Exception e) when (e is not (SandboxException or OperationCanceledException or IOException or UnauthorizedAccessException))
        {
            temp?.Dispose();
            throw new SandboxException(SandboxErrorCode.ImageFormatInvalid,
                $"{full}: looks {compression.ToString().ToLowerInvariant()}-compressed but does not decompress ({e.Message})", e);
        }
        catch
        {
            temp?.Dispose();
            throw;
        }
    }

    /// <summary>
    /// stat(2) of the input, following links (/dev/stdin is one). What the caller may not reach is
    /// said to be that, not "no such file" (File.Exists says false for both) nor a failure of the store.
    /// </summary>
    private static FileStatus StatInput(string path, string full)
    {
        try
        {
            return FileSystemCalls.TryStat(full) ?? throw new SandboxException(SandboxErrorCode.ImageNotFound, $"{path}: no such file or directory");
        }
        catch (LinuxException e) when (e.Errno is Errno.EACCES or Errno.EPERM)
        {
            throw Unreadable(path, e);
        }
    }

    private static FileStream OpenInput(string path, string file)
    {
        try
        {
            return File.OpenRead(file);
        }
        catch (UnauthorizedAccessException e)
        {
            throw Unreadable(path, e);
        }
    }

    private static SandboxException Unreadable(string path, Exception e) =>
        new(SandboxErrorCode.ImageUnreadable, $"{path}: permission denied: you cannot read it (or search a directory above it); make it readable by you, or copy it somewhere you can read", e);

    /// <summary>Copies <paramref name="from"/> into a new file, refusing more than the image size limit.</summary>
    private static void CopyLimited(Stream from, string to, string full, ImportLimits limits, CancellationToken ct, string tooLarge)
    {
        using FileStream output = new(to, FileMode.CreateNew, FileAccess.Write);
        byte[] buffer = new byte[256 * 1024];
        long total = 0;
        int n;
        while ((n = from.Read(buffer)) > 0)
        {
            ct.ThrowIfCancellationRequested();
            total += n;
            if (total > limits.MaxImageSize)
                throw new SandboxException(SandboxErrorCode.ImageTooLarge, $"{full}: {tooLarge} than {limits.MaxImageSize} bytes");
            output.Write(buffer, 0, n);
        }
    }

    /// <summary>Splits and checks a relative path: no absolute paths, no '..' above the top.</summary>
    internal static string NormalizeRelative(string path, string description)
    {
        if (string.IsNullOrEmpty(path) || path.Contains('\0') || path.StartsWith('/'))
            throw new SandboxException(SandboxErrorCode.ImageFormatInvalid, $"{description}: '{path}' is not a relative path inside the image");
        var parts = new List<string>();
        foreach (string p in path.Split('/'))
        {
            if (p is "" or ".")
                continue;
            if (p == "..")
            {
                if (parts.Count == 0)
                    throw new SandboxException(SandboxErrorCode.ImageFormatInvalid, $"{description}: '{path}' points outside the image");
                parts.RemoveAt(parts.Count - 1);
                continue;
            }
            parts.Add(p);
        }
        return string.Join('/', parts);
    }
}

/// <summary>An OCI layout directory (or an unpacked docker archive).</summary>
internal sealed class DirectorySource : ImageSource
{
    private readonly string root;

    public DirectorySource(string root)
        : base(root)
    {
        this.root = root;
    }

    public override bool IsArchive => false;

    public override long? SizeOf(string path)
    {
        var info = new FileInfo(Path.Combine(root, NormalizeRelative(path, Description)));
        return info.Exists ? info.Length : null;
    }

    public override Stream Open(string path)
    {
        string full = Path.Combine(root, NormalizeRelative(path, Description));
        if (!File.Exists(full))
            throw Missing(path);
        return new FileStream(full, FileMode.Open, FileAccess.Read, FileShare.Read, 1, FileOptions.SequentialScan);
    }
}

/// <summary>
/// A tarball read in place: one pass indexes its entries (name, data offset, length), then files
/// are read as slices of it, in any order. Symlinks and hard links between entries (old docker
/// save links identical layers) are followed inside the archive only.
/// </summary>
internal sealed class TarArchiveSource : ImageSource
{
    private const int MaxEntries = 1_000_000;
    private readonly SafeFileHandle _file;
    private readonly WorkDirectory? _temp;
    private readonly Dictionary<string, Entry> _entries = new(StringComparer.Ordinal);

    public TarArchiveSource(string description, string tarPath, WorkDirectory? temp, ImportLimits limits)
        : base(description)
    {
        _temp = temp;
        _file = File.OpenHandle(tarPath, FileMode.Open, FileAccess.Read, FileShare.Read, FileOptions.None);
        try
        {
            // Its own stream: disposing a FileStream closes its handle, and _file stays open for the slices.
            using var stream = new FileStream(tarPath, FileMode.Open, FileAccess.Read, FileShare.Read, 64 * 1024);
            using var reader = new TarReader(stream, leaveOpen: true);
            while (reader.GetNextEntry(copyData: false) is TarEntry e)
            {
                if (_entries.Count >= MaxEntries)
                    throw new SandboxException(SandboxErrorCode.ImageTooLarge, $"{description}: more than {MaxEntries} entries");
                string name;
                try
                {
                    name = NormalizeRelative(e.Name, description);
                }
                catch (SandboxException)
                {
                    continue; // a name no manifest can refer to: never read
                }
                if (name.Length == 0)
                    continue;
                _entries[name] = new Entry(e.EntryType, e.DataOffset, e.Length, e.LinkName);
            }
        }
        catch (Exception e) when (e is InvalidDataException or FormatException or EndOfStreamException or ArgumentException)
        {
            _file.Dispose();
            throw new SandboxException(SandboxErrorCode.ImageFormatInvalid, $"{description}: not a readable tar archive ({e.Message})", e);
        }
        catch
        {
            _file.Dispose();
            throw;
        }
    }

    public override bool IsArchive => true;

    public override long? SizeOf(string path) => Find(path) is { } e ? e.Length : null;

    public override Stream Open(string path)
    {
        Entry e = Find(path) ?? throw Missing(path);
        return new SliceStream(_file, e.Offset, e.Length);
    }

    private Entry? Find(string path)
    {
        string name = NormalizeRelative(path, Description);
        for (int hops = 0; hops < 16; hops++)
        {
            if (!_entries.TryGetValue(name, out Entry e))
                return null;
            switch (e.Type)
            {
                case TarEntryType.RegularFile or TarEntryType.V7RegularFile or TarEntryType.ContiguousFile:
                    return e.Offset < 0 ? null : e;
                case TarEntryType.HardLink:
                    name = NormalizeRelative(e.LinkName, Description);
                    break;
                case TarEntryType.SymbolicLink:
                    if (e.LinkName.StartsWith('/'))
                        return null;
                    string dir = name.Contains('/') ? name[..name.LastIndexOf('/')] : "";
                    name = NormalizeRelative(dir.Length == 0 ? e.LinkName : dir + "/" + e.LinkName, Description);
                    break;
                default:
                    return null;
            }
        }
        return null;
    }

    public override void Dispose()
    {
        _file.Dispose();
        _temp?.Dispose();
    }

    private readonly record struct Entry(TarEntryType Type, long Offset, long Length, string LinkName);

    /// <summary>A read-only window on a file, read with pread: many may be open on one handle.</summary>
    private sealed class SliceStream(SafeFileHandle file, long offset, long length) : Stream
    {
        private long _position;

        public override int Read(Span<byte> buffer)
        {
            long left = length - _position;
            if (left <= 0 || buffer.IsEmpty)
                return 0;
            if (buffer.Length > left)
                buffer = buffer[..(int)left];
            int n = RandomAccess.Read(file, buffer, offset + _position);
            if (n == 0)
                throw new SandboxException(SandboxErrorCode.ImageFormatInvalid, "the archive ends in the middle of a file");
            _position += n;
            return n;
        }

        public override int Read(byte[] buffer, int off, int count) => Read(buffer.AsSpan(off, count));
        public override bool CanRead => true;
        public override bool CanSeek => false;
        public override bool CanWrite => false;
        public override long Length => length;
        public override long Position { get => _position; set => throw new NotSupportedException(); }
        public override void Flush() { }
        public override long Seek(long o, SeekOrigin origin) => throw new NotSupportedException();
        public override void SetLength(long value) => throw new NotSupportedException();
        public override void Write(byte[] buffer, int o, int count) => throw new NotSupportedException();
    }
}

/// <summary>Layer (and whole-archive) compression: detection by magic bytes, and decompression.</summary>
internal static class Compression
{
    /// <summary>Looks at the first bytes of a seekable stream and rewinds it.</summary>
    public static LayerCompression Sniff(Stream seekable, out string? unsupported)
    {
        Span<byte> magic = stackalloc byte[6];
        int n = seekable.ReadAtLeast(magic, magic.Length, throwOnEndOfStream: false);
        seekable.Position = 0;
        return Detect(magic[..n], out unsupported);
    }

    public static LayerCompression Detect(ReadOnlySpan<byte> magic, out string? unsupported)
    {
        unsupported = null;
        if (magic.StartsWith((ReadOnlySpan<byte>)[0x1F, 0x8B]))
            return LayerCompression.Gzip;
        if (magic.StartsWith((ReadOnlySpan<byte>)[0x28, 0xB5, 0x2F, 0xFD]))
            return LayerCompression.Zstd;
        if (magic.StartsWith("BZh"u8))
            unsupported = "bzip2";
        else if (magic.StartsWith((ReadOnlySpan<byte>)[0xFD, 0x37, 0x7A, 0x58, 0x5A, 0x00]))
            unsupported = "xz";
        return LayerCompression.None;
    }

    /// <summary>
    /// The decompressed bytes of <paramref name="raw"/>. Data that ends before its compressed stream
    /// does (a cut download or copy) fails with <see cref="TruncatedCompressedDataException"/>.
    /// </summary>
    /// <remarks>
    /// GZipStream returns end-of-stream at a premature end of its input, gzip trailer (CRC-32 and
    /// length) included, unless the AppContext switch System.IO.Compression.UseStrictValidation is
    /// on (dotnet/runtime#47563, PR #61768): the CLI's and the tests' projects turn it on
    /// (RuntimeHostConfigurationOption), as `gzip -t`, docker load and podman load refuse such a file.
    /// </remarks>
    public static Stream Decompress(Stream raw, LayerCompression compression)
    {
        if (compression == LayerCompression.None)
            return raw;
        var input = new EndWatchingStream(raw);
        Stream decompressor = compression switch
        {
            LayerCompression.Gzip => new GZipStream(input, CompressionMode.Decompress, leaveOpen: true),
            LayerCompression.Zstd => new SharpCompress.Compressors.ZStandard.DecompressionStream(input, 0, true, true),
            _ => throw new ArgumentOutOfRangeException(nameof(compression)),
        };
        return new DecompressedStream(decompressor, input, compression);
    }

    /// <summary>Reads through another stream and remembers whether it has returned its end.</summary>
    private sealed class EndWatchingStream(Stream inner) : ReadOnlyForwardStream
    {
        public bool EndReached { get; private set; }

        public override int Read(Span<byte> buffer)
        {
            int n = inner.Read(buffer);
            if (n == 0 && !buffer.IsEmpty)
                EndReached = true;
            return n;
        }
    }

    /// <summary>
    /// A decompressor's output. A decompressor that fails once its input has ended was given a cut
    /// stream: that is reported as such, not as corrupt data or an unknown compression method.
    /// </summary>
    private sealed class DecompressedStream(Stream decompressor, EndWatchingStream input, LayerCompression compression) : ReadOnlyForwardStream
    {
        public override int Read(Span<byte> buffer)
        {
            try
            {
                return decompressor.Read(buffer);
            }
            catch (Exception e) when (input.EndReached && e is not OperationCanceledException)
            {
                throw new TruncatedCompressedDataException(
                    $"the {compression.ToString().ToLowerInvariant()} data ends early: the file was cut short (an interrupted download or copy?); copy or download it again", e);
            }
        }

        protected override void Dispose(bool disposing)
        {
            if (disposing)
                decompressor.Dispose();
            base.Dispose(disposing);
        }
    }
}

/// <summary>Compressed data whose stream ends before the compression format says it does.</summary>
internal sealed class TruncatedCompressedDataException(string message, Exception inner) : Exception(message, inner);

/// <summary>The members every read-only, forward-only stream here has alike.</summary>
internal abstract class ReadOnlyForwardStream : Stream
{
    public override int Read(byte[] buffer, int offset, int count) => Read(buffer.AsSpan(offset, count));
    public override bool CanRead => true;
    public override bool CanSeek => false;
    public override bool CanWrite => false;
    public override long Length => throw new NotSupportedException();
    public override long Position { get => throw new NotSupportedException(); set => throw new NotSupportedException(); }
    public override void Flush() { }
    public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();
    public override void SetLength(long value) => throw new NotSupportedException();
    public override void Write(byte[] buffer, int offset, int count) => throw new NotSupportedException();
}

/// <summary>A stream that first returns bytes already read from another (to look at magic bytes of a non-seekable stream).</summary>
internal sealed class PrefixedStream(byte[] prefix, Stream inner) : ReadOnlyForwardStream
{
    private int _offset;

    public override int Read(Span<byte> buffer)
    {
        if (_offset < prefix.Length)
        {
            int n = Math.Min(buffer.Length, prefix.Length - _offset);
            prefix.AsSpan(_offset, n).CopyTo(buffer);
            _offset += n;
            return n;
        }
        return inner.Read(buffer);
    }
}
