using Microsoft.Win32.SafeHandles;
using Sandbox.Identity;
using Sandbox.Linux;
using Sandbox.Runtime;

namespace Sandbox.Storage;

/// <summary>
/// Removes a directory tree of the store's own (a layer, a temporary unpack): never follows a
/// symlink (each entry is lstat'ed, links are unlinked), and makes read-only directories writable
/// first (layers keep their images' modes, e.g. 0555). Entries already gone are fine: two cleaners
/// may race.
/// <para>Layers that keep their image's owners hold files of subordinate ids, often in directories
/// the caller may not enter or change (0700 of uid 1000, as <c>/home/user</c> or
/// <c>/var/lib/postgresql</c> are). What the caller cannot remove is then removed by root of a user
/// namespace with the caller's subordinate range (<see cref="IdMappedFiles"/>), as
/// <c>podman unshare rm -rf</c> would.</para>
/// </summary>
internal static class TreeRemover
{
    /// <summary>Bytes (st_size of regular files) that were removed.</summary>
    public static long Remove(string path) => Remove(path, () => IdentityEnvironment.Current());

    internal static long Remove(string path, Func<IdentityEnvironment> identity)
    {
        long bytes = 0;
        try
        {
            return RemoveAsCaller(path, ref bytes);
        }
        catch (Exception e) when (IsPermissionProblem(e))
        {
            return bytes + RemoveInUserNamespace(path, identity(), e);
        }
    }

    private static bool IsPermissionProblem(Exception e) =>
        e is UnauthorizedAccessException || e is LinuxException l && FileSystemCalls.IsPermissionError(l);

    private static long RemoveAsCaller(string path, ref long bytes)
    {
        string full = Path.GetFullPath(path).TrimEnd('/');
        string? parent = Path.GetDirectoryName(full);
        string name = Path.GetFileName(full);
        if (parent is null || name.Length == 0)
            throw new SandboxException(SandboxErrorCode.StoreFailed, $"refusing to remove {path}");
        SafeFileHandle parentDirectory;
        try
        {
            parentDirectory = FileSystemCalls.OpenDirectory(parent);
        }
        catch (LinuxException e) when (e.Errno is Errno.ENOENT or Errno.ENOTDIR)
        {
            return bytes;
        }
        using (parentDirectory)
            RemoveAt(parentDirectory, name, full, ref bytes);
        return bytes;
    }

    /// <summary>
    /// Removes <paramref name="name"/> in <paramref name="directory"/>, each entry relative to its
    /// directory's descriptor (fstatat, openat with O_NOFOLLOW, unlinkat), never by path. A layer's
    /// symlinks can give its files real paths far longer than PATH_MAX (each name up to 4096 bytes
    /// goes through links up to 4095 bytes each): by path they were ENAMETOOLONG, and such a layer,
    /// or a failed import's work directory, stayed in the store for good.
    /// </summary>
    private static void RemoveAt(SafeFileHandle directory, string name, string shown, ref long bytes)
    {
        if (FileSystemCalls.StatAt(directory, name) is not FileStatus st)
            return;
        if (st.Kind != FileKind.Directory)
        {
            if (FileSystemCalls.UnlinkAt(directory, name, directory: false) && st.Kind == FileKind.Regular)
                bytes += st.Size;
            return;
        }
        if ((st.Mode & 0x1C0) != 0x1C0)
            FileSystemCalls.ChangeModeAt(directory, name, st.Permissions | 0x1C0);
        using (SafeFileHandle? child = FileSystemCalls.TryOpenDirectoryAt(directory, name))
        {
            if (child is null)
                return;
            foreach (string entry in FileSystemCalls.ListDirectory(child, shown))
                RemoveAt(child, entry, shown, ref bytes);
        }
        FileSystemCalls.UnlinkAt(directory, name, directory: true);
    }

    private static long RemoveInUserNamespace(string path, IdentityEnvironment identity, Exception cause)
    {
        string full = Path.GetFullPath(path).TrimEnd('/');
        string? parent = Path.GetDirectoryName(full);
        string name = Path.GetFileName(full);
        if (parent is null || name.Length == 0)
            throw new SandboxException(SandboxErrorCode.StoreFailed, $"cannot remove {path}: {cause.Message}", cause);
        string? why = IdMapResolver.TryResolveSubordinate(identity, out IdMapPlan? plan);
        if (plan is null)
        {
            throw new SandboxException(SandboxErrorCode.StoreFailed,
                $"cannot remove {full}: {cause.Message}. It holds files of other owners (a layer that kept its image's owners), " +
                $"which only root of a user namespace with your subordinate range may remove, and there is none now: {why}. Restore the range, or remove it as root: sudo rm -rf {full}", cause);
        }
        UserNamespaceFileResult result = IdMappedFiles.Run(parent, [new RemoveTreeOp(name)], plan);
        if (!result.Succeeded)
        {
            string what = result.FailedOp >= 0 ? Errno.Describe(result.Error) : $"wait status {result.WaitStatus}";
            IdMapping map = IdMapping.Of(plan)!;
            throw new SandboxException(SandboxErrorCode.StoreFailed,
                $"cannot remove {full}, even as root of a user namespace with your subordinate range ({map.Describe()}): {what}. " +
                $"Files of ids outside that range (it changed since they were written) can only be removed by root: sudo rm -rf {full}", cause);
        }
        return result.RemovedBytes;
    }
}
