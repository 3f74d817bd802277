using System.Runtime.InteropServices;
using System.Text;
using Microsoft.Win32.SafeHandles;
using Tmds.Linux;
using static Tmds.Linux.LibC;

namespace Sandbox.Linux;

/// <summary>What an inode is, from its st_mode.</summary>
internal enum FileKind
{
    Regular,
    Directory,
    Symlink,
    CharDevice,
    BlockDevice,
    Fifo,
    Socket,
    Unknown,
}

/// <summary>The fields of stat(2) the store and the layer unpacker use.</summary>
internal readonly record struct FileStatus(FileKind Kind, uint Mode, ulong Device, ulong Inode, long Size, ulong RawDevice, uint Uid, ulong LinkCount)
{
    /// <summary>The permission bits, with setuid, setgid and sticky (07777).</summary>
    public uint Permissions => Mode & 0xFFF;

    /// <summary>st_gid.</summary>
    public uint Gid { get; init; }

    /// <summary>An overlay whiteout: a character device with device number 0:0.</summary>
    public bool IsWhiteout => Kind == FileKind.CharDevice && RawDevice == 0;
}

/// <summary>
/// The *at(2) calls the layer store builds trees with. Every call that names an entry takes the
/// directory it lives in as an fd and never follows a symlink in the last component (O_NOFOLLOW,
/// AT_SYMLINK_NOFOLLOW, O_EXCL), so code above can resolve paths itself, one component at a time.
/// Failures become <see cref="LinuxException"/>; expected outcomes (missing entry, lock held by
/// another process) are return values instead.
/// </summary>
internal static unsafe partial class FileSystemCalls
{
    private const int AT_FDCWD = -100;
    private const int ENOTEMPTY = 39;
    private const int ENODATA = 61;
    private const int EXDEV = 18;
    private const int EOPNOTSUPP = 95;
    private const int LOCK_SH = 1;
    private const int LOCK_EX = 2;
    private const int LOCK_NB = 4;
    private const int LOCK_UN = 8;
    private const uint RENAME_NOREPLACE = 1;
    private const int XATTR_LIST_MAX = 65536;

    // ---- opening -------------------------------------------------------------------------------

    /// <summary>Opens a directory by absolute path (symlinks in the path are followed: the caller's own path).</summary>
    public static SafeFileHandle OpenDirectory(string path)
    {
        fixed (byte* p = NulTerminated(path))
        {
            int fd = open(p, O_RDONLY | O_DIRECTORY | O_CLOEXEC, 0);
            if (fd < 0)
                throw new LinuxException("open", path, errno);
            return new SafeFileHandle(fd, ownsHandle: true);
        }
    }

    /// <summary>Opens the directory <paramref name="name"/> in <paramref name="dir"/> without following a symlink; null when it is missing or not a directory.</summary>
    public static SafeFileHandle? TryOpenDirectoryAt(SafeFileHandle dir, string name)
    {
        fixed (byte* p = NulTerminated(name))
        {
            int fd = openat(Fd(dir), p, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC, 0);
            if (fd >= 0)
                return new SafeFileHandle(fd, ownsHandle: true);
            int e = errno;
            if (e is Errno.ENOENT or Errno.ENOTDIR or Errno.ELOOP)
                return null;
            throw new LinuxException("openat", name, e);
        }
    }

    /// <summary>Creates a new regular file (O_EXCL: never an existing file, never through a symlink), open for writing.</summary>
    public static SafeFileHandle CreateFileAt(SafeFileHandle dir, string name, uint mode)
    {
        fixed (byte* p = NulTerminated(name))
        {
            int fd = openat(Fd(dir), p, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, (ushort)mode);
            if (fd < 0)
                throw new LinuxException("openat (create)", name, errno);
            return new SafeFileHandle(fd, ownsHandle: true);
        }
    }

    /// <summary>
    /// Opens (creating if needed) a lock file, read-write, mode 0600; an existing one on a read-only
    /// file system, or that only its owner may write, read-only: flock(2) needs no write access, so
    /// a read-only store can still be run from.
    /// </summary>
    public static SafeFileHandle OpenLockFile(string path, bool create = true)
    {
        fixed (byte* p = NulTerminated(path))
        {
            int flags = O_RDWR | O_CLOEXEC | O_NOFOLLOW | (create ? O_CREAT : 0);
            int fd = open(p, flags, 0x180);
            if (fd < 0)
            {
                int e = errno;
                if (e is Errno.EROFS or Errno.EACCES)
                    fd = open(p, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
                if (fd < 0)
                    throw new LinuxException("open", path, e);
            }
            return new SafeFileHandle(fd, ownsHandle: true);
        }
    }

    /// <summary>Creates a lock file that must not exist yet; null when it does.</summary>
    public static SafeFileHandle? TryCreateExclusive(string path)
    {
        fixed (byte* p = NulTerminated(path))
        {
            int fd = open(p, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0x180);
            if (fd >= 0)
                return new SafeFileHandle(fd, ownsHandle: true);
            int e = errno;
            if (e == Errno.EEXIST)
                return null;
            throw new LinuxException("open (create)", path, e);
        }
    }

    /// <summary>Opens an existing file without following a symlink; null when it is missing.</summary>
    public static SafeFileHandle? TryOpenExisting(string path)
    {
        fixed (byte* p = NulTerminated(path))
        {
            int fd = open(p, O_RDWR | O_NOFOLLOW | O_CLOEXEC, 0);
            if (fd >= 0)
                return new SafeFileHandle(fd, ownsHandle: true);
            int e = errno;
            if (e is Errno.ENOENT or Errno.ELOOP or Errno.EISDIR)
                return null;
            throw new LinuxException("open", path, e);
        }
    }

    // ---- reading -------------------------------------------------------------------------------
    //
    // Every `sandbox run` reads a few small files (/etc/subuid, the storage probe's cache, the image
    // records) and lists the image records. System.IO's FileStream, StreamReader and enumerator each
    // cost a NativeAOT start their first use (code met for the first time: page faults at 3 to 4 µs
    // each here); these calls keep all of that off the run's path, which then touches none of it.

    /// <summary>The names in a directory, without . and .., in getdents64(2)'s order; null when it is missing.</summary>
    public static List<string>? TryListDirectory(string path)
    {
        int fd = OpenOrNull(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (fd < 0)
            return null;
        try
        {
            return ReadNames(fd, path);
        }
        finally
        {
            close(fd);
        }
    }

    /// <summary>The names in an open directory (read from its start: open it afresh), without . and ...</summary>
    public static List<string> ListDirectory(SafeFileHandle dir, string what) => ReadNames(Fd(dir), what);

    private static List<string> ReadNames(int fd, string path)
    {
        {
            const int BufferSize = 8192;
            byte* buffer = stackalloc byte[BufferSize];
            var names = new List<string>();
            while (true)
            {
                nint n = Native.getdents64(fd, buffer, BufferSize);
                if (n < 0)
                {
                    int e = errno;
                    if (e == Errno.EINTR)
                        continue;
                    throw new LinuxException("getdents64", path, e);
                }
                if (n == 0)
                    return names;
                // struct linux_dirent64 (getdents64(2)): u64 d_ino, s64 d_off, u16 d_reclen, u8 d_type, char d_name[].
                for (nint at = 0; at < n; at += *(ushort*)(buffer + at + 16))
                {
                    string name = Marshal.PtrToStringUTF8((nint)(buffer + at + 19))!;
                    if (name is not ("." or ".."))
                        names.Add(name);
                }
            }
        }
    }

    /// <summary>
    /// A whole file's bytes, read to its end (st_size is only the first guess: /proc and /sys files
    /// say 0); null when it is missing. Other failures throw.
    /// </summary>
    public static byte[]? TryReadAllBytes(string path) =>
        TryReadAllBytes(path, out int length) is byte[] bytes ? (length == bytes.Length ? bytes : bytes[..length]) : null;

    /// <summary>
    /// As <see cref="TryReadAllBytes(string)"/>, but the file is the first <paramref name="length"/>
    /// bytes of the buffer returned, which is not copied to fit: for parsers of small files on the
    /// warm start's path, where each fresh page of heap costs a fault.
    /// </summary>
    public static byte[]? TryReadAllBytes(string path, out int length)
    {
        length = 0;
        int fd = OpenOrNull(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
            return null;
        try
        {
            stat st;
            if (fstat(fd, &st) != 0)
                throw new LinuxException("fstat", path, errno);
            // One byte more than the size, so that a file of the size it says ends in one pass; a
            // page for those that say 0 (/proc, /sys).
            byte[] bytes = new byte[st.st_size > 0 ? Math.Min(st.st_size + 1, Array.MaxLength) : 4096];
            int total = 0;
            while (true)
            {
                if (total == bytes.Length)
                {
                    if (bytes.Length == Array.MaxLength)
                        throw new LinuxException("read", path, Errno.E2BIG);
                    Array.Resize(ref bytes, (int)Math.Min(2L * bytes.Length, Array.MaxLength));
                }
                long n;
                fixed (byte* b = bytes)
                    n = read(fd, b + total, bytes.Length - total);
                if (n < 0 && errno == Errno.EINTR)
                    continue;
                if (n < 0)
                    throw new LinuxException("read", path, errno);
                if (n == 0)
                {
                    length = total;
                    return bytes;
                }
                total += (int)n;
            }
        }
        finally
        {
            close(fd);
        }
    }

    // open(2); -1 when the path is missing (ENOENT, or ENOTDIR for a file used as a directory). Other failures throw.
    private static int OpenOrNull(string path, int flags)
    {
        int fd;
        fixed (byte* p = NulTerminated(path))
            fd = open(p, flags, 0);
        if (fd >= 0)
            return fd;
        int e = errno;
        if (e is Errno.ENOENT or Errno.ENOTDIR)
            return -1;
        throw new LinuxException("open", path, e);
    }

    /// <summary>A whole text file (UTF-8) as lines, as File.ReadAllLines splits them; null when it cannot be read.</summary>
    public static string[]? TryReadAllLines(string path)
    {
        byte[]? bytes;
        try
        {
            bytes = TryReadAllBytes(path);
        }
        catch (LinuxException)
        {
            return null;
        }
        if (bytes is null)
            return null;
        string text = Encoding.UTF8.GetString(bytes);
        if (text.Length == 0)
            return [];
        // A last line's terminator ends it; it does not start an empty line after it.
        if (text.EndsWith('\n'))
            text = text[..^1];
        string[] lines = text.Split('\n');
        for (int i = 0; i < lines.Length; i++)
            lines[i] = lines[i].TrimEnd('\r');
        return lines;
    }

    // ---- status --------------------------------------------------------------------------------

    /// <summary>lstat-like status of <paramref name="name"/> in <paramref name="dir"/>; null when missing.</summary>
    public static FileStatus? StatAt(SafeFileHandle dir, string name)
    {
        stat st;
        fixed (byte* p = NulTerminated(name))
        {
            if (fstatat(Fd(dir), p, &st, AT_SYMLINK_NOFOLLOW) != 0)
            {
                int e = errno;
                if (e is Errno.ENOENT or Errno.ENOTDIR)
                    return null;
                throw new LinuxException("fstatat", name, e);
            }
        }
        return ToStatus(st);
    }

    /// <summary>stat(2) of an absolute path, symlinks followed; null when missing.</summary>
    public static FileStatus? TryStat(string path)
    {
        stat st;
        fixed (byte* p = NulTerminated(path))
        {
            if (fstatat(AT_FDCWD, p, &st, 0) != 0)
            {
                int e = errno;
                if (e is Errno.ENOENT or Errno.ENOTDIR)
                    return null;
                throw new LinuxException("stat", path, e);
            }
        }
        return ToStatus(st);
    }

    /// <summary>lstat(2) of an absolute path; null when missing.</summary>
    public static FileStatus? TryLStat(string path)
    {
        stat st;
        fixed (byte* p = NulTerminated(path))
        {
            if (fstatat(AT_FDCWD, p, &st, AT_SYMLINK_NOFOLLOW) != 0)
            {
                int e = errno;
                if (e is Errno.ENOENT or Errno.ENOTDIR)
                    return null;
                throw new LinuxException("lstat", path, e);
            }
        }
        return ToStatus(st);
    }

    public static FileStatus Stat(SafeFileHandle fd)
    {
        stat st;
        if (fstat(Fd(fd), &st) != 0)
            throw new LinuxException("fstat", null, errno);
        return ToStatus(st);
    }

    // ---- creating ------------------------------------------------------------------------------

    /// <summary>mkdirat; false when the name exists already (of any kind).</summary>
    public static bool MakeDirectoryAt(SafeFileHandle dir, string name, uint mode)
    {
        fixed (byte* p = NulTerminated(name))
        {
            if (mkdirat(Fd(dir), p, (ushort)mode) == 0)
                return true;
            int e = errno;
            if (e == Errno.EEXIST)
                return false;
            throw new LinuxException("mkdirat", name, e);
        }
    }

    public static void SymlinkAt(string target, SafeFileHandle dir, string name)
    {
        fixed (byte* t = NulTerminated(target))
        fixed (byte* p = NulTerminated(name))
        {
            if (symlinkat(t, Fd(dir), p) != 0)
                throw new LinuxException("symlinkat", name, errno);
        }
    }

    /// <summary>linkat without AT_SYMLINK_FOLLOW: a link to a symlink links the symlink itself.</summary>
    public static void HardLinkAt(SafeFileHandle fromDir, string fromName, SafeFileHandle toDir, string toName)
    {
        fixed (byte* f = NulTerminated(fromName))
        fixed (byte* t = NulTerminated(toName))
        {
            if (linkat(Fd(fromDir), f, Fd(toDir), t, 0) != 0)
                throw new LinuxException("linkat", toName, errno);
        }
    }

    /// <summary>
    /// An overlay whiteout: a 0:0 character device, mode 0. Unprivileged users may create it since
    /// Linux 5.8; earlier kernels (and some file systems) refuse with EPERM: see <see cref="IsPermissionError"/>.
    /// </summary>
    public static void MakeWhiteoutAt(SafeFileHandle dir, string name)
    {
        fixed (byte* p = NulTerminated(name))
        {
            if (mknodat(Fd(dir), p, S_IFCHR, 0UL) != 0)
                throw new LinuxException("mknodat (whiteout 0:0)", name, errno);
        }
    }

    /// <summary>
    /// mknodat of a fifo with exactly <paramref name="mode"/>: mknod(2) applies the umask, so the mode
    /// is set again (the entry was just created in a directory of ours; fchmodat has no
    /// AT_SYMLINK_NOFOLLOW before fchmodat2).
    /// </summary>
    public static void MakeFifoAt(SafeFileHandle dir, string name, uint mode)
    {
        fixed (byte* p = NulTerminated(name))
        {
            if (mknodat(Fd(dir), p, (ushort)(S_IFIFO | (ushort)(mode & 0xFFF)), 0UL) != 0)
                throw new LinuxException("mknodat (fifo)", name, errno);
            if (fchmodat(Fd(dir), p, (ushort)(mode & 0xFFF), 0) != 0)
                throw new LinuxException("fchmodat (fifo)", name, errno);
        }
    }

    public static bool IsPermissionError(LinuxException e) => e.Errno is Errno.EPERM or Errno.EACCES;

    // ---- removing and renaming -----------------------------------------------------------------

    /// <summary>unlinkat; false when the name is already gone.</summary>
    public static bool UnlinkAt(SafeFileHandle dir, string name, bool directory)
    {
        fixed (byte* p = NulTerminated(name))
        {
            if (unlinkat(Fd(dir), p, directory ? AT_REMOVEDIR : 0) == 0)
                return true;
            int e = errno;
            if (e == Errno.ENOENT)
                return false;
            throw new LinuxException(directory ? "rmdir" : "unlink", name, e);
        }
    }

    /// <summary>Removes a non-directory or an empty directory by absolute path; false when already gone.</summary>
    public static bool Unlink(string path, bool directory)
    {
        fixed (byte* p = NulTerminated(path))
        {
            if (unlinkat(AT_FDCWD, p, directory ? AT_REMOVEDIR : 0) == 0)
                return true;
            int e = errno;
            if (e == Errno.ENOENT)
                return false;
            throw new LinuxException(directory ? "rmdir" : "unlink", path, e);
        }
    }

    /// <summary>renameat2(RENAME_NOREPLACE): false when the target exists already.</summary>
    public static bool RenameNoReplace(string from, string to)
    {
        fixed (byte* f = NulTerminated(from))
        fixed (byte* t = NulTerminated(to))
        {
            if (Native.renameat2(AT_FDCWD, f, AT_FDCWD, t, RENAME_NOREPLACE) == 0)
                return true;
            int e = Marshal.GetLastPInvokeError();
            if (e is Errno.EEXIST or ENOTEMPTY)
                return false;
            if (e is Errno.EINVAL or Errno.ENOSYS)
            {
                // A file system without RENAME_NOREPLACE: for directories rename(2) refuses a non-empty target anyway.
                if (Native.rename(f, t) == 0)
                    return true;
                e = Marshal.GetLastPInvokeError();
                if (e is Errno.EEXIST or ENOTEMPTY)
                    return false;
            }
            throw new LinuxException("rename", $"{from} -> {to}", e);
        }
    }

    /// <summary>rename(2), replacing the target (atomic for files).</summary>
    public static void Rename(string from, string to)
    {
        fixed (byte* f = NulTerminated(from))
        fixed (byte* t = NulTerminated(to))
        {
            if (Native.rename(f, t) != 0)
                throw new LinuxException("rename", $"{from} -> {to}", Marshal.GetLastPInvokeError());
        }
    }

    public static string ReadLinkAt(SafeFileHandle dir, string name) =>
        ReadLink(Fd(dir), name, out int error) ?? throw new LinuxException("readlinkat", name, error);

    /// <summary>readlink(2) of a path (a /proc magic link too); null when it is no link or cannot be read.</summary>
    public static string? TryReadLink(string path) => ReadLink(AT_FDCWD, path, out _);

    // A link's target is shorter than PATH_MAX (4096 with its NUL), so a full buffer cannot happen.
    private static string? ReadLink(int dir, string name, out int error)
    {
        Span<byte> buffer = stackalloc byte[4096];
        long n;
        fixed (byte* p = NulTerminated(name))
        fixed (byte* b = buffer)
            n = readlinkat(dir, p, b, buffer.Length);
        error = n < 0 ? errno : 0;
        return n < 0 ? null : Encoding.UTF8.GetString(buffer[..(int)n]);
    }

    // ---- attributes ----------------------------------------------------------------------------

    public static void ChangeMode(SafeFileHandle fd, uint mode)
    {
        if (fchmod(Fd(fd), (ushort)(mode & 0xFFF)) != 0)
            throw new LinuxException("fchmod", null, errno);
    }

    /// <summary>chmod of <paramref name="name"/> in <paramref name="dir"/>, which the caller has just fstatat'ed as a directory of its own.</summary>
    public static void ChangeModeAt(SafeFileHandle dir, string name, uint mode)
    {
        fixed (byte* p = NulTerminated(name))
        {
            if (fchmodat(Fd(dir), p, (ushort)(mode & 0xFFF), 0) != 0)
                throw new LinuxException("chmod", name, errno);
        }
    }

    /// <summary>chmod of a path the caller has just lstat'ed as a directory of its own.</summary>
    public static void ChangeModeAt(string path, uint mode)
    {
        fixed (byte* p = NulTerminated(path))
        {
            if (fchmodat(AT_FDCWD, p, (ushort)(mode & 0xFFF), 0) != 0)
                throw new LinuxException("chmod", path, errno);
        }
    }

    /// <summary>Sets atime and mtime of an open file to <paramref name="time"/>.</summary>
    public static void SetTimes(SafeFileHandle fd, DateTimeOffset time)
    {
        timespec* ts = stackalloc timespec[2];
        ts[0] = ToTimespec(time);
        ts[1] = ts[0];
        if (futimens(Fd(fd), ts) != 0)
            throw new LinuxException("futimens", null, errno);
    }

    /// <summary>utimensat(AT_SYMLINK_NOFOLLOW): for symlinks and fifos, which are not opened.</summary>
    public static void SetTimesAt(SafeFileHandle dir, string name, DateTimeOffset time)
    {
        timespec* ts = stackalloc timespec[2];
        ts[0] = ToTimespec(time);
        ts[1] = ts[0];
        fixed (byte* p = NulTerminated(name))
        {
            if (utimensat(Fd(dir), p, ts, AT_SYMLINK_NOFOLLOW) != 0)
                throw new LinuxException("utimensat", name, errno);
        }
    }

    /// <summary>fsetxattr; false when the file system does not support it (EOPNOTSUPP) or refuses it (EPERM).</summary>
    public static bool TrySetXattr(SafeFileHandle fd, string name, ReadOnlySpan<byte> value)
    {
        fixed (byte* n = NulTerminated(name))
        fixed (byte* v = value)
        {
            if (Native.fsetxattr(Fd(fd), n, v, (nuint)value.Length, 0) == 0)
                return true;
            int e = Marshal.GetLastPInvokeError();
            if (e is EOPNOTSUPP or Errno.EPERM)
                return false;
            throw new LinuxException("fsetxattr " + name, null, e);
        }
    }

    public static void SetXattr(SafeFileHandle fd, string name, ReadOnlySpan<byte> value)
    {
        fixed (byte* n = NulTerminated(name))
        fixed (byte* v = value)
        {
            if (Native.fsetxattr(Fd(fd), n, v, (nuint)value.Length, 0) != 0)
                throw new LinuxException("fsetxattr " + name, null, Marshal.GetLastPInvokeError());
        }
    }

    /// <summary>lgetxattr of a path (tests and diagnostics); null when the attribute is not set.</summary>
    public static byte[]? GetXattr(string path, string name)
    {
        byte[] buffer = new byte[XATTR_LIST_MAX];
        fixed (byte* p = NulTerminated(path))
        fixed (byte* n = NulTerminated(name))
        fixed (byte* b = buffer)
        {
            nint len = Native.lgetxattr(p, n, b, (nuint)buffer.Length);
            if (len < 0)
            {
                int e = Marshal.GetLastPInvokeError();
                if (e is ENODATA or EOPNOTSUPP)
                    return null;
                throw new LinuxException("lgetxattr " + name, path, e);
            }
            return buffer.AsSpan(0, (int)len).ToArray();
        }
    }

    /// <summary>llistxattr of a path (tests and diagnostics).</summary>
    public static IReadOnlyList<string> ListXattrs(string path)
    {
        byte[] buffer = new byte[XATTR_LIST_MAX];
        fixed (byte* p = NulTerminated(path))
        fixed (byte* b = buffer)
        {
            nint len = Native.llistxattr(p, b, (nuint)buffer.Length);
            if (len < 0)
            {
                int e = Marshal.GetLastPInvokeError();
                if (e == EOPNOTSUPP)
                    return [];
                throw new LinuxException("llistxattr", path, e);
            }
            return Encoding.UTF8.GetString(buffer, 0, (int)len).Split('\0', StringSplitOptions.RemoveEmptyEntries);
        }
    }

    // ---- data and locks ------------------------------------------------------------------------

    public static void WriteAll(SafeFileHandle fd, ReadOnlySpan<byte> data)
    {
        fixed (byte* d = data)
        {
            int done = 0;
            while (done < data.Length)
            {
                long n = write(Fd(fd), d + done, data.Length - done);
                if (n < 0)
                {
                    int e = errno;
                    if (e == Errno.EINTR)
                        continue;
                    throw new LinuxException("write", null, e);
                }
                done += (int)n;
            }
        }
    }

    /// <summary>flock(2) without waiting: false when another open file description holds a conflicting lock.</summary>
    public static bool TryLock(SafeFileHandle fd, bool exclusive)
    {
        while (true)
        {
            if (Native.flock(Fd(fd), (exclusive ? LOCK_EX : LOCK_SH) | LOCK_NB) == 0)
                return true;
            int e = Marshal.GetLastPInvokeError();
            if (e == Errno.EINTR)
                continue;
            if (e == Errno.EAGAIN)
                return false;
            throw new LinuxException("flock", null, e);
        }
    }

    public static void Unlock(SafeFileHandle fd)
    {
        if (Native.flock(Fd(fd), LOCK_UN) != 0)
            throw new LinuxException("flock (unlock)", null, Marshal.GetLastPInvokeError());
    }

    /// <summary>Whether <paramref name="fd"/> is still the file at <paramref name="path"/> (a lock file may have been removed by whoever held it last).</summary>
    public static bool IsSameFile(SafeFileHandle fd, string path)
    {
        FileStatus? onDisk = TryLStat(path);
        if (onDisk is null)
            return false;
        FileStatus open = Stat(fd);
        return open.Device == onDisk.Value.Device && open.Inode == onDisk.Value.Inode;
    }

    // ---- helpers -------------------------------------------------------------------------------

    private static int Fd(SafeFileHandle handle) => (int)handle.DangerousGetHandle();

    private static byte[] NulTerminated(string s) => Syscalls.NulTerminated(s);

    private static timespec ToTimespec(DateTimeOffset time)
    {
        long ticks = time.UtcTicks - DateTimeOffset.UnixEpoch.UtcTicks;
        long seconds = Math.DivRem(ticks, TimeSpan.TicksPerSecond, out long rest);
        if (rest < 0)
        {
            seconds--;
            rest += TimeSpan.TicksPerSecond;
        }
        return new timespec { tv_sec = seconds, tv_nsec = (long_t)(rest * 100) };
    }

    private static FileStatus ToStatus(in stat st)
    {
        uint mode = (ushort)st.st_mode;
        FileKind kind = (mode & 0xF000) switch
        {
            0x8000 => FileKind.Regular,
            0x4000 => FileKind.Directory,
            0xA000 => FileKind.Symlink,
            0x2000 => FileKind.CharDevice,
            0x6000 => FileKind.BlockDevice,
            0x1000 => FileKind.Fifo,
            0xC000 => FileKind.Socket,
            _ => FileKind.Unknown,
        };
        return new FileStatus(kind, mode, st.st_dev, st.st_ino, st.st_size, st.st_rdev, st.st_uid, st.st_nlink) { Gid = st.st_gid };
    }

    private static partial class Native
    {
        [LibraryImport("libc", SetLastError = true)]
        public static partial int flock(int fd, int operation);

        [LibraryImport("libc", SetLastError = true)]
        public static partial nint getdents64(int fd, byte* buffer, nuint count);

        [LibraryImport("libc", SetLastError = true)]
        public static partial int renameat2(int olddirfd, byte* oldpath, int newdirfd, byte* newpath, uint flags);

        [LibraryImport("libc", SetLastError = true)]
        public static partial int rename(byte* oldpath, byte* newpath);

        [LibraryImport("libc", SetLastError = true)]
        public static partial int fsetxattr(int fd, byte* name, byte* value, nuint size, int flags);

        [LibraryImport("libc", SetLastError = true)]
        public static partial nint lgetxattr(byte* path, byte* name, byte* value, nuint size);

        [LibraryImport("libc", SetLastError = true)]
        public static partial nint llistxattr(byte* path, byte* list, nuint size);

        [LibraryImport("libc", SetLastError = true)]
        public static partial int fchownat(int dirfd, byte* path, uint owner, uint group, int flags);

        [LibraryImport("libc", SetLastError = true)]
        public static partial int lsetxattr(byte* path, byte* name, byte* value, nuint size, int flags);
    }
}
