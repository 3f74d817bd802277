using Sandbox.Linux;

namespace Sandbox.Runtime;

/// <summary>For the NativeAOT CLI: see <see cref="StartIfDeferred"/>.</summary>
public static class FinalizerThread
{
    /// <summary>
    /// Starts the runtime's finalizer thread where the executable deferred it at start-up (the
    /// NativeAOT CLI: Native/runtime_host_probes.c says why); once, and a no-op anywhere else. Until it
    /// runs, objects the GC finds unreachable and finalizable wait in the queue. Should the thread
    /// not be made (no thread left under a pids limit; the runtime's own start would have failed
    /// then), the CLI goes on without finalizers: what it opens it disposes, and its exit frees the rest.
    /// </summary>
    /// <returns>Whether a thread was started by this call.</returns>
    public static bool StartIfDeferred() => DeferredFinalizerThread.Start() > 0;
}
