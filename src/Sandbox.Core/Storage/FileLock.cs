using Microsoft.Win32.SafeHandles;
using Sandbox.Linux;

namespace Sandbox.Storage;

/// <summary>
/// An flock(2) on a lock file, held until disposed. flock locks belong to the open file
/// description, so two instances conflict even inside one process (threads with separate stores
/// behave like separate processes), and the kernel drops them when a process dies, SIGKILL included.
/// </summary>
internal sealed class FileLock : IDisposable
{
    private readonly SafeFileHandle _fd;

    private FileLock(SafeFileHandle fd, string path)
    {
        _fd = fd;
        Path = path;
    }

    public string Path { get; }

    /// <summary>
    /// Takes the lock, waiting while another holder has a conflicting one. <paramref name="onWait"/>
    /// is called once if it has to wait. Polls so that <paramref name="ct"/> can stop the wait.
    /// </summary>
    public static FileLock Acquire(string path, bool exclusive, CancellationToken ct = default, Action? onWait = null)
    {
        SafeFileHandle fd = FileSystemCalls.OpenLockFile(path);
        try
        {
            if (!FileSystemCalls.TryLock(fd, exclusive))
            {
                onWait?.Invoke();
                Poll(fd, exclusive, maxDelayMs: 50, keepWaiting: () =>
                {
                    ct.ThrowIfCancellationRequested();
                    return true;
                });
            }
            return new FileLock(fd, path);
        }
        catch
        {
            fd.Dispose();
            throw;
        }
    }

    /// <summary>Takes the lock only if nobody holds a conflicting one; null otherwise.</summary>
    public static FileLock? TryAcquire(string path, bool exclusive) => TryAcquire(path, exclusive, TimeSpan.Zero);

    /// <summary>Takes the lock, waiting at most <paramref name="wait"/> for a holder to let go; null after that.</summary>
    public static FileLock? TryAcquire(string path, bool exclusive, TimeSpan wait)
    {
        SafeFileHandle fd = FileSystemCalls.OpenLockFile(path);
        long deadline = Environment.TickCount64 + (long)wait.TotalMilliseconds;
        if (Poll(fd, exclusive, maxDelayMs: 8, keepWaiting: () => Environment.TickCount64 < deadline))
            return new FileLock(fd, path);
        fd.Dispose();
        return null;
    }

    // Tries the lock until it is taken (true) or keepWaiting says to stop (false), sleeping 1, 2, 4...
    // up to maxDelayMs between tries.
    private static bool Poll(SafeFileHandle fd, bool exclusive, int maxDelayMs, Func<bool> keepWaiting)
    {
        int delay = 1;
        while (!FileSystemCalls.TryLock(fd, exclusive))
        {
            if (!keepWaiting())
                return false;
            Thread.Sleep(delay);
            delay = Math.Min(delay * 2, maxDelayMs);
        }
        return true;
    }

    public void Dispose() => _fd.Dispose();
}
