using System.Runtime.InteropServices;

namespace Sandbox.Linux;

/// <summary>
/// The NativeAOT CLI's executable defers the runtime's finalizer thread and exports
/// sbx_start_finalizer_thread to start it (Native/runtime_host_probes.c). Elsewhere (the JIT build, a
/// test host, MSBuild) there is no such export: the runtime started its thread itself.
/// </summary>
internal static unsafe class DeferredFinalizerThread
{
    /// <summary>1: started now; 0: nothing to start; -1: the thread could not be made.</summary>
    public static int Start()
    {
        if (!NativeLibrary.TryGetExport(NativeLibrary.GetMainProgramHandle(), "sbx_start_finalizer_thread", out nint start))
            return 0;
        return ((delegate* unmanaged<int>)start)();
    }
}
