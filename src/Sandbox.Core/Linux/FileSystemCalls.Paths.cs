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

    /// <summary>access(2) with R_OK|W_OK for the real uid: whether this user may open a device such as /dev/fuse.</summary>
    public static bool CanReadWrite(string path)
    {
        fixed (byte* p = NulTerminated(path))
            return access(p, R_OK | W_OK) == 0;
    }
}
