using Sandbox.Linux;

namespace Sandbox.Storage;

/// <summary>
/// Removes a directory tree of the store's own (a layer, a temporary unpack): never follows a
/// symlink (each entry is lstat'ed, links are unlinked), and makes read-only directories writable
/// first (layers keep their images' modes, e.g. 0555). Entries already gone are fine: two cleaners
/// may race.
/// </summary>
internal static class TreeRemover
{
    /// <summary>Bytes (st_size of regular files) that were removed.</summary>
    public static long Remove(string path)
    {
        FileStatus? st = FileSystemCalls.TryLStat(path);
        if (st is null)
            return 0;
        if (st.Value.Kind != FileKind.Directory)
        {
            FileSystemCalls.Unlink(path, directory: false);
            return st.Value.Kind == FileKind.Regular ? st.Value.Size : 0;
        }
        long bytes = 0;
        if ((st.Value.Mode & 0x1C0) != 0x1C0)
            FileSystemCalls.ChangeModeAt(path, st.Value.Permissions | 0x1C0);
        IEnumerable<string> children;
        try
        {
            children = Directory.EnumerateFileSystemEntries(path).ToList();
        }
        catch (DirectoryNotFoundException)
        {
            return 0;
        }
        foreach (string child in children)
            bytes += Remove(child);
        FileSystemCalls.Unlink(path, directory: true);
        return bytes;
    }

    /// <summary>Bytes of regular files under <paramref name="path"/> (hard links counted once per name).</summary>
    public static long Measure(string path)
    {
        FileStatus? st = FileSystemCalls.TryLStat(path);
        if (st is null)
            return 0;
        if (st.Value.Kind != FileKind.Directory)
            return st.Value.Kind == FileKind.Regular ? st.Value.Size : 0;
        long bytes = 0;
        try
        {
            foreach (string child in Directory.EnumerateFileSystemEntries(path))
                bytes += Measure(child);
        }
        catch (UnauthorizedAccessException)
        {
        }
        catch (DirectoryNotFoundException)
        {
        }
        return bytes;
    }
}
