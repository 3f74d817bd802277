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
    /// <summary>
    /// Puts /dev/null at each of 0, 1 and 2 that is closed. Call it first in <c>Main</c>: under
    /// NativeAOT nothing has opened a descriptor by then; under the JIT the runtime may already
    /// have taken a closed number, which <see cref="IsCallers"/> then tells apart.
    /// </summary>
    public static void OpenNullWhereClosed()
    {
        for (int fd = 0; fd <= 2; fd++)
            Syscalls.OpenNullIfClosed(fd);
    }

    /// <summary>Whether descriptor <paramref name="fd"/> (0 to 2) is the caller's, not closed and not one of this process's own.</summary>
    public static bool IsCallers(int fd) => Syscalls.IsInherited(fd);

    /// <summary>This process's stdout or stderr as a stream; <see cref="Stream.Null"/> when the caller gave none.</summary>
    public static Stream Open(int fd) => !IsCallers(fd) ? Stream.Null
        : fd == 1 ? Console.OpenStandardOutput()
        : fd == 2 ? Console.OpenStandardError()
        : throw new ArgumentOutOfRangeException(nameof(fd), fd, "stdout (1) or stderr (2)");

    /// <summary>
    /// Points <see cref="Console.Out"/> and <see cref="Console.Error"/> at nothing where the caller
    /// gave no stream, so that a message of ours never goes into a descriptor of the runtime's.
    /// </summary>
    public static void SilenceConsoleWhereNotCallers()
    {
        if (!IsCallers(1))
            Console.SetOut(TextWriter.Null);
        if (!IsCallers(2))
            Console.SetError(TextWriter.Null);
    }
}
