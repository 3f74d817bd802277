using System.Runtime.CompilerServices;

namespace Sandbox.Tests.TestSupport;

/// <summary>The native sources in src/Sandbox.Core/Native, for tests that read or compile them (the tests run from the checkout they were built in).</summary>
internal static class NativeSources
{
    public static string Path(string file, [CallerFilePath] string here = "") =>
        System.IO.Path.GetFullPath(System.IO.Path.Combine(System.IO.Path.GetDirectoryName(here)!, "../../src/Sandbox.Core/Native", file));
}
