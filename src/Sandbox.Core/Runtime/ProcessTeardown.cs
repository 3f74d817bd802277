using Sandbox.Linux;

namespace Sandbox.Runtime;

/// <summary>For a front end about to exit: see <see cref="HandOff"/>.</summary>
public static class ProcessTeardown
{
    /// <summary>
    /// Leaves the unmapping of this process's memory at its exit to a child that dies with it
    /// (sandbox_exec.c, sbx_defer_teardown), so that whoever waits for this process learns of its
    /// exit sooner. Call it last, right before the process exits; false when no child was made
    /// (then the exit is as before).
    /// </summary>
    public static bool HandOff() => NativeExecutor.DeferTeardown() > 0;
}
