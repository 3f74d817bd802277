using Sandbox.Linux;

namespace Sandbox;

/// <summary>
/// The standard descriptors 0 to 2 this process was started with. A caller may leave any of them
/// closed (`sandbox run … &lt;&amp;-`, a daemon's child, some CI runners). The number is then the
/// lowest free one, and the next descriptor opened takes it: left alone, the payload would be given
/// the runtime's internal pipe or one of our own streams as its stdin or stdout.
/// </summary>
public static class StandardDescriptors
{
    // One bit per descriptor that is the caller's, once Claim has looked (-1: not yet).
    private static int s_callers = -1;

    /// <summary>
    /// Call first in <c>Main</c>, before anything opens a descriptor: puts /dev/null at each of 0 to 2
    /// that is closed (under NativeAOT nothing has taken the numbers yet), notes which are the
    /// caller's (under the JIT the runtime may already hold a closed one: close-on-exec, so not the
    /// caller's), and points <see cref="Console.Out"/> and <see cref="Console.Error"/> at nothing
    /// where the caller gave no stream, so that no message of ours goes into a runtime's descriptor.
    /// One fcntl(2) a descriptor.
    /// </summary>
    public static void Claim()
    {
        int callers = 0;
        for (int fd = 0; fd <= 2; fd++)
        {
            switch (Syscalls.IsInherited(fd))
            {
                case null:
                    Syscalls.OpenNullAt(fd); // the caller's "nothing", now a /dev/null in its place
                    callers |= 1 << fd;
                    break;
                case true:
                    callers |= 1 << fd;
                    break;
            }
        }
        s_callers = callers;
        if (!IsCallers(1))
            Console.SetOut(TextWriter.Null);
        if (!IsCallers(2))
            Console.SetError(TextWriter.Null);
    }

    /// <summary>Whether descriptor <paramref name="fd"/> (0 to 2) is the caller's: open, and not one of this process's own.</summary>
    public static bool IsCallers(int fd) => s_callers >= 0 ? (s_callers & (1 << fd)) != 0 : Syscalls.IsInherited(fd) == true;

    /// <summary>
    /// One line of ours for the caller on stderr, best effort: a message that cannot be written (a
    /// full disk under `2&gt;&gt;job.log`, a closed pipe) is dropped, and the exit status still says
    /// what happened. Written with write(2) itself: Console.Error threw there, and the CLI aborted
    /// (134) in place of the timeout's 124 or the command's own status.
    /// </summary>
    public static void TellError(string line)
    {
        if (!IsCallers(2))
            return;
        try
        {
            new DescriptorWriteStream(2).Write(System.Text.Encoding.UTF8.GetBytes(line + "\n"));
        }
        catch (IOException)
        {
        }
    }

    /// <summary>
    /// This process's stdout or stderr as a stream that needs no descriptor of its own
    /// (<see cref="DescriptorWriteStream"/>), on which a reader that went away is an error;
    /// <see cref="Stream.Null"/> when the caller gave none.
    /// </summary>
    public static Stream Open(int fd) => fd is not (1 or 2) ? throw new ArgumentOutOfRangeException(nameof(fd), fd, "stdout (1) or stderr (2)")
        : !IsCallers(fd) ? Stream.Null
        : new DescriptorWriteStream(fd, brokenPipeFails: true);
}
