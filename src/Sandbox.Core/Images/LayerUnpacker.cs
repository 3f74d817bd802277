using System.Formats.Tar;
using System.Text;
using Microsoft.Win32.SafeHandles;
using Sandbox.Linux;
using Sandbox.Storage;

namespace Sandbox.Images;

/// <summary>What unpacking one layer did, beyond writing files.</summary>
public sealed record LayerStats
{
    public long Entries { get; set; }
    public long Bytes { get; set; }
    public int Whiteouts { get; set; }
    public int OpaqueDirectories { get; set; }
    /// <summary>Character and block devices: an unprivileged user cannot create them.</summary>
    public int SkippedDevices { get; set; }
    /// <summary>Extended attributes outside <c>user.*</c> (security.capability, trusted.*, ...), which an unprivileged user cannot set, and <c>user.overlay.*</c>, which only the store itself may set.</summary>
    public int DroppedXattrs { get; set; }
    /// <summary>Entry types with no meaning here (tape volumes, aufs <c>.wh..wh.</c> metadata, ...).</summary>
    public int SkippedOther { get; set; }
}

/// <summary>An entry whose tar owner is not 0:0: its path from the layer root (every component a real directory), its ids, and its type and mode (st_mode).</summary>
internal readonly record struct EntryOwner(string Path, uint Uid, uint Gid, uint Mode);

/// <summary>
/// Applies one layer's tar stream to an empty directory, treating every entry as hostile:
/// <list type="bullet">
/// <item>names are relative and stay inside: an absolute name or one whose <c>..</c> leaves the
/// root is rejected (<see cref="SandboxErrorCode.HostileArchiveEntry"/>);</item>
/// <item>parent directories are resolved one component at a time from the layer root with
/// lstat-like checks; a symlink met on the way is followed as if the layer root were <c>/</c> (an
/// absolute target restarts at the root, <c>..</c> stops at it: openat2's RESOLVE_IN_ROOT), so
/// nothing is ever created outside; the last component is never followed (O_EXCL, O_NOFOLLOW,
/// AT_SYMLINK_NOFOLLOW): an existing entry there is removed and replaced;</item>
/// <item>hard links only to entries already in this layer, never to a directory;</item>
/// <item>devices are skipped and counted; fifos are created;</item>
/// <item>sizes and entry counts are bounded by <see cref="ImportLimits"/>.</item>
/// </list>
/// Modes (with setuid/setgid/sticky), mtimes, symlinks, hard links and <c>user.*</c> xattrs are
/// kept. Files are created by the caller (an unprivileged user cannot chown); the owners the tar
/// gives are recorded (<see cref="Owners"/>) for the store to apply inside a user namespace that maps
/// them, or to drop (ownership flattened). The layer root keeps the caller as its owner (it is
/// renamed into the store, and overlay shows the upper directory's owner for <c>/</c> anyway).
/// OCI whiteouts become overlayfs ones: <c>.wh.NAME</c> a 0:0 character device NAME,
/// <c>.wh..wh..opq</c> the xattr <c>user.overlay.opaque=y</c> on its directory (overlay mounted
/// with <c>userxattr</c> in a user namespace reads <c>user.overlay.*</c>).
/// </summary>
internal sealed class LayerUnpacker : IDisposable
{
    public const string OpaqueXattr = "user.overlay.opaque";
    private const string WhiteoutPrefix = ".wh.";
    private const string OpaqueMarker = ".wh..wh..opq";
    private const int MaxSymlinkHops = 40;
    private const uint DefaultDirectoryMode = 0x1ED; // 0755
    private const uint WorkingDirectoryMode = 0x1C0; // 0700: directories stay writable until the end
    private const uint WorkingFileMode = 0x180; // 0600
    private const uint S_IFIFO = 0x1000, S_IFDIR = 0x4000, S_IFREG = 0x8000, S_IFLNK = 0xA000;

    private readonly string _root;
    private readonly SafeFileHandle _rootFd;
    private readonly ImportLimits _limits;
    private readonly Dictionary<string, DirectoryMeta> _directories = new(StringComparer.Ordinal);
    private readonly HashSet<string> _skippedDevices = new(StringComparer.Ordinal);
    private readonly Dictionary<string, EntryOwner> _owners = new(StringComparer.Ordinal);
    private readonly byte[] _buffer = new byte[256 * 1024];
    private string? _cachedKey;
    private ResolvedDirectory? _cached;
    private string _entryName = "";

    public LayerUnpacker(string root, ImportLimits? limits = null)
    {
        _root = root;
        _rootFd = FileSystemCalls.OpenDirectory(root);
        _limits = limits ?? ImportLimits.Default;
        _directories[""] = new DirectoryMeta(DefaultDirectoryMode, null); // unless the layer has a "./" entry
    }

    public LayerStats Stats { get; } = new();

    /// <summary>
    /// The entries on disk whose tar owner is not 0:0, after the whole layer (entries replaced or
    /// removed by later ones are gone), grouped by directory. Hard links appear under each name.
    /// </summary>
    public IReadOnlyList<EntryOwner> Owners =>
        [.. _owners.Values.OrderBy(o => DirectoryOf(o.Path), StringComparer.Ordinal).ThenBy(o => o.Path, StringComparer.Ordinal)];

    private static string DirectoryOf(string path) => path.LastIndexOf('/') is int slash and >= 0 ? path[..slash] : "";

    /// <summary>Applies every entry of <paramref name="tar"/>, then the directories' modes and mtimes.</summary>
    public LayerStats Unpack(Stream tar, CancellationToken ct = default)
    {
        using (var reader = new TarReader(tar, leaveOpen: true))
        {
            while (reader.GetNextEntry(copyData: false) is TarEntry entry)
            {
                ct.ThrowIfCancellationRequested();
                if (++Stats.Entries > _limits.MaxEntries)
                    throw new SandboxException(SandboxErrorCode.ImageTooLarge, $"layer has more than {_limits.MaxEntries} entries");
                _entryName = entry.Name;
                try
                {
                    Apply(entry, ct);
                }
                catch (LinuxException e)
                {
                    throw new SandboxException(SandboxErrorCode.StoreFailed, $"layer entry '{_entryName}': {e.Message}", e);
                }
            }
        }
        try
        {
            ApplyDirectoryMetadata();
        }
        catch (LinuxException e)
        {
            throw new SandboxException(SandboxErrorCode.StoreFailed, $"setting directory modes and times: {e.Message}", e);
        }
        return Stats;
    }

    private void Apply(TarEntry entry, CancellationToken ct)
    {
        if (entry.EntryType is TarEntryType.GlobalExtendedAttributes)
            return;
        List<string> path = Normalize(entry.Name, "name");
        if (path.Count == 0)
        {
            if (entry.EntryType != TarEntryType.Directory)
                throw Hostile("a non-directory entry names the layer root");
            _directories[""] = new DirectoryMeta((uint)entry.Mode | WorkingDirectoryMode, entry.ModificationTime);
            ApplyXattrs(_rootFd, entry, isSymlink: false);
            return;
        }
        string name = path[^1];
        List<string> parentPath = path.GetRange(0, path.Count - 1);

        if (name.StartsWith(WhiteoutPrefix, StringComparison.Ordinal))
        {
            ApplyWhiteout(parentPath, name);
            return;
        }

        switch (entry.EntryType)
        {
            case TarEntryType.Directory:
                CreateDirectory(parentPath, name, entry);
                break;
            case TarEntryType.RegularFile or TarEntryType.V7RegularFile or TarEntryType.ContiguousFile:
                CreateFile(parentPath, name, entry, ct);
                break;
            case TarEntryType.SymbolicLink:
                CreateSymlink(parentPath, name, entry);
                break;
            case TarEntryType.HardLink:
                CreateHardLink(path, parentPath, name, entry);
                break;
            case TarEntryType.Fifo:
            {
                ResolvedDirectory parent = Resolve(parentPath, create: true)!;
                ReplaceExisting(parent, name, isDirectory: false);
                FileSystemCalls.MakeFifoAt(parent.Fd, name, (uint)entry.Mode);
                FileSystemCalls.SetTimesAt(parent.Fd, name, entry.ModificationTime);
                RecordOwner(Join(parent.RealPath, name), entry, S_IFIFO);
                break;
            }
            case TarEntryType.CharacterDevice or TarEntryType.BlockDevice:
                Stats.SkippedDevices++;
                _skippedDevices.Add(string.Join('/', path));
                break;
            case TarEntryType.SparseFile:
                throw new SandboxException(SandboxErrorCode.ImageFormatInvalid, $"layer entry '{_entryName}': GNU sparse files are not supported");
            default:
                Stats.SkippedOther++;
                break;
        }
    }

    // ---- entry kinds ---------------------------------------------------------------------------

    private void CreateDirectory(List<string> parentPath, string name, TarEntry entry)
    {
        ResolvedDirectory parent = Resolve(parentPath, create: true)!;
        bool wasWhiteout = ReplaceExisting(parent, name, isDirectory: true) is { IsWhiteout: true };
        FileSystemCalls.MakeDirectoryAt(parent.Fd, name, WorkingDirectoryMode);
        using SafeFileHandle fd = FileSystemCalls.TryOpenDirectoryAt(parent.Fd, name)
            ?? throw new SandboxException(SandboxErrorCode.StoreFailed, $"layer entry '{_entryName}': the directory vanished while unpacking");
        ApplyXattrs(fd, entry, isSymlink: false);
        if (wasWhiteout)
            MarkOpaque(fd); // this layer deleted the lower directory, then made a new one: hide the lower one's content
        _directories[Join(parent.RealPath, name)] = new DirectoryMeta((uint)entry.Mode, entry.ModificationTime);
        RecordOwner(Join(parent.RealPath, name), entry, S_IFDIR);
    }

    private void CreateFile(List<string> parentPath, string name, TarEntry entry, CancellationToken ct)
    {
        long length = entry.Length;
        if (length > _limits.MaxEntrySize)
            throw new SandboxException(SandboxErrorCode.ImageTooLarge,
                $"layer entry '{_entryName}': {length} bytes is larger than the limit of {_limits.MaxEntrySize}");
        Stats.Bytes += length;
        if (Stats.Bytes > _limits.MaxLayerSize)
            throw new SandboxException(SandboxErrorCode.ImageTooLarge, $"layer holds more than {_limits.MaxLayerSize} bytes of files");

        ResolvedDirectory parent = Resolve(parentPath, create: true)!;
        ReplaceExisting(parent, name, isDirectory: false);
        using SafeFileHandle fd = FileSystemCalls.CreateFileAt(parent.Fd, name, WorkingFileMode);
        if (entry.DataStream is Stream data && length > 0)
        {
            long written = 0;
            int n;
            while ((n = data.Read(_buffer)) > 0)
            {
                FileSystemCalls.WriteAll(fd, _buffer.AsSpan(0, n));
                written += n;
                if ((written & ((64 << 20) - 1)) < n)
                    ct.ThrowIfCancellationRequested();
            }
            if (written != length)
                throw new SandboxException(SandboxErrorCode.ImageFormatInvalid, $"layer entry '{_entryName}': truncated ({written} of {length} bytes)");
        }
        ApplyXattrs(fd, entry, isSymlink: false);
        FileSystemCalls.ChangeMode(fd, (uint)entry.Mode);
        FileSystemCalls.SetTimes(fd, entry.ModificationTime);
        RecordOwner(Join(parent.RealPath, name), entry, S_IFREG);
    }

    private void CreateSymlink(List<string> parentPath, string name, TarEntry entry)
    {
        string target = entry.LinkName;
        if (string.IsNullOrEmpty(target))
            throw new SandboxException(SandboxErrorCode.ImageFormatInvalid, $"layer entry '{_entryName}': symlink with an empty target");
        if (target.Contains('\0') || Encoding.UTF8.GetByteCount(target) > 4095)
            throw Hostile("symlink target is not a valid path");
        CheckDecoded(target, "symlink target");
        ResolvedDirectory parent = Resolve(parentPath, create: true)!;
        ReplaceExisting(parent, name, isDirectory: false);
        // The target is stored as text and never followed here: only the sandbox, inside its own root, resolves it.
        FileSystemCalls.SymlinkAt(target, parent.Fd, name);
        FileSystemCalls.SetTimesAt(parent.Fd, name, entry.ModificationTime);
        ApplyXattrs(null, entry, isSymlink: true);
        RecordOwner(Join(parent.RealPath, name), entry, S_IFLNK);
    }

    private void CreateHardLink(List<string> path, List<string> parentPath, string name, TarEntry entry)
    {
        List<string> target = Normalize(entry.LinkName, "hard link target");
        if (target.Count == 0)
            throw Hostile("hard link to the layer root");
        string targetKey = string.Join('/', target);
        if (targetKey == string.Join('/', path))
            return; // a link to itself: nothing to do
        if (_skippedDevices.Contains(targetKey))
        {
            Stats.SkippedDevices++;
            _skippedDevices.Add(string.Join('/', path));
            return;
        }
        string targetName = target[^1];
        if (targetName.StartsWith(WhiteoutPrefix, StringComparison.Ordinal))
            throw Hostile("hard link to a whiteout");
        using ResolvedDirectory targetParent = Resolve(target.GetRange(0, target.Count - 1), create: false, useCache: false)
            ?? throw new SandboxException(SandboxErrorCode.ImageFormatInvalid, $"layer entry '{_entryName}': hard link target '{entry.LinkName}' is not in this layer");
        FileStatus st = FileSystemCalls.StatAt(targetParent.Fd, targetName)
            ?? throw new SandboxException(SandboxErrorCode.ImageFormatInvalid, $"layer entry '{_entryName}': hard link target '{entry.LinkName}' is not in this layer");
        if (st.Kind == FileKind.Directory)
            throw Hostile($"hard link to the directory '{entry.LinkName}'");
        ResolvedDirectory parent = Resolve(parentPath, create: true)!;
        ReplaceExisting(parent, name, isDirectory: false);
        // The target may have been the entry just replaced (a link onto its own parent's path): then it is gone.
        if (FileSystemCalls.StatAt(targetParent.Fd, targetName) is null)
            throw new SandboxException(SandboxErrorCode.ImageFormatInvalid, $"layer entry '{_entryName}': hard link target '{entry.LinkName}' was replaced by this entry");
        FileSystemCalls.HardLinkAt(targetParent.Fd, targetName, parent.Fd, name);
        // One inode: the link has the target's owner, whatever its own header says (tar does not
        // chown links either). Listed under the new name too, so that the inode still gets its
        // owner when a later entry replaces the target's name.
        if (_owners.TryGetValue(Join(targetParent.RealPath, targetName), out EntryOwner owner))
            _owners[Join(parent.RealPath, name)] = owner with { Path = Join(parent.RealPath, name) };
    }

    private void ApplyWhiteout(List<string> parentPath, string name)
    {
        ResolvedDirectory parent = Resolve(parentPath, create: true)!;
        if (name == OpaqueMarker)
        {
            MarkOpaque(parent.Fd);
            return;
        }
        if (name.StartsWith(WhiteoutPrefix + WhiteoutPrefix, StringComparison.Ordinal))
        {
            Stats.SkippedOther++; // aufs metadata (.wh..wh.plnk, .wh..wh.aufs): meaningless to overlay
            return;
        }
        string target = name[WhiteoutPrefix.Length..];
        if (target is "" or "." or "..")
            throw Hostile("whiteout of an invalid name");
        FileStatus? existing = FileSystemCalls.StatAt(parent.Fd, target);
        if (existing is { } e && !e.IsWhiteout)
        {
            // OCI: a whiteout hides only what lower layers have; an entry of this layer stays. A
            // non-directory here hides the lower entry already; a directory must not merge with it.
            if (e.Kind == FileKind.Directory)
            {
                using SafeFileHandle fd = FileSystemCalls.TryOpenDirectoryAt(parent.Fd, target)!;
                MarkOpaque(fd);
            }
            return;
        }
        if (existing is not null)
            return; // already a whiteout
        try
        {
            FileSystemCalls.MakeWhiteoutAt(parent.Fd, target);
        }
        catch (LinuxException ex) when (FileSystemCalls.IsPermissionError(ex))
        {
            throw new SandboxException(SandboxErrorCode.WhiteoutUnsupported,
                $"layer entry '{_entryName}': cannot create the overlay whiteout for '{target}' (a 0:0 character device): {ex.Message}. " +
                "Unprivileged users may create it from Linux 5.8 on, on file systems that allow device nodes; put the store (--root, SANDBOX_ROOT) on such a file system, or use a newer kernel", ex);
        }
        Stats.Whiteouts++;
    }

    private void MarkOpaque(SafeFileHandle directory)
    {
        try
        {
            FileSystemCalls.SetXattr(directory, OpaqueXattr, "y"u8);
        }
        catch (LinuxException ex)
        {
            throw new SandboxException(SandboxErrorCode.WhiteoutUnsupported,
                $"layer entry '{_entryName}': cannot mark an opaque directory ({OpaqueXattr}): {ex.Message}. The store needs a file system with user extended attributes (ext4, xfs, btrfs, tmpfs on Linux 6.6+)", ex);
        }
        Stats.OpaqueDirectories++;
    }

    /// <summary>
    /// Makes room for a new entry <paramref name="name"/>: an existing directory stays when the new
    /// entry is one too (tar merges); anything else is removed, a directory with its content.
    /// Returns what was there.
    /// </summary>
    private FileStatus? ReplaceExisting(ResolvedDirectory parent, string name, bool isDirectory)
    {
        FileStatus? existing = FileSystemCalls.StatAt(parent.Fd, name);
        if (existing is not { } st)
            return null;
        if (isDirectory && st.Kind == FileKind.Directory)
            return existing;
        string key = Join(parent.RealPath, name);
        _owners.Remove(key);
        if (st.Kind == FileKind.Directory)
        {
            InvalidateCache();
            TreeRemover.Remove(Path.Combine(_root, key));
            _directories.Remove(key);
            foreach (string stale in _directories.Keys.Where(k => k.StartsWith(key + "/", StringComparison.Ordinal)).ToList())
                _directories.Remove(stale);
            foreach (string stale in _owners.Keys.Where(k => k.StartsWith(key + "/", StringComparison.Ordinal)).ToList())
                _owners.Remove(stale);
        }
        else
        {
            if (st.Kind == FileKind.Symlink)
                InvalidateCache();
            FileSystemCalls.UnlinkAt(parent.Fd, name, directory: false);
        }
        return existing;
    }

    /// <summary>Remembers the tar's owner of the entry now at <paramref name="key"/> (only owners other than 0:0, which is the caller already).</summary>
    private void RecordOwner(string key, TarEntry entry, uint type)
    {
        if (entry.Uid < 0 || entry.Gid < 0)
            throw new SandboxException(SandboxErrorCode.ImageFormatInvalid, $"layer entry '{_entryName}': negative owner {entry.Uid}:{entry.Gid}");
        if (entry.Uid == 0 && entry.Gid == 0)
        {
            _owners.Remove(key);
            return;
        }
        _owners[key] = new EntryOwner(key, (uint)entry.Uid, (uint)entry.Gid, type | ((uint)entry.Mode & 0xFFF));
    }

    private void ApplyXattrs(SafeFileHandle? fd, TarEntry entry, bool isSymlink)
    {
        if (entry is not PaxTarEntry pax)
            return;
        foreach (var (key, value) in pax.ExtendedAttributes)
        {
            string name;
            byte[] bytes;
            if (key.StartsWith("SCHILY.xattr.", StringComparison.Ordinal))
            {
                name = key["SCHILY.xattr.".Length..];
                bytes = Encoding.UTF8.GetBytes(value);
            }
            else if (key.StartsWith("LIBARCHIVE.xattr.", StringComparison.Ordinal))
            {
                name = Uri.UnescapeDataString(key["LIBARCHIVE.xattr.".Length..]);
                try
                {
                    bytes = Convert.FromBase64String(value.PadRight((value.Length + 3) / 4 * 4, '='));
                }
                catch (FormatException)
                {
                    Stats.DroppedXattrs++;
                    continue;
                }
            }
            else
            {
                continue;
            }
            // Only user.* can be set by an unprivileged user; user.overlay.* would steer the overlay
            // mount (opaque, redirect, metacopy) and is set by this unpacker alone. Symlinks cannot carry user.* at all.
            if (isSymlink || fd is null || !name.StartsWith("user.", StringComparison.Ordinal)
                || name.StartsWith("user.overlay.", StringComparison.Ordinal) || name.Length > 255 || bytes.Length > 65536)
            {
                Stats.DroppedXattrs++;
                continue;
            }
            if (!FileSystemCalls.TrySetXattr(fd, name, bytes))
                Stats.DroppedXattrs++;
        }
    }

    /// <summary>Directory modes and mtimes, deepest first, once nothing more is created inside them.</summary>
    private void ApplyDirectoryMetadata()
    {
        InvalidateCache();
        foreach (var (key, meta) in _directories.OrderByDescending(d => d.Key.Length == 0 ? -1 : d.Key.Count(c => c == '/')))
        {
            if (key.Length == 0)
            {
                // The layer root keeps its owner's rwx: it is renamed into the store afterwards, which a read-only directory refuses.
                FileSystemCalls.ChangeMode(_rootFd, meta.Mode | WorkingDirectoryMode);
                if (meta.ModificationTime is DateTimeOffset rootTime)
                    FileSystemCalls.SetTimes(_rootFd, rootTime);
                continue;
            }
            string[] parts = key.Split('/');
            using ResolvedDirectory? parent = Resolve(parts.AsSpan(0, parts.Length - 1).ToArray(), create: false, useCache: false);
            if (parent is null)
                continue;
            using SafeFileHandle? fd = FileSystemCalls.TryOpenDirectoryAt(parent.Fd, parts[^1]);
            if (fd is null)
                continue;
            FileSystemCalls.ChangeMode(fd, meta.Mode);
            if (meta.ModificationTime is DateTimeOffset time)
                FileSystemCalls.SetTimes(fd, time);
        }
    }

    // ---- path resolution -----------------------------------------------------------------------

    /// <summary>
    /// System.Formats.Tar decodes a header's name bytes as UTF-8 and puts U+FFFD for bytes that are
    /// not (a Latin-1 name, "caf\xe9"). Two such names then become one, and a later file would
    /// silently replace an earlier one; the bytes themselves are gone. So such an entry is refused,
    /// with what to do, rather than stored under another name.
    /// </summary>
    private static void CheckDecoded(string name, string what)
    {
        if (name.Contains('\uFFFD'))
            throw new SandboxException(SandboxErrorCode.ImageFormatInvalid,
                $"layer entry '{name}': {what} is not valid UTF-8 (shown with U+FFFD), which this store cannot keep as it is; rename the file in the image to a UTF-8 name and build it again");
    }

    /// <summary>
    /// Splits an entry name into components, lexically. Absolute names and names whose <c>..</c>
    /// climbs above the root are hostile: a well-formed layer never has them.
    /// </summary>
    internal static List<string> Normalize(string name, string what)
    {
        if (string.IsNullOrEmpty(name))
            throw new SandboxException(SandboxErrorCode.ImageFormatInvalid, $"layer entry with an empty {what}");
        if (name.Contains('\0'))
            throw new SandboxException(SandboxErrorCode.HostileArchiveEntry, $"layer entry '{name}': {what} contains a NUL byte");
        if (name[0] == '/')
            throw new SandboxException(SandboxErrorCode.HostileArchiveEntry, $"layer entry '{name}': {what} is an absolute path");
        CheckDecoded(name, what);
        if (Encoding.UTF8.GetByteCount(name) > 4096)
            throw new SandboxException(SandboxErrorCode.ImageFormatInvalid, $"layer entry '{name[..64]}...': {what} is longer than 4096 bytes");
        var parts = new List<string>();
        foreach (string part in name.Split('/'))
        {
            if (part is "" or ".")
                continue;
            if (part == "..")
            {
                if (parts.Count == 0)
                    throw new SandboxException(SandboxErrorCode.HostileArchiveEntry, $"layer entry '{name}': {what} leaves the layer with '..'");
                parts.RemoveAt(parts.Count - 1);
                continue;
            }
            if (Encoding.UTF8.GetByteCount(part) > 255)
                throw new SandboxException(SandboxErrorCode.ImageFormatInvalid, $"layer entry '{name}': a component is longer than 255 bytes");
            parts.Add(part);
        }
        return parts;
    }

    /// <summary>
    /// Opens the directory <paramref name="components"/> names, inside the layer root: each
    /// component is lstat'ed; a directory is entered (O_NOFOLLOW), a symlink's target is resolved as
    /// if the root were <c>/</c>, a missing one is created when <paramref name="create"/> (mode 0755
    /// at the end), anything else is an error. Null when a component is missing and not created.
    /// With <paramref name="useCache"/> the result belongs to this unpacker (the last one is kept:
    /// consecutive entries share their parent); otherwise the caller disposes it.
    /// </summary>
    private ResolvedDirectory? Resolve(IReadOnlyList<string> components, bool create, bool useCache = true)
    {
        string key = string.Join('/', components);
        if (useCache && _cached is not null && _cachedKey == key)
            return _cached;

        var real = new List<string>();
        SafeFileHandle fd = OpenReal(real);
        var pending = new LinkedList<string>(components);
        int hops = 0;
        try
        {
            while (pending.First is { } node)
            {
                string c = node.Value;
                pending.RemoveFirst();
                if (c is "" or ".")
                    continue;
                if (c == "..")
                {
                    if (real.Count > 0)
                    {
                        real.RemoveAt(real.Count - 1);
                        fd.Dispose();
                        fd = OpenReal(real);
                    }
                    continue;
                }
                FileStatus? st = FileSystemCalls.StatAt(fd, c);
                if (st is null)
                {
                    if (!create)
                    {
                        fd.Dispose();
                        return null;
                    }
                    FileSystemCalls.MakeDirectoryAt(fd, c, WorkingDirectoryMode);
                    _directories.TryAdd(Join(string.Join('/', real), c), new DirectoryMeta(DefaultDirectoryMode, null));
                    st = FileSystemCalls.StatAt(fd, c);
                }
                switch (st!.Value.Kind)
                {
                    case FileKind.Directory:
                    {
                        SafeFileHandle next = FileSystemCalls.TryOpenDirectoryAt(fd, c)
                            ?? throw new SandboxException(SandboxErrorCode.StoreFailed, $"layer entry '{_entryName}': directory '{c}' vanished while unpacking");
                        fd.Dispose();
                        fd = next;
                        real.Add(c);
                        break;
                    }
                    case FileKind.Symlink:
                    {
                        if (++hops > MaxSymlinkHops)
                            throw Hostile("too many levels of symbolic links in its path");
                        string target = FileSystemCalls.ReadLinkAt(fd, c);
                        if (target.StartsWith('/'))
                        {
                            real.Clear();
                            fd.Dispose();
                            fd = OpenReal(real);
                        }
                        string[] parts = target.Split('/');
                        for (int i = parts.Length - 1; i >= 0; i--)
                            pending.AddFirst(parts[i]);
                        break;
                    }
                    default:
                        if (!create)
                        {
                            fd.Dispose();
                            return null;
                        }
                        throw new SandboxException(SandboxErrorCode.ImageFormatInvalid,
                            $"layer entry '{_entryName}': '{Join(string.Join('/', real), c)}' is in its path but is not a directory");
                }
            }
        }
        catch
        {
            fd.Dispose();
            throw;
        }
        var result = new ResolvedDirectory(fd, string.Join('/', real), owned: !useCache);
        if (useCache)
        {
            _cached?.Release();
            _cached = result;
            _cachedKey = key;
        }
        return result;
    }

    /// <summary>Opens a directory by its real path (components that are all directories), without following anything.</summary>
    private SafeFileHandle OpenReal(List<string> real)
    {
        SafeFileHandle fd = FileSystemCalls.TryOpenDirectoryAt(_rootFd, ".")!;
        foreach (string c in real)
        {
            SafeFileHandle next = FileSystemCalls.TryOpenDirectoryAt(fd, c)
                ?? throw new SandboxException(SandboxErrorCode.StoreFailed, $"layer entry '{_entryName}': directory '{c}' vanished while unpacking");
            fd.Dispose();
            fd = next;
        }
        return fd;
    }

    /// <summary>
    /// Forgets which path the cached directory answers for (something on the way may have been
    /// replaced); its fd stays open until the next lookup replaces it, as the current entry may still use it.
    /// </summary>
    private void InvalidateCache() => _cachedKey = null;

    private static string Join(string parent, string name) => parent.Length == 0 ? name : parent + "/" + name;

    private SandboxException Hostile(string why) =>
        new(SandboxErrorCode.HostileArchiveEntry, $"layer entry '{_entryName}': {why}");

    public void Dispose()
    {
        _cached?.Release();
        _cached = null;
        _rootFd.Dispose();
    }

    private readonly record struct DirectoryMeta(uint Mode, DateTimeOffset? ModificationTime);

    /// <summary>An open directory inside the layer and its path from the root with every symlink resolved.</summary>
    private sealed class ResolvedDirectory(SafeFileHandle fd, string realPath, bool owned) : IDisposable
    {
        public SafeFileHandle Fd { get; } = fd;
        public string RealPath { get; } = realPath;

        /// <summary>Disposes only what the caller owns: the cached one belongs to the unpacker.</summary>
        public void Dispose()
        {
            if (owned)
                Fd.Dispose();
        }

        public void Release() => Fd.Dispose();
    }
}
