using Sandbox.Linux;

namespace Sandbox.Runtime;

/// <summary>For a front end about to exit: see <see cref="HandOff"/>.</summary>
public static class ProcessTeardown
{
    /// <summary>
    /// Leaves the unmapping of this process's memory at its exit to a child that dies with it
    /// (sandbox_exec.c, sbx_defer_teardown), so that whoever waits for this process learns of its
    /// exit sooner. The child only waits for that exit, sharing our memory meanwhile, so it may be
    /// made at any time before (the CLI makes it as soon as its sandbox started, while it would only
    /// wait); false when no child was made (then the exit is as before, as for a second call).
    /// </summary>
    public static bool HandOff() => NativeExecutor.DeferTeardown() > 0;
}
