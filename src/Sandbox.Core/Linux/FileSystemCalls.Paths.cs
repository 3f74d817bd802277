using System.Runtime.InteropServices;
using System.Text;
using static Tmds.Linux.LibC;

namespace Sandbox.Linux;

// Path-based calls for trees the caller built itself (the copy storage driver's per-run root), where
// every parent directory was created by us and checked with lstat, so paths need no per-component walk.
internal static unsafe partial class FileSystemCalls
{
    /// <summary>link(2) without following a symlink in <paramref name="existing"/>.</summary>
    public static void HardLink(string existing, string link)
    {
        fixed (byte* e = NulTerminated(existing))
        fixed (byte* l = NulTerminated(link))
        {
            if (linkat(AT_FDCWD, e, AT_FDCWD, l, 0) != 0)
                throw new LinuxException("link", link, errno);
        }
    }

    public static void MakeFifo(string path, uint mode)
    {
        fixed (byte* p = NulTerminated(path))
        {
            if (mknodat(AT_FDCWD, p, (ushort)(S_IFIFO | (ushort)(mode & 0xFFF)), 0UL) != 0)
                throw new LinuxException("mknod (fifo)", path, errno);
        }
    }

    /// <summary>
    /// lchown(2) (fchownat with AT_SYMLINK_NOFOLLOW). Changing the owner clears the setuid and setgid
    /// bits and file capabilities (chown(2)), so set modes and xattrs after it.
    /// </summary>
    public static void ChangeOwner(string path, uint uid, uint gid)
    {
        fixed (byte* p = NulTerminated(path))
        {
            if (Native.fchownat(AT_FDCWD, p, uid, gid, AT_SYMLINK_NOFOLLOW) != 0)
                throw new LinuxException("lchown", path, Marshal.GetLastPInvokeError());
        }
    }

    /// <summary>Whether the entry has any extended attribute (llistxattr needs no permission on the file itself).</summary>
    public static bool HasXattrs(string path)
    {
        fixed (byte* p = NulTerminated(path))
        {
            nint size = Native.llistxattr(p, null, 0);
            if (size >= 0)
                return size > 0;
            int e = Marshal.GetLastPInvokeError();
            return e == EOPNOTSUPP ? false : throw new LinuxException("llistxattr", path, e);
        }
    }

    /// <summary>
    /// Copies the user.* extended attributes of <paramref name="from"/> to <paramref name="to"/>, except
    /// overlay's own (user.overlay.*: overlayfs hides those of its layers too). The store keeps no
    /// others (the unpacker drops the rest). Returns how many were copied; one llistxattr when there
    /// are none.
    /// </summary>
    public static int CopyUserXattrs(string from, string to)
    {
        fixed (byte* f = NulTerminated(from))
        {
            nint size = Native.llistxattr(f, null, 0);
            if (size <= 0)
            {
                int e = size < 0 ? Marshal.GetLastPInvokeError() : 0;
                if (size == 0 || e == EOPNOTSUPP)
                    return 0;
                throw new LinuxException("llistxattr", from, e);
            }
            byte[] list = new byte[XATTR_LIST_MAX];
            fixed (byte* l = list)
                size = Native.llistxattr(f, l, (nuint)list.Length);
            if (size < 0)
                throw new LinuxException("llistxattr", from, Marshal.GetLastPInvokeError());
            int copied = 0;
            byte[] value = new byte[XATTR_LIST_MAX];
            foreach (string name in Encoding.UTF8.GetString(list, 0, (int)size).Split('\0', StringSplitOptions.RemoveEmptyEntries))
            {
                if (!name.StartsWith("user.", StringComparison.Ordinal) || name.StartsWith("user.overlay.", StringComparison.Ordinal))
                    continue;
                fixed (byte* n = NulTerminated(name))
                fixed (byte* v = value)
                fixed (byte* t = NulTerminated(to))
                {
                    nint length = Native.lgetxattr(f, n, v, (nuint)value.Length);
                    if (length < 0)
                    {
                        int e = Marshal.GetLastPInvokeError();
                        if (e == ENODATA)
                            continue; // removed since the listing
                        throw new LinuxException("lgetxattr " + name, from, e);
                    }
                    if (Native.lsetxattr(t, n, v, (nuint)length, 0) != 0)
                        throw new LinuxException("lsetxattr " + name, to, Marshal.GetLastPInvokeError());
                }
                copied++;
            }
            return copied;
        }
    }

    /// <summary>access(2) with R_OK|W_OK for the real uid: whether this user may open a device such as /dev/fuse.</summary>
    public static bool CanReadWrite(string path)
    {
        fixed (byte* p = NulTerminated(path))
            return access(p, R_OK | W_OK) == 0;
    }
}
