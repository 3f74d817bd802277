using System.Runtime.InteropServices;
using static Tmds.Linux.LibC;

namespace Sandbox.Linux;

/// <summary>One entry of poll(2)'s array (struct pollfd).</summary>
[StructLayout(LayoutKind.Sequential)]
internal struct PollEntry
{
    public int Fd;
    public short Events;
    public short ReturnedEvents;

    public const short In = 0x001;   // POLLIN
    public const short Out = 0x004;  // POLLOUT
    public const short Error = 0x008; // POLLERR
    public const short HangUp = 0x010; // POLLHUP
    public const short Invalid = 0x020; // POLLNVAL

    public PollEntry(int fd, short events)
    {
        Fd = fd;
        Events = events;
        ReturnedEvents = 0;
    }

    /// <summary>Readable, or at its end (a hang-up still has data to read until read(2) returns 0).</summary>
    public readonly bool Ready => (ReturnedEvents & (In | Error | HangUp | Invalid)) != 0;
}

/// <summary>
/// poll(2), write(2) and splice(2) on raw descriptors (reads: <see cref="Syscalls.Read"/>), for the supervisor's single loop: it
/// moves the payload's output without a thread or a task per stream.
/// </summary>
internal static unsafe partial class StreamCalls
{
    /// <summary>splice(2) flags: SPLICE_F_MOVE is a hint; SPLICE_F_NONBLOCK returns EAGAIN instead of waiting; SPLICE_F_MORE says more data follows.</summary>
    private const uint SpliceMove = 1, SpliceNonBlock = 2, SpliceMore = 4;

    [LibraryImport("libc", EntryPoint = "poll", SetLastError = true)]
    private static partial int poll_(PollEntry* fds, nuint count, int timeoutMs);

    [LibraryImport("libc", EntryPoint = "splice", SetLastError = true)]
    private static partial nint splice_(int fdIn, long* offIn, int fdOut, long* offOut, nuint length, uint flags);

    /// <summary>Waits for any entry; 0 on timeout. EINTR counts as a timeout-free wake-up (returns 0 with nothing ready).</summary>
    public static int Poll(Span<PollEntry> entries, int timeoutMs)
    {
        fixed (PollEntry* p = entries)
        {
            int n = poll_(p, (nuint)entries.Length, timeoutMs);
            if (n >= 0)
                return n;
            int error = Marshal.GetLastPInvokeError();
            if (error == Errno.EINTR)
                return 0;
            throw new LinuxException("poll", null, error);
        }
    }

    /// <summary>
    /// Moves up to <paramref name="length"/> bytes from a pipe to <paramref name="target"/> inside the
    /// kernel (splice(2)): no copy through our memory. Returns the bytes moved, 0 at the pipe's end,
    /// or -errno (EINVAL: the target cannot take a splice, e.g. a file opened O_APPEND or some ttys;
    /// EAGAIN: the pipe is empty for now, or a pipe target is full; EPIPE: the target's reader is gone).
    /// </summary>
    public static long Splice(int pipe, int target, int length)
    {
        while (true)
        {
            // Non-blocking: the caller drains the pipe until EAGAIN, then polls again.
            nint n = splice_(pipe, null, target, null, (nuint)length, SpliceMove | SpliceNonBlock | SpliceMore);
            if (n >= 0)
                return n;
            int error = Marshal.GetLastPInvokeError();
            if (error != Errno.EINTR)
                return -error;
        }
    }

    /// <summary>FIONREAD: the bytes a pipe holds now.</summary>
    public static int Available(int fd)
    {
        int n = 0;
        return ioctl(fd, 0x541B /* FIONREAD */, &n) == 0 ? n : 0;
    }

    /// <summary>Writes all of <paramref name="data"/>, waiting for a non-blocking target to drain; 0 or -errno (EPIPE: the reader is gone).</summary>
    public static int WriteAll(int fd, ReadOnlySpan<byte> data)
    {
        fixed (byte* d = data)
        {
            int done = 0;
            while (done < data.Length)
            {
                long n = write(fd, d + done, data.Length - done);
                if (n >= 0)
                {
                    done += (int)n;
                    continue;
                }
                int error = errno;
                if (error == Errno.EINTR)
                    continue;
                if (error != Errno.EAGAIN)
                    return -error;
                WaitWritable(fd);
            }
            return 0;
        }
    }

    /// <summary>Blocks until a non-blocking descriptor can take more (after EAGAIN).</summary>
    public static void WaitWritable(int fd)
    {
        Span<PollEntry> one = [new PollEntry(fd, PollEntry.Out)];
        Poll(one, -1);
    }
}
