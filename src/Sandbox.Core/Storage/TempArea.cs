using System.Security.Cryptography;
using Microsoft.Win32.SafeHandles;
using Sandbox.Linux;

namespace Sandbox.Storage;

/// <summary>
/// <c>&lt;root&gt;/tmp</c>: where layers are unpacked before they are renamed into place. Each
/// working directory <c>tmp/NAME</c> has a lock file <c>tmp/NAME.lock</c>, created first and held
/// (flock) by its owner for as long as it works there. A process that dies, even by SIGKILL, drops
/// the lock, so a later import or prune knows the directory is abandoned and removes it; a live
/// owner's directory is never touched.
/// </summary>
internal sealed class TempArea
{
    private const string LockSuffix = ".lock";

    public TempArea(string directory)
    {
        Directory = directory;
    }

    public string Directory { get; }

    /// <summary>A new, empty, locked working directory.</summary>
    public WorkDirectory Create()
    {
        System.IO.Directory.CreateDirectory(Directory);
        while (true)
        {
            string name = Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(8));
            string lockPath = Path.Combine(Directory, name + LockSuffix);
            SafeFileHandle? fd = FileSystemCalls.TryCreateExclusive(lockPath);
            if (fd is null)
                continue;
            // A cleaner may have taken the fresh, unlocked file for an abandoned one and removed it
            // between our create and our lock: then start again with another name.
            if (!FileSystemCalls.TryLock(fd, exclusive: true) || !FileSystemCalls.IsSameFile(fd, lockPath))
            {
                fd.Dispose();
                continue;
            }
            string path = Path.Combine(Directory, name);
            System.IO.Directory.CreateDirectory(path);
            FileSystemCalls.ChangeModeAt(path, 0x1C0);
            return new WorkDirectory(path, lockPath, fd);
        }
    }

    /// <summary>Removes what dead processes left behind; returns how many entries went.</summary>
    public int CleanAbandoned()
    {
        if (!System.IO.Directory.Exists(Directory))
            return 0;
        int removed = 0;
        foreach (string entry in System.IO.Directory.EnumerateFileSystemEntries(Directory).ToList())
        {
            try
            {
                if (entry.EndsWith(LockSuffix, StringComparison.Ordinal))
                {
                    using SafeFileHandle? fd = FileSystemCalls.TryOpenExisting(entry);
                    if (fd is null || !FileSystemCalls.TryLock(fd, exclusive: true) || !FileSystemCalls.IsSameFile(fd, entry))
                        continue;
                    // Abandoned: remove the work, then the lock file, while holding the lock.
                    TreeRemover.Remove(entry[..^LockSuffix.Length]);
                    FileSystemCalls.Unlink(entry, directory: false);
                    removed++;
                }
                else if (FileSystemCalls.TryLStat(entry + LockSuffix) is null && FileSystemCalls.TryLStat(entry) is not null)
                {
                    // (Still there: its lock file, met first in this pass, took it along and was counted.)
                    // Owners create the lock file first and remove it last, so work without one is abandoned.
                    TreeRemover.Remove(entry);
                    removed++;
                }
            }
            catch (Exception e) when (e is LinuxException or SandboxException or IOException or UnauthorizedAccessException)
            {
                // Best effort: another cleaner got there first, or the entry is not ours to remove
                // (files of ids outside the current subordinate range: prune reports those).
            }
        }
        return removed;
    }
}

/// <summary>A working directory under <c>tmp/</c>, locked by this process until disposed (then removed, unless moved away).</summary>
internal sealed class WorkDirectory : IDisposable
{
    private readonly string _lockPath;
    private readonly SafeFileHandle _lock;
    private bool _disposed;

    public WorkDirectory(string path, string lockPath, SafeFileHandle lockFd)
    {
        Path = path;
        _lockPath = lockPath;
        _lock = lockFd;
    }

    public string Path { get; }

    public void Dispose()
    {
        if (_disposed)
            return;
        _disposed = true;
        try
        {
            TreeRemover.Remove(Path);
            FileSystemCalls.Unlink(_lockPath, directory: false);
        }
        catch (Exception e) when (e is LinuxException or SandboxException or IOException or UnauthorizedAccessException)
        {
            // Left for the next cleaner: the lock goes with the fd below.
        }
        finally
        {
            _lock.Dispose();
        }
    }
}
